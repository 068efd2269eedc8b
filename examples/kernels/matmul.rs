//! `C[M, N] (f32) = A[M, K] x B[K, N] (bf16)`: one BLOCK_M x BLOCK_N tile per program,
//! a K loop with f32 accumulation.

use tessera_dsl_support::prelude::*;

#[kernel(
    tune(BLOCK_M = [64, 128], BLOCK_N = [64, 128], BLOCK_K = [32, 64], WARPS = [4, 8]),
    constraint = "BLOCK_M * BLOCK_N <= 128 * 64 * WARPS / 4"
)]
pub fn matmul<const BLOCK_M: usize, const BLOCK_N: usize, const BLOCK_K: usize, const WARPS: usize>(
    a: Tensor<bf16, 2>,
    b: Tensor<bf16, 2>,
    c: &mut Tensor<f32, 2>,
) {
    let row0 = program_id(0) * BLOCK_M as i32;
    let col0 = program_id(1) * BLOCK_N as i32;
    let mut acc = zeros([BLOCK_M, BLOCK_N]);
    for k in (0..a.dim(1)).step_by(BLOCK_K) {
        let a_tile = a.load([range(row0, BLOCK_M), range(k, BLOCK_K)]);
        let b_tile = b.load([range(k, BLOCK_K), range(col0, BLOCK_N)]);
        acc += dot(a_tile, b_tile);
    }
    c.store([range(row0, BLOCK_M), range(col0, BLOCK_N)], acc);
}
