//! Tuning keys and tune spaces of the tuned kernels.

use anyhow::Result;
use tessera_codegen::emit::emit_cuda;
use tessera_runtime::Runtime;
use tessera_tuning_db::{candidates_checksum, source_hash, DeviceFingerprint, ShapeBucket, TuneKey};

use crate::decode::{split_kernel, DecodeConfig, DecodeShape};

/// The name dense decode is tuned and dispatched under.
pub const DECODE_KERNEL: &str = "dense_decode";

/// The shape bucket: batch and sequence length by powers of two (rounded up), head
/// counts and head dim exact — the dims that change the best configuration.
pub fn decode_bucket(s: &DecodeShape) -> String {
    ShapeBucket::new()
        .pow2("b", s.batch as u64)
        .pow2("n", s.seq_len as u64)
        .exact("hkv", s.kv_heads as u64)
        .exact("g", s.group as u64)
        .exact("d", s.head_dim as u64)
        .build()
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

/// The full key of dense decode at `shape` on this GPU.
pub fn decode_key(rt: &Runtime, shape: &DecodeShape) -> Result<TuneKey> {
    let info = rt.info();
    let (maj, min) = tessera_runtime::nvrtc_version()?;
    let default = DecodeConfig::heuristic(shape, info.sm_count as usize);
    let source = emit_cuda(&split_kernel(shape, &default)?).source;
    let configs: Vec<serde_json::Value> =
        decode_candidates(shape).iter().map(serde_json::to_value).collect::<Result<_, _>>()?;
    Ok(TuneKey {
        kernel: DECODE_KERNEL.into(),
        dtype: "bf16".into(),
        shape_bucket: decode_bucket(shape),
        device: DeviceFingerprint {
            gpu_name: info.name.clone(),
            compute_capability: format!("{}.{}", info.compute_capability.0, info.compute_capability.1),
            uuid: if info.uuid.is_empty() { info.pci_bus_id.clone() } else { info.uuid.clone() },
            driver_version: format!("{}.{}", info.driver_version.0, info.driver_version.1),
        },
        nvrtc_version: format!("{maj}.{min}"),
        tessera_version: env!("CARGO_PKG_VERSION").into(),
        source_hash: source_hash(&source),
        candidates_checksum: candidates_checksum(&configs),
    })
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
