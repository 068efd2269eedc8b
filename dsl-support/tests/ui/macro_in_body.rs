use tessera_dsl_support::prelude::*;

#[kernel]
fn k<const BLOCK: usize>(x: Tensor<f32, 1>, out: &mut Tensor<f32, 1>, n: i32) {
    println!("hello");
}

fn main() {}
