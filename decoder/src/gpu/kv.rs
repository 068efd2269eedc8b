//! The GPU KV cache: per layer, K and V of shape `[batch, kv_heads, capacity, head_dim]`
//! bf16 (the layout of tessera-kernels' attention ops), preallocated to the context. All
//! sequences of a batch have the same length.

use tessera_codegen::ir::DType;
use tessera_runtime::{DeviceTensor, Runtime};

use super::kernels::FillUniform;
use super::GpuError;
use crate::config::LlamaConfig;

/// K/V of every layer and the number of positions filled.
pub struct GpuKvCache {
    pub k: Vec<DeviceTensor>,
    pub v: Vec<DeviceTensor>,
    pub batch: usize,
    pub capacity: usize,
    /// Positions filled (the same for every sequence).
    pub len: usize,
}

impl GpuKvCache {
    /// Bytes a cache of `capacity` positions for `batch` sequences takes.
    pub fn bytes_for(c: &LlamaConfig, batch: usize, capacity: usize) -> usize {
        2 * c.n_layers * batch * c.kv_dim() * capacity * 2
    }

    /// A zeroed cache.
    pub fn new(rt: &Runtime, c: &LlamaConfig, batch: usize, capacity: usize) -> Result<Self, GpuError> {
        if batch == 0 || capacity == 0 {
            return Err(GpuError::Config(format!("batch {batch} and context {capacity} must be at least 1")));
        }
        let shape = [batch, c.n_kv_heads, capacity, c.head_dim];
        let alloc = || DeviceTensor::zeros(rt.stream(), DType::BF16, &shape);
        let k = (0..c.n_layers).map(|_| alloc()).collect::<Result<Vec<_>, _>>()?;
        let v = (0..c.n_layers).map(|_| alloc()).collect::<Result<Vec<_>, _>>()?;
        Ok(GpuKvCache { k, v, batch, capacity, len: 0 })
    }

    /// Fills every position with uniform values in `±scale` and marks the first `len` as
    /// filled (speed runs at long context, where the values do not matter).
    pub fn fill_random(&mut self, rt: &Runtime, len: usize, seed: u64, scale: f32) -> Result<(), GpuError> {
        if len > self.capacity {
            return Err(GpuError::Config(format!("{len} positions exceed the cache of {}", self.capacity)));
        }
        let fill = FillUniform::new(rt)?;
        for (i, t) in self.k.iter().chain(&self.v).enumerate() {
            fill.fill(rt, t, seed.wrapping_add(i as u64 * 7919), scale)?;
        }
        rt.synchronize()?;
        self.len = len;
        Ok(())
    }

    /// Positions still free.
    pub fn remaining(&self) -> usize {
        self.capacity - self.len
    }
}
