//! f64 references of every kernel. Tensors are flat row-major `f64` slices of values
//! already rounded to their storage dtype (`HostTensor::to_f64`); KV layout
//! `[b, hkv, n, d]` with `n` the cache capacity. Scores use `scale_log2` (what the
//! kernels take): `p_j ∝ exp2(scale_log2 · q·k_j)`, and LSEs are `log2 Σ_j exp2(..)`.

/// Attention of one query row over `positions` (a multiset: a repeated position counts
/// twice) of the KV head whose rows start at row `base`: returns `(o [d], lse2)`;
/// nothing to attend gives zeros and -inf.
pub fn attend(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    base: usize,
    positions: &[usize],
    d: usize,
    scale_log2: f64,
) -> (Vec<f64>, f64) {
    if positions.is_empty() {
        return (vec![0.0; d], f64::NEG_INFINITY);
    }
    let s: Vec<f64> = positions
        .iter()
        .map(|&p| scale_log2 * q.iter().zip(&k[(base + p) * d..(base + p + 1) * d]).map(|(a, b)| a * b).sum::<f64>())
        .collect();
    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = s.iter().map(|x| (x - m).exp2()).collect();
    let sum: f64 = w.iter().sum();
    let mut o = vec![0.0; d];
    for (wi, &p) in w.iter().zip(positions) {
        for (oe, ve) in o.iter_mut().zip(&v[(base + p) * d..(base + p + 1) * d]) {
            *oe += wi * ve;
        }
    }
    o.iter_mut().for_each(|x| *x /= sum);
    (o, m + sum.log2())
}

/// Shapes of a decode problem.
#[derive(Clone, Copy, Debug)]
pub struct DecodeDims {
    pub batch: usize,
    pub kv_heads: usize,
    pub group: usize,
    /// Cache capacity (the `n` of `[b, hkv, n, d]`).
    pub cap: usize,
    pub head_dim: usize,
}

/// Decode of `q [b, hkv·g, d]` where `keys(b, kv_head)` lists the attended positions:
/// returns `(out [b, hq, d], lse2 [b, hq])`.
pub fn decode_with(
    dims: DecodeDims,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    scale_log2: f64,
    keys: impl Fn(usize, usize) -> Vec<usize>,
) -> (Vec<f64>, Vec<f64>) {
    let DecodeDims { batch, kv_heads, group, cap, head_dim: d } = dims;
    let hq = kv_heads * group;
    let (mut out, mut lse) = (Vec::with_capacity(batch * hq * d), Vec::with_capacity(batch * hq));
    for b in 0..batch {
        for h in 0..hq {
            let kvh = h / group;
            let pos = keys(b, kvh);
            let (o, l) = attend(
                &q[(b * hq + h) * d..(b * hq + h + 1) * d],
                k,
                v,
                (b * kv_heads + kvh) * cap,
                &pos,
                d,
                scale_log2,
            );
            out.extend(o);
            lse.push(l);
        }
    }
    (out, lse)
}

/// The keys of a sink + window decode: `[0, min(s, n)) ∪ [max(n − w, 0), n)`, once each.
pub fn sink_window_positions(seq_len: usize, sink: usize, window: usize) -> Vec<usize> {
    (0..seq_len).filter(|&p| p < sink || p + window >= seq_len).collect()
}

/// Block-sparse key multiset: sink ∪ window, plus the tokens of each counted block that
/// are `< seq_len` and not in sink/window (a duplicated block index contributes twice).
pub fn block_sparse_positions(
    seq_len: usize,
    sink: usize,
    window: usize,
    blocks: &[i64],
    block_size: usize,
) -> Vec<usize> {
    let mut pos = sink_window_positions(seq_len, sink, window);
    let dense: std::collections::BTreeSet<usize> = pos.iter().copied().collect();
    for &blk in blocks {
        for p in blk as usize * block_size..(blk as usize + 1) * block_size {
            if p < seq_len && !dense.contains(&p) {
                pos.push(p);
            }
        }
    }
    pos
}

/// Mean key of every block: `[b, hkv, nb, d]` with `nb = ceil(seq_len / bs)`.
pub fn landmarks(
    k: &[f64],
    batch: usize,
    kv_heads: usize,
    cap: usize,
    d: usize,
    seq_len: usize,
    bs: usize,
) -> Vec<f64> {
    let nb = seq_len.div_ceil(bs);
    let mut out = vec![0.0; batch * kv_heads * nb * d];
    for bh in 0..batch * kv_heads {
        for j in 0..nb {
            let rows = j * bs..((j + 1) * bs).min(seq_len);
            let cnt = rows.len() as f64;
            for p in rows {
                for e in 0..d {
                    out[(bh * nb + j) * d + e] += k[(bh * cap + p) * d + e] / cnt;
                }
            }
        }
    }
    out
}

/// Block scores `[b, hkv, nb]`: max (or sum) over the group's heads of `q_h · lm`.
/// `lm` is `[b, hkv, nb_cap, d]`; only the first `nb` blocks are scored.
#[allow(clippy::too_many_arguments)]
pub fn block_scores(q: &[f64], lm: &[f64], dims: DecodeDims, nb_cap: usize, nb: usize, sum_heads: bool) -> Vec<f64> {
    let DecodeDims { batch, kv_heads, group, head_dim: d, .. } = dims;
    let mut out = Vec::with_capacity(batch * kv_heads * nb);
    for b in 0..batch {
        for h in 0..kv_heads {
            for j in 0..nb {
                let l = &lm[((b * kv_heads + h) * nb_cap + j) * d..][..d];
                let per_head = (0..group).map(|g| {
                    let qh = &q[(b * kv_heads * group + h * group + g) * d..][..d];
                    qh.iter().zip(l).map(|(a, c)| a * c).sum::<f64>()
                });
                out.push(if sum_heads { per_head.sum() } else { per_head.fold(f64::NEG_INFINITY, f64::max) });
            }
        }
    }
    out
}

/// Tree verification: `q [b, hq·t, d]`, `anc[b·t]` ancestor-or-self bitmasks; node `i`
/// attends to `[0, prefix)` and to `prefix + j` for every bit `j` of `anc[b, i]`.
/// Returns `(out [b, hq·t, d], lse2 [b, hq·t])`.
#[allow(clippy::too_many_arguments)]
pub fn tree_verify(
    dims: DecodeDims,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    anc: &[u64],
    prefix: usize,
    t: usize,
    scale_log2: f64,
) -> (Vec<f64>, Vec<f64>) {
    let DecodeDims { batch, kv_heads, group, cap, head_dim: d } = dims;
    let hq = kv_heads * group;
    let (mut out, mut lse) = (Vec::new(), Vec::new());
    for b in 0..batch {
        for h in 0..hq {
            for i in 0..t {
                let mut pos: Vec<usize> = (0..prefix).collect();
                pos.extend((0..t).filter(|&j| anc[b * t + i] >> j & 1 == 1).map(|j| prefix + j));
                let row = (b * hq + h) * t + i;
                let base = (b * kv_heads + h / group) * cap;
                let (o, l) = attend(&q[row * d..(row + 1) * d], k, v, base, &pos, d, scale_log2);
                out.extend(o);
                lse.push(l);
            }
        }
    }
    (out, lse)
}

/// Largest `|got − want|` over the largest `|want|` (NaN or a length mismatch fails).
pub fn rel_err(got: &[f64], want: &[f64]) -> Result<f64, String> {
    if got.len() != want.len() {
        return Err(format!("length {} vs reference {}", got.len(), want.len()));
    }
    let scale = want.iter().filter(|x| x.is_finite()).fold(0.0f64, |m, x| m.max(x.abs())).max(1e-30);
    let mut worst: f64 = 0.0;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let e = if g == w { 0.0 } else { (g - w).abs() };
        if e.is_nan() {
            return Err(format!("element {i}: got {g}, want {w}"));
        }
        worst = worst.max(e / scale);
    }
    Ok(worst)
}

/// Rotate-half RoPE of `x [d]` at row `pos` of `cos`/`sin [P, d/2]` (pairs `(i, i + d/2)`).
pub fn rope_rotate_half(x: &[f64], cos: &[f64], sin: &[f64], pos: usize, d: usize) -> Vec<f64> {
    let h = d / 2;
    let mut out = vec![0.0; d];
    for i in 0..h {
        let (c, s) = (cos[pos * h + i], sin[pos * h + i]);
        out[i] = x[i] * c - x[i + h] * s;
        out[i + h] = x[i + h] * c + x[i] * s;
    }
    out
}

/// LM-Infinite decode in f64: keys `k` stored before RoPE, each rotated at
/// `max(p, seq_len − 1 − cap)`, attended over the sink + window positions.
#[allow(clippy::too_many_arguments)]
pub fn lm_infinite(
    dims: DecodeDims,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    cos: &[f64],
    sin: &[f64],
    (seq_len, sink, window, cap): (usize, usize, usize, usize),
    scale_log2: f64,
) -> (Vec<f64>, Vec<f64>) {
    let d = dims.head_dim;
    let oldest = (seq_len - 1).saturating_sub(cap);
    let mut rotated = vec![0.0; k.len()];
    for (row, (dst, src)) in rotated.chunks_mut(d).zip(k.chunks(d)).enumerate() {
        let pos = row % dims.cap;
        if pos < seq_len {
            dst.copy_from_slice(&rope_rotate_half(src, cos, sin, pos.max(oldest), d));
        }
    }
    decode_with(dims, q, &rotated, v, scale_log2, |_, _| sink_window_positions(seq_len, sink, window))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        assert_eq!(sink_window_positions(10, 2, 3), vec![0, 1, 7, 8, 9]);
        assert_eq!(sink_window_positions(4, 3, 3), vec![0, 1, 2, 3]);
        assert_eq!(sink_window_positions(4, 0, 10), vec![0, 1, 2, 3]);
        assert_eq!(sink_window_positions(4, 0, 0), Vec::<usize>::new());
        assert_eq!(block_sparse_positions(10, 1, 2, &[0, 2, 2], 4), vec![0, 8, 9, 1, 2, 3]);
        let (o, l) = attend(&[1.0], &[2.0, 2.0], &[3.0, 5.0], 0, &[0, 1], 1, 1.0);
        assert_eq!((o, l), (vec![4.0], 3.0));
    }
}
