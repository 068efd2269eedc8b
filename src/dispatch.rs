//! Dispatch: which configuration a kernel runs with on this GPU.
//!
//! [`Dispatcher::config_for`] asks the tuning database once per key (kernel, shape bucket,
//! device, versions, source hash, candidate set: [`crate::autotune::target_key`]) and
//! caches the answer. With no fresh record (or a record whose config no longer parses)
//! the target's documented heuristic ([`TuneTarget::heuristic`]) is used and an
//! info-level line says, once per kernel, that the kernel is untuned.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use tessera_runtime::Runtime;
use tessera_tuning_db::{TuneKey, TuningDb};

use crate::autotune::{target_key, DenseDecodeTarget, TuneTarget};
use crate::decode::{DecodeConfig, DecodeShape};

/// Looks configurations up in the tuning database, with a per-process cache.
pub struct Dispatcher<'a> {
    rt: &'a Runtime,
    db: TuningDb,
    cache: HashMap<TuneKey, serde_json::Value>,
    warned: HashSet<&'static str>,
}

impl<'a> Dispatcher<'a> {
    /// Opens the database (`url`, else `TESSERA_DB`, else the default SQLite file).
    pub fn open(rt: &'a Runtime, url: Option<&str>) -> Result<Self> {
        Ok(Dispatcher { rt, db: TuningDb::open(url)?, cache: HashMap::new(), warned: HashSet::new() })
    }

    /// The configuration `target` runs with for `shape`: the tuned winner of its key, else
    /// the heuristic.
    pub fn config_for<T: TuneTarget>(&mut self, target: &T, shape: &T::Shape) -> Result<T::Config> {
        let key = target_key(self.rt, target, shape)?;
        if let Some(c) = self.cache.get(&key) {
            if let Ok(c) = serde_json::from_value(c.clone()) {
                return Ok(c);
            }
        }
        let tuned = match self.db.winner(&key)? {
            Some(w) => match serde_json::from_value::<T::Config>(w.config.clone()) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!("{}: the tuned config {} does not parse ({e}); ignoring it", key.kernel, w.config);
                    None
                }
            },
            None => None,
        };
        let config = match tuned {
            Some(c) => c,
            None => {
                if self.warned.insert(target.name()) {
                    tracing::info!(
                        "{} is not tuned for {} on this GPU ({}); using the heuristic configuration. \
                         Run `tessera autotune --kernels {}` to tune it.",
                        key.kernel,
                        key.shape_bucket,
                        key.device.gpu_name,
                        key.kernel
                    );
                }
                target.heuristic(shape, self.rt.info().sm_count as usize)
            }
        };
        self.cache.insert(key, serde_json::to_value(&config)?);
        Ok(config)
    }

    /// The configuration dense decode runs with for `shape`.
    pub fn decode_config(&mut self, shape: &DecodeShape) -> Result<DecodeConfig> {
        self.config_for(&DenseDecodeTarget, shape)
    }
}
