//! `cargo run --example row_softmax`: an f16 row softmax written with `#[kernel]`, checked
//! against the f64 reference on the CPU interpreter and, when present, the GPU.

mod common;
#[path = "kernels/row_softmax.rs"]
mod kernel;

use kernel::RowSoftmax;
use tessera_dsl_support::KernelConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = KernelConfig::from_pairs(&[("BLOCK_C", 1024)]);
    let p = tessera_codegen::problems::row_softmax(37, 1000, &[("BLOCK_C", 1024)], 11);
    let k = RowSoftmax::build(&p.launches[0].config.clone().into())?;
    assert_eq!(k.constants, RowSoftmax::build(&config)?.constants);
    common::run_and_check(p, &[k])
}
