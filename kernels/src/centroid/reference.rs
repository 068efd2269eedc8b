//! The host algorithm of the centroid lookup (f64): seeds, Lloyd k-means, the cluster
//! layout, cluster scores and the selection — the reference of the kernels and `tessera recall`.

/// `c` distinct rows of `keys [t, d]` chosen by a seeded partial Fisher–Yates shuffle
/// (normalized when `normalize`): the initial centroids `[c, d]`.
pub fn init_centroids(keys: &[f64], t: usize, d: usize, c: usize, normalize: bool, seed: u64) -> Vec<f64> {
    let mut out = Vec::with_capacity(c * d);
    for j in init_indices(t, c, seed) {
        let row = &keys[j * d..(j + 1) * d];
        let inv = if normalize { inv_norm(row) } else { 1.0 };
        out.extend(row.iter().map(|x| x * inv));
    }
    out
}

/// The `c` distinct key indices of [`init_centroids`].
pub fn init_indices(t: usize, c: usize, seed: u64) -> Vec<usize> {
    assert!(c <= t && c > 0, "init_centroids: need 0 < c <= t");
    let mut idx: Vec<usize> = (0..t).collect();
    let mut s = seed ^ 0x9e37_79b9_7f4a_7c15;
    for i in 0..c {
        // splitmix64: deterministic and independent of the rand crate's version.
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let j = i + (z % (t - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(c);
    idx
}

fn inv_norm(x: &[f64]) -> f64 {
    let n: f64 = x.iter().map(|v| v * v).sum();
    if n > 0.0 {
        1.0 / n.sqrt()
    } else {
        1.0
    }
}

/// A clustering of one (batch, KV head).
#[derive(Clone, Debug, PartialEq)]
pub struct Clustering {
    pub labels: Vec<usize>,
    /// `[c, d]`: the mean unnormalized key of each cluster (empty: the last centroid).
    pub centroids: Vec<f64>,
    pub counts: Vec<usize>,
    /// `[c, d]`: the centroids of the last assignment.
    pub assign_centroids: Vec<f64>,
}

/// Nearest centroid of `x` by `x·c − |c|²/2` (ties: lower index).
pub fn nearest(x: &[f64], centroids: &[f64], d: usize) -> usize {
    let mut best = (f64::NEG_INFINITY, 0);
    for (ci, c) in centroids.chunks_exact(d).enumerate() {
        let s: f64 = x.iter().zip(c).map(|(a, b)| a * b).sum::<f64>() - 0.5 * c.iter().map(|v| v * v).sum::<f64>();
        if s > best.0 {
            best = (s, ci);
        }
    }
    best.1
}

fn means(xs: &[f64], d: usize, labels: &[usize], old: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let c = old.len() / d;
    let mut sum = vec![0.0; c * d];
    let mut cnt = vec![0usize; c];
    for (j, &l) in labels.iter().enumerate() {
        cnt[l] += 1;
        for (s, x) in sum[l * d..(l + 1) * d].iter_mut().zip(&xs[j * d..(j + 1) * d]) {
            *s += x;
        }
    }
    for ci in 0..c {
        let row = &mut sum[ci * d..(ci + 1) * d];
        if cnt[ci] == 0 {
            row.copy_from_slice(&old[ci * d..(ci + 1) * d]);
        } else {
            row.iter_mut().for_each(|x| *x /= cnt[ci] as f64);
        }
    }
    (sum, cnt)
}

/// Lloyd k-means of `keys [t, d]` from `init [c, d]`, `iters` × (assign, update), then the
/// raw-key means of the final labels (the algorithm of [`KMeansCluster`](super::KMeansCluster)).
pub fn kmeans_reference(keys: &[f64], t: usize, d: usize, init: &[f64], iters: usize, normalize: bool) -> Clustering {
    let xs: Vec<f64> = if normalize {
        keys[..t * d].chunks_exact(d).flat_map(|r| r.iter().map(move |x| x * inv_norm(r))).collect()
    } else {
        keys[..t * d].to_vec()
    };
    let mut cent = init.to_vec();
    let mut labels = vec![0usize; t];
    let mut assign = cent.clone();
    for _ in 0..iters {
        assign = cent.clone();
        for (j, l) in labels.iter_mut().enumerate() {
            *l = nearest(&xs[j * d..(j + 1) * d], &cent, d);
        }
        cent = means(&xs, d, &labels, &cent).0;
    }
    let (centroids, counts) = means(&keys[..t * d], d, &labels, &cent);
    Clustering { labels, centroids, counts, assign_centroids: assign }
}

/// Stable counting sort of `labels` into `c` clusters: `(perm, starts)` with `perm[r]` the
/// original position of permuted row `r` and cluster `i` = rows `[starts[i], starts[i+1])`.
pub fn cluster_layout(labels: &[usize], c: usize) -> (Vec<usize>, Vec<usize>) {
    let mut starts = vec![0usize; c + 1];
    for &l in labels {
        starts[l + 1] += 1;
    }
    for i in 0..c {
        starts[i + 1] += starts[i];
    }
    let mut next = starts.clone();
    let mut perm = vec![0usize; labels.len()];
    for (j, &l) in labels.iter().enumerate() {
        perm[next[l]] = j;
        next[l] += 1;
    }
    (perm, starts)
}

/// Cluster scores of one KV head: `max_g log2 P̂_c(q_g)` with
/// `log2 P̂_c = s_c − log2 Σ_k n_k 2^{s_k}`, `s = scale_log2 · q·c`; empty clusters -inf.
pub fn score_clusters(qs: &[f64], centroids: &[f64], counts: &[usize], d: usize, scale_log2: f64) -> Vec<f64> {
    let c = counts.len();
    let mut best = vec![f64::NEG_INFINITY; c];
    for q in qs.chunks_exact(d) {
        let s: Vec<f64> = centroids
            .chunks_exact(d)
            .map(|cc| scale_log2 * q.iter().zip(cc).map(|(a, b)| a * b).sum::<f64>())
            .collect();
        let m = s.iter().zip(counts).filter(|x| *x.1 > 0).map(|x| *x.0).fold(f64::NEG_INFINITY, f64::max);
        let l: f64 = s.iter().zip(counts).map(|(x, &n)| n as f64 * (x - m).exp2()).sum();
        let lse = m + l.log2();
        for i in 0..c {
            if counts[i] > 0 {
                best[i] = best[i].max(s[i] - lse);
            }
        }
    }
    best
}

/// The clusters [`centroid_select`](super::CentroidSelect) keeps: the top-`keep` scores (ties: lower id) above
/// `threshold` (and finite), as a set (ascending ids; the kernel emits them in no
/// particular order).
pub fn select_clusters(scores: &[f64], keep: usize, threshold: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.truncate(keep);
    order.retain(|&i| scores[i] > threshold && scores[i] > f64::NEG_INFINITY);
    order.sort_unstable();
    order
}

/// The clusters a centroid selection kept for one (batch, KV head), decoded from its
/// outputs: `keep_start` / `keep_len` (this head's slots), `count` live slots and `starts`
/// (this head's `[C + 1]` cluster starts). Every live slot must be the row range of one
/// non-empty cluster and no cluster may be kept twice. Returns the ids ascending (the
/// kernels emit them in score order).
pub fn kept_clusters(starts: &[f64], keep_start: &[f64], keep_len: &[f64], count: f64) -> Result<Vec<usize>, String> {
    let keep = keep_start.len().min(keep_len.len());
    if !(0.0..=keep as f64).contains(&count) || count.fract() != 0.0 {
        return Err(format!("keep_count {count} not in 0..={keep}"));
    }
    let c = starts.len().saturating_sub(1);
    let mut ids = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let (s0, len) = (keep_start[i], keep_len[i]);
        // The first cluster starting at s0 with rows (empty clusters share its start).
        let first = starts.partition_point(|&v| v < s0);
        match (first..c).find(|&j| starts[j] == s0 && starts[j + 1] > s0) {
            Some(j) if starts[j + 1] - starts[j] == len => ids.push(j),
            _ => return Err(format!("slot {i} range ({s0}, {len}) is no cluster")),
        }
    }
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("cluster {} kept twice", w[0]));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::kept_clusters;

    /// Clusters 0..4 = rows [0, 3), [3, 3) (empty), [3, 7), [7, 8).
    const STARTS: [f64; 5] = [0.0, 3.0, 3.0, 7.0, 8.0];

    #[test]
    fn kept_ranges_decode_to_ascending_ids_in_any_slot_order() {
        let got = kept_clusters(&STARTS, &[7.0, 0.0, 3.0, 0.0], &[1.0, 3.0, 4.0, 0.0], 3.0);
        assert_eq!(got, Ok(vec![0, 2, 3]));
    }

    #[test]
    fn bad_kept_ranges_are_refused() {
        let twice = kept_clusters(&STARTS, &[3.0, 3.0], &[4.0, 4.0], 2.0);
        assert!(twice.unwrap_err().contains("kept twice"));
        let partial = kept_clusters(&STARTS, &[3.0], &[2.0], 1.0);
        assert!(partial.unwrap_err().contains("is no cluster"));
        assert!(kept_clusters(&STARTS, &[0.0], &[3.0], 2.0).unwrap_err().contains("keep_count"));
    }
}
