//! `cargo run --example matmul`: a tiled bf16 matmul with f32 accumulation written with
//! `#[kernel]`, checked on the CPU interpreter and, when present, the GPU.

mod common;
#[path = "kernels/matmul.rs"]
mod kernel;

use kernel::Matmul;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let space = Matmul::tune_space();
    println!("tune space: {} configs (constraint `{}`)", space.len(), space.constraint().unwrap_or("-"));
    let p = tessera_codegen::problems::matmul(130, 70, 100, &[("BLOCK_M", 64), ("BLOCK_N", 64), ("BLOCK_K", 32)], 3);
    let config = p.launches[0].config.clone().into();
    space.validate(&config)?;
    let k = Matmul::build(&config)?;
    common::run_and_check(p, &[k])
}
