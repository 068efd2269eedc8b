//! Runs sample problems on a GPU: upload, launch every kernel in order, download the
//! outputs and compare them with the reference (and, on request, the interpreter).

use std::sync::Arc;

use anyhow::{Context, Result};
use tessera_codegen::emit::emit_cuda;
use tessera_codegen::host::HostTensor;
use tessera_codegen::problems::{CheckReport, LaunchArg as ProblemArg, Problem, Role};
use tessera_runtime::{CudaStream, DeviceTensor, LaunchArg, LoadedKernel, Runtime, TimingStats};

/// A problem compiled and uploaded to the GPU, ready to launch again and again.
pub struct GpuProblem {
    pub kernels: Vec<LoadedKernel>,
    pub tensors: Vec<DeviceTensor>,
    stream: Arc<CudaStream>,
}

impl GpuProblem {
    /// Compiles the problem's kernels (through the JIT cache) and uploads its tensors;
    /// outputs go up poisoned, as the problem holds them.
    pub fn new(rt: &Runtime, p: &Problem) -> Result<Self> {
        let kernels = p
            .kernels()?
            .iter()
            .map(|k| LoadedKernel::new(rt, k, &emit_cuda(k)).with_context(|| format!("compiling `{}`", k.name)))
            .collect::<Result<Vec<_>>>()?;
        let stream = rt.stream().clone();
        let tensors = p
            .tensors
            .iter()
            .map(|t| {
                let d = DeviceTensor::upload(&stream, &t.tensor)?;
                Ok(if t.role == Role::Input { d.read_only() } else { d })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GpuProblem { kernels, tensors, stream })
    }

    /// Enqueues every launch of the problem, in order.
    pub fn launch(&self, p: &Problem) -> Result<()> {
        for (l, k) in p.launches.iter().zip(&self.kernels) {
            let args: Vec<LaunchArg> = l
                .args
                .iter()
                .map(|a| match *a {
                    ProblemArg::Tensor { tensor, .. } => LaunchArg::Tensor(&self.tensors[tensor]),
                    ProblemArg::Scalar(s) => LaunchArg::Scalar(s),
                })
                .collect();
            k.launch(&self.stream, l.grid, &args).with_context(|| format!("launching `{}`", l.sample))?;
        }
        Ok(())
    }

    /// Poisons outputs and intermediates on the device.
    pub fn poison(&self, p: &Problem) -> Result<()> {
        for (t, d) in p.tensors.iter().zip(&self.tensors) {
            if t.role != Role::Input {
                d.poison()?;
            }
        }
        Ok(())
    }

    /// Copies the outputs back into the problem's host tensors.
    pub fn download_outputs(&self, p: &mut Problem) -> Result<()> {
        self.stream.synchronize()?;
        for (t, d) in p.tensors.iter_mut().zip(&self.tensors) {
            if t.role == Role::Output {
                t.tensor = d.download()?;
            }
        }
        Ok(())
    }

    /// Times the whole problem (all launches) with CUDA events.
    pub fn time(&self, p: &Problem, warmup: usize, iters: usize) -> Result<TimingStats> {
        Ok(tessera_runtime::time(&self.stream, warmup, iters, |_| {
            self.launch(p).map_err(|e| tessera_runtime::RuntimeError::Driver(format!("{e:#}")))
        })?)
    }
}

/// Outcome of one problem on the GPU.
pub struct GpuCheck {
    pub reference: CheckReport,
    /// Largest relative difference between the GPU and the interpreter, when compared.
    pub vs_interpreter: Option<f64>,
}

/// Runs a problem on the GPU with poisoned outputs and checks it against the reference;
/// with `compare_interpreter`, also runs the CPU interpreter on the same inputs and
/// reports the largest difference (relative to each output's magnitude).
pub fn check_problem(rt: &Runtime, p: &mut Problem, compare_interpreter: bool) -> Result<GpuCheck> {
    p.poison_outputs();
    let g = GpuProblem::new(rt, p)?;
    g.poison(p)?;
    g.launch(p)?;
    g.download_outputs(p)?;
    let reference = p.check().map_err(|e| anyhow::anyhow!("{}: {e}", p.name))?;
    let vs_interpreter = if compare_interpreter {
        let mut cpu = p.clone();
        cpu.poison_outputs();
        cpu.run_interp()?;
        let mut worst: f64 = 0.0;
        for (a, b) in p.tensors.iter().zip(&cpu.tensors) {
            if a.role == Role::Output {
                worst = worst.max(relative_difference(&a.tensor, &b.tensor));
            }
        }
        Some(worst)
    } else {
        None
    };
    Ok(GpuCheck { reference, vs_interpreter })
}

/// `max |a - b| / max |b|` (NaN anywhere gives infinity).
pub fn relative_difference(a: &HostTensor, b: &HostTensor) -> f64 {
    let (a, b) = (a.to_f64(), b.to_f64());
    let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(f64::MIN_POSITIVE);
    let mut worst: f64 = 0.0;
    for (x, y) in a.iter().zip(&b) {
        let d = (x - y).abs();
        if d.is_nan() {
            return f64::INFINITY;
        }
        worst = worst.max(d / scale);
    }
    worst
}
