//! `cargo run --example flash_decode`: single-query flash decoding (GQA group per program,
//! split-KV + combine) written with `#[kernel]`, checked against f64 attention on the CPU
//! interpreter and, when present, the GPU.

mod common;
#[path = "kernels/flash_decode.rs"]
mod kernel;

use kernel::{FlashDecode, FlashDecodeCombine};
use tessera_codegen::problems::{flash_decode, FlashDecodeSize};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (seq_len, split_len) = (1000, 256);
    let size = FlashDecodeSize {
        batch: 2,
        kv_heads: 2,
        group: 4,
        seq_len,
        head_dim: 128,
        block_n: 64,
        split_len,
        num_splits: seq_len.div_ceil(split_len) + 1,
    };
    let p = flash_decode(size, &[], 5);
    let split = FlashDecode::build(&p.launches[0].config.clone().into())?;
    let combine = FlashDecodeCombine::build(&p.launches[1].config.clone().into())?;
    common::run_and_check(p, &[split, combine])
}
