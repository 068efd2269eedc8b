//! What the op targets share: the preset's heads, `--shapes` lists, the split decoders'
//! knobs ([`SplitConfig`]) and their candidates, and the worker side's inputs (q, k, v
//! with host copies), f64 reference rows, output checks and timing.

use std::fmt;

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};
use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::Kernel;
use tessera_dsl_support::KernelConfig;
use tessera_kernels::combine::{AttnCombine, LseCombine};
use tessera_kernels::reference::attend;
use tessera_kernels::{DecodeParams, KernelError};
use tessera_runtime::{DeviceTensor, Runtime, RuntimeError, TimingStats};

use super::target::Failure;
use crate::inputs::{bf16s, random_bf16, rows_f64};

/// bf16 outputs: largest error relative to the largest reference magnitude.
pub(super) const OUT_TOL: f64 = 2e-2;
/// The preset's heads (Llama-3-8B-like): 32 query heads over 8 KV heads, d = 128.
pub(super) const HKV: usize = 8;
pub(super) const G: usize = 4;
pub(super) const D: usize = 128;
pub(super) const N: usize = 131072;

// ---------------------------------------------------------------------------------------
// Shapes and split knobs

/// Knobs of the split decoders: the split kernel's BLOCK_N and WARPS (its declared tune
/// space) and the most splits per (batch, KV head) (the combine's MAX_SPLITS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SplitConfig {
    pub block_n: usize,
    pub warps: usize,
    pub max_splits: usize,
    /// Pipeline buffers of the split kernel (STAGES); records from before it was tuned
    /// ran 2.
    #[serde(default = "two_stages")]
    pub stages: usize,
}

fn two_stages() -> usize {
    2
}

impl fmt::Display for SplitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BLOCK_N={} WARPS={} STAGES={} max_splits={}", self.block_n, self.warps, self.stages, self.max_splits)
    }
}

impl SplitConfig {
    pub(super) fn params(&self, group: usize, head_dim: usize) -> DecodeParams {
        DecodeParams {
            block_n: self.block_n,
            warps: self.warps,
            max_splits: self.max_splits,
            stages: self.stages,
            ..DecodeParams::new(group, head_dim)
        }
    }

    /// The heuristic: [`DecodeParams::new`]'s defaults (what untuned callers build).
    pub(super) fn heuristic(group: usize, head_dim: usize) -> Self {
        let p = DecodeParams::new(group, head_dim);
        SplitConfig { block_n: p.block_n, warps: p.warps, max_splits: p.max_splits, stages: p.stages }
    }
}

/// (BLOCK_N, WARPS) pairs of a split kernel's declared tune space.
pub(super) fn tile_knobs(space: tessera_dsl_support::TuneSpace) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    for c in space.configs() {
        let bn = c.get("BLOCK_N").unwrap_or(64) as usize;
        let w = c.get("WARPS").unwrap_or(4) as usize;
        let stages = c.get("STAGES").unwrap_or(2) as usize;
        if !out.contains(&(bn, w, stages)) {
            out.push((bn, w, stages));
        }
    }
    out
}

/// Split candidates for `keys` attended keys (the bucket's): every (BLOCK_N, WARPS) ×
/// max_splits of `splits`, dropping split counts above 16 that would leave a split less
/// than one tile of keys (the heuristic's 16 is always kept).
pub(super) fn split_candidates(knobs: &[(usize, usize, usize)], splits: &[usize], keys: usize) -> Vec<SplitConfig> {
    let mut out = Vec::new();
    for &(block_n, warps, stages) in knobs {
        for &max_splits in splits {
            if max_splits <= 16 || keys.div_ceil(max_splits) >= block_n {
                out.push(SplitConfig { block_n, warps, max_splits, stages });
            }
        }
    }
    out
}

pub(super) fn split_kernel_config(group: usize, head_dim: usize, c: &SplitConfig) -> KernelConfig {
    KernelConfig::from_pairs(&[
        ("GROUP", group as i64),
        ("HEAD_DIM", head_dim as i64),
        ("BLOCK_N", c.block_n as i64),
        ("WARPS", c.warps as i64),
        ("STAGES", c.stages as i64),
    ])
}

pub(super) fn combine_kernel(head_dim: usize, max_splits: usize) -> Result<Kernel> {
    Ok(AttnCombine::build(&LseCombine::config(head_dim, max_splits, false))?)
}

/// `BATCHxSEQ_LEN` → (batch, seq_len).
pub(super) fn parse_bxn(s: &str) -> Result<(usize, usize)> {
    s.split_once('x')
        .and_then(|(b, n)| Some((b.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
        .filter(|(b, n)| *b > 0 && *n > 0)
        .ok_or_else(|| anyhow!("shape `{s}` is not BATCHxSEQ_LEN"))
}

/// `decode`/`default` → the preset's (batch, seq_len) pairs, else the listed ones.
pub(super) fn bxn_list(spec: &str, preset: &[(usize, usize)]) -> Result<Vec<(usize, usize)>> {
    if spec == "decode" || spec == "default" {
        Ok(preset.to_vec())
    } else {
        spec.split(',').map(parse_bxn).collect()
    }
}

// ---------------------------------------------------------------------------------------
// Inputs, references, checks

/// The (batch, KV head) slices checked against the reference: the first and the last.
pub(super) fn check_pairs(batch: usize, kv_heads: usize) -> Vec<(usize, usize)> {
    vec![(0, 0), (batch - 1, kv_heads - 1)]
}

/// q, k, v on the device (read-only) with host copies for the references.
pub(super) struct Qkv {
    pub(super) q: DeviceTensor,
    pub(super) k: DeviceTensor,
    pub(super) v: DeviceTensor,
    pub(super) hq: HostTensor,
    pub(super) hk: HostTensor,
    pub(super) hv: HostTensor,
    /// K/V rows per (batch, KV head).
    pub(super) cap: usize,
    pub(super) kv_heads: usize,
    pub(super) head_dim: usize,
}

impl Qkv {
    pub(super) fn new(rt: &Runtime, q_shape: &[usize], kv_shape: [usize; 4], seed: u64) -> Result<Self> {
        let hq = random_bf16(q_shape, seed);
        let hk = random_bf16(&kv_shape, seed + 1);
        let hv = random_bf16(&kv_shape, seed + 2);
        let st = rt.stream();
        Ok(Qkv {
            q: DeviceTensor::upload(st, &hq)?.read_only(),
            k: DeviceTensor::upload(st, &hk)?.read_only(),
            v: DeviceTensor::upload(st, &hv)?.read_only(),
            hq,
            hk,
            hv,
            cap: kv_shape[2],
            kv_heads: kv_shape[1],
            head_dim: kv_shape[3],
        })
    }

    /// f64 reference rows: for each `(q row, positions)` of KV slice `(b, h)`, the
    /// attention output `[D]`, keyed by its output row (= the q row).
    pub(super) fn reference(&self, b: usize, h: usize, rows: Vec<(usize, Vec<usize>)>, scale_log2: f64) -> RefRows {
        let d = self.head_dim;
        let row0 = (b * self.kv_heads + h) * self.cap;
        let slab = (rows_f64(&self.hk, row0, self.cap, d), rows_f64(&self.hv, row0, self.cap, d));
        std::thread::scope(|s| {
            let hs: Vec<_> = rows
                .into_iter()
                .map(|(r, pos)| {
                    let slab = &slab;
                    s.spawn(move || {
                        let qv = rows_f64(&self.hq, r, 1, d);
                        (r, attend(&qv, &slab.0, &slab.1, 0, &pos, d, scale_log2).0)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("reference thread")).collect()
        })
    }
}

/// Reference rows: `(flat output row, expected [D])`.
pub(super) type RefRows = Vec<(usize, Vec<f64>)>;

/// Every output value finite, and the reference rows within [`OUT_TOL`].
pub(super) fn check_out(out: &DeviceTensor, refs: &RefRows, d: usize) -> Result<(), Failure> {
    let host = out.download().map_err(|e| Failure::classify(e.into()))?;
    let got = bf16s(&host);
    if let Some(i) = got.iter().position(|x| !x.to_f32().is_finite()) {
        return Err(Failure::wrong(format!("non-finite output at flat index {i} ({})", got[i])));
    }
    let scale = refs.iter().flat_map(|(_, w)| w.iter()).fold(f64::MIN_POSITIVE, |m, x| m.max(x.abs()));
    let mut worst: f64 = 0.0;
    for (row, want) in refs {
        for (g, w) in got[row * d..(row + 1) * d].iter().zip(want) {
            worst = worst.max((g.to_f64() - w).abs() / scale);
        }
    }
    if worst > OUT_TOL {
        return Err(Failure::wrong(format!(
            "relative error {worst:.2e} > {OUT_TOL:e} on {} reference rows",
            refs.len()
        )));
    }
    Ok(())
}

pub(super) fn kerr(e: KernelError) -> Failure {
    Failure::classify(e.into())
}

/// Times `launch` with CUDA events.
pub(super) fn time(
    rt: &Runtime,
    warmup: usize,
    iters: usize,
    mut launch: impl FnMut(usize) -> Result<(), KernelError>,
) -> Result<TimingStats, Failure> {
    tessera_runtime::time(rt.stream(), warmup, iters.max(1), |i| {
        launch(i).map_err(|e| RuntimeError::Driver(e.to_string()))
    })
    .map_err(|e| Failure::classify(e.into()))
}

/// Poisons `out`, runs `launch` once, synchronizes and checks `out` against `refs`.
pub(super) fn checked_run(
    rt: &Runtime,
    out: &DeviceTensor,
    refs: &RefRows,
    d: usize,
    launch: impl FnOnce() -> Result<(), KernelError>,
) -> Result<(), Failure> {
    out.poison().map_err(|e| Failure::classify(e.into()))?;
    launch().map_err(kerr)?;
    rt.synchronize().map_err(|e| Failure::classify(e.into()))?;
    check_out(out, refs, d)
}

/// Reference rows of a decode (`out [B, Hq, D]`, `group` query heads per KV head of
/// `x`): the query heads of each checked slice over the keys `positions(b, kv_head)`.
pub(super) fn decode_refs(
    x: &Qkv,
    batch: usize,
    group: usize,
    positions: impl Fn(usize, usize) -> Vec<usize>,
) -> RefRows {
    let hq = x.kv_heads * group;
    let sl2 = tessera_kernels::default_scale_log2(x.head_dim) as f64;
    let mut refs = Vec::new();
    for (b, h) in check_pairs(batch, x.kv_heads) {
        let pos = positions(b, h);
        let rows = (0..group).map(|g| (b * hq + h * group + g, pos.clone())).collect();
        refs.extend(x.reference(b, h, rows, sl2));
    }
    refs
}

#[cfg(test)]
pub(super) use testing::contract;

#[cfg(test)]
mod testing {
    use crate::autotune::TuneTarget;

    /// Shapes of the preset and a neighbour in the same bucket (a smaller N of the same
    /// power of two) have the same bucket and candidates; the heuristic is a candidate
    /// and its kernels build and emit on the CPU, the same source for both shapes (so
    /// both have one key: dispatch at any shape of a bucket finds the tuned record).
    pub(in crate::autotune) fn contract<T: TuneTarget>(t: &T, neighbour: impl Fn(&T::Shape) -> T::Shape) -> Vec<usize> {
        let mut counts = Vec::new();
        for s in t.shapes("decode").unwrap() {
            let n = neighbour(&s);
            assert_ne!(n, s);
            assert_eq!(t.bucket(&n), t.bucket(&s), "{s}");
            let c = t.candidates(&s);
            assert_eq!(t.candidates(&n), c, "{s}");
            assert!(!c.is_empty());
            for sm in [108, 132] {
                let h = t.heuristic(&s, sm);
                assert!(c.contains(&h), "{}: heuristic {h} of {s} is not a candidate {c:?}", t.name());
                let source = |s: &T::Shape| -> Vec<String> {
                    t.kernels(s, &h).unwrap().iter().map(|k| tessera_codegen::emit::emit_cuda(k).source).collect()
                };
                let k = source(&s);
                assert!(!k.is_empty() && k.iter().all(|src| !src.is_empty()), "{}: {s}", t.name());
                assert_eq!(source(&n), k, "{}: the kernels of {s} and {n} differ", t.name());
            }
            counts.push(c.len());
        }
        counts
    }
}
