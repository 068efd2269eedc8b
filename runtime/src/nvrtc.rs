//! NVRTC: CUDA C++ to PTX, and register/shared-memory/spill reports, with no GPU needed.
//!
//! Every entry point first calls [`crate::libs::ensure_nvrtc`], so a missing library is a
//! typed error instead of cudarc's panic.

use std::ffi::{c_char, CString};

use cudarc::nvrtc::{result as nr, sys};

use crate::error::{error_excerpt, Result, RuntimeError};
use crate::libs;

/// Options passed to every compilation besides `--gpu-architecture`. No fast math: the
/// kernels must keep IEEE `exp2f`/division/sqrt semantics close to the CPU interpreter.
/// The emitted source is self-contained, so there are no include paths.
pub const COMPILE_OPTIONS: &[&str] = &["--std=c++17", "-default-device", "-DNDEBUG"];

/// PTX produced by NVRTC for one entry point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledPtx {
    /// The `extern "C"` entry point.
    pub entry: String,
    /// The real architecture it targets (`sm_90a`).
    pub arch: String,
    /// The PTX text (without the trailing NUL).
    pub ptx: String,
    /// NVRTC's program log (warnings), usually empty.
    pub log: String,
}

/// What ptxas reports for one entry point (`--ptxas-options=-v`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceUsage {
    /// Registers per thread.
    pub registers: u32,
    /// Static shared memory per block, in bytes (dynamic shared memory is not included).
    pub shared_bytes_static: u32,
    /// Bytes of spill stores per thread.
    pub spill_stores: u32,
    /// Bytes of spill loads per thread.
    pub spill_loads: u32,
    /// Stack frame per thread, in bytes.
    pub stack_frame: u32,
    /// Named barriers used.
    pub barriers: u32,
}

/// Checks `sm_XY[a]` / `compute_XY[a]` and returns the number and suffix part (`90a`).
fn arch_number(arch: &str) -> Result<&str> {
    let rest = arch.strip_prefix("sm_").or_else(|| arch.strip_prefix("compute_"));
    let ok = rest.filter(|r| {
        let digits = r.trim_end_matches(['a', 'f']);
        !digits.is_empty() && digits.len() + 1 >= r.len() && digits.bytes().all(|b| b.is_ascii_digit())
    });
    ok.ok_or_else(|| {
        RuntimeError::Driver(format!("bad GPU architecture {arch:?}: expected sm_XY, sm_XYa or compute_XY"))
    })
}

/// Normalises an architecture to its real form (`compute_90a` → `sm_90a`).
pub fn real_arch(arch: &str) -> Result<String> {
    Ok(format!("sm_{}", arch_number(arch)?))
}

/// The full option list of a PTX compilation for `arch` (used in cache keys too).
///
/// PTX is generated for the virtual architecture `compute_XY[a]`: the PTX text is the same
/// as for `sm_XY[a]`, but NVRTC then skips running ptxas on it, which roughly halves
/// compile time. The driver assembles the PTX at load.
pub fn ptx_options(arch: &str) -> Result<Vec<String>> {
    let mut o: Vec<String> = COMPILE_OPTIONS.iter().map(|s| s.to_string()).collect();
    o.push(format!("--gpu-architecture=compute_{}", arch_number(arch)?));
    Ok(o)
}

/// The full option list of a CUBIN compilation for the real architecture of `arch`
/// (used in cache keys too): NVRTC runs ptxas itself, so loading needs no driver JIT.
pub fn cubin_options(arch: &str) -> Result<Vec<String>> {
    let mut o: Vec<String> = COMPILE_OPTIONS.iter().map(|s| s.to_string()).collect();
    o.push(format!("--gpu-architecture={}", real_arch(arch)?));
    Ok(o)
}

/// Compiles self-contained CUDA C++ to a CUBIN image for the real architecture of `arch`.
pub fn compile_cubin_image(source: &str, entry: &str, arch: &str) -> Result<Vec<u8>> {
    let options = cubin_options(arch)?;
    libs::ensure_nvrtc()?;
    let prog = Program::new(source, entry)?;
    let log = prog.compile(&options, source, entry)?;
    if !log.is_empty() {
        tracing::debug!(entry, "NVRTC log: {log}");
    }
    prog.cubin()
}

/// The NVRTC version, `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    libs::ensure_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: plain out-parameters.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }.result()?;
    Ok((major, minor))
}

/// The real architectures this NVRTC can target (`[75, 80, ..., 90, 100, ...]`).
pub fn supported_archs() -> Result<Vec<i32>> {
    libs::ensure_nvrtc()?;
    let mut n = 0;
    // SAFETY: out-parameter, then a buffer of the size NVRTC reported.
    unsafe { sys::nvrtcGetNumSupportedArchs(&mut n) }.result()?;
    let mut v = vec![0i32; n.max(0) as usize];
    unsafe { sys::nvrtcGetSupportedArchs(v.as_mut_ptr()) }.result()?;
    Ok(v)
}

/// An NVRTC program destroyed on drop.
struct Program {
    prog: sys::nvrtcProgram,
    // The source and name must outlive the program.
    _src: CString,
    _name: CString,
}

impl Program {
    fn new(source: &str, entry: &str) -> Result<Self> {
        let src = CString::new(source).map_err(|_| RuntimeError::Driver("source contains a NUL byte".into()))?;
        let name = CString::new(format!("{entry}.cu")).map_err(|_| RuntimeError::Driver("bad entry name".into()))?;
        let prog = nr::create_program(&src, Some(&name))?;
        Ok(Program { prog, _src: src, _name: name })
    }

    /// Compiles; on failure returns [`RuntimeError::Compile`] with the log and excerpt.
    fn compile(&self, options: &[String], source: &str, entry: &str) -> Result<String> {
        // SAFETY: `prog` is live until drop.
        let status = unsafe { nr::compile_program(self.prog, options) };
        let log = self.log();
        match status {
            Ok(()) => Ok(log),
            Err(e) if e.0 == sys::nvrtcResult::NVRTC_ERROR_COMPILATION => {
                let excerpt = error_excerpt(&log, source);
                Err(RuntimeError::Compile { entry: entry.to_string(), log, excerpt })
            }
            Err(e) => Err(RuntimeError::Driver(format!("NVRTC: {e}\n{log}"))),
        }
    }

    fn log(&self) -> String {
        // SAFETY: `prog` is live until drop.
        unsafe { nr::get_program_log(self.prog) }.map(|v| c_chars_to_string(&v)).unwrap_or_default()
    }

    fn cubin(&self) -> Result<Vec<u8>> {
        let mut size = 0usize;
        // SAFETY: `prog` is live; the buffer has the size NVRTC reported.
        unsafe { sys::nvrtcGetCUBINSize(self.prog, &mut size) }.result()?;
        let mut buf = vec![0u8; size];
        unsafe { sys::nvrtcGetCUBIN(self.prog, buf.as_mut_ptr() as *mut c_char) }.result()?;
        Ok(buf)
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by `create_program`, destroyed once.
        let _ = unsafe { nr::destroy_program(self.prog) };
    }
}

fn c_chars_to_string(v: &[c_char]) -> String {
    let bytes: Vec<u8> = v.iter().map(|&c| c as u8).take_while(|&b| b != 0).collect();
    String::from_utf8_lossy(&bytes).trim_end().to_string()
}

/// Compiles self-contained CUDA C++ to PTX for `arch` (`"sm_90a"`, `"sm_80"`).
pub fn compile_ptx(source: &str, entry: &str, arch: &str) -> Result<CompiledPtx> {
    let options = ptx_options(arch)?;
    libs::ensure_nvrtc()?;
    let prog = Program::new(source, entry)?;
    let log = prog.compile(&options, source, entry)?;
    // SAFETY: compiled successfully above.
    let ptx = c_chars_to_string(&unsafe { nr::get_ptx(prog.prog) }?);
    if !log.is_empty() {
        tracing::debug!(entry, "NVRTC log: {log}");
    }
    Ok(CompiledPtx { entry: entry.to_string(), arch: real_arch(arch)?, ptx, log })
}

/// Compiles to a CUBIN for the real architecture `arch` with `--ptxas-options=-v` and
/// returns what ptxas reports for `entry`. Needs no GPU. Bypasses the driver's compute
/// cache (`--no-cache`), which would otherwise suppress the report on a hit.
pub fn resource_usage(source: &str, entry: &str, arch: &str) -> Result<ResourceUsage> {
    Ok(compile_cubin(source, entry, arch)?.1)
}

/// Compiles to a CUBIN for the real architecture `arch`; returns it with the ptxas report
/// for `entry`.
pub fn compile_cubin(source: &str, entry: &str, arch: &str) -> Result<(Vec<u8>, ResourceUsage)> {
    let mut options: Vec<String> = COMPILE_OPTIONS.iter().map(|s| s.to_string()).collect();
    options.push(format!("--gpu-architecture={}", real_arch(arch)?));
    options.push("--ptxas-options=-v".into());
    // Where a driver is installed, NVRTC 13 looks compilations up in the driver's compute cache
    // (~/.nv/ComputeCache) and on a hit skips ptxas, leaving the log without a report.
    options.push("--no-cache".into());
    libs::ensure_nvrtc()?;
    let prog = Program::new(source, entry)?;
    let log = prog.compile(&options, source, entry)?;
    let cubin = prog.cubin()?;
    let usage = parse_ptxas_log(&log, entry)
        .ok_or_else(|| RuntimeError::Driver(format!("no ptxas report for `{entry}` in the NVRTC log:\n{log}")))?;
    Ok((cubin, usage))
}

/// Numbers before `unit` in `text` such as `"30 registers"` or `"8448 bytes smem"`.
fn number_before(text: &str, unit: &str) -> Option<u32> {
    let pos = text.find(unit)?;
    text[..pos].split_whitespace().last()?.parse().ok()
}

/// Parses ptxas `-v` output for one entry point:
///
/// ```text
/// ptxas info    : Compiling entry function 'axpy' for 'sm_90a'
/// ptxas info    : Function properties for axpy
///     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 30 registers, used 1 barriers, 8448 bytes smem, 400 bytes cmem[0]
/// ```
pub fn parse_ptxas_log(log: &str, entry: &str) -> Option<ResourceUsage> {
    let start_marker = format!("Compiling entry function '{entry}'");
    let start = log.find(&start_marker)?;
    let section = &log[start + start_marker.len()..];
    // The section ends where the next function's report starts.
    let end = section.find("Compiling entry function").unwrap_or(section.len());
    let section = &section[..end];
    let mut u = ResourceUsage::default();
    let mut saw_used = false;
    for line in section.lines() {
        if line.contains("stack frame") {
            u.stack_frame = number_before(line, "bytes stack frame").unwrap_or(0);
            u.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
            u.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
        } else if let Some(p) = line.find("Used ") {
            let used = &line[p..];
            saw_used = true;
            u.registers = number_before(used, "registers").unwrap_or(0);
            u.barriers = number_before(used, "barriers").unwrap_or(0);
            u.shared_bytes_static = number_before(used, "bytes smem").unwrap_or(0);
        }
    }
    saw_used.then_some(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'other' for 'sm_90a'
ptxas info    : Function properties for other
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers, 380 bytes cmem[0]
ptxas info    : Compiling entry function 'axpy' for 'sm_90a'
ptxas info    : Function properties for axpy
    472 bytes stack frame, 932 bytes spill stores, 748 bytes spill loads
ptxas info    : Used 140 registers, used 1 barriers, 8448 bytes smem, 400 bytes cmem[0]
";

    #[test]
    fn parses_ptxas_report_per_entry() {
        let u = parse_ptxas_log(LOG, "axpy").unwrap();
        assert_eq!(
            u,
            ResourceUsage {
                registers: 140,
                shared_bytes_static: 8448,
                spill_stores: 932,
                spill_loads: 748,
                stack_frame: 472,
                barriers: 1
            }
        );
        let o = parse_ptxas_log(LOG, "other").unwrap();
        assert_eq!((o.registers, o.shared_bytes_static, o.spill_stores, o.stack_frame), (12, 0, 4, 8));
        assert_eq!(parse_ptxas_log(LOG, "missing"), None);
    }

    #[test]
    fn arch_strings() {
        assert_eq!(real_arch("sm_90a").unwrap(), "sm_90a");
        assert_eq!(real_arch("compute_80").unwrap(), "sm_80");
        assert!(ptx_options("sm_90a").unwrap().contains(&"--gpu-architecture=compute_90a".to_string()));
        for bad in ["sm90", "sm_", "sm_9x", "gfx90a", "sm_90aa"] {
            assert!(real_arch(bad).is_err(), "{bad}");
        }
    }

    fn nvrtc_or_skip(test: &str) -> bool {
        match crate::libs::ensure_nvrtc() {
            Ok(_) => true,
            Err(e) => {
                eprintln!("SKIP {test}: {e}");
                false
            }
        }
    }

    const SMEM_KERNEL: &str = r#"
extern "C" __global__ void smem_k(float* out, long long n) {
    __shared__ float buf[1024];
    buf[threadIdx.x] = exp2f((float)threadIdx.x);
    __syncthreads();
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) out[i] = buf[1023 - threadIdx.x];
}
"#;

    #[test]
    fn version_and_archs() {
        if !nvrtc_or_skip("version_and_archs") {
            return;
        }
        let (major, _) = nvrtc_version().unwrap();
        assert!(major >= 12);
        assert!(supported_archs().unwrap().contains(&90));
    }

    #[test]
    fn compiles_ptx_without_fast_math() {
        if !nvrtc_or_skip("compiles_ptx_without_fast_math") {
            return;
        }
        let p = compile_ptx(SMEM_KERNEL, "smem_k", "sm_90a").unwrap();
        assert_eq!(p.arch, "sm_90a");
        assert!(p.ptx.contains(".target sm_90a") && p.ptx.contains(".entry smem_k"));
        assert!(!p.ptx.ends_with('\0'));
        // exp2f must not be lowered to the approximate, flush-to-zero instruction alone.
        assert!(!p.ptx.contains("ex2.approx.ftz.f32"), "fast math leaked in:\n{}", p.ptx);
        let p80 = compile_ptx(SMEM_KERNEL, "smem_k", "sm_80").unwrap();
        assert!(p80.ptx.contains(".target sm_80"));
    }

    #[test]
    fn compile_error_has_log_and_excerpt() {
        if !nvrtc_or_skip("compile_error_has_log_and_excerpt") {
            return;
        }
        let src = "// line 1\nextern \"C\" __global__ void bad(float* p) {\n  p[0] = 1.0f;\n  p[1] = undefined_thing;\n  p[2] = 2.0f;\n}\n";
        match compile_ptx(src, "bad", "sm_90a") {
            Err(RuntimeError::Compile { entry, log, excerpt }) => {
                assert_eq!(entry, "bad");
                assert!(log.contains("undefined_thing"), "{log}");
                assert!(excerpt.contains(">4 |   p[1] = undefined_thing;"), "{excerpt}");
                assert!(excerpt.contains(" 2 | extern"), "{excerpt}");
                assert!(excerpt.contains(" 6 | }"), "{excerpt}");
            }
            other => panic!("expected a compile error, got {other:?}"),
        }
    }

    #[test]
    fn resource_usage_from_ptxas() {
        if !nvrtc_or_skip("resource_usage_from_ptxas") {
            return;
        }
        let u = resource_usage(SMEM_KERNEL, "smem_k", "sm_90a").unwrap();
        assert_eq!(u.shared_bytes_static, 4096);
        assert!(u.registers > 0 && u.registers < 64, "{u:?}");
        assert_eq!((u.spill_stores, u.spill_loads), (0, 0));
        assert_eq!(u.barriers, 1);
        let (cubin, _) = compile_cubin(SMEM_KERNEL, "smem_k", "sm_90a").unwrap();
        assert_eq!(&cubin[..4], b"\x7fELF");
    }
}
