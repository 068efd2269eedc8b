//! A plain f32 CPU forward pass for Llama-family models: embedding, RMSNorm, Q/K/V
//! projections, RoPE (the GGUF pairing), grouped-query attention over a KV cache laid out
//! `[layer][kv_head][seq][dim]`, SwiGLU MLP, final norm and (tied) output projection.
//!
//! Linear layers are row-major matrix products parallelised over output rows with rayon;
//! a prefill processes all prompt tokens in one pass so every weight row is read once.

use rayon::prelude::*;

use crate::config::{LlamaConfig, RopePairing};
use crate::model::{LlamaWeights, Matrix};
use crate::DecodeError;

/// KV cache: for each layer, `k` and `v` of shape [kv_head, capacity, head_dim].
#[derive(Debug, Clone)]
pub struct KvCache {
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    pub capacity: usize,
    pub len: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl KvCache {
    pub fn new(c: &LlamaConfig, capacity: usize) -> Self {
        let size = c.n_kv_heads * capacity * c.head_dim;
        KvCache {
            k: (0..c.n_layers).map(|_| vec![0.0; size]).collect(),
            v: (0..c.n_layers).map(|_| vec![0.0; size]).collect(),
            capacity,
            len: 0,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
        }
    }

    fn at(&self, head: usize, pos: usize) -> usize {
        (head * self.capacity + pos) * self.head_dim
    }
}

/// Runs a model on the CPU, keeping its KV cache between calls.
pub struct CpuModel<'w> {
    pub weights: &'w LlamaWeights,
    pub cache: KvCache,
    /// Inverse RoPE frequencies, head_dim / 2 of them.
    inv_freq: Vec<f32>,
}

/// `a · b` with independent partial sums so that the compiler vectorises it.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..L {
            acc[j] += x[j] * y[j];
        }
    }
    let mut s: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    for (i, a) in acc.iter().enumerate().take(L / 2) {
        s += a + acc[i + L / 2];
    }
    s
}

/// `out[n, w.rows] = x[n, w.cols] · wᵀ`, parallel over blocks of weight rows.
pub fn matmul(x: &[f32], n: usize, w: &Matrix, out: &mut [f32]) {
    let (m, k) = (w.rows, w.cols);
    debug_assert_eq!(x.len(), n * k);
    debug_assert_eq!(out.len(), n * m);
    const ROWS: usize = 32;
    if n == 1 {
        out.par_chunks_mut(ROWS).enumerate().for_each(|(b, o)| {
            for (j, y) in o.iter_mut().enumerate() {
                *y = dot(x, w.row(b * ROWS + j));
            }
        });
        return;
    }
    // Transposed result [m, n] so each task owns whole rows, then transpose back.
    let mut t = vec![0f32; m * n];
    t.par_chunks_mut(ROWS * n).enumerate().for_each(|(b, o)| {
        for (j, orow) in o.chunks_exact_mut(n).enumerate() {
            let wr = w.row(b * ROWS + j);
            for (i, y) in orow.iter_mut().enumerate() {
                *y = dot(&x[i * k..(i + 1) * k], wr);
            }
        }
    });
    for r in 0..m {
        for i in 0..n {
            out[i * m + r] = t[r * n + i];
        }
    }
}

pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let r = 1.0 / (ms + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = g * (v * r);
    }
}

fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

impl<'w> CpuModel<'w> {
    /// A runner with a KV cache of `context` positions.
    pub fn new(weights: &'w LlamaWeights, context: usize) -> Self {
        let c = &weights.config;
        let inv_freq = c.rope_inv_freq().into_iter().map(|f| f as f32).collect::<Vec<f32>>();
        CpuModel { weights, cache: KvCache::new(c, context), inv_freq }
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.weights.config
    }

    /// Forgets the cached context.
    pub fn reset(&mut self) {
        self.cache.len = 0;
    }

    fn rope(&self, x: &mut [f32], n_heads: usize, pos: usize) {
        let c = self.config();
        let d = c.head_dim;
        let p = pos as f32 / c.rope_scaling.position_divisor();
        for h in 0..n_heads {
            let head = &mut x[h * d..(h + 1) * d];
            for (i, &f) in self.inv_freq.iter().enumerate() {
                let (sin, cos) = (p * f).sin_cos();
                let (a, b) = match c.rope_pairing {
                    RopePairing::Interleaved => (2 * i, 2 * i + 1),
                    RopePairing::Half => (i, i + d / 2),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos - x1 * sin;
                head[b] = x0 * sin + x1 * cos;
            }
        }
    }

    /// Runs `tokens` (appended after the cached context) and returns the logits of the last
    /// one. With `all_logits`, returns the logits of every token ([n, vocab]).
    pub fn forward(&mut self, tokens: &[u32], all_logits: bool) -> Result<Vec<f32>, DecodeError> {
        let w = self.weights;
        let c = &w.config;
        let n = tokens.len();
        if n == 0 {
            return Err(DecodeError::EmptyPrompt);
        }
        let pos0 = self.cache.len;
        if pos0 + n > self.cache.capacity {
            return Err(DecodeError::ContextFull { needed: pos0 + n, context: self.cache.capacity });
        }
        let (h, qd, kvd, ff, hd) = (c.hidden, c.q_dim(), c.kv_dim(), c.ffn_hidden, c.head_dim);
        let mut x = vec![0f32; n * h];
        for (i, &t) in tokens.iter().enumerate() {
            if t as usize >= c.vocab {
                return Err(DecodeError::TokenOutOfRange { token: t, vocab: c.vocab });
            }
            x[i * h..(i + 1) * h].copy_from_slice(w.embedding.row(t as usize));
        }
        let mut xn = vec![0f32; n * h];
        let mut q = vec![0f32; n * qd];
        let mut k = vec![0f32; n * kvd];
        let mut v = vec![0f32; n * kvd];
        let mut att = vec![0f32; n * qd];
        let mut proj = vec![0f32; n * h];
        let mut gate = vec![0f32; n * ff];
        let mut up = vec![0f32; n * ff];
        let group = c.n_heads / c.n_kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();

        for (li, l) in w.layers.iter().enumerate() {
            for i in 0..n {
                rms_norm(&x[i * h..(i + 1) * h], &l.attn_norm, c.rms_eps, &mut xn[i * h..(i + 1) * h]);
            }
            matmul(&xn, n, &l.wq, &mut q);
            matmul(&xn, n, &l.wk, &mut k);
            matmul(&xn, n, &l.wv, &mut v);
            for i in 0..n {
                self.rope(&mut q[i * qd..(i + 1) * qd], c.n_heads, pos0 + i);
                self.rope(&mut k[i * kvd..(i + 1) * kvd], c.n_kv_heads, pos0 + i);
            }
            let cache = &mut self.cache;
            for i in 0..n {
                for kh in 0..c.n_kv_heads {
                    let at = cache.at(kh, pos0 + i);
                    cache.k[li][at..at + hd].copy_from_slice(&k[i * kvd + kh * hd..i * kvd + (kh + 1) * hd]);
                    cache.v[li][at..at + hd].copy_from_slice(&v[i * kvd + kh * hd..i * kvd + (kh + 1) * hd]);
                }
            }
            let cache = &self.cache;
            let (kc, vc) = (&cache.k[li], &cache.v[li]);
            // One task per (token, head): scores over the causal prefix, softmax, sum of V.
            att.par_chunks_mut(hd).enumerate().for_each(|(idx, out)| {
                let (i, head) = (idx / c.n_heads, idx % c.n_heads);
                let kh = head / group;
                let qv = &q[i * qd + head * hd..i * qd + (head + 1) * hd];
                let len = pos0 + i + 1;
                let mut s: Vec<f32> = (0..len)
                    .map(|p| {
                        let at = cache.at(kh, p);
                        dot(qv, &kc[at..at + hd]) * scale
                    })
                    .collect();
                softmax_in_place(&mut s);
                out.fill(0.0);
                for (p, &a) in s.iter().enumerate() {
                    let at = cache.at(kh, p);
                    for (o, &vv) in out.iter_mut().zip(&vc[at..at + hd]) {
                        *o += a * vv;
                    }
                }
            });
            matmul(&att, n, &l.wo, &mut proj);
            x.iter_mut().zip(&proj).for_each(|(a, b)| *a += b);

            for i in 0..n {
                rms_norm(&x[i * h..(i + 1) * h], &l.ffn_norm, c.rms_eps, &mut xn[i * h..(i + 1) * h]);
            }
            matmul(&xn, n, &l.w_gate, &mut gate);
            matmul(&xn, n, &l.w_up, &mut up);
            gate.iter_mut().zip(&up).for_each(|(g, u)| *g = *g / (1.0 + (-*g).exp()) * u);
            matmul(&gate, n, &l.w_down, &mut proj);
            x.iter_mut().zip(&proj).for_each(|(a, b)| *a += b);
        }
        self.cache.len = pos0 + n;

        let rows: Vec<usize> = if all_logits { (0..n).collect() } else { vec![n - 1] };
        let mut normed = vec![0f32; rows.len() * h];
        for (j, &i) in rows.iter().enumerate() {
            rms_norm(&x[i * h..(i + 1) * h], &w.final_norm, c.rms_eps, &mut normed[j * h..(j + 1) * h]);
        }
        let mut logits = vec![0f32; rows.len() * c.vocab];
        matmul(&normed, rows.len(), w.lm_head(), &mut logits);
        Ok(logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RopeScaling;

    fn tiny() -> LlamaConfig {
        LlamaConfig {
            n_layers: 2,
            hidden: 32,
            ffn_hidden: 48,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
            rope_base: 10000.0,
            rope_scaling: RopeScaling::None,
            rope_pairing: RopePairing::Interleaved,
            rms_eps: 1e-5,
            vocab: 50,
            max_context: 64,
            tied_embeddings: true,
            sliding_window: None,
        }
    }

    #[test]
    fn matmul_matches_naive() {
        let w = Matrix { rows: 37, cols: 19, data: (0..37 * 19).map(|i| (i % 7) as f32 - 3.0).collect() };
        let x: Vec<f32> = (0..3 * 19).map(|i| (i % 5) as f32 * 0.5).collect();
        let mut out = vec![0f32; 3 * 37];
        matmul(&x, 3, &w, &mut out);
        for i in 0..3 {
            for r in 0..37 {
                let want: f32 = (0..19).map(|j| x[i * 19 + j] * w.data[r * 19 + j]).sum();
                assert!((out[i * 37 + r] - want).abs() < 1e-4);
            }
        }
        let mut one = vec![0f32; 37];
        matmul(&x[..19], 1, &w, &mut one);
        assert_eq!(&one[..], &out[..37]);
    }

    /// Prefill of n tokens at once equals n single-token steps (cache and masking agree).
    #[test]
    fn prefill_equals_stepwise() {
        for pairing in [RopePairing::Interleaved, RopePairing::Half] {
            let mut c = tiny();
            c.rope_pairing = pairing;
            let w = LlamaWeights::random(&c, 7);
            let toks = [3u32, 17, 42, 5, 9];
            let mut m = CpuModel::new(&w, 16);
            let all = m.forward(&toks, true).unwrap();
            let mut s = CpuModel::new(&w, 16);
            for (i, &t) in toks.iter().enumerate() {
                let l = s.forward(&[t], false).unwrap();
                let want = &all[i * c.vocab..(i + 1) * c.vocab];
                for (a, b) in l.iter().zip(want) {
                    assert!((a - b).abs() < 1e-4, "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn context_and_token_errors() {
        let c = tiny();
        let w = LlamaWeights::random(&c, 1);
        let mut m = CpuModel::new(&w, 4);
        assert!(matches!(m.forward(&[1, 2, 3, 4, 5], false), Err(DecodeError::ContextFull { .. })));
        assert!(matches!(m.forward(&[50], false), Err(DecodeError::TokenOutOfRange { .. })));
        assert!(matches!(m.forward(&[], false), Err(DecodeError::EmptyPrompt)));
        m.forward(&[1, 2, 3, 4], false).unwrap();
        assert!(matches!(m.forward(&[1], false), Err(DecodeError::ContextFull { .. })));
    }

    /// RoPE at position 0 is the identity; interleaved pairing rotates (0, 1) together.
    #[test]
    fn rope_pairing() {
        let c = tiny();
        let w = LlamaWeights::random(&c, 1);
        let m = CpuModel::new(&w, 4);
        let mut x: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let orig = x.clone();
        m.rope(&mut x, 1, 0);
        assert_eq!(x, orig);
        let mut y = vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        m.rope(&mut y, 1, 1);
        assert!((y[0] - 1f32.cos()).abs() < 1e-6 && (y[1] - 1f32.sin()).abs() < 1e-6);
    }
}
