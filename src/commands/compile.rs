//! `tessera compile <program> --emit cuda|ptx`.

use anyhow::{anyhow, bail, Result};
use tessera_codegen::emit::emit_cuda;
use tessera_codegen::samples;

#[derive(clap::Args)]
pub struct Args {
    /// The program (one of the samples; `tessera compile --list` names them).
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
        for s in samples::all() {
            let d: Vec<String> = s.defaults.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("{:<22} {}\n{:<22} defaults: {}", s.name, s.description, "", d.join(","));
        }
        return Ok(());
    }
    let name = a.program.unwrap();
    let s = samples::find(&name).ok_or_else(|| anyhow!("no program `{name}` (try `tessera compile --list`)"))?;
    let overrides = a
        .config
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').ok_or_else(|| anyhow!("`{kv}` is not NAME=VALUE"))?;
            let v: i64 = v.trim().parse().map_err(|_| anyhow!("`{kv}`: the value must be an integer"))?;
            Ok((k.trim().to_string(), v))
        })
        .collect::<Result<Vec<_>>>()?;
    let config = s.config(&overrides).map_err(|e| anyhow!(e))?;
    let kernel = (s.build)(&config)?;
    let emitted = emit_cuda(&kernel);
    match a.emit {
        Emit::Cuda => print!("{}", emitted.source),
        Emit::Ptx => print!("{}", tessera_runtime::compile_ptx(&emitted.source, &emitted.entry, &a.arch)?.ptx),
        Emit::Resources => {
            let r = tessera_runtime::resource_usage(&emitted.source, &emitted.entry, &a.arch)?;
            if r.spill_stores > 0 && r.registers == 0 {
                bail!("unexpected ptxas report");
            }
            println!(
                "{} on {}: {} registers, {} B static + {} B dynamic shared memory, {} B spill stores, {} B spill loads, {} threads",
                emitted.entry,
                a.arch,
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
