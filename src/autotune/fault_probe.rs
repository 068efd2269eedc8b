//! `fault_probe`: a test-only target (in [`super::TEST_TARGETS`], never tuned by default)
//! whose middle candidate writes far outside its buffer, so a real GPU fault goes through
//! the tuner: that candidate must be recorded as `launch-fault`, the dead worker replaced,
//! the next candidate run, and the key's winner chosen among the others.
//! `tests/gpu_fault.rs` drives it on a GPU (`tessera autotune --kernels fault_probe`).
//!
//! The kernel is hand-written CUDA (through [`LoadedKernel::from_source`] and the kernel
//! ABI): every store the DSL emits is bounds-checked, so no tile program can fault.

use std::fmt;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tessera_codegen::host::ScalarValue;
use tessera_codegen::ir::{DType, Kernel, Param, ParamKind};
use tessera_runtime::{DeviceTensor, LaunchArg, LoadedKernel, Runtime, TimingStats};
use tessera_tuning_db::ShapeBucket;

use super::target::{Failure, TuneTarget};

/// `out[i + offset] = i / 2` for `i < out_size0`: in bounds at offset 0 only.
const SOURCE: &str = r#"
extern "C" __global__ void fault_probe(float* out, long long out_size0, long long out_stride0, long long offset) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < out_size0) out[(i + offset) * out_stride0] = 0.5f * (float)i;
}
"#;

/// Elements written; 2^36 elements past the end is far outside any allocation.
const ELEMENTS: usize = 1 << 20;
const FAR_OFFSET: i64 = 1 << 36;

/// The probe's problem size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeShape {
    pub n: usize,
}

impl fmt::Display for ProbeShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n={}", self.n)
    }
}

/// A candidate: block size and where the writes land (0 = in bounds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeConfig {
    pub threads: u32,
    pub offset: i64,
}

impl fmt::Display for ProbeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "threads={} offset={}", self.threads, self.offset)
    }
}

/// The test-only faulting target.
pub struct FaultProbeTarget;

/// The output buffer of a probe job.
pub struct ProbeBench {
    n: usize,
    out: DeviceTensor,
}

fn params() -> Vec<Param> {
    vec![
        Param { name: "out".into(), kind: ParamKind::Tensor { dtype: DType::F32, rank: 1, writable: true } },
        Param { name: "offset".into(), kind: ParamKind::Scalar { dtype: DType::I64 } },
    ]
}

impl TuneTarget for FaultProbeTarget {
    type Shape = ProbeShape;
    type Config = ProbeConfig;
    type Bench = ProbeBench;

    fn name(&self) -> &'static str {
        "fault_probe"
    }

    fn dtype(&self) -> &'static str {
        "f32"
    }

    /// One shape whatever the spec: the probe has no problem sizes worth tuning.
    fn shapes(&self, _spec: &str) -> Result<Vec<ProbeShape>> {
        Ok(vec![ProbeShape { n: ELEMENTS }])
    }

    fn bucket(&self, s: &ProbeShape) -> String {
        ShapeBucket::new().pow2("n", s.n as u64).build()
    }

    /// In bounds, far out of bounds (the fault), in bounds with another block size.
    fn candidates(&self, _s: &ProbeShape) -> Vec<ProbeConfig> {
        vec![
            ProbeConfig { threads: 256, offset: 0 },
            ProbeConfig { threads: 256, offset: FAR_OFFSET },
            ProbeConfig { threads: 128, offset: 0 },
        ]
    }

    fn heuristic(&self, s: &ProbeShape, _sm_count: usize) -> ProbeConfig {
        self.candidates(s)[0]
    }

    /// None from the IR: the kernel is hand-written (its key hashes no emitted source).
    fn kernels(&self, _s: &ProbeShape, _c: &ProbeConfig) -> Result<Vec<Kernel>> {
        Ok(Vec::new())
    }

    fn prepare(&self, rt: &Runtime, s: &ProbeShape, _seed: u64) -> Result<ProbeBench> {
        Ok(ProbeBench { n: s.n, out: DeviceTensor::poisoned(rt.stream(), DType::F32, &[s.n])? })
    }

    fn run_candidate(
        &self,
        rt: &Runtime,
        b: &mut ProbeBench,
        c: &ProbeConfig,
        warmup: usize,
        iters: usize,
    ) -> Result<TimingStats, Failure> {
        let classify = |e: tessera_runtime::RuntimeError| Failure::classify(e.into());
        let k = LoadedKernel::from_source(rt, "fault_probe", params(), SOURCE, "fault_probe", c.threads, 0)
            .map_err(classify)?;
        let grid = [b.n.div_ceil(c.threads as usize) as u32, 1, 1];
        let launch = |_: usize| {
            k.launch(rt.stream(), grid, &[LaunchArg::Tensor(&b.out), LaunchArg::Scalar(ScalarValue::I64(c.offset))])
        };
        b.out.poison().map_err(classify)?;
        launch(0).map_err(classify)?;
        rt.synchronize().map_err(classify)?;
        let got = b.out.download().map_err(classify)?.to_f64();
        if let Some(i) = (0..b.n).find(|&i| got[i] != 0.5 * i as f64) {
            return Err(Failure::wrong(format!("out[{i}] = {} instead of {}", got[i], 0.5 * i as f64)));
        }
        tessera_runtime::time(rt.stream(), warmup, iters.max(1), launch).map_err(classify)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_contract() {
        let t = FaultProbeTarget;
        let s = t.shapes("decode").unwrap()[0];
        let c = t.candidates(&s);
        assert!(c.contains(&t.heuristic(&s, 132)));
        assert_eq!(c.iter().filter(|c| c.offset != 0).count(), 1, "exactly one faulting candidate");
        assert_eq!(t.bucket(&s), t.bucket(&ProbeShape { n: ELEMENTS }));
        assert!(t.kernels(&s, &c[0]).unwrap().is_empty());
        // The hand-written source follows the ABI of its parameters: pointer, size, stride.
        assert!(SOURCE.contains("float* out, long long out_size0, long long out_stride0, long long offset"));
    }

    #[test]
    fn probe_source_compiles() {
        if let Err(e) = tessera_runtime::compile_ptx(SOURCE, "fault_probe", "sm_90a") {
            match e {
                tessera_runtime::RuntimeError::Compile { .. } => panic!("{e}"),
                other => eprintln!("SKIP probe_source_compiles: {other}"),
            }
        }
    }
}
