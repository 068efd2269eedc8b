//! Dispatch: which configuration a kernel runs with on this GPU.
//!
//! The tuning database is asked once per (kernel, shape bucket) and the answer cached.
//! With no fresh record the documented heuristic ([`DecodeConfig::heuristic`]) is used and
//! an info-level line says, once per kernel, that the kernel is untuned.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use tessera_runtime::Runtime;
use tessera_tuning_db::{TuneKey, TuningDb};

use crate::autotune::{decode_key, DECODE_KERNEL};
use crate::decode::{DecodeConfig, DecodeShape};

/// Looks configurations up in the tuning database, with a per-process cache.
pub struct Dispatcher<'a> {
    rt: &'a Runtime,
    db: TuningDb,
    cache: HashMap<TuneKey, DecodeConfig>,
    warned: HashSet<&'static str>,
}

impl<'a> Dispatcher<'a> {
    /// Opens the database (`url`, else `TESSERA_DB`, else the default SQLite file).
    pub fn open(rt: &'a Runtime, url: Option<&str>) -> Result<Self> {
        Ok(Dispatcher { rt, db: TuningDb::open(url)?, cache: HashMap::new(), warned: HashSet::new() })
    }

    /// The configuration dense decode runs with for `shape`.
    pub fn decode_config(&mut self, shape: &DecodeShape) -> Result<DecodeConfig> {
        let key = decode_key(self.rt, shape)?;
        if let Some(c) = self.cache.get(&key) {
            return Ok(*c);
        }
        let config = match self.db.winner(&key)? {
            Some(w) => serde_json::from_value(w.config)?,
            None => {
                if self.warned.insert(DECODE_KERNEL) {
                    tracing::info!(
                        "{DECODE_KERNEL} is not tuned for {} on this GPU ({}); using the heuristic configuration. \
                         Run `tessera autotune` to tune it.",
                        key.shape_bucket,
                        key.device.gpu_name
                    );
                }
                DecodeConfig::heuristic(shape, self.rt.info().sm_count as usize)
            }
        };
        self.cache.insert(key, config);
        Ok(config)
    }
}
