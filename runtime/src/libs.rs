//! Locating and preloading the CUDA libraries before cudarc touches them.
//!
//! cudarc 0.19 (feature `dynamic-loading`) dlopens bare library names and *panics* when
//! none loads. libnvrtc in turn dlopens `libnvrtc-builtins.so.13.*` by bare name. So the
//! runtime finds both files itself, preloads them by absolute path with
//! `RTLD_NOW | RTLD_GLOBAL` (a later bare-name dlopen resolves to the already loaded
//! object through its SONAME), and only then lets cudarc call into NVRTC.
//!
//! Search order for the folder holding `libnvrtc.so.13`:
//! 1. `TESSERA_CUDA_LIB_DIR`;
//! 2. every folder of `LD_LIBRARY_PATH`;
//! 3. `/usr/local/cuda/lib64`, then `/usr/local/cuda-13*/lib64`;
//! 4. `$HOME/.cache/tessera/cuda/nvidia/cu13/lib`;
//! 5. Python `site-packages/nvidia/cu13/lib` (asks `python3`, only when 1–4 failed);
//! 6. the system loader path (ld.so.cache), as cudarc itself would.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Result, RuntimeError};

/// File name of the NVRTC library this build (cudarc `cuda-13000`) expects.
pub const NVRTC_LIB: &str = "libnvrtc.so.13";
/// Prefix of the NVRTC builtins library that libnvrtc dlopens by name.
pub const NVRTC_BUILTINS_PREFIX: &str = "libnvrtc-builtins.so.13";

/// Where NVRTC was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvrtcLocation {
    /// The folder both libraries were preloaded from; `None` when they came from the
    /// system loader path.
    pub dir: Option<PathBuf>,
    /// Folders looked at before it was found (for `tessera doctor`).
    pub searched: Vec<PathBuf>,
}

impl std::fmt::Display for NvrtcLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.dir {
            Some(d) => write!(f, "{}", d.display()),
            None => f.write_str("system loader path"),
        }
    }
}

#[derive(Clone, Debug)]
enum Failure {
    NotFound(Vec<PathBuf>),
    Load { path: PathBuf, message: String },
}

static NVRTC: OnceLock<std::result::Result<NvrtcLocation, Failure>> = OnceLock::new();
static DRIVER: OnceLock<bool> = OnceLock::new();

/// Finds and preloads NVRTC once per process; later calls return the first answer.
/// Never panics: a missing library is [`RuntimeError::NvrtcNotFound`].
pub fn ensure_nvrtc() -> Result<&'static NvrtcLocation> {
    match NVRTC.get_or_init(locate_and_preload) {
        Ok(loc) => Ok(loc),
        Err(Failure::NotFound(searched)) => Err(RuntimeError::NvrtcNotFound { searched: searched.clone() }),
        Err(Failure::Load { path, message }) => {
            Err(RuntimeError::LibraryLoad { path: path.clone(), message: message.clone() })
        }
    }
}

/// Whether the CUDA driver library (`libcuda.so`) can be loaded. Cached.
pub fn driver_present() -> bool {
    // SAFETY: only dlopens and closes candidate names; does not call into the library.
    *DRIVER.get_or_init(|| unsafe { cudarc::driver::sys::is_culib_present() })
}

/// [`RuntimeError::NoDriver`] unless [`driver_present`].
pub fn ensure_driver() -> Result<()> {
    if driver_present() {
        Ok(())
    } else {
        Err(RuntimeError::NoDriver)
    }
}

/// The folders searched for NVRTC, in order, without the Python fallback.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("TESSERA_CUDA_LIB_DIR") {
        dirs.extend(std::env::split_paths(&d));
    }
    if let Some(p) = std::env::var_os("LD_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    if let Ok(rd) = std::fs::read_dir("/usr/local") {
        let mut versioned: Vec<PathBuf> = rd
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("cuda-13"))
            .map(|e| e.path().join("lib64"))
            .collect();
        versioned.sort();
        versioned.reverse(); // newest 13.x first
        dirs.extend(versioned);
    }
    if let Some(home) = dirs::home_dir() {
        dirs.push(home.join(".cache/tessera/cuda/nvidia/cu13/lib"));
    }
    dedup(dirs)
}

fn dedup(dirs: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        if !d.as_os_str().is_empty() && !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

/// `site-packages/nvidia/cu13/lib` folders reported by `python3`, if any.
fn python_dirs() -> Vec<PathBuf> {
    python_lib_dirs(&["nvidia/cu13/lib"])
}

/// `site-packages/<sub>` folders (for each of `subdirs`) reported by `python3`, if any.
pub(crate) fn python_lib_dirs(subdirs: &[&str]) -> Vec<PathBuf> {
    let script = "import site\nfor p in site.getsitepackages()+[site.getusersitepackages()]: print(p)";
    let Ok(out) = std::process::Command::new("python3").arg("-c").arg(script).output() else { return Vec::new() };
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .flat_map(|l| subdirs.iter().map(move |s| PathBuf::from(l.trim()).join(s)))
        .filter(|p| p.is_dir())
        .collect()
}

/// The builtins library next to `libnvrtc.so.13` in `dir`, if any (the `.alt` variant is
/// skipped).
pub fn find_builtins(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(NVRTC_BUILTINS_PREFIX) && !n.contains("alt")
        })
        .map(|e| e.path())
        .collect();
    // Prefer the shortest name: `libnvrtc-builtins.so.13.0` over `...so.13.0.88`.
    found.sort_by_key(|p| p.as_os_str().len());
    found.into_iter().next()
}

/// Whether `dir` holds both NVRTC libraries.
pub fn has_nvrtc(dir: &Path) -> bool {
    dir.join(NVRTC_LIB).is_file() && find_builtins(dir).is_some()
}

pub(crate) fn preload_global(path: &Path) -> std::result::Result<(), (PathBuf, String)> {
    preload(path).map_err(|e| match e {
        Failure::Load { path, message } => (path, message),
        Failure::NotFound(_) => (path.to_path_buf(), "not found".into()),
    })
}

fn preload(path: &Path) -> std::result::Result<(), Failure> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: loading NVRTC runs only its (trivial) initialisers.
    match unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) } {
        Ok(lib) => {
            // Keep it loaded for the life of the process.
            std::mem::forget(lib);
            Ok(())
        }
        Err(e) => Err(Failure::Load { path: path.to_path_buf(), message: e.to_string() }),
    }
}

fn try_dir(dir: &Path) -> Option<std::result::Result<(), Failure>> {
    if !dir.join(NVRTC_LIB).is_file() {
        return None;
    }
    let builtins = find_builtins(dir)?;
    Some(preload(&builtins).and_then(|()| preload(&dir.join(NVRTC_LIB))))
}

fn locate_and_preload() -> std::result::Result<NvrtcLocation, Failure> {
    let mut searched = Vec::new();
    let mut first_load_error = None;
    let mut candidates = search_dirs();
    let mut python_tried = false;
    let mut i = 0;
    loop {
        if i == candidates.len() {
            if python_tried {
                break;
            }
            python_tried = true;
            let extra: Vec<PathBuf> = python_dirs().into_iter().filter(|d| !candidates.contains(d)).collect();
            if extra.is_empty() {
                break;
            }
            candidates.extend(extra);
        }
        let dir = candidates[i].clone();
        i += 1;
        match try_dir(&dir) {
            None => searched.push(dir),
            Some(Ok(())) => {
                tracing::debug!(dir = %dir.display(), "preloaded NVRTC");
                return Ok(NvrtcLocation { dir: Some(dir), searched });
            }
            Some(Err(e)) => {
                tracing::warn!(dir = %dir.display(), "NVRTC found but failed to load: {e:?}");
                searched.push(dir);
                first_load_error.get_or_insert(e);
            }
        }
    }
    // Last resort: whatever the system loader finds (ld.so.cache), as cudarc would.
    // SAFETY: only dlopens and closes candidate names.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Ok(NvrtcLocation { dir: None, searched });
    }
    Err(first_load_error.unwrap_or(Failure::NotFound(searched)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_keeps_order() {
        let d = dedup(vec!["/a".into(), "".into(), "/b".into(), "/a".into()]);
        assert_eq!(d, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
    }

    #[test]
    fn builtins_detection() {
        let dir = std::env::temp_dir().join(format!("tessera-libs-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!has_nvrtc(&dir));
        std::fs::write(dir.join(NVRTC_LIB), b"").unwrap();
        assert!(!has_nvrtc(&dir), "builtins are required too");
        std::fs::write(dir.join("libnvrtc-builtins.alt.so.13.0"), b"").unwrap();
        std::fs::write(dir.join("libnvrtc-builtins.so.13.0"), b"").unwrap();
        assert!(has_nvrtc(&dir));
        assert_eq!(find_builtins(&dir), Some(dir.join("libnvrtc-builtins.so.13.0")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ensure_nvrtc_never_panics() {
        // Found or not, it must answer; when found, cudarc must now see it too.
        match ensure_nvrtc() {
            Ok(_) => assert!(unsafe { cudarc::nvrtc::sys::is_culib_present() }),
            Err(e) => eprintln!("NVRTC not available here: {e}"),
        }
    }
}
