//! Host-side planning of the GPU forward pass: prefill chunks, the causal chain mask that
//! turns `TreeVerify` into causal chunk attention, and the split count of decode attention.

use std::ops::Range;

/// Tokens per prefill chunk at most: `TreeVerify` takes at most 64 queries per sequence.
pub const MAX_CHUNK: usize = 64;

/// Tokens per prefill chunk for a GQA group and head size: the largest of 64, 32, 16, 8
/// whose `TreeVerify` query tile (`group · chunk × head_dim`) stays within 16384 elements
/// (its shared memory grows with the tile: 138 KiB at SmolLM2's 3 · 64 × 64, over the
/// H200's 227 KiB at Llama-3-8B's 4 · 64 × 128, fine at 4 · 32 × 128).
pub fn prefill_chunk(group: usize, head_dim: usize) -> usize {
    [64, 32, 16, 8].into_iter().find(|&t| group * t * head_dim <= 16384).unwrap_or(8)
}

/// The chunks `[start, end)` of `n` tokens, each at most `max` long (`max >= 1`).
pub fn chunks(n: usize, max: usize) -> impl Iterator<Item = Range<usize>> {
    let max = max.max(1);
    (0..n).step_by(max).map(move |s| s..(s + max).min(n))
}

/// The ancestors-or-self mask of a chain of `t` tokens (`t <= 64`): row `i` has bits
/// `0..=i`, so token `i` of a chunk sees the chunk's tokens up to itself (plus the whole
/// prefix, which `TreeVerify` always sees): causal attention.
pub fn chain_mask(t: usize) -> Vec<i64> {
    assert!(t <= 64, "a chain mask holds at most 64 tokens");
    (0..t).map(|i| if i == 63 { -1 } else { ((1u64 << (i + 1)) - 1) as i64 }).collect()
}

/// The combine's `MAX_SPLITS` for decode attention: enough splits that
/// `batch · kv_heads · splits` programs cover the GPU twice, a power of two in `[16, 128]`
/// (the autotuner's range).
pub fn decode_max_splits(batch: usize, kv_heads: usize, sm_count: usize) -> usize {
    let programs = (batch * kv_heads).max(1);
    (2 * sm_count).div_ceil(programs).next_power_of_two().clamp(16, 128)
}

/// `tokens` of `batch` sequences (each `t` long, sequence-major) cut to the chunk `r` of
/// every sequence, sequence-major again.
pub fn chunk_rows(tokens: &[u32], batch: usize, t: usize, r: Range<usize>) -> Vec<u32> {
    (0..batch).flat_map(|b| tokens[b * t + r.start..b * t + r.end].iter().copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking() {
        assert_eq!(chunks(0, 64).count(), 0);
        assert_eq!(chunks(5, 64).collect::<Vec<_>>(), vec![0..5]);
        assert_eq!(chunks(64, 64).collect::<Vec<_>>(), vec![0..64]);
        assert_eq!(chunks(130, 64).collect::<Vec<_>>(), vec![0..64, 64..128, 128..130]);
        assert_eq!(chunks(3, 0).collect::<Vec<_>>(), vec![0..1, 1..2, 2..3]);
    }

    #[test]
    fn chain_masks_are_causal() {
        assert_eq!(chain_mask(0), Vec::<i64>::new());
        assert_eq!(chain_mask(3), vec![0b1, 0b11, 0b111]);
        let m = chain_mask(64);
        for (i, &row) in m.iter().enumerate() {
            for j in 0..64 {
                assert_eq!((row as u64 >> j) & 1 == 1, j <= i, "row {i} bit {j}");
            }
        }
        assert_eq!(m[63], -1);
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(prefill_chunk(3, 64), 64);
        assert_eq!(prefill_chunk(4, 128), 32);
        assert_eq!(prefill_chunk(8, 128), 16);
        assert_eq!(prefill_chunk(1, 64), 64);
        assert_eq!(prefill_chunk(64, 256), 8);
    }

    #[test]
    fn split_counts() {
        // SmolLM2 (3 kv heads) at batch 1 on 132 SMs: 88 → 128; batch 8: 11 → 16.
        assert_eq!(decode_max_splits(1, 3, 132), 128);
        assert_eq!(decode_max_splits(8, 3, 132), 16);
        // Llama-3-8B shapes (8 kv heads), batch 1: 33 → 64.
        assert_eq!(decode_max_splits(1, 8, 132), 64);
        assert_eq!(decode_max_splits(64, 8, 132), 16);
    }

    #[test]
    fn rows_of_a_chunk() {
        let toks: Vec<u32> = (0..10).collect(); // 2 sequences of 5
        assert_eq!(chunk_rows(&toks, 2, 5, 1..3), vec![1, 2, 6, 7]);
        assert_eq!(chunk_rows(&toks, 1, 10, 8..10), vec![8, 9]);
    }
}
