//! `tessera check`: every sample problem on the GPU against its reference.

use anyhow::{bail, Result};
use tessera::gpu::check_problem;
use tessera_codegen::problems::{gpu_suite, small_suite};
use tessera_runtime::Runtime;

#[derive(clap::Args)]
pub struct Args {
    /// Which problems: `small` (sample programs, also compared with the interpreter),
    /// `gpu` (larger sample problems), `kernels` (the attention kernels of
    /// tessera-kernels), `all` (those three), or `unverified` (kernel cases of features not
    /// yet run on a GPU: head dims 96 / 256, bf16 centroids; not part of `all`).
    #[arg(long, default_value = "all")]
    suite: String,
    /// Seed of the random inputs (a fresh one each run by default).
    #[arg(long)]
    seed: Option<u64>,
    /// Only the problems whose name contains one of these (comma-separated), e.g.
    /// `--suite kernels --only centroid,block_sparse`: a quick re-check of what changed.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// Whether a problem named `name` is selected by `--only` (everything when it is empty).
fn wanted(name: &str, only: &[String]) -> bool {
    only.is_empty() || only.iter().any(|o| name.contains(o.as_str()))
}

pub fn run(a: Args) -> Result<()> {
    let rt = Runtime::new(0)?;
    let seed = a.seed.unwrap_or_else(fresh_seed);
    println!("device {} ({}), seed {seed}", rt.info().name, rt.arch());
    let mut problems = Vec::new();
    if a.suite == "small" || a.suite == "all" {
        problems.extend(small_suite(seed).into_iter().map(|p| (p, true)));
    }
    if a.suite == "gpu" || a.suite == "all" {
        problems.extend(gpu_suite(seed.wrapping_add(1000)).into_iter().map(|p| (p, false)));
    }
    let kernels = a.suite == "kernels" || a.suite == "all";
    let unverified = a.suite == "unverified";
    if problems.is_empty() && !kernels && !unverified {
        bail!("unknown suite `{}` (small, gpu, kernels, all or unverified)", a.suite);
    }
    problems.retain(|(p, _)| wanted(&p.name, &a.only));
    let (mut failures, mut ran) = (0, 0);
    for (mut p, interp) in problems {
        ran += 1;
        match check_problem(&rt, &mut p, interp) {
            Ok(c) => {
                let vs = c.vs_interpreter.map(|d| format!(", vs interpreter {d:.1e}")).unwrap_or_default();
                println!("ok    {:<70} rel err {:.1e}{vs}", p.name, c.reference.max_rel_err);
            }
            Err(e) => {
                failures += 1;
                println!("FAIL  {:<70} {e:#}", p.name);
            }
        }
    }
    if kernels || unverified {
        let cases = if unverified {
            tessera_kernels::unverified_gpu_cases(seed.wrapping_add(3000))
        } else {
            tessera_kernels::gpu_cases(seed.wrapping_add(2000))
        };
        for mut case in cases {
            if !wanted(&case.name(), &a.only) {
                continue;
            }
            ran += 1;
            let outcome = case.run_gpu(&rt).map_err(|e| e.to_string()).and_then(|_| case.check());
            match outcome {
                Ok(err) => println!("ok    {:<70} rel err {err:.1e}", case.name()),
                Err(e) => {
                    failures += 1;
                    println!("FAIL  {:<70} {e}", case.name());
                }
            }
        }
    }
    if ran == 0 {
        bail!("no problem of suite `{}` matches --only {:?}", a.suite, a.only);
    }
    if failures > 0 {
        bail!("{failures} of {ran} problem(s) failed");
    }
    Ok(())
}

/// A seed from the clock, so each run checks fresh inputs.
fn fresh_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn only_selects_by_substring() {
        let a = Cli::parse_from(["check", "--suite", "kernels", "--only", "centroid,block_sparse"]).args;
        assert_eq!(a.only, ["centroid", "block_sparse"]);
        assert!(wanted("centroid2 B1 Hkv3", &a.only) && wanted("block_sparse F16 B2", &a.only));
        assert!(!wanted("dense B2 Hkv8", &a.only));
        let all = Cli::parse_from(["check"]).args;
        assert!(all.only.is_empty() && wanted("anything", &all.only));
    }
}
