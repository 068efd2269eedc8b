//! Threshold calibration for the centroid lookup (Squeezed Attention, algorithms.md §3).
//!
//! [`crate::CentroidDecode`] keeps the clusters whose score `max_g log2 P̂_c(q_g)` is above
//! a threshold (and within its top-`KEEP`). The paper calibrates one global threshold per
//! target sparsity from the last prompt queries: every key gets its cluster's estimated
//! probability, and the threshold is the quantile that keeps the wanted share of keys.
//! Here the statistic is the decode kernel's own score (one decode step = the `G` query
//! heads of a KV head at one position), pooled over calibration positions, KV heads and
//! (by the caller) layers, each cluster weighted by its key count — so the share of keys a
//! calibrated threshold keeps at decode is the share it kept over the calibration queries.

use tessera_codegen::host::HostTensor;

use crate::centroid::score_clusters;
use crate::error::{invalid, KernelError};

/// Scores of one calibration step: per cluster its score and its number of keys.
#[derive(Clone, Debug, PartialEq)]
pub struct CalibrationSample {
    pub scores: Vec<f64>,
    pub counts: Vec<usize>,
}

/// The threshold that keeps `keep_fraction` of the keys over `samples` (clusters with a
/// score strictly above it are kept): the scores sorted descending with their key counts
/// as weights, the threshold halfway between the last score needed to reach the fraction
/// and the next lower one. `-inf` keeps everything (fraction ≥ 1 or too few finite
/// scores); `+inf` keeps nothing (fraction ≤ 0).
pub fn calibrate_threshold(samples: &[CalibrationSample], keep_fraction: f64) -> f64 {
    if keep_fraction <= 0.0 {
        return f64::INFINITY;
    }
    // Every key counts in the total (as in `kept_fraction`); only finite scores can be kept.
    let total: usize = samples.iter().flat_map(|s| s.counts.iter()).sum();
    let mut pts: Vec<(f64, usize)> = samples
        .iter()
        .flat_map(|s| s.scores.iter().copied().zip(s.counts.iter().copied()))
        .filter(|&(x, n)| n > 0 && x.is_finite())
        .collect();
    let want = keep_fraction * total as f64;
    pts.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut kept = 0usize;
    for (i, &(x, n)) in pts.iter().enumerate() {
        kept += n;
        if kept as f64 >= want {
            // Keep every cluster scoring x (ties included): the threshold goes below x.
            return match pts[i + 1..].iter().find(|p| p.0 < x) {
                Some(&(lower, _)) => 0.5 * (x + lower),
                None => f64::NEG_INFINITY,
            };
        }
    }
    f64::NEG_INFINITY
}

/// Share of the keys a threshold keeps over `samples` (the calibration's own check, and
/// what a held-out set of queries measures).
pub fn kept_fraction(samples: &[CalibrationSample], threshold: f64) -> f64 {
    let (mut kept, mut total) = (0usize, 0usize);
    for s in samples {
        for (&x, &n) in s.scores.iter().zip(&s.counts) {
            total += n;
            if x > threshold {
                kept += n;
            }
        }
    }
    if total == 0 {
        0.0
    } else {
        kept as f64 / total as f64
    }
}

/// The samples of calibration queries `q_cal [B, Hkv·G, P, D]` (P positions, e.g. the
/// last prompt queries) against one clustering (`centroids [B, Hkv, C, D] f32`, `counts
/// [B, Hkv, C] i32`, host copies): one sample per (batch, KV head, position), scored as
/// the decode kernel scores (`scale_log2 · q·c`, max over the group).
pub fn calibration_samples(
    q_cal: &HostTensor,
    centroids: &HostTensor,
    counts: &HostTensor,
    group: usize,
    scale_log2: f64,
) -> Result<Vec<CalibrationSample>, KernelError> {
    const NAME: &str = "centroid_calibration";
    let (qs, cs, ns) = (&q_cal.shape, &centroids.shape, &counts.shape);
    if qs.len() != 4 || cs.len() != 4 || ns.len() != 3 {
        return Err(invalid(
            NAME,
            format!(
                "want q_cal [B, Hq, P, D], centroids [B, Hkv, C, D], counts [B, Hkv, C]; got {qs:?}, {cs:?}, {ns:?}"
            ),
        ));
    }
    let (b, hkv, c, d) = (cs[0], cs[1], cs[2], cs[3]);
    let p = qs[2];
    if qs[0] != b || qs[1] != hkv * group || qs[3] != d || ns[..] != [b, hkv, c] {
        return Err(invalid(
            NAME,
            format!("shapes disagree: q_cal {qs:?}, centroids {cs:?}, counts {ns:?}, group {group}"),
        ));
    }
    let (q, cen, cnt) = (q_cal.to_f64(), centroids.to_f64(), counts.to_f64());
    let mut out = Vec::with_capacity(b * hkv * p);
    for bh in 0..b * hkv {
        let cent = &cen[bh * c * d..(bh + 1) * c * d];
        let counts: Vec<usize> = cnt[bh * c..(bh + 1) * c].iter().map(|&x| x.max(0.0) as usize).collect();
        for pos in 0..p {
            // The group's queries at this position: rows (h·G + g, pos) of q_cal.
            let qs: Vec<f64> = (0..group)
                .flat_map(|g| {
                    let row = ((bh * group + g) * p + pos) * d;
                    q[row..row + d].to_vec()
                })
                .collect();
            out.push(CalibrationSample {
                scores: score_clusters(&qs, cent, &counts, d, scale_log2),
                counts: counts.clone(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(scores: &[f64], counts: &[usize]) -> CalibrationSample {
        CalibrationSample { scores: scores.to_vec(), counts: counts.to_vec() }
    }

    #[test]
    fn threshold_keeps_the_wanted_share_by_key_count() {
        // 100 keys: clusters of 50, 30, 20 keys scoring 3, 2, 1.
        let s = [sample(&[1.0, 3.0, 2.0], &[20, 50, 30])];
        let t = calibrate_threshold(&s, 0.5);
        assert_eq!(t, 2.5);
        assert_eq!(kept_fraction(&s, t), 0.5);
        let t = calibrate_threshold(&s, 0.6);
        assert_eq!(t, 1.5);
        assert_eq!(kept_fraction(&s, t), 0.8);
        assert_eq!(calibrate_threshold(&s, 1.0), f64::NEG_INFINITY);
        assert_eq!(calibrate_threshold(&s, 0.0), f64::INFINITY);
        assert_eq!(kept_fraction(&s, f64::INFINITY), 0.0);
    }

    #[test]
    fn ties_and_empty_or_masked_clusters() {
        // Equal scores are kept together; empty and -inf clusters never count.
        let s = [sample(&[2.0, 2.0, f64::NEG_INFINITY, 1.0], &[10, 10, 5, 0]), sample(&[0.5], &[20])];
        // 45 keys in all (the 5 of the -inf cluster are never kept): 30 % is 13.5 keys.
        let t = calibrate_threshold(&s, 0.3);
        assert_eq!(t, 1.25);
        assert!((kept_fraction(&s, t) - 20.0 / 45.0).abs() < 1e-12);
    }

    #[test]
    fn samples_score_like_the_decode_kernel() {
        // One batch, one KV head, group 2, 2 positions, 3 clusters, d 2.
        let q = HostTensor::from_f64(
            tessera_codegen::ir::DType::F32,
            &[1, 2, 2, 2],
            &[1.0, 0.0, 0.0, 1.0, /* head 1 */ 0.5, 0.5, -1.0, 0.0],
        );
        let cen =
            HostTensor::from_f64(tessera_codegen::ir::DType::F32, &[1, 1, 3, 2], &[1.0, 0.0, 0.0, 1.0, -1.0, 0.0]);
        let cnt = HostTensor::from_f64(tessera_codegen::ir::DType::I32, &[1, 1, 3], &[4.0, 2.0, 1.0]);
        let s = calibration_samples(&q, &cen, &cnt, 2, 1.0).unwrap();
        assert_eq!(s.len(), 2);
        // Position 0: queries (1, 0) of head 0 and (0.5, 0.5) of head 1.
        let want = score_clusters(&[1.0, 0.0, 0.5, 0.5], &cen.to_f64(), &[4, 2, 1], 2, 1.0);
        assert_eq!(s[0].scores, want);
        assert_eq!(s[0].counts, vec![4, 2, 1]);
        let bad = HostTensor::from_f64(tessera_codegen::ir::DType::F32, &[1, 3, 2, 2], &[0.0; 12]);
        assert!(calibration_samples(&bad, &cen, &cnt, 2, 1.0).is_err());
    }
}
