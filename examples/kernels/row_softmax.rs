//! Softmax of each row of an f16 matrix, one row per program, computed in f32 with exp2.

use tessera_dsl_support::prelude::*;

#[kernel(tune(BLOCK_C = [1024, 2048, 4096], WARPS = [4, 8]))]
pub fn row_softmax<const BLOCK_C: usize, const WARPS: usize>(x: Tensor<f16, 2>, out: &mut Tensor<f16, 2>) {
    let row = program_id(0);
    // Positions past the row end read -inf, so they add nothing to the sum.
    let xs = x.load_or([at(row), range(0, BLOCK_C)], f32::NEG_INFINITY).cast::<f32>();
    let row_max = xs.max(0);
    let e = exp2((xs - row_max) * std::f32::consts::LOG2_E);
    let row_sum = e.sum(0);
    out.store([at(row), range(0, BLOCK_C)], (e / row_sum).cast::<f16>());
}
