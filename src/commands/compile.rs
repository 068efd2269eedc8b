//! `tessera compile <program> --emit cuda|ptx`.

use anyhow::{anyhow, bail, Result};
use tessera_codegen::emit::emit_cuda;
use tessera_codegen::samples;

#[derive(clap::Args)]
pub struct Args {
    /// The program: a sample or an attention kernel (`tessera compile --list` names them).
    program: Option<String>,
    /// What to print.
    #[arg(long, value_enum, default_value = "cuda")]
    emit: Emit,
    /// GPU architecture for PTX.
    #[arg(long, default_value = "sm_90a")]
    arch: String,
    /// Compile-time parameters, e.g. `BLOCK_N=128,WARPS=8`.
    #[arg(long, value_delimiter = ',')]
    config: Vec<String>,
    /// Lists the programs and their parameters.
    #[arg(long)]
    list: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Emit {
    Cuda,
    Ptx,
    /// Registers, shared memory and spills as ptxas reports them.
    Resources,
}

pub fn run(a: Args) -> Result<()> {
    if a.list || a.program.is_none() {
        println!("sample programs (hand-built IR, the compiler's fixtures):");
        for s in samples::all() {
            let d: Vec<String> = s.defaults.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("  {:<28} {}\n  {:<28} defaults: {}", s.name, s.description, "", d.join(","));
        }
        println!("\nattention kernels (#[kernel], tessera-kernels):");
        for e in tessera_kernels::registry::registry() {
            let example = (e.example_config)();
            println!("  {:<28} parameters: {}; example: {example}", e.name, e.comptime_params.join(", "));
        }
        return Ok(());
    }
    let name = a.program.unwrap();
    let overrides = parse_overrides(&a.config)?;
    let kernel = match (samples::find(&name), tessera_kernels::registry::find(&name)) {
        (Some(s), _) => {
            let config = s.config(&overrides).map_err(|e| anyhow!(e))?;
            (s.build)(&config)?
        }
        (None, Some(e)) => {
            // The kernel's example shapes and tune defaults, then the user's overrides.
            let mut config = (e.example_config)();
            for (k, v) in &overrides {
                config = config.with(k, *v);
            }
            (e.build)(&config)?
        }
        (None, None) => bail!("no program `{name}` (try `tessera compile --list`)"),
    };
    emit(&kernel, a.emit, &a.arch)
}

fn parse_overrides(config: &[String]) -> Result<Vec<(String, i64)>> {
    config
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').ok_or_else(|| anyhow!("`{kv}` is not NAME=VALUE"))?;
            let v: i64 = v.trim().parse().map_err(|_| anyhow!("`{kv}`: the value must be an integer"))?;
            Ok((k.trim().to_string(), v))
        })
        .collect()
}

fn emit(kernel: &tessera_codegen::ir::Kernel, what: Emit, arch: &str) -> Result<()> {
    let emitted = emit_cuda(kernel);
    match what {
        Emit::Cuda => write_out(&emitted.source)?,
        Emit::Ptx => write_out(&tessera_runtime::compile_ptx(&emitted.source, &emitted.entry, arch)?.ptx)?,
        Emit::Resources => {
            let r = tessera_runtime::resource_usage(&emitted.source, &emitted.entry, arch)?;
            if r.spill_stores > 0 && r.registers == 0 {
                bail!("unexpected ptxas report");
            }
            println!(
                "{} on {}: {} registers, {} B static + {} B dynamic shared memory, {} B spill stores, {} B spill loads, {} threads",
                emitted.entry,
                arch,
                r.registers,
                r.shared_bytes_static,
                emitted.shared_bytes,
                r.spill_stores,
                r.spill_loads,
                emitted.threads
            );
        }
    }
    Ok(())
}

/// Writes to standard output; a reader that stops early (`| head`) is not an error.
fn write_out(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
