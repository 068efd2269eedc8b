//! `tessera doctor`: what the runtime can find on this machine.

use std::path::PathBuf;

use crate::device::{self, DeviceInfo};
use crate::{cache, libs, nvrtc};

/// NVRTC's state.
#[derive(Clone, Debug)]
pub struct NvrtcReport {
    /// Where it was loaded from.
    pub location: libs::NvrtcLocation,
    /// `(major, minor)`, or the error asking for it.
    pub version: Result<(i32, i32), String>,
    /// Real architectures it can target.
    pub archs: Vec<i32>,
}

/// Everything `tessera doctor` prints. Building it never panics.
#[derive(Clone, Debug)]
pub struct DoctorReport {
    /// NVRTC, or why it is unavailable.
    pub nvrtc: Result<NvrtcReport, String>,
    /// Whether libcuda loads.
    pub driver_present: bool,
    /// Driver API version, or why unknown.
    pub driver_version: Result<(i32, i32), String>,
    /// Each device, or why none could be listed / opened.
    pub devices: Result<Vec<Result<DeviceInfo, String>>, String>,
    /// The kernel cache folder (PTX and CUBIN).
    pub cache_dir: Option<PathBuf>,
}

/// Probes NVRTC, the driver, devices and the cache folder.
pub fn doctor() -> DoctorReport {
    let nvrtc = libs::ensure_nvrtc().map_err(|e| e.to_string()).map(|loc| NvrtcReport {
        location: loc.clone(),
        version: nvrtc::nvrtc_version().map_err(|e| e.to_string()),
        archs: nvrtc::supported_archs().unwrap_or_default(),
    });
    let driver_present = libs::driver_present();
    let driver_version = device::driver_version().map_err(|e| e.to_string());
    let devices = device::device_count().map_err(|e| e.to_string()).map(|n| {
        (0..n).map(|i| crate::Runtime::new(i).map(|rt| rt.info().clone()).map_err(|e| e.to_string())).collect()
    });
    DoctorReport { nvrtc, driver_present, driver_version, devices, cache_dir: cache::default_cache_dir() }
}

impl std::fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.nvrtc {
            Ok(n) => {
                let v = match &n.version {
                    Ok((a, b)) => format!("{a}.{b}"),
                    Err(e) => format!("unknown ({e})"),
                };
                writeln!(f, "NVRTC:   {v} from {}; archs {:?}", n.location, n.archs)?;
            }
            Err(e) => writeln!(f, "NVRTC:   not available: {e}")?,
        }
        match &self.driver_version {
            Ok((a, b)) => writeln!(f, "driver:  CUDA {a}.{b}")?,
            Err(e) => writeln!(f, "driver:  {} ({e})", if self.driver_present { "present" } else { "absent" })?,
        }
        match &self.devices {
            Ok(ds) if ds.is_empty() => writeln!(f, "devices: none")?,
            Ok(ds) => {
                for d in ds {
                    match d {
                        Ok(info) => writeln!(f, "device:  {info}")?,
                        Err(e) => writeln!(f, "device:  error: {e}")?,
                    }
                }
            }
            Err(e) => writeln!(f, "devices: {e}")?,
        }
        match &self.cache_dir {
            Some(d) => write!(f, "cache:   {}", d.display()),
            None => write!(f, "cache:   none (memory only)"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn doctor_never_panics() {
        let r = super::doctor();
        let text = r.to_string();
        assert!(text.contains("NVRTC:") && text.contains("cache:"), "{text}");
        eprintln!("{text}");
    }
}
