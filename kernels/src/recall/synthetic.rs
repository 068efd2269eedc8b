//! Synthetic decode-attention inputs with the structure sparse-attention methods exploit.
//!
//! One problem = `kv_heads` KV heads of `n` keys (`head_dim` = d, f32), `group` query heads
//! per KV head, and for SnapKV `obs_window` observation queries per query head (the last
//! prompt queries, sitting at key positions `[n − obs_window, n)`). The decode query sits
//! at position `n` and attends all `n` keys. All structure is stated in **logit units**
//! (`q·k/√d`, natural log), so the defaults say directly how peaked the attention is.
//!
//! Per KV head `h`:
//!
//! 1. **Clusters.** `clusters` centres `μ_c ~ N(0, I_d)`. The sequence is cut into topic
//!    segments of geometric length (mean `segment_mean` tokens); each segment draws a
//!    cluster uniformly and its keys are `k_j = μ_c + key_noise · z_j`, `z_j ~ N(0, I_d)`.
//! 2. **Queries.** Query head `g` of the group has a relevant set `R_g` = {one cluster shared
//!    by the group, one cluster of its own}: `q_g = s · (μ_shared + μ_own) / 2` with
//!    `s = topic_logit · 2/√d`, so a key of a relevant cluster scores ≈ `topic_logit` and
//!    any other key ≈ 0 (both ± ≈ `topic_logit · √2 / √d · key_noise`). The group's heads
//!    agree on one topic and disagree on another: max-over-group aggregation matters.
//! 3. **Direction `v`.** `v = q̄ / |q̄|² · √d` with `q̄` the group's mean query, so adding
//!    `x · v` to a key adds exactly `x` to its logit for `q̄` (≈ `x` for each head).
//! 4. **Needles.** `needles` start positions uniform in `[sink, n − recent_window −
//!    needle_len)`; the `needle_len` keys from each get `needle_logit · v + key_noise · z`
//!    (a planted passkey of a few tokens: a short run of keys carrying a large share of
//!    the mass, which coarse block averaging dilutes and a coarse tree search may miss).
//! 5. **Sink.** The first `sink_tokens` keys get `+ sink_logit · v` (attention sinks).
//! 6. **Recency.** Every key gets `+ recency_logit · exp(−age / recency_tau) · v`, with
//!    `age = n − 1 − j`.
//! 7. **Observation queries** (SnapKV): `q_obs = q_g + obs_noise · |q_g| · ξ / √d`,
//!    `ξ ~ N(0, I_d)` (cosine with `q_g` ≈ `1/√(1 + obs_noise²)`): the prompt's last queries
//!    ask about the same thing as the decode query, less precisely.
//!
//! Everything comes from one `StdRng` seeded with `seed`: same config, same problem.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Generator settings (see the module doc).
#[derive(Clone, Debug)]
pub struct SyntheticConfig {
    pub n: usize,
    pub head_dim: usize,
    pub kv_heads: usize,
    pub group: usize,
    pub clusters: usize,
    pub segment_mean: f64,
    pub key_noise: f32,
    pub topic_logit: f32,
    pub needles: usize,
    pub needle_logit: f32,
    pub needle_len: usize,
    pub sink_tokens: usize,
    pub sink_logit: f32,
    pub recency_logit: f32,
    pub recency_tau: f32,
    /// Needles are placed before `n − recent_window` (outside the recent window).
    pub recent_window: usize,
    pub obs_window: usize,
    pub obs_noise: f32,
    pub seed: u64,
}

impl SyntheticConfig {
    /// Defaults: d 128, 2 KV heads × group 4, 64 clusters in segments of mean 256 tokens,
    /// key noise 1, topic logit 4, 8 needles of 8 tokens at logit 7, 4 sink tokens at +6, recency
    /// +3·exp(−age/256), observation window 32 with noise 0.75.
    pub fn new(n: usize, seed: u64) -> Self {
        SyntheticConfig {
            n,
            head_dim: 128,
            kv_heads: 2,
            group: 4,
            clusters: 64,
            segment_mean: 256.0,
            key_noise: 1.0,
            topic_logit: 4.0,
            needles: 8,
            needle_logit: 7.0,
            needle_len: 8,
            sink_tokens: 4,
            sink_logit: 6.0,
            recency_logit: 3.0,
            recency_tau: 256.0,
            recent_window: 256,
            obs_window: 32,
            obs_noise: 0.75,
            seed,
        }
    }
}

/// A generated problem. Layouts: `keys [kv_heads, n, d]`, `queries [kv_heads · group, d]`,
/// `obs [kv_heads · group, obs_window, d]` (observation query `i` sits at position
/// `n − obs_window + i`), `needles [kv_heads][..]` (sorted positions of every needle token).
#[derive(Clone, Debug)]
pub struct Synthetic {
    pub cfg: SyntheticConfig,
    pub keys: Vec<f32>,
    pub queries: Vec<f32>,
    pub obs: Vec<f32>,
    pub needles: Vec<Vec<usize>>,
}

impl Synthetic {
    pub fn key(&self, h: usize, j: usize) -> &[f32] {
        let (n, d) = (self.cfg.n, self.cfg.head_dim);
        &self.keys[(h * n + j) * d..][..d]
    }
    pub fn keys_of(&self, h: usize) -> &[f32] {
        let (n, d) = (self.cfg.n, self.cfg.head_dim);
        &self.keys[h * n * d..][..n * d]
    }
    pub fn query(&self, qh: usize) -> &[f32] {
        let d = self.cfg.head_dim;
        &self.queries[qh * d..][..d]
    }
    pub fn obs_of(&self, qh: usize) -> &[f32] {
        let (w, d) = (self.cfg.obs_window, self.cfg.head_dim);
        &self.obs[qh * w * d..][..w * d]
    }
}

/// Standard normal samples (Box–Muller; `rand_distr` is not a dependency).
fn fill_normal(rng: &mut StdRng, out: &mut [f32]) {
    let mut it = out.chunks_mut(2);
    for pair in &mut it {
        let u1: f64 = rng.random::<f64>().max(1e-300);
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        pair[0] = (r * t.cos()) as f32;
        if pair.len() > 1 {
            pair[1] = (r * t.sin()) as f32;
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    super::dot(a, b)
}

/// Generates the problem described in the module doc.
pub fn generate(cfg: &SyntheticConfig) -> Synthetic {
    let SyntheticConfig { n, head_dim: d, kv_heads, group, .. } = *cfg;
    assert!(n > 0 && d > 0 && kv_heads > 0 && group > 0 && cfg.clusters >= 2, "degenerate synthetic config");
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let sqrt_d = (d as f32).sqrt();
    let mut keys = vec![0.0f32; kv_heads * n * d];
    let mut queries = vec![0.0f32; kv_heads * group * d];
    let mut obs = vec![0.0f32; kv_heads * group * cfg.obs_window * d];
    let mut needles = Vec::with_capacity(kv_heads);
    for h in 0..kv_heads {
        let mut mu = vec![0.0f32; cfg.clusters * d];
        fill_normal(&mut rng, &mut mu);
        let centre = |c: usize| &mu[c * d..(c + 1) * d];
        // Queries: relevant = {shared, own}; scale so q · μ_c / √d ≈ topic_logit for c ∈ R_g.
        let shared = rng.random_range(0..cfg.clusters);
        let mut qbar = vec![0.0f32; d];
        for g in 0..group {
            let own = loop {
                let c = rng.random_range(0..cfg.clusters);
                if c != shared || cfg.clusters < 2 {
                    break c;
                }
            };
            let q = &mut queries[(h * group + g) * d..][..d];
            for ((x, a), b) in q.iter_mut().zip(centre(shared)).zip(centre(own)) {
                *x = 0.5 * (a + b);
            }
            // q · μ_shared ≈ |μ|²/2 ≈ d/2: scale to topic_logit · √d.
            let s = cfg.topic_logit * sqrt_d / (0.5 * d as f32);
            q.iter_mut().for_each(|x| *x *= s);
            for (m, x) in qbar.iter_mut().zip(q.iter()) {
                *m += x / group as f32;
            }
        }
        let qn2 = dot(&qbar, &qbar).max(1e-12);
        let v: Vec<f32> = qbar.iter().map(|x| x / qn2 * sqrt_d).collect();
        // Keys: topic segments.
        let kh = &mut keys[h * n * d..][..n * d];
        fill_normal(&mut rng, kh);
        kh.iter_mut().for_each(|x| *x *= cfg.key_noise);
        let mut j = 0;
        while j < n {
            let u: f64 = rng.random::<f64>().max(1e-12);
            let len = ((-u.ln()) * cfg.segment_mean).ceil().max(1.0) as usize;
            let c = rng.random_range(0..cfg.clusters);
            for p in j..(j + len).min(n) {
                for (x, m) in kh[p * d..(p + 1) * d].iter_mut().zip(centre(c)) {
                    *x += m;
                }
            }
            j += len;
        }
        // Needles replace the key with needle_logit · v + noise.
        let lo = cfg.sink_tokens.min(n);
        let hi = n.saturating_sub(cfg.recent_window + cfg.needle_len).max(lo);
        let mut pos = Vec::new();
        if hi > lo {
            for _ in 0..cfg.needles {
                let s = rng.random_range(lo..hi);
                pos.extend(s..s + cfg.needle_len);
            }
        }
        pos.sort_unstable();
        pos.dedup();
        let mut z = vec![0.0f32; d];
        for &p in &pos {
            fill_normal(&mut rng, &mut z);
            for e in 0..d {
                kh[p * d + e] = cfg.needle_logit * v[e] + cfg.key_noise * z[e];
            }
        }
        // Sink and recency.
        for p in 0..n {
            let age = (n - 1 - p) as f32;
            let mut bonus = cfg.recency_logit * (-age / cfg.recency_tau).exp();
            if p < cfg.sink_tokens {
                bonus += cfg.sink_logit;
            }
            if bonus > 1e-6 {
                for e in 0..d {
                    kh[p * d + e] += bonus * v[e];
                }
            }
        }
        needles.push(pos);
        // Observation queries.
        for g in 0..group {
            let q = queries[(h * group + g) * d..][..d].to_vec();
            let qn = dot(&q, &q).sqrt();
            for i in 0..cfg.obs_window {
                fill_normal(&mut rng, &mut z);
                let o = &mut obs[((h * group + g) * cfg.obs_window + i) * d..][..d];
                for e in 0..d {
                    o[e] = q[e] + cfg.obs_noise * qn * z[e] / sqrt_d;
                }
            }
        }
    }
    Synthetic { cfg: cfg.clone(), keys, queries, obs, needles }
}
