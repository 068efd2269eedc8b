//! Ready-made problem sets: small odd sizes for CI, larger odd sizes for the GPU.

use super::build::*;
use super::Problem;

/// Which problem set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    /// Small odd sizes: fast in the interpreter (CI).
    Small,
    /// Larger odd sizes for GPU checks and bandwidth figures.
    Gpu,
}

fn fd(
    batch: usize,
    kv_heads: usize,
    group: usize,
    seq_len: usize,
    head_dim: usize,
    block_n: usize,
    split_len: usize,
) -> FlashDecodeSize {
    // One more split than the sequence needs, so one split is always empty.
    let num_splits = seq_len.div_ceil(split_len) + 1;
    FlashDecodeSize { batch, kv_heads, group, seq_len, head_dim, block_n, split_len, num_splits }
}

/// Small problems with sizes that are not multiples of the tiles; each sample appears at
/// least once, flash-decode with GROUP 1, 4 and 8 and HEAD_DIM 64 and 128.
pub fn small_suite(seed: u64) -> Vec<Problem> {
    vec![
        vector_add(5000 + 37, &[("BLOCK", 1024)], seed),
        row_softmax(7, 777, &[("BLOCK_C", 1024)], seed + 1),
        matmul(70, 50, 40, &[("BLOCK_M", 64), ("BLOCK_N", 64), ("BLOCK_K", 32)], seed + 2),
        gather_rows(45, 37, 100, &[("BLOCK_M", 16), ("BLOCK_D", 128)], seed + 3),
        topk(5, 200, 16, &[("BLOCK_N", 256)], seed + 4),
        topk(3, 7, 7, &[("BLOCK_N", 16)], seed + 5),
        topk(5, 200, 40, &[("BLOCK_N", 256), ("SORTED", 0)], seed + 9),
        prefix_sum(3, 650, &[("BLOCK_N", 1024)], seed + 10),
        prefix_sum(2, 37, &[("BLOCK_N", 64)], seed + 11),
        flash_decode(fd(1, 2, 1, 333, 64, 32, 128), &[], seed + 6),
        flash_decode(fd(2, 1, 4, 1000, 128, 64, 256), &[], seed + 7),
        flash_decode(fd(1, 2, 8, 1500, 64, 64, 192), &[], seed + 8),
    ]
}

/// Larger problems for the GPU, still with odd sizes.
pub fn gpu_suite(seed: u64) -> Vec<Problem> {
    vec![
        vector_add((1 << 22) + 37, &[("BLOCK", 1024)], seed),
        row_softmax(1000, 3001, &[("BLOCK_C", 4096)], seed + 1),
        matmul(517, 389, 1000, &[], seed + 2),
        gather_rows(4099, 1000, 127, &[("BLOCK_M", 16), ("BLOCK_D", 128)], seed + 3),
        topk(1000, 1000, 16, &[("BLOCK_N", 1024)], seed + 4),
        topk(64, 8000, 650, &[("BLOCK_N", 8192), ("SORTED", 0), ("WARPS", 16)], seed + 8),
        prefix_sum(100, 5000, &[("BLOCK_N", 8192)], seed + 9),
        flash_decode(fd(2, 4, 1, 8191, 128, 64, 512), &[], seed + 5),
        flash_decode(fd(2, 8, 4, 16411, 128, 64, 1024), &[], seed + 6),
        flash_decode(fd(1, 8, 8, 32771, 64, 64, 2048), &[], seed + 7),
    ]
}

/// The problems of `suite` that exercise `sample`.
pub fn problems_for(sample: &str, suite: Suite, seed: u64) -> Vec<Problem> {
    let all = match suite {
        Suite::Small => small_suite(seed),
        Suite::Gpu => gpu_suite(seed),
    };
    all.into_iter().filter(|p| p.launches.iter().any(|l| l.sample == sample)).collect()
}
