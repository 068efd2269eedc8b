use tessera_dsl_support::prelude::*;

#[kernel]
fn k<const N: usize>(x: Tensor<i32, 1>, out: &mut Tensor<i32, 1>, axis: i32) {
    let v = x.load([range(0, N)]);
    out.store([range(0, N)], v.cumsum(axis));
}

fn main() {}
