//! `snapkv`: SnapKV prompt compression ([`SnapKvCompress`]) over POOL_TILE.

use crate::autotune::decode_bucket_dims;
use std::fmt;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::{DType, Kernel};
use tessera_kernels::reference::DecodeDims;
use tessera_kernels::snapkv::{
    self, Pool, SnapKvCompress, SnapTiles, SnapkvCompress, SnapkvMerge, SnapkvPoolTopk, SnapkvRowMerge, SnapkvRowStats,
    SnapkvVotes,
};
use tessera_kernels::Scratch;
use tessera_runtime::{DeviceTensor, Runtime, TimingStats};

use super::io;
use crate::autotune::common::{bxn_list, check_pairs, kerr, time, Qkv, D, G, HKV, N};
use crate::autotune::target::{Failure, TuneTarget};
use crate::inputs::rows_f64;

/// A SnapKV compression of a `seq_len`-token prompt into `capacity` rows per KV head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapShape {
    pub batch: usize,
    pub kv_heads: usize,
    pub group: usize,
    pub seq_len: usize,
    pub head_dim: usize,
    /// Observation window (the last prompt queries; kept as the last rows).
    pub window: usize,
    pub capacity: usize,
    /// Max-pooling kernel of the votes.
    pub kernel: usize,
}

impl SnapShape {
    /// Positions selected from the prefix.
    fn keep(&self) -> usize {
        self.capacity - self.window
    }

    /// The merge's candidate bound for `pool_tile` at any prompt of the bucket (its
    /// length rounded up to a power of two): one source per bucket.
    fn max_cand(&self, pool_tile: usize) -> usize {
        (self.seq_len.next_power_of_two() - self.window).div_ceil(pool_tile) * self.keep()
    }
}

impl fmt::Display for SnapShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "B={} t={} C={} w={} pool={}", self.batch, self.seq_len, self.capacity, self.window, self.kernel)
    }
}

/// The knobs of SnapKV: prefix votes pooled and pre-selected per program (POOL_TILE;
/// smaller tiles: more programs, more candidates for the one-program merge), and the key
/// tiles of the two passes over the keys ([`SnapTiles`]: ncu found those passes bound by
/// shared memory and registers at the default sizes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapConfig {
    pub pool_tile: usize,
    #[serde(default = "default_block_n")]
    pub block_n: usize,
    #[serde(default = "default_votes_block_n")]
    pub votes_block_n: usize,
}

fn default_block_n() -> usize {
    SnapTiles::default().block_n
}

fn default_votes_block_n() -> usize {
    SnapTiles::default().votes_block_n
}

impl SnapConfig {
    fn tiles(&self) -> SnapTiles {
        SnapTiles { block_n: self.block_n, votes_block_n: self.votes_block_n }
    }
}

impl fmt::Display for SnapConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "POOL_TILE={} stats BLOCK_N={} votes BLOCK_N={}", self.pool_tile, self.block_n, self.votes_block_n)
    }
}

/// SnapKV selection + compression ([`SnapKvCompress`]), max pooling.
pub struct SnapKvTarget;

/// Inputs of a SnapKV job: `x.q` is the observation window `[B, Hkv, G·w, D]`.
pub struct SnapBench {
    shape: SnapShape,
    x: Qkv,
    votes: DeviceTensor,
    ki: DeviceTensor,
    kc: DeviceTensor,
    ko: DeviceTensor,
    vo: DeviceTensor,
    /// The f64 reference on the checked slices: `(b·Hkv + h, pooled votes, kept)`.
    want: Vec<(usize, Vec<f64>, Vec<usize>)>,
}

impl SnapKvTarget {
    fn op(s: &SnapShape, c: &SnapConfig, rt: Option<&Runtime>) -> Result<SnapKvCompress, tessera_kernels::KernelError> {
        let (g, w, d, cap, k, pt) = (s.group, s.window, s.head_dim, s.capacity, s.kernel, c.pool_tile);
        match rt {
            Some(rt) => {
                SnapKvCompress::new(rt, g, w, d, cap, k, Pool::Max, pt, s.max_cand(pt))?.with_tiles(Some(rt), c.tiles())
            }
            None => SnapKvCompress::cpu(g, w, d, cap, k, Pool::Max, pt, s.max_cand(pt))?.with_tiles(None, c.tiles()),
        }
    }
}

impl TuneTarget for SnapKvTarget {
    type Shape = SnapShape;
    type Config = SnapConfig;
    type Bench = SnapBench;

    fn name(&self) -> &'static str {
        "snapkv"
    }

    /// `decode`: B = 1, prompts of 32K and 128K, window 32, capacity 2048, pooling 7.
    fn shapes(&self, spec: &str) -> Result<Vec<SnapShape>> {
        bxn_list(spec, &[(1, 32768), (1, N)])?
            .into_iter()
            .map(|(batch, seq_len)| {
                anyhow::ensure!(seq_len > 2048, "snapkv compresses prompts longer than its capacity 2048");
                Ok(SnapShape {
                    batch,
                    kv_heads: HKV,
                    group: G,
                    seq_len,
                    head_dim: D,
                    window: 32,
                    capacity: 2048,
                    kernel: 7,
                })
            })
            .collect()
    }

    fn bucket(&self, s: &SnapShape) -> String {
        decode_bucket_dims(s.batch, s.seq_len, s.kv_heads, s.group, s.head_dim)
            .exact("window", s.window as u64)
            .exact("capacity", s.capacity as u64)
            .exact("pool", s.kernel as u64)
            .build()
    }

    /// POOL_TILE: powers of two from the kept count (a tile's top-k needs that many
    /// votes; at least 1024) to the bucket's prompt, at most 32768 (beyond the declared
    /// {1024, 2048, 4096}: at capacity 2048 and 128K, tiles under 8192 give the merge
    /// more candidates than its shared memory holds — pruned as compile errors), each
    /// with the default key tiles (64 / 128) and two smaller ones (64 / 64, 32 / 128).
    fn candidates(&self, s: &SnapShape) -> Vec<SnapConfig> {
        let lo = s.keep().next_power_of_two().max(1024);
        let hi = s.seq_len.next_power_of_two().clamp(lo, 32768);
        let d = SnapTiles::default();
        let tiles = [(d.block_n, d.votes_block_n), (64, 64), (32, 128)];
        std::iter::successors(Some(lo), |&t| (t < hi).then_some(t * 2))
            .flat_map(|pool_tile| {
                tiles.map(|(block_n, votes_block_n)| SnapConfig { pool_tile, block_n, votes_block_n })
            })
            .collect()
    }

    /// POOL_TILE 8192 (bench-selection's choice at capacity 2048: the merge fits at
    /// 128K), clamped to the candidates.
    fn heuristic(&self, s: &SnapShape, _sm_count: usize) -> SnapConfig {
        let c = self.candidates(s);
        let pool_tile = 8192.clamp(c[0].pool_tile, c[c.len() - 1].pool_tile);
        let d = SnapTiles::default();
        SnapConfig { pool_tile, block_n: d.block_n, votes_block_n: d.votes_block_n }
    }

    /// The six kernels with the op's own configurations.
    fn kernels(&self, s: &SnapShape, c: &SnapConfig) -> Result<Vec<Kernel>> {
        let [a, r, b, p, m, k] = Self::op(s, c, None)?.configs();
        Ok(vec![
            SnapkvPoolTopk::build(&p)?,
            SnapkvMerge::build(&m)?,
            SnapkvRowStats::build(&a)?,
            SnapkvRowMerge::build(&r)?,
            SnapkvVotes::build(&b)?,
            SnapkvCompress::build(&k)?,
        ])
    }

    fn prepare(&self, rt: &Runtime, s: &SnapShape, seed: u64) -> Result<SnapBench> {
        let st = rt.stream();
        let (b, h, cap) = (s.batch, s.kv_heads, s.capacity);
        let x = Qkv::new(rt, &[b, h, s.group * s.window, s.head_dim], [b, h, s.seq_len, s.head_dim], seed)?;
        let want = snap_reference(&x.hq, &x.hk, s);
        Ok(SnapBench {
            shape: *s,
            votes: DeviceTensor::poisoned(st, DType::F32, &[b, h, s.seq_len])?,
            ki: DeviceTensor::poisoned(st, DType::I32, &[b, h, s.keep()])?,
            kc: DeviceTensor::poisoned(st, DType::I32, &[b, h])?,
            ko: DeviceTensor::poisoned(st, DType::BF16, &[b, h, cap, s.head_dim])?,
            vo: DeviceTensor::poisoned(st, DType::BF16, &[b, h, cap, s.head_dim])?,
            x,
            want,
        })
    }

    fn run_candidate(
        &self,
        rt: &Runtime,
        b: &mut SnapBench,
        c: &SnapConfig,
        warmup: usize,
        iters: usize,
    ) -> Result<TimingStats, Failure> {
        let s = b.shape;
        let op = Self::op(&s, c, Some(rt)).map_err(kerr)?;
        let scratch = Scratch::new();
        let b = &*b;
        let (x, t) = (&b.x, s.seq_len);
        let launch =
            || op.launch_with(rt, &scratch, &x.q, &x.k, &x.v, t, &b.votes, &b.ki, &b.kc, &b.ko, &b.vo).map(|_| ());
        for t in [&b.votes, &b.ki, &b.kc, &b.ko, &b.vo] {
            t.poison().map_err(io)?;
        }
        launch().map_err(kerr)?;
        rt.synchronize().map_err(io)?;
        let host = |t: &DeviceTensor| t.download().map_err(io);
        let got =
            SnapOut { votes: host(&b.votes)?, ki: host(&b.ki)?, kc: host(&b.kc)?, ko: host(&b.ko)?, vo: host(&b.vo)? };
        check_snapkv(&s, &got, &x.hk, &x.hv, &b.want).map_err(Failure::wrong)?;
        time(rt, warmup, iters, |_| launch())
    }
}

/// The f64 SnapKV reference ([`snapkv::reference`]) of each checked slice on its own
/// (`q_obs [B, Hkv, G·w, D]`, `k [B, Hkv, cap, D]`: host copies).
fn snap_reference(q_obs: &HostTensor, k: &HostTensor, s: &SnapShape) -> Vec<(usize, Vec<f64>, Vec<usize>)> {
    let (d, rows, cap) = (s.head_dim, s.group * s.window, k.shape[2]);
    let dims = DecodeDims { batch: 1, kv_heads: 1, group: s.group, cap, head_dim: d };
    let sl2 = tessera_kernels::default_scale_log2(d) as f64;
    std::thread::scope(|sc| {
        let hs: Vec<_> = check_pairs(s.batch, s.kv_heads)
            .into_iter()
            .map(|(b, h)| {
                sc.spawn(move || {
                    let bh = b * s.kv_heads + h;
                    let q = rows_f64(q_obs, bh * rows, rows, d);
                    let k = rows_f64(k, bh * cap, cap, d);
                    let r = snapkv::reference(dims, s.window, &q, &k, s.seq_len, s.capacity, s.kernel, Pool::Max, sl2);
                    let (pooled, kept) = r.into_iter().next().expect("one slice");
                    (bh, pooled, kept)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("reference thread")).collect()
    })
}

/// The outputs of one SnapKV run, on the host.
struct SnapOut {
    votes: HostTensor,
    ki: HostTensor,
    kc: HostTensor,
    ko: HostTensor,
    vo: HostTensor,
}

/// Everywhere: `C − w` ascending kept positions in the prefix. On the checked slices: the
/// pooled votes within 1e-4 of the f64 ones (relative to the largest), the kept positions'
/// votes the top ones within 1e-4 (near-ties may swap), the compressed rows exactly the
/// kept rows then the window's (`k`, `v`: the original cache, host copies).
fn check_snapkv(
    s: &SnapShape,
    o: &SnapOut,
    k: &HostTensor,
    v: &HostTensor,
    want: &[(usize, Vec<f64>, Vec<usize>)],
) -> Result<(), String> {
    let (keep, t, d, cap) = (s.keep(), s.seq_len, s.head_dim, k.shape[2]);
    let prefix = t - s.window;
    let (it, ct, vt) = (o.ki.to_f64(), o.kc.to_f64(), o.votes.to_f64());
    for bh in 0..s.batch * s.kv_heads {
        let sel = &it[bh * keep..(bh + 1) * keep];
        if ct[bh] as usize != keep
            || sel[0] < 0.0
            || !sel.windows(2).all(|p| p[0] < p[1])
            || sel[keep - 1] >= prefix as f64
        {
            return Err(format!("(b,h) {bh}: count {} or kept positions not ascending in the prefix", ct[bh]));
        }
    }
    let votes_len = o.votes.shape[2];
    for (bh, pooled, kept) in want {
        let got: Vec<f32> = vt[bh * votes_len..bh * votes_len + prefix].iter().map(|&x| x as f32).collect();
        let gp = snapkv::pool(&got, s.kernel, Pool::Max);
        let mag = pooled.iter().fold(1e-30f64, |m, x| m.max(x.abs()));
        // NaN (an unwritten vote) fails too.
        let off = |j: usize| {
            let e = (gp[j] as f64 - pooled[j]).abs();
            e.is_nan() || e > 1e-4 * mag
        };
        if let Some(j) = (0..prefix).find(|&j| off(j)) {
            return Err(format!("(b,h) {bh}: pooled vote {j} {} vs {}", gp[j], pooled[j]));
        }
        let sel: Vec<usize> = it[bh * keep..(bh + 1) * keep].iter().map(|&x| x as usize).collect();
        let mut got_s: Vec<f64> = sel.iter().map(|&j| pooled[j]).collect();
        let mut top: Vec<f64> = kept.iter().map(|&j| pooled[j]).collect();
        got_s.sort_by(|a, b| b.total_cmp(a));
        top.sort_by(|a, b| b.total_cmp(a));
        if let Some((g, w)) = got_s.iter().zip(&top).find(|(g, w)| (*g - *w).abs() > 1e-4 * mag) {
            return Err(format!("(b,h) {bh}: kept vote {g} vs top {w}"));
        }
        for (r, pos) in sel.into_iter().chain(t - s.window..t).enumerate() {
            let (src, dst) = (bh * cap + pos, bh * s.capacity + r);
            if rows_f64(&o.ko, dst, 1, d) != rows_f64(k, src, 1, d)
                || rows_f64(&o.vo, dst, 1, d) != rows_f64(v, src, 1, d)
            {
                return Err(format!("(b,h) {bh}: compressed row {r} is not position {pos}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autotune::common::contract;
    use crate::inputs::random_bf16;

    #[test]
    fn snapkv_keeps_the_contract() {
        let counts = contract(&SnapKvTarget, |s| SnapShape { seq_len: s.seq_len - 1000, ..*s });
        // POOL_TILE 2048 … 32768 at both prompts, × 3 key-tile pairs.
        assert_eq!(counts, vec![15, 15]);
        let s = SnapKvTarget.shapes("decode").unwrap();
        assert_eq!(s.iter().map(|s| (s.batch, s.seq_len)).collect::<Vec<_>>(), [(1, 32768), (1, 131072)]);
        let d = SnapTiles::default();
        let cfg = |pool_tile| SnapConfig { pool_tile, block_n: d.block_n, votes_block_n: d.votes_block_n };
        assert_eq!(SnapKvTarget.heuristic(&s[1], 132), cfg(8192));
        // The merge's candidates at 128K: 16 tiles of 8192 × 2016 kept (bench-selection's
        // C2048 row); the op's own configurations are the ones built.
        assert_eq!(s[1].max_cand(8192), 16 * 2016);
        let op = SnapKvTarget::op(&s[1], &cfg(8192), None).unwrap();
        assert_eq!(op.max_cand, 16 * 2016);
        // Other key tiles reach the op's kernels (and so the key's candidate sources).
        let small =
            SnapKvTarget::op(&s[1], &SnapConfig { pool_tile: 8192, block_n: 32, votes_block_n: 64 }, None).unwrap();
        assert_eq!((small.block_n, small.votes_block_n), (32, 64));
        assert_eq!(small.configs()[0].get("BLOCK_N"), Some(32));
        assert_eq!(small.configs()[2].get("BLOCK_N"), Some(64));
        // A short prompt: the tiles stop at its length, the heuristic follows them.
        let short = SnapKvTarget.shapes("1x3000").unwrap()[0];
        let tiles: Vec<usize> = SnapKvTarget.candidates(&short).iter().map(|c| c.pool_tile).collect();
        assert_eq!(tiles, [2048, 2048, 2048, 4096, 4096, 4096]);
        assert_eq!(SnapKvTarget.heuristic(&short, 132).pool_tile, 4096);
        assert!(SnapKvTarget.shapes("1x2048").is_err());
    }

    /// The interpreter op's compression passes the check; a kept position swapped for a
    /// low-vote one, a wrong compressed row or a wrong count do not.
    #[test]
    fn the_snapkv_check_takes_the_ops_result_and_refuses_bad_ones() {
        let s = SnapShape {
            batch: 1,
            kv_heads: 2,
            group: 2,
            seq_len: 1500,
            head_dim: 16,
            window: 8,
            capacity: 264,
            kernel: 7,
        };
        let (b, h, d, cap, keep) = (1, 2, 16, s.capacity, s.keep());
        let q = random_bf16(&[b, h, s.group * s.window, d], 1);
        let (k, v) = (random_bf16(&[b, h, 1500, d], 2), random_bf16(&[b, h, 1500, d], 3));
        let c = SnapKvTarget.candidates(&s)[0];
        let op = SnapKvTarget::op(&s, &c, None).unwrap();
        let mut o = SnapOut {
            votes: HostTensor::full(DType::F32, &[b, h, 1500], f64::NAN),
            ki: HostTensor::full(DType::I32, &[b, h, keep], -1.0),
            kc: HostTensor::full(DType::I32, &[b, h], -1.0),
            ko: HostTensor::full(DType::BF16, &[b, h, cap, d], f64::NAN),
            vo: HostTensor::full(DType::BF16, &[b, h, cap, d], f64::NAN),
        };
        op.run_cpu(&q, &k, &v, s.seq_len, &mut o.votes, &mut o.ki, &mut o.kc, &mut o.ko, &mut o.vo).unwrap();
        let want = snap_reference(&q, &k, &s);
        check_snapkv(&s, &o, &k, &v, &want).unwrap();

        // The last slice (b 0, h 1) keeps its lowest-voted prefix position instead of its
        // best kept one (list still ascending).
        let (_, pooled, kept) = &want[1];
        let worst =
            (0..s.seq_len - s.window).filter(|p| !kept.contains(p)).min_by(|&a, &b| pooled[a].total_cmp(&pooled[b]));
        let best = *kept.iter().max_by(|&&a, &&b| pooled[a].total_cmp(&pooled[b])).unwrap();
        let mut sel: Vec<usize> = kept.iter().copied().filter(|&p| p != best).chain(worst).collect();
        sel.sort_unstable();
        let ki = o.ki.clone();
        let mut ids = ki.to_f64();
        ids[keep..].iter_mut().zip(&sel).for_each(|(x, &p)| *x = p as f64);
        o.ki = HostTensor::from_f64(DType::I32, &[b, h, keep], &ids);
        assert!(check_snapkv(&s, &o, &k, &v, &want).unwrap_err().contains("kept vote"));
        o.ki = ki;
        let ko = o.ko.clone();
        let mut rows = ko.to_f64();
        rows[(cap + 5) * d] += 1.0;
        o.ko = HostTensor::from_f64(DType::BF16, &[b, h, cap, d], &rows);
        assert!(check_snapkv(&s, &o, &k, &v, &want).unwrap_err().contains("compressed row 5"));
        o.ko = ko;
        o.kc = HostTensor::from_f64(DType::I32, &[b, h], &[keep as f64, keep as f64 - 1.0]);
        assert!(check_snapkv(&s, &o, &k, &v, &want).is_err());
    }
}
