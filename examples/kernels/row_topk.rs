//! The K largest scores of each row and their positions; positions past the end of the
//! row read -inf and never win. `SORTED = 0`: the same set without the sort (those above
//! the K-th largest first, then those equal to it, each in index order).

use tessera_dsl_support::prelude::*;

#[kernel(tune(BLOCK_N = [256, 1024], K = [16], SORTED = [1, 0], WARPS = [4]))]
pub fn row_topk<const BLOCK_N: usize, const K: usize, const SORTED: usize, const WARPS: usize>(
    scores: Tensor<f32, 2>,
    values: &mut Tensor<f32, 2>,
    indices: &mut Tensor<i32, 2>,
) {
    let row = program_id(0);
    let s = scores.load_or([at(row), range(0, BLOCK_N)], f32::NEG_INFINITY);
    if SORTED == 1 {
        let (best, position) = topk(s, K);
        values.store([at(row), range(0, K)], best);
        indices.store([at(row), range(0, K)], position);
    } else {
        let (best, position) = topk_unsorted(s, K);
        values.store([at(row), range(0, K)], best);
        indices.store([at(row), range(0, K)], position);
    }
}
