//! Device scratch reused across launches, for timing loops.
//!
//! The ops' `launch` allocates (and zero-fills, which synchronizes the stream) fresh
//! intermediates on every call; that is fine for one call but it puts an allocation,
//! a memset and a host round trip inside every timed iteration. The ops'
//! `launch_with(&scratch, ..)` variants run the same kernels with the same grids and
//! arguments, taking their intermediates from a [`Scratch`] instead: allocated (poisoned)
//! on the first call, reused while the shapes stay the same, so later calls only
//! enqueue kernels.

use std::cell::RefCell;

use tessera_codegen::ir::DType;
use tessera_runtime::{DeviceTensor, Runtime};

use crate::error::KernelError;

/// Intermediates kept between launches (see the module docs). Not `Sync`: one per thread.
#[derive(Default)]
pub struct Scratch {
    bufs: RefCell<Vec<Option<DeviceTensor>>>,
}

impl Scratch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Slot `slot`'s tensor: reused when it has `dtype` and `shape`, else allocated anew
    /// with every byte 0xFF (NaN / -1), so a kernel that fails to write its part shows.
    pub fn get(&self, rt: &Runtime, slot: usize, dtype: DType, shape: &[usize]) -> Result<DeviceTensor, KernelError> {
        let mut bufs = self.bufs.borrow_mut();
        if bufs.len() <= slot {
            bufs.resize(slot + 1, None);
        }
        if let Some(t) = &bufs[slot] {
            if t.dtype() == dtype && t.shape() == shape {
                return Ok(t.clone());
            }
        }
        let t = DeviceTensor::poisoned(rt.stream(), dtype, shape)?;
        bufs[slot] = Some(t.clone());
        Ok(t)
    }

    /// Poisons every tensor held (before a checked run).
    pub fn poison(&self) -> Result<(), KernelError> {
        for t in self.bufs.borrow().iter().flatten() {
            t.poison()?;
        }
        Ok(())
    }

    /// Frees every tensor held.
    pub fn clear(&self) {
        self.bufs.borrow_mut().clear();
    }
}
