//! Shared by the examples: run a problem's launches with DSL kernels on the CPU and, when
//! a GPU is present, on the GPU; print the reference check of each.

use tessera_codegen::ir::Kernel;
use tessera_codegen::problems::{Problem, Role};
use tessera_runtime::{DeviceTensor, LaunchArg, LoadedKernel, Runtime};

/// Runs `p` with `kernels` (one per launch) on the interpreter and, if possible, the GPU.
pub fn run_and_check(mut p: Problem, kernels: &[Kernel]) -> Result<(), Box<dyn std::error::Error>> {
    for (i, k) in kernels.iter().enumerate() {
        let grid = p.launches[i].grid;
        tessera_codegen::interp::run(k, grid, &mut p.interp_args(i))?;
    }
    let r = p.check()?;
    println!("cpu  {:<60} ok  max_rel_err {:.2e}", p.name, r.max_rel_err);

    let rt = match Runtime::new(0) {
        Ok(rt) => rt,
        Err(e) => {
            println!("gpu  skipped: {e}");
            return Ok(());
        }
    };
    p.poison_outputs();
    let stream = rt.stream().clone();
    let dev: Vec<DeviceTensor> =
        p.tensors.iter().map(|t| DeviceTensor::upload(&stream, &t.tensor)).collect::<Result<_, _>>()?;
    for (i, k) in kernels.iter().enumerate() {
        let loaded = LoadedKernel::new(&rt, k, &tessera_codegen::emit::emit_cuda(k))?;
        let args: Vec<LaunchArg> = p.launches[i]
            .args
            .iter()
            .map(|a| match *a {
                tessera_codegen::problems::LaunchArg::Tensor { tensor, .. } => LaunchArg::Tensor(&dev[tensor]),
                tessera_codegen::problems::LaunchArg::Scalar(s) => LaunchArg::Scalar(s),
            })
            .collect();
        loaded.launch(&stream, p.launches[i].grid, &args)?;
    }
    rt.synchronize()?;
    for (i, t) in p.tensors.iter_mut().enumerate() {
        if t.role == Role::Output {
            t.tensor = dev[i].download()?;
        }
    }
    let r = p.check()?;
    println!("gpu  {:<60} ok  max_rel_err {:.2e} ({})", p.name, r.max_rel_err, rt.info().name);
    Ok(())
}
