use tessera_dsl_support::prelude::*;

#[kernel(tune(BLOCK = [64]), example(HEAD_DIM = 128))]
fn k<const BLOCK: usize>(x: Tensor<f32, 1>, out: &mut Tensor<f32, 1>, n: i32) {
}

fn main() {}
