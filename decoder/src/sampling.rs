//! Next-token selection: greedy (argmax) or temperature + nucleus (top-p) sampling with a
//! seeded generator, so that runs are reproducible.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone)]
pub struct Sampler {
    /// 0 (or less): greedy.
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1.0: all).
    pub top_p: f32,
    rng: StdRng,
}

/// Index of the largest value (the first one on ties); NaNs are never chosen.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    let mut bv = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > bv {
            bv = v;
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    pub fn greedy() -> Self {
        Self::new(0.0, 1.0, 0)
    }

    pub fn new(temperature: f32, top_p: f32, seed: u64) -> Self {
        Sampler { temperature, top_p, rng: StdRng::seed_from_u64(seed) }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature.is_nan() || self.temperature <= 0.0
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.is_greedy() {
            return argmax(logits);
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(u32, f32)> =
            logits.iter().enumerate().map(|(i, &l)| (i as u32, ((l - max) / self.temperature).exp())).collect();
        let total: f32 = probs.iter().map(|p| p.1).sum();
        probs.iter_mut().for_each(|p| p.1 /= total);
        if self.top_p < 1.0 {
            probs.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        }
        let mut keep = probs.len();
        let mut acc = 0.0;
        for (i, p) in probs.iter().enumerate() {
            acc += p.1;
            if acc >= self.top_p {
                keep = i + 1;
                break;
            }
        }
        let kept = &probs[..keep];
        let mass: f32 = kept.iter().map(|p| p.1).sum();
        let mut r = self.rng.random::<f32>() * mass;
        for p in kept {
            r -= p.1;
            if r <= 0.0 {
                return p.0;
            }
        }
        kept[kept.len() - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_seeded() {
        let logits = [0.1, 2.0, -1.0, 2.0, 0.5];
        assert_eq!(Sampler::greedy().sample(&logits), 1);
        let run = |seed| {
            let mut s = Sampler::new(1.0, 0.9, seed);
            (0..20).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        // top_p tiny keeps only the most likely token.
        let mut s = Sampler::new(1.0, 1e-6, 1);
        assert!((0..20).all(|_| s.sample(&logits) == 1));
        // With top_p 0.9 and T=1, the least likely token (id 2, p≈0.03) is never drawn.
        let mut s = Sampler::new(1.0, 0.9, 5);
        assert!((0..200).all(|_| s.sample(&logits) != 2));
    }
}
