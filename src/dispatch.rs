//! Dispatch: which configuration a kernel runs with on this GPU.
//!
//! [`Dispatcher::config_for`] asks the tuning database once per key (kernel, shape bucket,
//! device, versions, source hash, candidate set: [`crate::autotune::target_key`]) and
//! caches the answer. With no fresh record (or a record whose config no longer parses)
//! the target's documented heuristic ([`TuneTarget::heuristic`]) is used and an
//! info-level line says, once per kernel, that the kernel is untuned.
//!
//! The decoder's GPU path takes its attention configurations from here
//! ([`decoder_choices`]): decode attention through the `dense` target, prefill chunks
//! through `tree_verify` at the chunk length. Untuned, both are the decoder's own
//! heuristics ([`KernelChoices::heuristic`]), so a run without a tuning database runs as
//! the decoder did before it dispatched.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use tessera_decoder::gpu::plan::prefill_chunk;
use tessera_decoder::gpu::KernelChoices;
use tessera_decoder::LlamaConfig;
use tessera_runtime::Runtime;
use tessera_tuning_db::{TuneKey, TuningDb};

use crate::autotune::{
    target_key, DenseDecodeTarget, DenseTarget, SplitConfig, TreeConfig, TreeShape, TreeVerifyTarget, TuneTarget,
};
use crate::decode::{DecodeConfig, DecodeShape};

/// A configuration dispatch chose.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice<C> {
    pub config: C,
    /// The tuning database's winner for the key (else the heuristic).
    pub tuned: bool,
    /// The key's shape bucket.
    pub bucket: String,
}

impl<C: std::fmt::Display> std::fmt::Display for Choice<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.tuned { "tuned" } else { "untuned: heuristic" };
        write!(f, "{} ({how}, {})", self.config, self.bucket)
    }
}

/// Looks configurations up in the tuning database, with a per-process cache.
pub struct Dispatcher<'a> {
    rt: &'a Runtime,
    db: TuningDb,
    /// The config of each key looked up, and whether it was tuned.
    cache: HashMap<TuneKey, (serde_json::Value, bool)>,
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
        Ok(self.choose(target, shape)?.config)
    }

    /// [`Self::config_for`], saying whether the database had it.
    pub fn choose<T: TuneTarget>(&mut self, target: &T, shape: &T::Shape) -> Result<Choice<T::Config>> {
        let key = target_key(self.rt, target, shape)?;
        if let Some((c, tuned)) = self.cache.get(&key) {
            if let Ok(config) = serde_json::from_value(c.clone()) {
                return Ok(Choice { config, tuned: *tuned, bucket: key.shape_bucket.clone() });
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
        let is_tuned = tuned.is_some();
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
        let bucket = key.shape_bucket.clone();
        self.cache.insert(key, (serde_json::to_value(&config)?, is_tuned));
        Ok(Choice { config, tuned: is_tuned, bucket })
    }

    /// The configuration dense decode runs with for `shape`.
    pub fn decode_config(&mut self, shape: &DecodeShape) -> Result<DecodeConfig> {
        self.config_for(&DenseDecodeTarget, shape)
    }

    /// The decoder's attention configurations for model `c` (see [`decoder_choices`]).
    pub fn decoder_choices(
        &mut self,
        c: &LlamaConfig,
        batch: usize,
        context: usize,
        prefill_len: usize,
    ) -> Result<DecoderChoices> {
        let (dense_shape, tree_shape) = decoder_shapes(c, batch, context, prefill_len);
        let dense = self.choose(&DenseTarget, &dense_shape)?;
        let prefill = self.choose(&TreeVerifyTarget, &tree_shape)?;
        Ok(DecoderChoices::new(&dense_shape, &tree_shape, dense, prefill))
    }
}

/// The decoder's attention configurations and where they came from.
#[derive(Clone, Debug)]
pub struct DecoderChoices {
    /// What the decoder builds its ops with.
    pub choices: KernelChoices,
    /// Decode attention, as the `dense` target's config.
    pub dense: Choice<SplitConfig>,
    /// Prefill chunks, as the `tree_verify` target's config.
    pub prefill: Choice<TreeConfig>,
}

impl DecoderChoices {
    fn new(
        dense_shape: &DecodeShape,
        tree_shape: &TreeShape,
        dense: Choice<SplitConfig>,
        prefill: Choice<TreeConfig>,
    ) -> Self {
        let choices = KernelChoices {
            dense: DenseTarget::params(dense_shape, &dense.config),
            prefill: prefill.config.params(tree_shape),
        };
        DecoderChoices { choices, dense, prefill }
    }

    /// The heuristics of both targets, untuned (no database consulted): the same
    /// [`KernelChoices`] as [`KernelChoices::heuristic`].
    pub fn heuristic(c: &LlamaConfig, batch: usize, context: usize, prefill_len: usize, sm_count: usize) -> Self {
        let (ds, ts) = decoder_shapes(c, batch, context, prefill_len);
        let dense =
            Choice { config: DenseTarget.heuristic(&ds, sm_count), tuned: false, bucket: DenseTarget.bucket(&ds) };
        let prefill = Choice {
            config: TreeVerifyTarget.heuristic(&ts, sm_count),
            tuned: false,
            bucket: TreeVerifyTarget.bucket(&ts),
        };
        Self::new(&ds, &ts, dense, prefill)
    }

    /// The choices as JSON (configs, whether tuned, buckets), for reports.
    pub fn json(&self) -> serde_json::Value {
        let one =
            |config: String, c: bool, bucket: &str| serde_json::json!({"config": config, "tuned": c, "bucket": bucket});
        serde_json::json!({
            "dense": one(self.dense.config.to_string(), self.dense.tuned, &self.dense.bucket),
            "prefill": one(self.prefill.config.to_string(), self.prefill.tuned, &self.prefill.bucket),
        })
    }
}

/// The shapes the decoder's attention runs at, as tuning shapes: decode attention of
/// `batch` sequences over the whole cache (`context` positions: the longest the run
/// reaches; the op's split count is a bound, shorter contexts use fewer splits), and the
/// prefill chunks ([`prefill_chunk`] tokens, a causal chain as the tree) over a prefix of
/// `prefill_len` (the prompt: the longest prefix a chunk sees).
pub fn decoder_shapes(c: &LlamaConfig, batch: usize, context: usize, prefill_len: usize) -> (DecodeShape, TreeShape) {
    let group = c.n_heads / c.n_kv_heads.max(1);
    let dense = DecodeShape { batch, kv_heads: c.n_kv_heads, group, seq_len: context.max(1), head_dim: c.head_dim };
    let tree = TreeShape {
        batch,
        kv_heads: c.n_kv_heads,
        group,
        prefix_len: prefill_len.max(1),
        head_dim: c.head_dim,
        tree: prefill_chunk(group, c.head_dim),
    };
    (dense, tree)
}

/// The attention configurations of the decoder's GPU path for model `c` at `batch`
/// sequences, a cache of `context` positions and a prompt of `prefill_len` tokens: the
/// tuning database's winners (`url`, else `TESSERA_DB`, else the default SQLite file) of
/// `dense` and `tree_verify` at [`decoder_shapes`], else their heuristics — which are the
/// decoder's own. When the database cannot be read (or NVRTC is missing, so no key can be
/// computed), a warning and the heuristics: the decoder then runs as it does without
/// dispatch. Logs at info level what was chosen and whether it was tuned.
pub fn decoder_choices(
    rt: &Runtime,
    url: Option<&str>,
    c: &LlamaConfig,
    batch: usize,
    context: usize,
    prefill_len: usize,
) -> DecoderChoices {
    let looked_up = Dispatcher::open(rt, url).and_then(|mut d| d.decoder_choices(c, batch, context, prefill_len));
    let chosen = looked_up.unwrap_or_else(|e| {
        tracing::warn!("the tuning database cannot be read ({e:#}); the decoder runs its heuristic configurations");
        DecoderChoices::heuristic(c, batch, context, prefill_len, rt.info().sm_count as usize)
    });
    let (ds, ts) = decoder_shapes(c, batch, context, prefill_len);
    tracing::info!(
        "decoder decode attention (dense): {}{}",
        chosen.dense,
        tune_hint(&chosen.dense, "dense", &DenseTarget, &ds, &format!("{}x{}", ds.batch, ds.seq_len))
    );
    tracing::info!(
        "decoder prefill chunks (tree_verify, T = {}): {}{}",
        ts.tree,
        chosen.prefill,
        tune_hint(
            &chosen.prefill,
            "tree_verify",
            &TreeVerifyTarget,
            &ts,
            &format!("{}x{}x{}", ts.batch, ts.prefix_len, ts.tree)
        )
    );
    chosen
}

/// How to tune an untuned shape from the command line, when `--shapes spec` reproduces it
/// (the presets' heads: 32 query heads over 8 KV heads of 128).
fn tune_hint<T: TuneTarget, C>(choice: &Choice<C>, name: &str, t: &T, shape: &T::Shape, spec: &str) -> String {
    if choice.tuned {
        return String::new();
    }
    match t.shapes(spec) {
        Ok(s) if s.first() == Some(shape) => format!("; `tessera autotune --kernels {name} --shapes {spec}` tunes it"),
        _ => "; no autotune preset has these heads".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M's attention shapes: 9 query heads over 3 KV heads of 64.
    fn smollm2() -> LlamaConfig {
        LlamaConfig { n_heads: 9, n_kv_heads: 3, head_dim: 64, hidden: 576, ..LlamaConfig::llama3_8b_shapes() }
    }

    /// Untuned dispatch gives the decoder exactly what it builds on its own.
    #[test]
    fn untuned_dispatch_is_the_decoders_heuristic() {
        for c in [smollm2(), LlamaConfig::llama3_8b_shapes()] {
            for (batch, context, prompt) in [(1, 160, 30), (8, 8192, 8060), (1, 131072, 40000)] {
                for sm in [78, 108, 132] {
                    let got = DecoderChoices::heuristic(&c, batch, context, prompt, sm);
                    let want = KernelChoices::heuristic(&c, batch, sm);
                    assert_eq!(got.choices.dense, want.dense, "B{batch} N{context} at {sm} SMs");
                    assert_eq!(format!("{:?}", got.choices.prefill), format!("{:?}", want.prefill));
                    got.choices.check(&c).unwrap();
                    assert!(!got.dense.tuned && !got.prefill.tuned);
                }
            }
        }
    }

    /// A tuned config reaches the decoder's ops; the shapes line up with the targets' (the
    /// Llama-3-8B heads are the presets': `--shapes` reproduces them).
    #[test]
    fn tuned_configs_reach_the_decoder() {
        let c = LlamaConfig::llama3_8b_shapes();
        let (ds, ts) = decoder_shapes(&c, 1, 32768, 3000);
        assert_eq!(DenseTarget.shapes("1x32768").unwrap()[0], ds);
        assert_eq!(TreeVerifyTarget.shapes("1x3000x32").unwrap()[0], ts);
        let dense = SplitConfig { block_n: 32, warps: 8, max_splits: 8, stages: 3 };
        let prefill = TreeConfig { block_n: 128, warps: 8, max_splits: 32, rows: 16 };
        assert!(DenseTarget.candidates(&ds).contains(&dense) && TreeVerifyTarget.candidates(&ts).contains(&prefill));
        let d = DecoderChoices::new(
            &ds,
            &ts,
            Choice { config: dense, tuned: true, bucket: DenseTarget.bucket(&ds) },
            Choice { config: prefill, tuned: true, bucket: TreeVerifyTarget.bucket(&ts) },
        );
        let k = &d.choices;
        assert_eq!((k.dense.block_n, k.dense.warps, k.dense.max_splits, k.dense.stages), (32, 8, 8, 3));
        assert_eq!((k.prefill.block_n, k.prefill.warps, k.prefill.max_splits, k.prefill.rows), (128, 8, 32, 16));
        assert_eq!(k.prefill.t_pad, 32);
        k.check(&c).unwrap();
        assert_eq!(d.json()["dense"]["tuned"], serde_json::json!(true));
        assert!(d.json()["prefill"]["config"].as_str().unwrap().contains("ROWS=16"));
        // SmolLM2's heads have no preset: the hint says so instead of a command that
        // would tune other shapes.
        let (ds, _) = decoder_shapes(&smollm2(), 1, 1024, 100);
        let h = DecoderChoices::heuristic(&smollm2(), 1, 1024, 100, 132);
        assert!(tune_hint(&h.dense, "dense", &DenseTarget, &ds, "1x1024").contains("no autotune preset"));
        let (ds, _) = decoder_shapes(&c, 1, 1024, 100);
        let h = DecoderChoices::heuristic(&c, 1, 1024, 100, 132);
        assert!(tune_hint(&h.dense, "dense", &DenseTarget, &ds, "1x1024").contains("--kernels dense --shapes 1x1024"));
    }
}
