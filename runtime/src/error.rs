//! The one error type of the runtime.

use std::path::PathBuf;

use tessera_codegen::ir::DType;

/// Everything that can go wrong between emitted CUDA C++ and a finished launch.
///
/// Argument errors ([`ArgCount`](Self::ArgCount), [`ArgKind`](Self::ArgKind),
/// [`DType`](Self::DType), [`Rank`](Self::Rank), [`ReadOnly`](Self::ReadOnly),
/// [`EmptyGrid`](Self::EmptyGrid), [`GridLimit`](Self::GridLimit)) are detected before
/// anything is sent to the GPU.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No `libnvrtc` was found in any of the searched folders nor on the loader path.
    #[error(
        "NVRTC (libnvrtc.so.13) not found; searched {searched:?} and the system loader path. \
         Set TESSERA_CUDA_LIB_DIR to the folder holding libnvrtc.so.13 and libnvrtc-builtins.so.13.*"
    )]
    NvrtcNotFound {
        /// Folders that were looked at, in order.
        searched: Vec<PathBuf>,
    },
    /// No `libcublas` (with its `libcublasLt`) was found.
    #[error(
        "cuBLAS (libcublas.so.13 + libcublasLt.so.13, or .12) not found; searched {searched:?}, Python \
         site-packages nvidia/{{cu13,cublas}}/lib and the system loader path. Set TESSERA_CUDA_LIB_DIR \
         or LD_LIBRARY_PATH to the folder holding them (e.g. a torch wheel's nvidia/cu13/lib)"
    )]
    CublasNotFound {
        /// Folders that were looked at, in order.
        searched: Vec<PathBuf>,
    },
    /// A cuBLAS call failed, or its arguments were refused before the call.
    #[error("cuBLAS: {0}")]
    Blas(String),
    /// A library was found but could not be loaded (wrong architecture, missing dependency).
    #[error("failed to load {path}: {message}")]
    LibraryLoad {
        /// The library's path.
        path: PathBuf,
        /// The loader's message.
        message: String,
    },
    /// No CUDA driver library (`libcuda.so`) on the loader path.
    #[error("no CUDA driver: libcuda.so cannot be loaded (is this a machine with an NVIDIA GPU?)")]
    NoDriver,
    /// The driver loaded but there is no device with the requested ordinal.
    #[error("no CUDA device with ordinal {ordinal} ({count} found)")]
    NoDevice {
        /// The requested ordinal.
        ordinal: usize,
        /// How many devices the driver reports.
        count: usize,
    },
    /// NVRTC rejected the source.
    #[error("NVRTC compilation of `{entry}` failed:\n{log}\n{excerpt}")]
    Compile {
        /// Entry point being compiled.
        entry: String,
        /// The full NVRTC program log.
        log: String,
        /// Numbered lines of the source around the first error (±2 lines), empty when the
        /// log names no line.
        excerpt: String,
    },
    /// A launch failed in the driver.
    #[error("launch of `{kernel}` failed: {message}")]
    Launch {
        /// Kernel name.
        kernel: String,
        /// The driver's message.
        message: String,
    },
    /// Wrong number of launch arguments.
    #[error("kernel `{kernel}` takes {expected} arguments, got {got}")]
    ArgCount {
        /// Kernel name.
        kernel: String,
        /// Parameters in the signature.
        expected: usize,
        /// Arguments given.
        got: usize,
    },
    /// A tensor given for a scalar parameter or the reverse.
    #[error("argument `{param}`: expected a {expected}, got a {got}")]
    ArgKind {
        /// Parameter name.
        param: String,
        /// "tensor" or "scalar".
        expected: &'static str,
        /// "tensor" or "scalar".
        got: &'static str,
    },
    /// Element or scalar type mismatch.
    #[error("argument `{param}`: expected dtype {expected}, got {got}")]
    DType {
        /// Parameter name.
        param: String,
        /// The signature's dtype.
        expected: DType,
        /// The argument's dtype.
        got: DType,
    },
    /// Tensor rank mismatch.
    #[error("argument `{param}`: expected a rank-{expected} tensor, got rank {got}")]
    Rank {
        /// Parameter name.
        param: String,
        /// The signature's rank.
        expected: usize,
        /// The tensor's rank.
        got: usize,
    },
    /// A writable (output) parameter was given a tensor marked read-only.
    #[error("argument `{param}` is written by the kernel but the tensor is marked read-only")]
    ReadOnly {
        /// Parameter name.
        param: String,
    },
    /// A grid dimension is zero.
    #[error("empty launch grid {grid:?}")]
    EmptyGrid {
        /// The grid given.
        grid: [u32; 3],
    },
    /// A grid dimension exceeds the hardware limit (x < 2^31, y and z ≤ 65535).
    #[error("launch grid {grid:?} exceeds the limits [2147483647, 65535, 65535]")]
    GridLimit {
        /// The grid given.
        grid: [u32; 3],
    },
    /// More shared memory than the device allows per block.
    #[error("kernel needs {requested} bytes of shared memory per block; the device allows {limit}")]
    SharedMemory {
        /// Static plus dynamic bytes.
        requested: usize,
        /// `MAX_SHARED_MEMORY_PER_BLOCK_OPTIN`.
        limit: usize,
    },
    /// More threads per block than the compiled function allows (registers) or than 1024.
    #[error("kernel `{kernel}` needs {requested} threads per block; the compiled function allows {limit}")]
    Threads {
        /// Kernel name.
        kernel: String,
        /// Threads per block.
        requested: u32,
        /// `CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK`.
        limit: u32,
    },
    /// A tensor view or upload that does not fit its buffer or has a bad shape.
    #[error("bad tensor: {0}")]
    Tensor(String),
    /// Any other CUDA driver or NVRTC API failure.
    #[error("CUDA driver: {0}")]
    Driver(String),
    /// Cache file I/O.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl From<cudarc::driver::DriverError> for RuntimeError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        RuntimeError::Driver(e.to_string())
    }
}

impl From<cudarc::cublas::result::CublasError> for RuntimeError {
    fn from(e: cudarc::cublas::result::CublasError) -> Self {
        RuntimeError::Blas(e.to_string())
    }
}

impl From<cudarc::nvrtc::result::NvrtcError> for RuntimeError {
    fn from(e: cudarc::nvrtc::result::NvrtcError) -> Self {
        RuntimeError::Driver(format!("NVRTC: {e}"))
    }
}

/// Shorthand for `Result<T, RuntimeError>`.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// The numbered source lines around the first `(<line>): error` in an NVRTC log, ±2 lines,
/// with the error line marked `>`. Empty when the log names no line.
pub fn error_excerpt(log: &str, source: &str) -> String {
    let Some(line) = first_error_line(log) else { return String::new() };
    let lines: Vec<&str> = source.lines().collect();
    if line == 0 || line > lines.len() {
        return String::new();
    }
    let lo = line.saturating_sub(2).max(1);
    let hi = (line + 2).min(lines.len());
    let width = hi.to_string().len();
    let mut out = String::new();
    for n in lo..=hi {
        let mark = if n == line { '>' } else { ' ' };
        out.push_str(&format!("{mark}{n:>width$} | {}\n", lines[n - 1]));
    }
    out
}

/// The 1-based source line of the first error in an NVRTC log (`name(12): error: ...`).
pub fn first_error_line(log: &str) -> Option<usize> {
    for l in log.lines() {
        let Some(pos) = l.find("): error") else { continue };
        let head = &l[..pos];
        let Some(open) = head.rfind('(') else { continue };
        if let Ok(n) = head[open + 1..].trim().parse::<usize>() {
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_first_error_line() {
        let log = "k.cu(3): warning: x\nk.cu(5): error: identifier \"y\" is undefined\nk.cu(9): error: z\n";
        assert_eq!(first_error_line(log), Some(5));
        assert_eq!(first_error_line("all good"), None);
        assert_eq!(first_error_line("weird(): error: no line"), None);
    }

    #[test]
    fn excerpt_is_numbered_and_clamped() {
        let src = "a\nb\nc\nd\ne\nf\n";
        let ex = error_excerpt("t.cu(2): error: bad", src);
        assert_eq!(ex, " 1 | a\n>2 | b\n 3 | c\n 4 | d\n");
        let ex = error_excerpt("t.cu(6): error: bad", src);
        assert_eq!(ex, " 4 | d\n 5 | e\n>6 | f\n");
        assert_eq!(error_excerpt("t.cu(60): error: bad", src), "");
    }
}
