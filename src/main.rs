//! The `tessera` command line.

use clap::{Parser, Subcommand};

mod commands;

#[derive(Parser)]
#[command(name = "tessera", version, about = "Tile-program compiler and autotuner for long-context attention kernels")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Shows the GPU, driver, NVRTC and cache the runtime finds (works without a GPU).
    Doctor,
    /// Lists the shipped attention and decoder kernels with their tune-space sizes.
    Kernels(commands::kernels::Args),
    /// Emits the CUDA C++ or PTX of a program (no GPU needed).
    Compile(commands::compile::Args),
    /// Runs every sample program on the GPU and compares it with the reference.
    Check(commands::check::Args),
    /// Measures the flash-decode sample on the GPU (bandwidth, configs swept).
    Bench(commands::bench::Args),
    /// Measures the tessera-kernels decode ops at the PEERS.md shapes (sink+window, block-sparse, top-k, tree, dense).
    BenchKernels(commands::bench_kernels::Args),
    /// Measures the selection methods of issue 5 (HiP, centroid lookup, SnapKV, k-means) beside dense decode.
    BenchSelection(commands::bench_selection::Args),
    /// Tunes the kernels for this GPU and stores the winners in the tuning database.
    Autotune(tessera::autotune::Args),
    /// Runs one autotuning job (started by `tessera autotune`; not for direct use).
    #[command(hide = true)]
    AutotuneWorker {
        #[arg(long)]
        job: std::path::PathBuf,
    },
    /// Inspects and maintains the tuning database: list, show, export, import, prune (no GPU needed).
    Db(commands::db::Args),
    /// Generates text with a GGUF model (--device cpu: f32 reference; --device cuda: bf16, cuBLAS + Tessera kernels).
    Generate(commands::generate::Args),
    /// Checks the decoder's GPU path against golden logits and the CPU path, and measures its decode speed.
    DecoderCheck(commands::decoder_check::Args),
    /// Attention recall of the selection methods (HiP, top-k, SnapKV, ...) on synthetic inputs (CPU).
    Recall(commands::recall::Args),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Doctor => commands::doctor::run(),
        Command::Kernels(a) => commands::kernels::run(a),
        Command::Compile(a) => commands::compile::run(a),
        Command::Check(a) => commands::check::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::BenchKernels(a) => commands::bench_kernels::run(a),
        Command::BenchSelection(a) => commands::bench_selection::run(a),
        Command::Autotune(a) => tessera::autotune::run(a),
        Command::AutotuneWorker { job } => tessera::autotune::worker::run(&job),
        Command::Db(a) => commands::db::run(a),
        Command::Generate(a) => commands::generate::run(a),
        Command::DecoderCheck(a) => commands::decoder_check::run(a),
        Command::Recall(a) => commands::recall::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
