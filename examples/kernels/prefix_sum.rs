//! Inclusive prefix sum of each row of an f32 matrix (`x.cumsum(0)`); elements past the
//! row end load as 0 and are not stored.

use tessera_dsl_support::prelude::*;

#[kernel(tune(BLOCK_N = [1024, 64], WARPS = [4]))]
pub fn prefix_sum<const BLOCK_N: usize, const WARPS: usize>(x: Tensor<f32, 2>, out: &mut Tensor<f32, 2>) {
    let row = program_id(0);
    let v = x.load([at(row), range(0, BLOCK_N)]);
    out.store([at(row), range(0, BLOCK_N)], v.cumsum(0));
}
