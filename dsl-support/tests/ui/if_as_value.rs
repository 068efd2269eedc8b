use tessera_dsl_support::prelude::*;

#[kernel]
fn k<const BLOCK: usize>(x: Tensor<f32, 1>, out: &mut Tensor<f32, 1>, n: i32) {
    let s = if n > 0 { 1.0 } else { 2.0 };
}

fn main() {}
