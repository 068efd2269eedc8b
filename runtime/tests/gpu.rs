//! Tests on a real GPU. They run only with `TESSERA_GPU_TESTS=1`; otherwise each prints
//! a skip line and passes.

use std::sync::Arc;

use rand::SeedableRng;
use tessera_codegen::host::{HostTensor, ScalarValue};
use tessera_codegen::ir::{DType, Param, ParamKind};
use tessera_runtime::{time, DeviceTensor, LaunchArg, LoadedKernel, PtxCache, Runtime, RuntimeError};

fn gpu_runtime(test: &str) -> Option<Runtime> {
    if std::env::var("TESSERA_GPU_TESTS").as_deref() != Ok("1") {
        eprintln!("SKIP {test}: set TESSERA_GPU_TESTS=1 to run GPU tests");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("tessera-gpu-test-cache-{}-{test}", std::process::id()));
    let rt = Runtime::with_cache(0, Arc::new(PtxCache::new(Some(dir)))).expect("TESSERA_GPU_TESTS=1 but no GPU");
    eprintln!("{test}: {}", rt.info());
    Some(rt)
}

/// Follows the kernel ABI of `tessera_codegen::emit`: per rank-R tensor the pointer, R
/// sizes, R strides; scalars by value, bool as int.
const AXPY: &str = r#"
extern "C" __global__ void axpy(const float* x, long long x_n, long long x_s,
                                const float* y, long long y_n, long long y_s,
                                float* out, long long o_n, long long o_s,
                                float a, int add_y) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= o_n) return;
    float v = a * x[i * x_s];
    if (add_y) v += y[i * y_s];
    out[i * o_s] = v;
}

// Reverses each block's chunk through dynamic shared memory (> 48 KiB to need opt-in).
extern "C" __global__ void reverse_chunks(const float* x, long long x_n, long long x_s,
                                          float* out, long long o_n, long long o_s) {
    extern __shared__ float buf[];
    const int chunk = 16384;
    long long base = (long long)blockIdx.x * chunk;
    for (int k = threadIdx.x; k < chunk; k += blockDim.x)
        buf[k] = base + k < x_n ? x[(base + k) * x_s] : 0.0f;
    __syncthreads();
    for (int k = threadIdx.x; k < chunk; k += blockDim.x)
        if (base + k < o_n) out[(base + k) * o_s] = buf[chunk - 1 - k];
}
"#;

fn tensor(name: &str, writable: bool) -> Param {
    Param { name: name.into(), kind: ParamKind::Tensor { dtype: DType::F32, rank: 1, writable } }
}

fn axpy_params() -> Vec<Param> {
    vec![
        tensor("x", false),
        tensor("y", false),
        tensor("out", true),
        Param { name: "a".into(), kind: ParamKind::Scalar { dtype: DType::F32 } },
        Param { name: "add_y".into(), kind: ParamKind::Scalar { dtype: DType::Bool } },
    ]
}

#[test]
fn axpy_on_poisoned_output_with_odd_n() {
    let Some(rt) = gpu_runtime("axpy_on_poisoned_output_with_odd_n") else { return };
    let s = rt.stream();
    let k = LoadedKernel::from_source(&rt, "axpy", axpy_params(), AXPY, "axpy", 256, 0).unwrap();
    assert_eq!(rt.cache().stats().misses, 1);

    let n = 1_000_003usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // x is read through a stride-2 view at offset 1 of a longer buffer.
    let x_host = HostTensor::random(DType::F32, &[2 * n + 1], -2.0, 2.0, &mut rng);
    let y_host = HostTensor::random(DType::F32, &[n], -2.0, 2.0, &mut rng);
    let x_buf = DeviceTensor::upload(s, &x_host).unwrap();
    let x = x_buf.view(&[n], &[2], 1).unwrap().read_only();
    let y = DeviceTensor::upload(s, &y_host).unwrap();
    // The output has one extra element that must stay poisoned.
    let out_buf = DeviceTensor::poisoned(s, DType::F32, &[n + 1]).unwrap();
    assert!(out_buf.download().unwrap().to_f64().iter().all(|v| v.is_nan()));
    let out = out_buf.view(&[n], &[1], 0).unwrap();

    let a = 1.5f32;
    let grid = [n.div_ceil(256) as u32, 1, 1];
    let args = [
        LaunchArg::Tensor(&x),
        LaunchArg::Tensor(&y),
        LaunchArg::Tensor(&out),
        LaunchArg::Scalar(ScalarValue::F32(a)),
        LaunchArg::Scalar(ScalarValue::Bool(true)),
    ];
    k.launch(s, grid, &args).unwrap();
    let got = out_buf.download().unwrap().to_f64();
    let xs = x_host.to_f64();
    let ys = y_host.to_f64();
    for i in 0..n {
        let want = (a as f64) * xs[2 * i + 1] + ys[i];
        assert!((got[i] - want).abs() <= 1e-6 * (1.0 + want.abs()), "out[{i}] = {} want {want}", got[i]);
    }
    assert!(got[n].is_nan(), "element past the end was written");

    // add_y = false: bool passes as int 0.
    out.poison().unwrap();
    let args_no_y = [args[0], args[1], args[2], args[3], LaunchArg::Scalar(ScalarValue::Bool(false))];
    k.launch(s, grid, &args_no_y).unwrap();
    let got = out.download().unwrap().to_f64();
    assert_eq!(got.len(), n);
    for i in (0..n).step_by(9973) {
        assert!((got[i] - (a as f64) * xs[2 * i + 1]).abs() <= 1e-6 * (1.0 + got[i].abs()));
    }

    // Checks fail before the GPU is touched.
    let e = k.launch(s, [0, 1, 1], &args).unwrap_err();
    assert!(matches!(e, RuntimeError::EmptyGrid { .. }), "{e}");
    let bad = [args[0], args[1], LaunchArg::Tensor(&out.read_only()), args[3], args[4]];
    assert!(matches!(k.launch(s, grid, &bad).unwrap_err(), RuntimeError::ReadOnly { .. }));
    let bad = [args[0], args[1], args[2], LaunchArg::Scalar(ScalarValue::F32(1.0)), args[3]];
    assert!(matches!(k.launch(s, grid, &bad).unwrap_err(), RuntimeError::DType { .. }));

    // The same source again: an in-memory cache hit.
    let _k2 = LoadedKernel::from_source(&rt, "axpy", axpy_params(), AXPY, "axpy", 256, 0).unwrap();
    assert_eq!(rt.cache().stats().memory_hits, 1);

    // Timing with per-iteration events.
    let stats = time(s, 3, 20, |_| k.launch(s, grid, &args)).unwrap();
    assert_eq!(stats.samples.len(), 20);
    assert!(stats.min_us > 0.0 && stats.min_us <= stats.median_us && stats.median_us <= stats.max_us);
    eprintln!("axpy n={n}: {stats}");
}

#[test]
fn dynamic_shared_memory_over_48k() {
    let Some(rt) = gpu_runtime("dynamic_shared_memory_over_48k") else { return };
    let s = rt.stream();
    let params = vec![tensor("x", false), tensor("out", true)];
    let smem = 16384 * 4; // 64 KiB
    let k =
        LoadedKernel::from_source(&rt, "reverse_chunks", params.clone(), AXPY, "reverse_chunks", 512, smem).unwrap();
    let n = 3 * 16384 + 5;
    let vals: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let x = DeviceTensor::upload(s, &HostTensor::from_f64(DType::F32, &[n], &vals)).unwrap();
    let out = DeviceTensor::poisoned(s, DType::F32, &[n]).unwrap();
    k.launch(s, [n.div_ceil(16384) as u32, 1, 1], &[LaunchArg::Tensor(&x), LaunchArg::Tensor(&out)]).unwrap();
    let got = out.download().unwrap().to_f64();
    for (i, &g) in got.iter().enumerate() {
        let (blk, k) = (i / 16384, i % 16384);
        let src = blk * 16384 + 16383 - k;
        let want = if src < n { src as f64 } else { 0.0 };
        assert_eq!(g, want, "out[{i}]");
    }
    // Beyond the opt-in limit: a typed error at load time.
    let too_much = rt.info().max_shared_per_block_optin as u32 + 1;
    let e =
        LoadedKernel::from_source(&rt, "reverse_chunks", params, AXPY, "reverse_chunks", 512, too_much).unwrap_err();
    assert!(matches!(e, RuntimeError::SharedMemory { .. }), "{e}");
}

#[test]
fn doctor_sees_the_device() {
    let Some(rt) = gpu_runtime("doctor_sees_the_device") else { return };
    let report = tessera_runtime::doctor();
    eprintln!("{report}");
    let devices = report.devices.expect("device list");
    assert!(devices.iter().any(|d| d.as_ref().is_ok_and(|d| d.uuid == rt.info().uuid)));
    assert!(rt.arch().starts_with("sm_"));
}
