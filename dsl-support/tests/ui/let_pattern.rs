use tessera_dsl_support::prelude::*;

#[kernel]
fn k<const BLOCK: usize>(x: Tensor<f32, 1>, out: &mut Tensor<f32, 1>, n: i32) {
    let (a, b) = x.load([range(0, BLOCK)]);
}

fn main() {}
