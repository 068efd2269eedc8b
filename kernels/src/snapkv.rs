//! SnapKV prefill-time KV selection (algorithms.md §4), per (batch, KV head).
//!
//! For a prompt of `T` keys and `C` cache slots (`T > C`), with an observation window of the
//! last `w` prompt queries:
//!
//! 1. `A = softmax(Q[-w:] · Kᵀ / √d)` with the causal mask inside the window (observation
//!    query `i` sits at position `T − w + i` and sees keys `0..=T − w + i`);
//! 2. `vote[j] = Σ_i A[i, j]` for `j` in the prefix `[0, T − w)`, and, under GQA, summed
//!    over the `GROUP` query heads of the KV head (the cache is per KV head; SnapKV itself
//!    is per head, its GQA ports average the group's votes — same ranking);
//! 3. 1-D pooling of the votes, kernel `k`, stride 1, padding `k / 2`: average
//!    (PyTorch `avg_pool1d`, padding counted: divide by `k`) or max (padding = -inf);
//! 4. the top-`(C − w)` pooled positions (ties: the lower position);
//! 5. the compressed cache: the selected keys/values (ascending position) followed by the
//!    last `w`, `C` rows per KV head.
//!
//! The host functions here are the algorithm (the f64 reference and the recall tool use
//! them). Row max / sum of `A` come first (pass 1), then the column sums (pass 2), so the
//! `w × T` matrix is never stored.

/// Votes pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    Avg,
    Max,
}

/// Column votes over the prefix `[0, t − w)` of one KV head: `keys [t, d]`, `obs
/// [group · w, d]` (observation query `i` of each head at position `t − w + i`), scores
/// `scale · q·k` (natural-log units). Returns `t − w` votes summed over the group.
pub fn votes(keys: &[f32], t: usize, d: usize, obs: &[f32], w: usize, scale: f32) -> Vec<f32> {
    let rows = obs.len() / d;
    assert!(w > 0 && w <= t && rows.is_multiple_of(w), "votes: bad window");
    let prefix = t - w;
    let mut out = vec![0.0f32; prefix];
    let mut s = vec![0.0f32; t];
    for r in 0..rows {
        let i = r % w;
        let q = &obs[r * d..(r + 1) * d];
        let visible = t - w + i + 1;
        let mut m = f32::NEG_INFINITY;
        for (j, sj) in s[..visible].iter_mut().enumerate() {
            *sj = scale * crate::recall::dot(q, &keys[j * d..(j + 1) * d]);
            m = m.max(*sj);
        }
        let mut sum = 0.0f32;
        for sj in s[..visible].iter_mut() {
            *sj = (*sj - m).exp();
            sum += *sj;
        }
        let inv = 1.0 / sum;
        for (o, sj) in out.iter_mut().zip(&s[..prefix]) {
            *o += sj * inv;
        }
    }
    out
}

/// Stride-1 pooling with kernel `k` (odd or even) and padding `k / 2`, output length =
/// input length for odd `k` (PyTorch's length `n + 2·(k/2) − k + 1`; for even `k` the
/// output is one longer and its last element is dropped so positions stay aligned).
pub fn pool(v: &[f32], k: usize, kind: Pool) -> Vec<f32> {
    let n = v.len();
    let pad = k / 2;
    (0..n)
        .map(|i| {
            let lo = i as isize - pad as isize;
            let win = (lo..lo + k as isize).filter(|&j| j >= 0 && (j as usize) < n).map(|j| v[j as usize]);
            match kind {
                Pool::Avg => win.sum::<f32>() / k as f32,
                Pool::Max => win.fold(f32::NEG_INFINITY, f32::max),
            }
        })
        .collect()
}

/// The top-`c` positions of `scores` (descending, ties to the lower position), then sorted
/// ascending.
pub fn top_positions(scores: &[f32], c: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    let c = c.min(order.len());
    let cmp = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    if c < order.len() && c > 0 {
        order.select_nth_unstable_by(c - 1, cmp);
    }
    order.truncate(c);
    order.sort_unstable();
    order
}

/// The kept positions of one KV head: top-`(c − w)` of the pooled prefix votes, then the
/// last `w` positions. `t <= c` keeps everything.
#[allow(clippy::too_many_arguments)]
pub fn select(
    keys: &[f32],
    t: usize,
    d: usize,
    obs: &[f32],
    w: usize,
    c: usize,
    kernel: usize,
    kind: Pool,
    scale: f32,
) -> Vec<usize> {
    if t <= c {
        return (0..t).collect();
    }
    let v = pool(&votes(keys, t, d, obs, w, scale), kernel, kind);
    let mut keep = top_positions(&v, c.saturating_sub(w));
    keep.extend(t - w..t);
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_matches_pytorch() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(pool(&v, 3, Pool::Avg), vec![1.0, 2.0, 3.0, 4.0, 3.0]);
        assert_eq!(pool(&v, 3, Pool::Max), vec![2.0, 3.0, 4.0, 5.0, 5.0]);
        assert_eq!(pool(&v, 1, Pool::Avg), v.to_vec());
        assert_eq!(top_positions(&[0.5, 2.0, 2.0, 1.0], 2), vec![1, 2]);
        assert_eq!(top_positions(&[3.0, 1.0, 3.0, 3.0], 2), vec![0, 2]);
    }

    #[test]
    fn votes_sum_to_prefix_mass() {
        // One obs query per head, 2 heads: votes ≤ 2 and each column ≥ 0.
        let (t, d, w) = (9, 2, 3);
        let keys: Vec<f32> = (0..t * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let obs: Vec<f32> = (0..2 * w * d).map(|i| (i as f32 * 0.11).cos()).collect();
        let v = votes(&keys, t, d, &obs, w, 1.0);
        assert_eq!(v.len(), t - w);
        let total: f32 = v.iter().sum();
        assert!(total > 0.0 && total < 2.0 * w as f32, "{total}");
        let sel = select(&keys, t, d, &obs, w, 5, 3, Pool::Max, 1.0);
        assert_eq!(sel.len(), 5);
        assert_eq!(&sel[2..], &[6, 7, 8]);
    }
}
