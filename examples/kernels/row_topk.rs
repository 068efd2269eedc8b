//! The K largest scores of each row and their positions; positions past the end of the
//! row read -inf and never win.

use tessera_dsl_support::prelude::*;

#[kernel(tune(BLOCK_N = [256, 1024], K = [16], WARPS = [4]))]
pub fn row_topk<const BLOCK_N: usize, const K: usize, const WARPS: usize>(
    scores: Tensor<f32, 2>,
    values: &mut Tensor<f32, 2>,
    indices: &mut Tensor<i32, 2>,
) {
    let row = program_id(0);
    let s = scores.load_or([at(row), range(0, BLOCK_N)], f32::NEG_INFINITY);
    let (best, position) = topk(s, K);
    values.store([at(row), range(0, K)], best);
    indices.store([at(row), range(0, K)], position);
}
