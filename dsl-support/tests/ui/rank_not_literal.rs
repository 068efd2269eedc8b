use tessera_dsl_support::prelude::*;

#[kernel]
fn k<const R: usize>(x: Tensor<f32, R>) {
}

fn main() {}
