//! `hip_select`: HiP tree-pruned block selection ([`HipSelect`]) over CHILD_TILE.

use crate::autotune::decode_bucket_dims;
use std::collections::HashSet;
use std::fmt;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::{DType, Kernel};
use tessera_kernels::hip::{
    reference_select, refine_steps, HipFinalize, HipInitNodes, HipScoreChildren, HipSelect, HipSelectChildren,
};
use tessera_kernels::reference::DecodeDims;
use tessera_kernels::Scratch;
use tessera_runtime::{DeviceTensor, Runtime, TimingStats};

use super::io;
use crate::autotune::common::{bxn_list, check_pairs, kerr, time, D, G, HKV, N};
use crate::autotune::target::{Failure, TuneTarget};
use crate::inputs::{random_bf16, rows_f64};

/// A HiP selection: `k_nodes` blocks of `bk` keys chosen among the keys before the
/// window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HipShape {
    pub batch: usize,
    pub kv_heads: usize,
    pub group: usize,
    pub seq_len: usize,
    pub head_dim: usize,
    /// Keys per block.
    pub bk: usize,
    /// Blocks selected (HiP's `mask_k / bk`).
    pub k_nodes: usize,
    /// Sliding-window keys (not searched).
    pub window: usize,
}

impl HipShape {
    /// Blocks searched: the keys before the window, in blocks of `bk`.
    fn num_blocks(&self) -> usize {
        self.seq_len.saturating_sub(self.window).div_ceil(self.bk)
    }
}

impl fmt::Display for HipShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "B={} N={} k={}x{} W={}", self.batch, self.seq_len, self.k_nodes, self.bk, self.window)
    }
}

/// The knob of HiP selection: children scored per program (the score kernel's
/// CHILD_TILE; the op runs every kernel at 4 warps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HipConfig {
    pub child_tile: usize,
}

impl fmt::Display for HipConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CHILD_TILE={}", self.child_tile)
    }
}

/// HiP selection ([`HipSelect`]) for decode, as `tessera bench-selection` runs it: k = 512
/// tokens as 256 blocks of 2, sink 16 (attended, not searched: no part of the selection),
/// window 256.
pub struct HipSelectTarget;

/// Inputs of a HiP job.
pub struct HipBench {
    shape: HipShape,
    /// Query sets rotated through while timing (their selections touch together > 2×
    /// the L2); the first is the checked one.
    qs: Vec<DeviceTensor>,
    k: DeviceTensor,
    bi: DeviceTensor,
    bc: DeviceTensor,
    /// The f64 tree search's blocks on the checked slices: `(b·Hkv + h, blocks)`.
    want: Vec<(usize, Vec<usize>)>,
}

impl TuneTarget for HipSelectTarget {
    type Shape = HipShape;
    type Config = HipConfig;
    type Bench = HipBench;

    fn name(&self) -> &'static str {
        "hip_select"
    }

    /// `decode`: B ∈ {1, 8}, N = 128K, k = 256 blocks of 2, window 256.
    fn shapes(&self, spec: &str) -> Result<Vec<HipShape>> {
        Ok(bxn_list(spec, &[(1, N), (8, N)])?
            .into_iter()
            .map(|(batch, seq_len)| HipShape {
                batch,
                kv_heads: HKV,
                group: G,
                seq_len,
                head_dim: D,
                bk: 2,
                k_nodes: 256,
                window: 256,
            })
            .collect())
    }

    fn bucket(&self, s: &HipShape) -> String {
        decode_bucket_dims(s.batch, s.seq_len, s.kv_heads, s.group, s.head_dim)
            .exact("bk", s.bk as u64)
            .exact("k", s.k_nodes as u64)
            .exact("window", s.window as u64)
            .build()
    }

    /// The CHILD_TILE values of the score kernel's tune space (its WARPS are fixed by the
    /// op).
    fn candidates(&self, _s: &HipShape) -> Vec<HipConfig> {
        let mut out = Vec::new();
        for c in HipScoreChildren::tune_space().configs() {
            let child_tile = c.get("CHILD_TILE").unwrap_or(64) as usize;
            if !out.contains(&HipConfig { child_tile }) {
                out.push(HipConfig { child_tile });
            }
        }
        out
    }

    /// CHILD_TILE 64 (the tune space's first value, what bench-selection runs first).
    fn heuristic(&self, _s: &HipShape, _sm_count: usize) -> HipConfig {
        HipConfig { child_tile: 64 }
    }

    /// Every kernel of the selection, the score kernel (CHILD_TILE) first, configured as
    /// the op configures them: the key's source hash follows any of them.
    fn kernels(&self, s: &HipShape, c: &HipConfig) -> Result<Vec<Kernel>> {
        let [nodes, score] = HipSelect::configs(s.group, s.head_dim, s.bk, s.k_nodes, c.child_tile);
        Ok(vec![
            HipScoreChildren::build(&score)?,
            HipInitNodes::build(&nodes)?,
            HipSelectChildren::build(&nodes)?,
            HipFinalize::build(&nodes)?,
        ])
    }

    fn prepare(&self, rt: &Runtime, s: &HipShape, seed: u64) -> Result<HipBench> {
        let st = rt.stream();
        let hq = s.kv_heads * s.group;
        let hk = random_bf16(&[s.batch, s.kv_heads, s.seq_len, s.head_dim], seed + 1);
        let k = DeviceTensor::upload(st, &hk)?.read_only();
        // Key rows one selection reads: steps × (batch, KV head) × 2K children × bk rows.
        let steps = refine_steps(s.num_blocks(), s.k_nodes);
        let touched = (steps * s.batch * s.kv_heads * 2 * s.k_nodes * s.bk * s.head_dim * 2).max(1) as f64;
        let count = ((2.0 * rt.info().l2_bytes.max(1) as f64 / touched).ceil() as usize).clamp(1, 8);
        let mut qs = Vec::new();
        let mut hq0 = None;
        for i in 0..count {
            let h = random_bf16(&[s.batch, hq, s.head_dim], seed + 100 + i as u64);
            qs.push(DeviceTensor::upload(st, &h)?.read_only());
            hq0.get_or_insert(h);
        }
        let want = hip_reference(s, hq0.as_ref().expect("one query set"), &hk);
        let bi = DeviceTensor::poisoned(st, DType::I32, &[s.batch, s.kv_heads, s.k_nodes])?;
        let bc = DeviceTensor::poisoned(st, DType::I32, &[s.batch, s.kv_heads])?;
        Ok(HipBench { shape: *s, qs, k, bi, bc, want })
    }

    fn run_candidate(
        &self,
        rt: &Runtime,
        b: &mut HipBench,
        c: &HipConfig,
        warmup: usize,
        iters: usize,
    ) -> Result<TimingStats, Failure> {
        let s = b.shape;
        let op = HipSelect::new(rt, s.group, s.head_dim, s.bk, s.k_nodes, c.child_tile).map_err(kerr)?;
        let scratch = Scratch::new();
        b.bi.poison().map_err(io)?;
        b.bc.poison().map_err(io)?;
        op.launch_with(rt, &scratch, &b.qs[0], &b.k, s.seq_len, s.window, &b.bi, &b.bc).map_err(kerr)?;
        rt.synchronize().map_err(io)?;
        let idx = b.bi.download().map_err(io)?.to_f64();
        let cnt = b.bc.download().map_err(io)?.to_f64();
        check_hip(&s, &idx, &cnt, &b.want).map_err(Failure::wrong)?;
        let qs = &b.qs;
        time(rt, warmup, iters, |i| {
            op.launch_with(rt, &scratch, &qs[i % qs.len()], &b.k, s.seq_len, s.window, &b.bi, &b.bc).map(|_| ())
        })
    }
}

/// The f64 tree search ([`reference_select`]) of each checked slice on its own (one-head
/// problems: the host copy of the whole cache in f64 would not fit at B = 8).
fn hip_reference(s: &HipShape, q: &HostTensor, k: &HostTensor) -> Vec<(usize, Vec<usize>)> {
    let (d, hq, cap) = (s.head_dim, s.kv_heads * s.group, k.shape[2]);
    let dims = DecodeDims { batch: 1, kv_heads: 1, group: s.group, cap, head_dim: d };
    std::thread::scope(|sc| {
        let hs: Vec<_> = check_pairs(s.batch, s.kv_heads)
            .into_iter()
            .map(|(b, h)| {
                sc.spawn(move || {
                    let bh = b * s.kv_heads + h;
                    let ks = rows_f64(k, bh * cap, cap, d);
                    let qs = rows_f64(q, b * hq + h * s.group, s.group, d);
                    let sel = reference_select(dims, &qs, &ks, s.seq_len, s.window, s.bk, s.k_nodes);
                    (bh, sel.into_iter().next().expect("one slice"))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("reference thread")).collect()
    })
}

/// A HiP selection is right when every (batch, KV head) has `min(K, blocks)` ascending
/// in-range block ids and, on the checked slices, at most 1% of them differ from the f64
/// tree search (a near-tie between f32 and f64 scores swaps one subtree: one block).
fn check_hip(s: &HipShape, idx: &[f64], cnt: &[f64], want: &[(usize, Vec<usize>)]) -> Result<(), String> {
    let (k, nb) = (s.k_nodes, s.num_blocks());
    let n = k.min(nb);
    for bh in 0..s.batch * s.kv_heads {
        if cnt[bh] as usize != n || cnt[bh] < 0.0 {
            return Err(format!("(b,h) {bh}: count {} want {n}", cnt[bh]));
        }
        let live = &idx[bh * k..bh * k + n];
        if live.iter().any(|&b| b < 0.0 || b as usize >= nb) || !live.windows(2).all(|w| w[0] < w[1]) {
            return Err(format!("(b,h) {bh}: block ids not ascending in [0, {nb})"));
        }
    }
    for (bh, blocks) in want {
        let got: HashSet<i64> = idx[bh * k..bh * k + n].iter().map(|&v| v as i64).collect();
        let differ = blocks.iter().filter(|&&b| !got.contains(&(b as i64))).count();
        if differ > n / 100 {
            return Err(format!("(b,h) {bh}: {differ} of {n} blocks differ from the f64 tree search"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autotune::common::contract;

    #[test]
    fn hip_select_keeps_the_contract() {
        let counts = contract(&HipSelectTarget, |s| HipShape { seq_len: s.seq_len - 1000, ..*s });
        // CHILD_TILE {64, 128, 32}.
        assert_eq!(counts, vec![3, 3]);
        let s = HipSelectTarget.shapes("decode").unwrap();
        assert_eq!(s.iter().map(|s| s.batch).collect::<Vec<_>>(), [1, 8]);
        // bench-selection's HiP: N = 128K, k = 512 tokens as 256 blocks of 2, window 256:
        // 65408 blocks searched in 8 refinement steps.
        assert_eq!((s[0].seq_len, s[0].bk, s[0].k_nodes, s[0].window), (131072, 2, 256, 256));
        assert_eq!(refine_steps(s[0].num_blocks(), s[0].k_nodes), 8);
        // Every kernel of the op is in the key, the score kernel's CHILD_TILE first.
        let k = HipSelectTarget.kernels(&s[0], &HipConfig { child_tile: 128 }).unwrap();
        let names: Vec<&str> = k.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["hip_score_children", "hip_init_nodes", "hip_select_children", "hip_finalize"]);
    }

    /// The interpreter op's selection passes the check; a block swapped for one the tree
    /// search did not pick, an unsorted list or a wrong count do not.
    #[test]
    fn the_hip_check_takes_the_ops_pick_and_refuses_bad_ones() {
        let s = HipShape { batch: 2, kv_heads: 2, group: 2, seq_len: 700, head_dim: 16, bk: 4, k_nodes: 8, window: 50 };
        let q = random_bf16(&[2, 4, 16], 5);
        let k = random_bf16(&[2, 2, 700, 16], 6);
        let op = HipSelect::cpu(s.group, s.head_dim, s.bk, s.k_nodes, 32).unwrap();
        let mut bi = HostTensor::full(DType::I32, &[2, 2, 8], -7.0);
        let mut bc = HostTensor::full(DType::I32, &[2, 2], -7.0);
        op.run_cpu(&q, &k, s.seq_len, s.window, &mut bi, &mut bc).unwrap();
        let want = hip_reference(&s, &q, &k);
        assert_eq!(want.iter().map(|w| w.0).collect::<Vec<_>>(), [0, 3]);
        let (idx, cnt) = (bi.to_f64(), bc.to_f64());
        check_hip(&s, &idx, &cnt, &want).unwrap();
        // The last slice: a picked block swapped for one that was not.
        let mut other = idx.clone();
        let row = 3 * 8;
        let missing = (0..s.num_blocks()).map(|b| b as f64).find(|b| !idx[row..row + 8].contains(b)).unwrap();
        other[row..row + 8].copy_from_slice(&{
            let mut r = idx[row..row + 8].to_vec();
            r[7] = missing;
            r.sort_by(f64::total_cmp);
            r
        });
        assert!(check_hip(&s, &other, &cnt, &want).unwrap_err().contains("differ"));
        let mut unsorted = idx.clone();
        unsorted.swap(8, 9);
        assert!(check_hip(&s, &unsorted, &cnt, &want).is_err());
        assert!(check_hip(&s, &idx, &[8.0, 8.0, 7.0, 8.0], &want).is_err());
        assert!(check_hip(&s, &idx, &[8.0, -1.0, 8.0, 8.0], &want).is_err());
    }
}
