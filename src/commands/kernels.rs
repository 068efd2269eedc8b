//! `tessera kernels`: one line per shipped `#[kernel]` of tessera-kernels — its name, the
//! summary from its doc comment, and how many configurations its tune space holds.

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Also print the compile-time parameters and the default configuration.
    #[arg(long)]
    verbose: bool,
}

pub fn run(a: Args) -> Result<()> {
    let entries = tessera_kernels::registry::registry();
    let width = entries.iter().map(|e| e.name.len()).max().unwrap_or(0);
    for e in &entries {
        let space = (e.tune_space)();
        // The product of the listed values; a constraint over untuned parameters (e.g.
        // `TOPK <= LM_TILE`) can only be applied once those are known, so it is named.
        let configs: usize = space.params().iter().map(|(_, v)| v.len()).product();
        let plural = if configs == 1 { "" } else { "s" };
        let limit = space.constraint().map(|c| format!(", where {c}")).unwrap_or_default();
        println!("{:width$}  {} [tune space: {configs} config{plural}{limit}]", e.name, e.summary);
        if a.verbose {
            println!("{:width$}  parameters: {}; example: {}", "", e.comptime_params.join(", "), (e.example_config)());
        }
    }
    Ok(())
}
