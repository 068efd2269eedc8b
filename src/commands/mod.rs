//! One module per subcommand.

pub mod bench;
pub mod bench_common;
pub mod bench_kernels;
pub mod bench_selection;
pub mod check;
pub mod compile;
pub mod db;
pub mod decoder_check;
pub mod doctor;
pub mod generate;
pub mod kernels;
pub mod recall;
