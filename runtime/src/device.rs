//! One CUDA device: its context, default stream, description and kernel cache.

use std::sync::Arc;

use cudarc::driver::sys::CUdevice_attribute as Attr;
use cudarc::driver::{CudaContext, CudaStream};

use crate::cache::PtxCache;
use crate::error::{Result, RuntimeError};
use crate::libs;

/// What the driver says about a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device ordinal.
    pub ordinal: usize,
    /// Marketing name (`NVIDIA H200`).
    pub name: String,
    /// Compute capability `(major, minor)`.
    pub compute_capability: (i32, i32),
    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, as nvidia-smi prints it.
    pub uuid: String,
    /// PCI address `dddd:bb:dd.0`.
    pub pci_bus_id: String,
    /// CUDA driver API version `(major, minor)` (13.0 for driver 580).
    pub driver_version: (i32, i32),
    /// Global memory, in bytes.
    pub total_mem: usize,
    /// Streaming multiprocessors.
    pub sm_count: u32,
    /// Shared memory per block without opt-in (48 KiB).
    pub max_shared_per_block: usize,
    /// Shared memory per block with `MAX_DYNAMIC_SHARED_SIZE_BYTES` opt-in (227 KiB on sm_90).
    pub max_shared_per_block_optin: usize,
    /// L2 cache size, in bytes.
    pub l2_bytes: usize,
}

impl DeviceInfo {
    /// The NVRTC architecture for this device (see [`arch_for`]).
    pub fn arch(&self) -> String {
        arch_for(self.compute_capability)
    }
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (ma, mi) = self.compute_capability;
        write!(
            f,
            "[{}] {} (cc {ma}.{mi}, {}, {} SMs, {:.1} GiB, smem/block opt-in {} KiB, L2 {} MiB, {}, {})",
            self.ordinal,
            self.name,
            self.arch(),
            self.sm_count,
            self.total_mem as f64 / (1u64 << 30) as f64,
            self.max_shared_per_block_optin / 1024,
            self.l2_bytes >> 20,
            self.pci_bus_id,
            self.uuid
        )
    }
}

/// The NVRTC architecture for a compute capability: `sm_90a` for 9.0 (so wgmma and
/// setmaxnreg are available), `sm_XY` otherwise.
pub fn arch_for(cc: (i32, i32)) -> String {
    match cc {
        (9, 0) => "sm_90a".to_string(),
        (ma, mi) => format!("sm_{ma}{mi}"),
    }
}

/// Formats 16 UUID bytes as `GPU-8-4-4-4-12`.
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let h = hex::encode(bytes);
    format!("GPU-{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Number of CUDA devices; [`RuntimeError::NoDriver`] without libcuda.
pub fn device_count() -> Result<usize> {
    libs::ensure_driver()?;
    Ok(CudaContext::device_count()?.max(0) as usize)
}

/// The driver API version `(major, minor)`; [`RuntimeError::NoDriver`] without libcuda.
pub fn driver_version() -> Result<(i32, i32)> {
    libs::ensure_driver()?;
    let mut v = 0;
    // SAFETY: plain out-parameter; needs no context.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) }.result()?;
    Ok((v / 1000, (v % 1000) / 10))
}

/// A CUDA device ready for kernels: context (the primary one), default stream, device
/// description and a kernel cache (PTX and CUBIN).
///
/// cudarc's per-buffer event tracking is turned off: ordering is stream order. Everything
/// issued on [`stream`](Self::stream) is ordered; a caller using extra streams must
/// synchronise them itself and keep tensors alive until their work is done.
#[derive(Debug)]
pub struct Runtime {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    info: DeviceInfo,
    cache: Arc<PtxCache>,
}

impl Runtime {
    /// Opens device `ordinal` with a cache in [`crate::cache::default_cache_dir`].
    pub fn new(ordinal: usize) -> Result<Runtime> {
        Self::with_cache(ordinal, Arc::new(PtxCache::with_default_dir()))
    }

    /// Opens device `ordinal` sharing `cache` (e.g. one cache for several devices).
    pub fn with_cache(ordinal: usize, cache: Arc<PtxCache>) -> Result<Runtime> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(RuntimeError::NoDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal)?;
        // SAFETY: done before this runtime allocates anything; see the type's docs.
        unsafe { ctx.disable_event_tracking() };
        let info = query_info(&ctx)?;
        let stream = ctx.default_stream();
        tracing::debug!("opened {info}");
        Ok(Runtime { ctx, stream, info, cache })
    }

    /// The device description.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The NVRTC architecture of the device (`sm_90a` on an H200).
    pub fn arch(&self) -> String {
        self.info.arch()
    }

    /// The cudarc context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The context's default stream, used by tensors and launches unless told otherwise.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// A new stream on this device.
    pub fn new_stream(&self) -> Result<Arc<CudaStream>> {
        Ok(self.ctx.new_stream()?)
    }

    /// Waits for all work on the device.
    pub fn synchronize(&self) -> Result<()> {
        Ok(self.ctx.synchronize()?)
    }

    /// The kernel cache.
    pub fn cache(&self) -> &Arc<PtxCache> {
        &self.cache
    }
}

fn query_info(ctx: &Arc<CudaContext>) -> Result<DeviceInfo> {
    let attr = |a: Attr| -> Result<i64> { Ok(ctx.attribute(a)? as i64) };
    let uuid = ctx.uuid()?;
    let uuid_bytes: [u8; 16] = uuid.bytes.map(|b| b as u8);
    let pci = format!(
        "{:04x}:{:02x}:{:02x}.0",
        attr(Attr::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID)?,
        attr(Attr::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID)?,
        attr(Attr::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID)?
    );
    Ok(DeviceInfo {
        ordinal: ctx.ordinal(),
        name: ctx.name()?,
        compute_capability: ctx.compute_capability()?,
        uuid: format_uuid(&uuid_bytes),
        pci_bus_id: pci,
        driver_version: driver_version()?,
        total_mem: ctx.total_mem()?,
        sm_count: attr(Attr::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32,
        max_shared_per_block: attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK)? as usize,
        max_shared_per_block_optin: attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)? as usize,
        l2_bytes: attr(Attr::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)? as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_strings() {
        assert_eq!(arch_for((9, 0)), "sm_90a");
        assert_eq!(arch_for((8, 0)), "sm_80");
        assert_eq!(arch_for((8, 9)), "sm_89");
        assert_eq!(arch_for((10, 0)), "sm_100");
    }

    #[test]
    fn uuid_format() {
        let b: [u8; 16] = std::array::from_fn(|i| i as u8 * 17);
        assert_eq!(format_uuid(&b), "GPU-00112233-4455-6677-8899-aabbccddeeff");
    }

    #[test]
    fn no_driver_is_an_error_not_a_panic() {
        if libs::driver_present() {
            eprintln!("SKIP no_driver_is_an_error_not_a_panic: a driver is present");
            return;
        }
        assert!(matches!(Runtime::new(0), Err(RuntimeError::NoDriver)));
        assert!(matches!(device_count(), Err(RuntimeError::NoDriver)));
    }
}
