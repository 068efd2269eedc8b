use tessera_dsl_support::prelude::*;

#[kernel]
fn k<const BLOCK: usize>(x: Tensor<f32, 1>, out: &mut Tensor<f32, 1>, n: i32) {
    let xs = x.load([range(0, BLOCK)]);
    out.store([range(0, BLOCK)], exp2(xs, 2.0));
}

fn main() {}
