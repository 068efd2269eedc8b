use tessera_dsl_support::prelude::*;

#[kernel]
fn k<KV: Copy>(x: Tensor<KV, 1>, out: &mut Tensor<KV, 1>) {
}

fn main() {}
