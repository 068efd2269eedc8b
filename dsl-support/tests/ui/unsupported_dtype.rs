use tessera_dsl_support::prelude::*;

#[kernel]
fn k(x: Tensor<f64, 1>) {
}

fn main() {}
