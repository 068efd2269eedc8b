//! Locating and preloading cuBLAS (`libcublasLt` + `libcublas`) before cudarc touches it.
//!
//! Same reason as for NVRTC ([`crate::libs`]): cudarc 0.19 (`dynamic-loading`) dlopens bare
//! names (`libcublas.so.13`, then older majors) and *panics* when none loads, and
//! `libcublas` needs `libcublasLt` from its own folder. So both are found here and preloaded
//! by absolute path with `RTLD_NOW | RTLD_GLOBAL`, Lt first; cudarc's later bare-name
//! dlopen resolves to the loaded object through its SONAME.
//!
//! Search order for the folder (the first holding both libraries of one major version,
//! 13 before 12):
//! 1. the NVRTC folders of [`crate::libs::search_dirs`]: `TESSERA_CUDA_LIB_DIR`,
//!    `LD_LIBRARY_PATH`, `/usr/local/cuda/lib64`, `/usr/local/cuda-13*/lib64`,
//!    `$HOME/.cache/tessera/cuda/nvidia/cu13/lib`;
//! 2. Python `site-packages/nvidia/{cu13,cublas}/lib` (the torch wheels; asks `python3`);
//! 3. the system loader path, as cudarc itself would.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Result, RuntimeError};
use crate::libs;

/// The library pairs tried, newest first: `(libcublasLt, libcublas)`.
pub const CUBLAS_LIBS: &[(&str, &str)] =
    &[("libcublasLt.so.13", "libcublas.so.13"), ("libcublasLt.so.12", "libcublas.so.12")];

/// Where cuBLAS was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CublasLocation {
    /// The `libcublas.so.N` preloaded; `None` when it came from the system loader path.
    pub path: Option<PathBuf>,
    /// Folders looked at before it was found.
    pub searched: Vec<PathBuf>,
}

#[derive(Clone, Debug)]
enum Failure {
    NotFound(Vec<PathBuf>),
    Load { path: PathBuf, message: String },
}

static CUBLAS: OnceLock<std::result::Result<CublasLocation, Failure>> = OnceLock::new();

/// Finds and preloads cuBLAS once per process. Never panics: a missing library is
/// [`RuntimeError::CublasNotFound`].
pub fn ensure_cublas() -> Result<&'static CublasLocation> {
    match CUBLAS.get_or_init(locate_and_preload) {
        Ok(loc) => Ok(loc),
        Err(Failure::NotFound(searched)) => Err(RuntimeError::CublasNotFound { searched: searched.clone() }),
        Err(Failure::Load { path, message }) => {
            Err(RuntimeError::LibraryLoad { path: path.clone(), message: message.clone() })
        }
    }
}

/// The pair of [`CUBLAS_LIBS`] that `dir` holds completely, if any (newest first).
pub fn find_cublas(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    CUBLAS_LIBS.iter().map(|(lt, b)| (dir.join(lt), dir.join(b))).find(|(lt, b)| lt.is_file() && b.is_file())
}

fn locate_and_preload() -> std::result::Result<CublasLocation, Failure> {
    let mut searched = Vec::new();
    let mut first_load_error = None;
    let mut dirs = libs::search_dirs();
    let python = libs::python_lib_dirs(&["nvidia/cu13/lib", "nvidia/cublas/lib"]);
    dirs.extend(python.into_iter().filter(|d| !dirs.contains(d)).collect::<Vec<_>>());
    for dir in dirs {
        let Some((lt, blas)) = find_cublas(&dir) else {
            searched.push(dir);
            continue;
        };
        match libs::preload_global(&lt).and_then(|()| libs::preload_global(&blas)) {
            Ok(()) => {
                tracing::debug!(path = %blas.display(), "preloaded cuBLAS");
                return Ok(CublasLocation { path: Some(blas), searched });
            }
            Err((path, message)) => {
                tracing::warn!(dir = %dir.display(), "cuBLAS found but failed to load: {message}");
                searched.push(dir);
                first_load_error.get_or_insert(Failure::Load { path, message });
            }
        }
    }
    // SAFETY: only dlopens and closes candidate names.
    if unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Ok(CublasLocation { path: None, searched });
    }
    Err(first_load_error.unwrap_or(Failure::NotFound(searched)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_detection_prefers_13() {
        let dir = std::env::temp_dir().join(format!("tessera-cublas-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(find_cublas(&dir), None);
        std::fs::write(dir.join("libcublas.so.13"), b"").unwrap();
        assert_eq!(find_cublas(&dir), None, "libcublasLt is required too");
        std::fs::write(dir.join("libcublasLt.so.12"), b"").unwrap();
        std::fs::write(dir.join("libcublas.so.12"), b"").unwrap();
        assert_eq!(find_cublas(&dir), Some((dir.join("libcublasLt.so.12"), dir.join("libcublas.so.12"))));
        std::fs::write(dir.join("libcublasLt.so.13"), b"").unwrap();
        assert_eq!(find_cublas(&dir), Some((dir.join("libcublasLt.so.13"), dir.join("libcublas.so.13"))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ensure_cublas_never_panics() {
        match ensure_cublas() {
            Ok(loc) => eprintln!("cuBLAS: {loc:?}"),
            Err(e) => eprintln!("cuBLAS not available here: {e}"),
        }
    }
}
