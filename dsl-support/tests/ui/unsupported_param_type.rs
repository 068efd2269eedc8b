use tessera_dsl_support::prelude::*;

#[kernel]
fn k(x: Vec<f32>) {
}

fn main() {}
