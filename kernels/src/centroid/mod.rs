//! Centroid lookup (Squeezed Attention, algorithms.md §3), per (batch, KV head).
//!
//! **Offline** ([`KMeansCluster`]): Lloyd k-means over the keys of a fixed context
//! `[0, T_f)` from given initial centroids (deterministic seeds: [`init_centroids`]),
//! `I` iterations of
//!
//! 1. [`kmeans_assign`](KmeansAssign) — label = `argmax_c (x · c − |c|² / 2)` = the nearest centroid in
//!    L2 (ties: the lower centroid), `x` the key, L2-normalized when `normalize` (the
//!    paper clusters normalized keys);
//! 2. [`kmeans_accumulate`](KmeansAccumulate) — per-cluster sums of `x` and counts by atomics;
//! 3. [`kmeans_finalize`](KmeansFinalize) — centroid = sum / count (an empty cluster keeps its centroid);
//!
//! then one more accumulate + finalize over the **unnormalized** keys, so the stored
//! centroids are the mean raw keys of each cluster (as the paper stores them). On the host
//! the labels are counting-sorted (stable) into `perm` and cluster `starts` (a scan: no
//! prefix sum in the DSL), and [`centroid_permute`](CentroidPermute) writes the cache with the fixed keys
//! and values permuted by cluster — cluster `c` is rows `[starts[c], starts[c + 1])` —
//! and the recent rows `[T_f, seq_len)` unchanged.
//!
//! **Decode** ([`CentroidDecode`]):
//!
//! 1. [`centroid_tile_lse`](CentroidTileLse) — per cluster `q_g · c` for the GQA group, and
//!    per tile of 64 centroids (every tile of every head in parallel) the partial
//!    log-sum-exps of the paper's denominator `Σ_k n_k exp(q·c_k/√d)`;
//! 2. [`centroid_select`](CentroidSelect) — merging the partials, per cluster the log2 of
//!    the estimated per-key probability `P̂_c = exp(q·c/√d) / Σ_k n_k exp(q·c_k/√d)`
//!    (maximum over the group), then the top-`KEEP` clusters, of those the ones with
//!    `log2 P̂ > threshold` (threshold variant; `-inf` = pure top-k), as contiguous row
//!    ranges (in no particular order);
//! 3. [`centroid_pack_rows`](CentroidPackRows) — the kept ranges expanded into one packed
//!    row list per head (offsets = prefix sums of the kept lengths);
//! 4. [`crate::block_sparse`]'s split kernel with one-row blocks — attention over the
//!    packed rows plus the recent rows `[T_f, seq_len)` as its window, the grid sharing
//!    the actual rows evenly (`split_len = 0`), merged by [`crate::LseCombine`].
//!
//! [`kmeans_reference`], [`cluster_layout`], [`score_clusters`], [`select_clusters`] are
//! the host algorithm (f64 reference and `tessera recall`).
//!
//! Files: [`reference`](mod@reference) (the host algorithm), [`kmeans`] (the offline clustering kernels
//! and [`KMeansCluster`]), [`decode`] (the decode kernels and [`CentroidDecode`]).

pub mod decode;
pub mod kmeans;
pub mod reference;

pub use decode::*;
pub use kmeans::*;
pub use reference::*;
