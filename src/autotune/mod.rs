//! The autotuner: for each kernel and shape bucket on this GPU, compile every candidate
//! (NVRTC, in parallel on CPU threads), run them in a worker process (a kernel that
//! faults kills only the worker), check each against the reference before timing it,
//! and store every trial and the winner in the tuning database in one transaction.
//!
//! Tuned now: dense flash-decoding (the `flash_decode` + `flash_decode_combine` pair,
//! [`crate::decode`]), over BLOCK_N × WARPS × MIN_BLOCKS × split length.

mod key;
mod run;
pub mod worker;

pub use key::{decode_bucket, decode_candidates, decode_key, DECODE_KERNEL};
pub use run::{run, Args};
