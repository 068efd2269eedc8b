//! Loaded kernels and launches checked against the kernel signature.
//!
//! Arguments follow the ABI of `tessera_codegen::emit`: per tensor parameter of rank R
//! the element pointer, R `long long` sizes and R `long long` strides (elements); per
//! scalar its value (`bool` as `int` 0/1).

use std::sync::Arc;

use cudarc::driver::sys::CUfunction_attribute as FnAttr;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use tessera_codegen::emit::EmittedKernel;
use tessera_codegen::host::ScalarValue;
use tessera_codegen::ir::{DType, Kernel, Param, ParamKind};

use crate::device::Runtime;
use crate::error::{Result, RuntimeError};
use crate::tensor::DeviceTensor;

/// Dynamic shared memory a kernel may use without opting in.
pub const DEFAULT_DYNAMIC_SHARED_LIMIT: usize = 48 * 1024;

/// What the checks need to know about one argument, without any GPU object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgDesc {
    /// A tensor of this dtype and rank; `read_only` when the caller marked it so.
    Tensor { dtype: DType, rank: usize, read_only: bool },
    /// A scalar of this dtype.
    Scalar(DType),
}

/// One launch argument.
#[derive(Clone, Copy, Debug)]
pub enum LaunchArg<'a> {
    /// A device tensor (pointer, sizes and strides are passed).
    Tensor(&'a DeviceTensor),
    /// A scalar value.
    Scalar(ScalarValue),
}

impl LaunchArg<'_> {
    /// The argument's descriptor for [`check_params`].
    pub fn desc(&self) -> ArgDesc {
        match self {
            LaunchArg::Tensor(t) => ArgDesc::Tensor { dtype: t.dtype(), rank: t.rank(), read_only: t.is_read_only() },
            LaunchArg::Scalar(s) => ArgDesc::Scalar(s.dtype()),
        }
    }
}

impl<'a> From<&'a DeviceTensor> for LaunchArg<'a> {
    fn from(t: &'a DeviceTensor) -> Self {
        LaunchArg::Tensor(t)
    }
}

impl From<ScalarValue> for LaunchArg<'_> {
    fn from(s: ScalarValue) -> Self {
        LaunchArg::Scalar(s)
    }
}

/// Checks `args` against `kernel`'s parameters: count, tensor/scalar kind, dtype, rank,
/// and that no written parameter gets a read-only tensor.
pub fn check_args(kernel: &Kernel, args: &[ArgDesc]) -> Result<()> {
    check_params(&kernel.name, &kernel.params, args)
}

/// [`check_args`] over a bare parameter list.
pub fn check_params(kernel: &str, params: &[Param], args: &[ArgDesc]) -> Result<()> {
    if params.len() != args.len() {
        return Err(RuntimeError::ArgCount { kernel: kernel.to_string(), expected: params.len(), got: args.len() });
    }
    for (p, a) in params.iter().zip(args) {
        let param = || p.name.clone();
        match (&p.kind, a) {
            (
                &ParamKind::Tensor { dtype, rank, writable },
                &ArgDesc::Tensor { dtype: got, rank: got_rank, read_only },
            ) => {
                if dtype != got {
                    return Err(RuntimeError::DType { param: param(), expected: dtype, got });
                }
                if rank != got_rank {
                    return Err(RuntimeError::Rank { param: param(), expected: rank, got: got_rank });
                }
                if writable && read_only {
                    return Err(RuntimeError::ReadOnly { param: param() });
                }
            }
            (&ParamKind::Scalar { dtype }, &ArgDesc::Scalar(got)) => {
                if dtype != got {
                    return Err(RuntimeError::DType { param: param(), expected: dtype, got });
                }
            }
            (ParamKind::Tensor { .. }, ArgDesc::Scalar(_)) => {
                return Err(RuntimeError::ArgKind { param: param(), expected: "tensor", got: "scalar" })
            }
            (ParamKind::Scalar { .. }, ArgDesc::Tensor { .. }) => {
                return Err(RuntimeError::ArgKind { param: param(), expected: "scalar", got: "tensor" })
            }
        }
    }
    Ok(())
}

/// Rejects grids with a zero dimension or beyond the hardware limits.
pub fn check_grid(grid: [u32; 3]) -> Result<()> {
    if grid.contains(&0) {
        return Err(RuntimeError::EmptyGrid { grid });
    }
    if grid[0] > i32::MAX as u32 || grid[1] > 65535 || grid[2] > 65535 {
        return Err(RuntimeError::GridLimit { grid });
    }
    Ok(())
}

/// One kernel argument as the driver receives it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum RawArg {
    Ptr(u64),
    I64(i64),
    I32(i32),
    U32(u32),
    F32(f32),
}

/// The flat ABI argument list of checked arguments.
fn raw_args(args: &[LaunchArg]) -> Vec<RawArg> {
    let mut out = Vec::new();
    for a in args {
        match a {
            LaunchArg::Tensor(t) => {
                out.push(RawArg::Ptr(t.device_ptr()));
                out.extend(t.shape().iter().map(|&n| RawArg::I64(n as i64)));
                out.extend(t.strides().iter().map(|&s| RawArg::I64(s)));
            }
            LaunchArg::Scalar(s) => out.push(match *s {
                ScalarValue::F32(x) => RawArg::F32(x),
                ScalarValue::I32(x) => RawArg::I32(x),
                ScalarValue::U32(x) => RawArg::U32(x),
                ScalarValue::I64(x) => RawArg::I64(x),
                ScalarValue::Bool(b) => RawArg::I32(b as i32),
            }),
        }
    }
    out
}

/// Loads `source`'s module from its CUBIN (compiled for this GPU's architecture, no JIT at
/// load). Should the driver refuse the image, the PTX is loaded instead (the driver
/// assembles it) and a warning says so once per process.
fn load_module(rt: &Runtime, source: &str, entry: &str) -> Result<Arc<cudarc::driver::CudaModule>> {
    static WARNED: std::sync::Once = std::sync::Once::new();
    let cubin = rt.cache().get_or_compile_cubin(source, entry, &rt.arch())?;
    match rt.context().load_module(cudarc::nvrtc::Ptx::from_binary(cubin.to_vec())) {
        Ok(m) => Ok(m),
        Err(e) => {
            WARNED.call_once(|| tracing::warn!("the driver refused a CUBIN for {} ({e}); loading PTX", rt.arch()));
            let ptx = rt.cache().get_or_compile(source, entry, &rt.arch())?;
            Ok(rt.context().load_module(cudarc::nvrtc::Ptx::from_src(ptx.to_string()))?)
        }
    }
}

/// A compiled kernel loaded on one device, with its signature and launch shape.
#[derive(Debug)]
pub struct LoadedKernel {
    name: String,
    params: Vec<Param>,
    threads: u32,
    shared_bytes: u32,
    static_shared_bytes: u32,
    num_regs: u32,
    ctx: Arc<CudaContext>,
    func: CudaFunction,
}

impl LoadedKernel {
    /// Compiles (through the runtime's kernel cache) and loads an emitted kernel.
    pub fn new(rt: &Runtime, kernel: &Kernel, emitted: &EmittedKernel) -> Result<Self> {
        Self::from_source(
            rt,
            &kernel.name,
            kernel.params.clone(),
            &emitted.source,
            &emitted.entry,
            emitted.threads,
            emitted.shared_bytes,
        )
    }

    /// Compiles and loads hand-written source that follows the kernel ABI for `params`.
    pub fn from_source(
        rt: &Runtime,
        name: &str,
        params: Vec<Param>,
        source: &str,
        entry: &str,
        threads: u32,
        shared_bytes: u32,
    ) -> Result<Self> {
        let module = load_module(rt, source, entry)?;
        let func = module.load_function(entry)?;
        let static_shared_bytes = func.shared_size_bytes()? as u32;
        let num_regs = func.num_regs()? as u32;
        let max_threads = func.max_threads_per_block()? as u32;
        if threads == 0 || threads > max_threads {
            return Err(RuntimeError::Threads { kernel: name.to_string(), requested: threads, limit: max_threads });
        }
        let requested = static_shared_bytes as usize + shared_bytes as usize;
        let limit = rt.info().max_shared_per_block_optin;
        if requested > limit {
            return Err(RuntimeError::SharedMemory { requested, limit });
        }
        if requested > DEFAULT_DYNAMIC_SHARED_LIMIT {
            func.set_attribute(FnAttr::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared_bytes as i32)?;
        }
        Ok(LoadedKernel {
            name: name.to_string(),
            params,
            threads,
            shared_bytes,
            static_shared_bytes,
            num_regs,
            ctx: rt.context().clone(),
            func,
        })
    }

    /// Checks `args` and `grid`, then launches `grid` blocks on `stream` (asynchronously).
    /// Nothing reaches the GPU when a check fails.
    pub fn launch(&self, stream: &CudaStream, grid: [u32; 3], args: &[LaunchArg]) -> Result<()> {
        let descs: Vec<ArgDesc> = args.iter().map(LaunchArg::desc).collect();
        check_params(&self.name, &self.params, &descs)?;
        check_grid(grid)?;
        if **stream.context() != *self.ctx {
            return Err(RuntimeError::Launch {
                kernel: self.name.clone(),
                message: "stream is on another device".into(),
            });
        }
        for (p, a) in self.params.iter().zip(args) {
            if let LaunchArg::Tensor(t) = a {
                if **t.stream().context() != *self.ctx {
                    return Err(RuntimeError::Launch {
                        kernel: self.name.clone(),
                        message: format!("tensor `{}` lives on another device", p.name),
                    });
                }
            }
        }
        let raw = raw_args(args);
        let mut b = stream.launch_builder(&self.func);
        for r in &raw {
            match r {
                RawArg::Ptr(v) => b.arg(v),
                RawArg::I64(v) => b.arg(v),
                RawArg::I32(v) => b.arg(v),
                RawArg::U32(v) => b.arg(v),
                RawArg::F32(v) => b.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: (grid[0], grid[1], grid[2]),
            block_dim: (self.threads, 1, 1),
            shared_mem_bytes: self.shared_bytes,
        };
        // SAFETY: the arguments were checked against the signature and are laid out per the
        // ABI; tensor views were bounds-checked against their buffers when made.
        unsafe { b.launch(cfg) }
            .map_err(|e| RuntimeError::Launch { kernel: self.name.clone(), message: e.to_string() })?;
        Ok(())
    }

    /// Kernel name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signature.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Threads per block.
    pub fn threads(&self) -> u32 {
        self.threads
    }

    /// Dynamic shared memory per block, in bytes.
    pub fn shared_bytes(&self) -> u32 {
        self.shared_bytes
    }

    /// Static shared memory per block, in bytes (from the loaded function).
    pub fn static_shared_bytes(&self) -> u32 {
        self.static_shared_bytes
    }

    /// How many program instances of this kernel one SM holds at once (registers,
    /// shared memory and threads permitting), as the driver computes it.
    pub fn max_active_blocks_per_sm(&self) -> Result<u32> {
        Ok(self.func.occupancy_max_active_blocks_per_multiprocessor(self.threads, self.shared_bytes as usize, None)?)
    }

    /// Registers per thread (from the loaded function).
    pub fn num_regs(&self) -> u32 {
        self.num_regs
    }

    /// The cudarc function.
    pub fn function(&self) -> &CudaFunction {
        &self.func
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, dtype: DType, rank: usize, writable: bool) -> Param {
        Param { name: name.into(), kind: ParamKind::Tensor { dtype, rank, writable } }
    }

    fn scalar(name: &str, dtype: DType) -> Param {
        Param { name: name.into(), kind: ParamKind::Scalar { dtype } }
    }

    fn kernel() -> Kernel {
        Kernel {
            name: "attn".into(),
            params: vec![
                tensor("q", DType::BF16, 3, false),
                tensor("o", DType::F32, 3, true),
                scalar("scale", DType::F32),
                scalar("causal", DType::Bool),
            ],
            values: vec![],
            body: vec![],
            num_warps: 4,
            min_blocks_per_sm: 0,
            pipeline_stages: 2,
            constants: vec![],
        }
    }

    fn t(dtype: DType, rank: usize) -> ArgDesc {
        ArgDesc::Tensor { dtype, rank, read_only: false }
    }

    fn good() -> Vec<ArgDesc> {
        vec![t(DType::BF16, 3), t(DType::F32, 3), ArgDesc::Scalar(DType::F32), ArgDesc::Scalar(DType::Bool)]
    }

    #[test]
    fn accepts_matching_args() {
        check_args(&kernel(), &good()).unwrap();
        // A read-only tensor is fine for a parameter the kernel only reads.
        let mut a = good();
        a[0] = ArgDesc::Tensor { dtype: DType::BF16, rank: 3, read_only: true };
        check_args(&kernel(), &a).unwrap();
    }

    #[test]
    fn rejects_wrong_count() {
        let mut a = good();
        a.pop();
        match check_args(&kernel(), &a) {
            Err(RuntimeError::ArgCount { kernel, expected: 4, got: 3 }) => assert_eq!(kernel, "attn"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(check_args(&kernel(), &[]), Err(RuntimeError::ArgCount { got: 0, .. })));
    }

    #[test]
    fn rejects_wrong_kind() {
        let mut a = good();
        a[2] = t(DType::F32, 0);
        match check_args(&kernel(), &a) {
            Err(RuntimeError::ArgKind { param, expected: "scalar", got: "tensor" }) => assert_eq!(param, "scale"),
            other => panic!("{other:?}"),
        }
        let mut a = good();
        a[0] = ArgDesc::Scalar(DType::BF16);
        assert!(matches!(check_args(&kernel(), &a), Err(RuntimeError::ArgKind { expected: "tensor", .. })));
    }

    #[test]
    fn rejects_wrong_tensor_dtype() {
        let mut a = good();
        a[0] = t(DType::F16, 3);
        match check_args(&kernel(), &a) {
            Err(RuntimeError::DType { param, expected: DType::BF16, got: DType::F16 }) => assert_eq!(param, "q"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_wrong_scalar_dtype() {
        // No implicit conversions: a bool parameter takes ScalarValue::Bool only.
        let mut a = good();
        a[3] = ArgDesc::Scalar(DType::I32);
        match check_args(&kernel(), &a) {
            Err(RuntimeError::DType { param, expected: DType::Bool, got: DType::I32 }) => assert_eq!(param, "causal"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_wrong_rank() {
        let mut a = good();
        a[1] = t(DType::F32, 4);
        match check_args(&kernel(), &a) {
            Err(RuntimeError::Rank { param, expected: 3, got: 4 }) => assert_eq!(param, "o"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_read_only_output() {
        let mut a = good();
        a[1] = ArgDesc::Tensor { dtype: DType::F32, rank: 3, read_only: true };
        match check_args(&kernel(), &a) {
            Err(RuntimeError::ReadOnly { param }) => assert_eq!(param, "o"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn first_bad_argument_is_reported() {
        let a = vec![t(DType::F32, 3), t(DType::F32, 1), ArgDesc::Scalar(DType::F32), ArgDesc::Scalar(DType::Bool)];
        assert!(matches!(check_args(&kernel(), &a), Err(RuntimeError::DType { param, .. }) if param == "q"));
    }

    #[test]
    fn grids() {
        check_grid([1, 1, 1]).unwrap();
        check_grid([i32::MAX as u32, 65535, 65535]).unwrap();
        for g in [[0, 1, 1], [5, 0, 1], [1, 1, 0]] {
            assert!(matches!(check_grid(g), Err(RuntimeError::EmptyGrid { grid }) if grid == g));
        }
        for g in [[1u32 << 31, 1, 1], [1, 65536, 1], [1, 1, 65536]] {
            assert!(matches!(check_grid(g), Err(RuntimeError::GridLimit { .. })));
        }
    }

    #[test]
    fn scalars_follow_the_abi() {
        let args = [
            LaunchArg::Scalar(ScalarValue::Bool(true)),
            LaunchArg::Scalar(ScalarValue::Bool(false)),
            LaunchArg::Scalar(ScalarValue::F32(0.5)),
            LaunchArg::Scalar(ScalarValue::I64(-3)),
            LaunchArg::Scalar(ScalarValue::U32(7)),
        ];
        assert_eq!(
            raw_args(&args),
            vec![RawArg::I32(1), RawArg::I32(0), RawArg::F32(0.5), RawArg::I64(-3), RawArg::U32(7)]
        );
    }
}
