//! The JIT cache: PTX and CUBIN by source digest, in memory and on disk.
//!
//! Key: `sha256(source, NUL, compile options)` in hex, then the real architecture and the
//! NVRTC version (`<hex>-sm_90a-nvrtc13.0`). An entry lives in memory for the life of the
//! cache and on disk as `<dir>/<key>.ptx` or `<dir>/<key>.cubin`, so a second process start
//! loads it instead of recompiling. Disk writes are atomic (temporary file in the same
//! folder, then rename), and a disk failure only costs a recompile, never an error.
//!
//! Kernels are loaded from CUBIN ([`PtxCache::get_or_compile_cubin`]): loading PTX makes the
//! driver run ptxas at every module load, one kernel after another, which dominated the
//! autotuner's per-candidate time; a CUBIN is assembled once by NVRTC (on whichever CPU
//! thread compiles it) and loads in microseconds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::nvrtc;

/// Hit and miss counters (monotonic since the cache was created).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Found in memory.
    pub memory_hits: u64,
    /// Found on disk (then kept in memory).
    pub disk_hits: u64,
    /// Compiled.
    pub misses: u64,
    /// Disk writes that failed (the entry was still returned).
    pub write_errors: u64,
}

/// The folder of the on-disk cache: `TESSERA_CACHE_DIR` if set, else
/// `<user cache dir>/tessera/ptx`; `None` when neither is known.
pub fn default_cache_dir() -> Option<PathBuf> {
    match std::env::var_os("TESSERA_CACHE_DIR") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => dirs::cache_dir().map(|d| d.join("tessera").join("ptx")),
    }
}

/// The cache key of `source` compiled with `options` for `arch` by NVRTC `version`.
pub fn cache_key(source: &str, options: &[String], arch: &str, version: (i32, i32)) -> String {
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update([0u8]);
    h.update(options.join(" ").as_bytes());
    format!("{}-{arch}-nvrtc{}.{}", hex::encode(h.finalize()), version.0, version.1)
}

/// What an entry holds: its file extension and how a file read back is validated.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Ptx,
    Cubin,
}

impl Kind {
    fn ext(self) -> &'static str {
        match self {
            Kind::Ptx => "ptx",
            Kind::Cubin => "cubin",
        }
    }

    /// A truncated or foreign file is a miss (and gets overwritten).
    fn valid(self, bytes: &[u8]) -> bool {
        match self {
            Kind::Ptx => std::str::from_utf8(bytes).is_ok_and(|t| t.contains(".version") && t.contains(".target")),
            Kind::Cubin => bytes.starts_with(b"\x7fELF"),
        }
    }
}

/// A thread-safe cache of compiled kernels (PTX text and CUBIN images). Compilation
/// happens outside the lock, so threads compile different kernels in parallel (two
/// threads missing on the same key both compile; the results are identical).
#[derive(Debug)]
pub struct PtxCache {
    dir: Option<PathBuf>,
    /// Keyed by `<key>.<ext>`.
    mem: Mutex<HashMap<String, Arc<[u8]>>>,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    misses: AtomicU64,
    write_errors: AtomicU64,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl PtxCache {
    /// A cache with its disk part in `dir` (created on first write), or memory only.
    pub fn new(dir: Option<PathBuf>) -> Self {
        PtxCache {
            dir,
            mem: Mutex::new(HashMap::new()),
            memory_hits: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
        }
    }

    /// A cache in [`default_cache_dir`].
    pub fn with_default_dir() -> Self {
        Self::new(default_cache_dir())
    }

    /// The disk folder, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
        }
    }

    /// Drops the in-memory entries (the disk stays), e.g. to simulate a new process.
    pub fn clear_memory(&self) {
        self.mem.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The PTX of `source`'s `entry` for `arch`: from memory, from disk, or compiled by
    /// NVRTC (then stored in both).
    pub fn get_or_compile(&self, source: &str, entry: &str, arch: &str) -> Result<Arc<str>> {
        let options = nvrtc::ptx_options(arch)?;
        let key = cache_key(source, &options, &nvrtc::real_arch(arch)?, nvrtc::nvrtc_version()?);
        self.get_or_insert_with(&key, || Ok(nvrtc::compile_ptx(source, entry, arch)?.ptx))
    }

    /// The CUBIN of `source`'s `entry` for the real architecture of `arch` (`sm_90a`):
    /// from memory, from disk, or compiled by NVRTC (then stored in both).
    pub fn get_or_compile_cubin(&self, source: &str, entry: &str, arch: &str) -> Result<Arc<[u8]>> {
        let options = nvrtc::cubin_options(arch)?;
        let key = cache_key(source, &options, &nvrtc::real_arch(arch)?, nvrtc::nvrtc_version()?);
        self.get_or_insert_binary_with(&key, || nvrtc::compile_cubin_image(source, entry, arch))
    }

    /// The PTX entry for `key`, or `compile()`'s result stored under it. The building
    /// block of [`get_or_compile`](Self::get_or_compile), usable without NVRTC.
    pub fn get_or_insert_with(&self, key: &str, compile: impl FnOnce() -> Result<String>) -> Result<Arc<str>> {
        let bytes = self.entry(Kind::Ptx, key, || compile().map(String::into_bytes))?;
        // Validated as UTF-8 on the way in (compiled text) or back from disk.
        Ok(Arc::from(String::from_utf8_lossy(&bytes).as_ref()))
    }

    /// The CUBIN entry for `key`, or `compile()`'s result stored under it (see
    /// [`get_or_insert_with`](Self::get_or_insert_with)).
    pub fn get_or_insert_binary_with(&self, key: &str, compile: impl FnOnce() -> Result<Vec<u8>>) -> Result<Arc<[u8]>> {
        self.entry(Kind::Cubin, key, compile)
    }

    fn entry(&self, kind: Kind, key: &str, compile: impl FnOnce() -> Result<Vec<u8>>) -> Result<Arc<[u8]>> {
        let name = format!("{key}.{}", kind.ext());
        if let Some(p) = self.mem.lock().unwrap_or_else(|e| e.into_inner()).get(&name) {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(p.clone());
        }
        if let Some(p) = self.read_disk(kind, &name) {
            self.disk_hits.fetch_add(1, Ordering::Relaxed);
            let p: Arc<[u8]> = p.into();
            self.mem.lock().unwrap_or_else(|e| e.into_inner()).insert(name, p.clone());
            return Ok(p);
        }
        let bytes = compile()?;
        self.misses.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.write_disk(&name, &bytes) {
            self.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(key, "could not write the kernel cache: {e}");
        }
        let p: Arc<[u8]> = bytes.into();
        self.mem.lock().unwrap_or_else(|e| e.into_inner()).insert(name, p.clone());
        Ok(p)
    }

    fn read_disk(&self, kind: Kind, name: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.dir.as_ref()?.join(name)).ok()?;
        kind.valid(&bytes).then_some(bytes)
    }

    fn write_disk(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let Some(dir) = self.dir.as_ref() else { return Ok(()) };
        std::fs::create_dir_all(dir)?;
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        let res = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, dir.join(name)));
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RuntimeError;

    fn temp_dir(tag: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("tessera-cache-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    const FAKE_PTX: &str = "//\n.version 9.0\n.target sm_90a\n.address_size 64\n";

    #[test]
    fn key_depends_on_everything() {
        let o = vec!["--std=c++17".to_string()];
        let k = cache_key("src", &o, "sm_90a", (13, 0));
        assert!(k.ends_with("-sm_90a-nvrtc13.0"));
        assert_eq!(k.len(), 64 + "-sm_90a-nvrtc13.0".len());
        assert_eq!(k, cache_key("src", &o, "sm_90a", (13, 0)));
        assert_ne!(k, cache_key("src2", &o, "sm_90a", (13, 0)));
        assert_ne!(k, cache_key("src", &[], "sm_90a", (13, 0)));
        assert_ne!(k, cache_key("src", &o, "sm_80", (13, 0)));
        assert_ne!(k, cache_key("src", &o, "sm_90a", (13, 1)));
    }

    #[test]
    fn memory_then_disk_then_miss() {
        let dir = temp_dir("mem");
        let c = PtxCache::new(Some(dir.clone()));
        let mut compiles = 0;
        let mut get = |c: &PtxCache| {
            c.get_or_insert_with("k1", || {
                compiles += 1;
                Ok(FAKE_PTX.to_string())
            })
            .unwrap()
        };
        assert_eq!(&*get(&c), FAKE_PTX);
        assert_eq!(&*get(&c), FAKE_PTX);
        assert_eq!(c.stats(), CacheStats { memory_hits: 1, disk_hits: 0, misses: 1, write_errors: 0 });
        assert!(dir.join("k1.ptx").is_file());
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

        // A "new process": same folder, fresh memory.
        let c2 = PtxCache::new(Some(dir.clone()));
        assert_eq!(&*get(&c2), FAKE_PTX);
        assert_eq!(&*get(&c2), FAKE_PTX);
        assert_eq!(c2.stats(), CacheStats { memory_hits: 1, disk_hits: 1, misses: 0, write_errors: 0 });
        assert_eq!(compiles, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_file_is_a_miss_and_gets_replaced() {
        let dir = temp_dir("corrupt");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("k.ptx"), "garbage").unwrap();
        let c = PtxCache::new(Some(dir.clone()));
        c.get_or_insert_with("k", || Ok(FAKE_PTX.into())).unwrap();
        assert_eq!(c.stats().misses, 1);
        assert_eq!(std::fs::read_to_string(dir.join("k.ptx")).unwrap(), FAKE_PTX);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compile_errors_are_not_cached() {
        let c = PtxCache::new(None);
        let e = c.get_or_insert_with("k", || Err(RuntimeError::Driver("boom".into())));
        assert!(e.is_err());
        assert_eq!(c.stats(), CacheStats::default());
        assert!(c.get_or_insert_with("k", || Ok(FAKE_PTX.into())).is_ok());
        assert_eq!(c.stats().misses, 1);
    }

    #[test]
    fn unwritable_dir_still_returns_ptx() {
        // A regular file where the folder should be.
        let f = temp_dir("file");
        std::fs::write(&f, "x").unwrap();
        let c = PtxCache::new(Some(f.clone()));
        assert!(c.get_or_insert_with("k", || Ok(FAKE_PTX.into())).is_ok());
        assert_eq!(c.stats().write_errors, 1);
        std::fs::remove_file(&f).unwrap();
    }

    #[test]
    fn binary_entries_round_trip_and_are_validated() {
        let dir = temp_dir("bin");
        let elf = b"\x7fELF\x02\x01\x01fake cubin".to_vec();
        let c = PtxCache::new(Some(dir.clone()));
        let got = c.get_or_insert_binary_with("k", || Ok(elf.clone())).unwrap();
        assert_eq!(&*got, &elf[..]);
        assert!(dir.join("k.cubin").is_file());
        // A PTX entry of the same key is a different entry.
        c.get_or_insert_with("k", || Ok(FAKE_PTX.into())).unwrap();
        assert_eq!(c.stats().misses, 2);
        let c2 = PtxCache::new(Some(dir.clone()));
        assert_eq!(&*c2.get_or_insert_binary_with("k", || panic!("must come from disk")).unwrap(), &elf[..]);
        // A file that is not an ELF image is a miss and gets replaced.
        std::fs::write(dir.join("k2.cubin"), "garbage").unwrap();
        c2.get_or_insert_binary_with("k2", || Ok(elf.clone())).unwrap();
        assert_eq!(c2.stats(), CacheStats { memory_hits: 0, disk_hits: 1, misses: 1, write_errors: 0 });
        assert_eq!(std::fs::read(dir.join("k2.cubin")).unwrap(), elf);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nvrtc_compile_twice_hits_disk() {
        if let Err(e) = crate::libs::ensure_nvrtc() {
            eprintln!("SKIP nvrtc_compile_twice_hits_disk: {e}");
            return;
        }
        let dir = temp_dir("nvrtc");
        let src = "extern \"C\" __global__ void tiny(float* p) { p[threadIdx.x] = exp2f((float)threadIdx.x); }\n";
        let c = PtxCache::new(Some(dir.clone()));
        let p1 = c.get_or_compile(src, "tiny", "sm_90a").unwrap();
        assert!(p1.contains(".entry tiny") && p1.contains(".target sm_90a"), "{p1}");
        assert_eq!(c.stats().misses, 1);
        let c2 = PtxCache::new(Some(dir.clone()));
        let p2 = c2.get_or_compile(src, "tiny", "sm_90a").unwrap();
        assert_eq!(p1, p2);
        assert_eq!(c2.stats(), CacheStats { memory_hits: 0, disk_hits: 1, misses: 0, write_errors: 0 });
        let b1 = c2.get_or_compile_cubin(src, "tiny", "sm_90a").unwrap();
        assert!(b1.starts_with(b"\x7fELF"));
        let c3 = PtxCache::new(Some(dir.clone()));
        assert_eq!(c3.get_or_compile_cubin(src, "tiny", "sm_90a").unwrap(), b1);
        assert_eq!(c3.stats().disk_hits, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
