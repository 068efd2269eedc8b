//! The tuning key and tune space of dense decode (the codegen sample pair).

use anyhow::Result;
use tessera_runtime::Runtime;
use tessera_tuning_db::{ShapeBucket, TuneKey};

use super::dense::DenseDecodeTarget;
use super::target::target_key;
use crate::decode::{DecodeConfig, DecodeShape};

/// The name dense decode is tuned and dispatched under.
pub const DECODE_KERNEL: &str = "dense_decode";

/// The shape bucket: batch and sequence length by powers of two (rounded up), head
/// counts and head dim exact — the dims that change the best configuration.
pub fn decode_bucket(s: &DecodeShape) -> String {
    decode_bucket_dims(s.batch, s.seq_len, s.kv_heads, s.group, s.head_dim).build()
}

/// The dimensions every decode-shaped key starts with (as [`decode_bucket`]); targets
/// append their own (sink, window, block size, ...) before `build`.
pub fn decode_bucket_dims(batch: usize, seq_len: usize, kv_heads: usize, group: usize, head_dim: usize) -> ShapeBucket {
    ShapeBucket::new()
        .pow2("b", batch as u64)
        .pow2("n", seq_len as u64)
        .exact("hkv", kv_heads as u64)
        .exact("g", group as u64)
        .exact("d", head_dim as u64)
}

/// The candidates for a shape: split kernels (BLOCK_N × WARPS × MIN_BLOCKS) × split
/// lengths, pruned to those that make sense for the bucket (a split no longer than the
/// bucket's sequence, at most 1024 splits). Depends only on the bucket, so the
/// candidate-set checksum is stable.
pub fn decode_candidates(s: &DecodeShape) -> Vec<DecodeConfig> {
    let n = s.seq_len.next_power_of_two();
    let mut out = Vec::new();
    for block_n in [32, 64, 128] {
        for warps in [4, 8] {
            for min_blocks in [0, 2] {
                for split_len in [512, 1024, 2048, 4096] {
                    if split_len % block_n == 0 && split_len <= n && n / split_len <= 1024 {
                        out.push(DecodeConfig { block_n, warps, min_blocks, split_len });
                    }
                }
            }
        }
    }
    out
}

/// The full key of dense decode at `shape` on this GPU (unchanged format: the hash of
/// the heuristic's emitted split kernel, the checksum of [`decode_candidates`]).
pub fn decode_key(rt: &Runtime, shape: &DecodeShape) -> Result<TuneKey> {
    target_key(rt, &DenseDecodeTarget, shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_depend_only_on_the_bucket() {
        let a = DecodeShape { batch: 8, kv_heads: 8, group: 4, seq_len: 30000, head_dim: 128 };
        let b = DecodeShape { seq_len: 32768, ..a };
        assert_eq!(decode_candidates(&a), decode_candidates(&b));
        assert_eq!(decode_bucket(&a), decode_bucket(&b));
        assert!(decode_candidates(&a).iter().all(|c| c.split_len % c.block_n == 0));
    }

    #[test]
    fn the_heuristic_is_a_candidate() {
        for n in [4096, 32768, 131072] {
            for b in [1, 8] {
                let s = DecodeShape { batch: b, kv_heads: 8, group: 4, seq_len: n, head_dim: 128 };
                let h = DecodeConfig::heuristic(&s, 132);
                assert!(decode_candidates(&s).contains(&h), "{s}: {h}");
            }
        }
    }
}
