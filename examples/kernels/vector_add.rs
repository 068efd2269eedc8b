//! `out = x + y`, one BLOCK-long slice per program.

use tessera_dsl_support::prelude::*;

#[kernel(tune(BLOCK = [1024, 256, 512], WARPS = [4, 8]), constraint = "BLOCK >= WARPS * 32")]
pub fn vector_add<const BLOCK: usize, const WARPS: usize>(
    x: Tensor<f32, 1>,
    y: Tensor<f32, 1>,
    out: &mut Tensor<f32, 1>,
) {
    let start = program_id(0) * BLOCK as i32;
    let xs = x.load([range(start, BLOCK)]);
    let ys = y.load([range(start, BLOCK)]);
    out.store([range(start, BLOCK)], xs + ys);
}
