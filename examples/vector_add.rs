//! `cargo run --example vector_add`: the typed launchers of a `#[kernel]` on the CPU
//! interpreter and, when a GPU is present, on the GPU, both checked against the reference.

#[path = "kernels/vector_add.rs"]
mod kernel;

use kernel::VectorAdd;
use rand::{rngs::StdRng, SeedableRng};
use tessera_codegen::problems::reference;
use tessera_dsl_support::prelude::*;

fn max_abs_err(got: &HostTensor, want: &[f64]) -> f64 {
    got.to_f64().iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = 100_003;
    let space = VectorAdd::tune_space();
    println!("tune space: {} configs, e.g. {}", space.len(), space.configs()[0]);
    let config = VectorAdd::default_config();
    let grid = [n.div_ceil(config.get("BLOCK").unwrap() as usize) as u32, 1, 1];

    let mut rng = StdRng::seed_from_u64(7);
    let x = HostTensor::random(DType::F32, &[n], -1.0, 1.0, &mut rng);
    let y = HostTensor::random(DType::F32, &[n], -1.0, 1.0, &mut rng);
    let want = reference::vector_add(&x.to_f64(), &y.to_f64());

    let mut out = HostTensor::full(DType::F32, &[n], f64::NAN);
    VectorAdd::cpu(&config)?.run_cpu(grid, &x, &y, &mut out)?;
    let err = max_abs_err(&out, &want);
    println!("cpu  vector_add N={n} {config}: max_abs_err {err:.2e} {}", if err < 1e-6 { "ok" } else { "FAIL" });
    assert!(err < 1e-6);

    match Runtime::new(0) {
        Err(e) => println!("gpu  skipped: {e}"),
        Ok(rt) => {
            let k = VectorAdd::new(&rt, &config)?;
            let s = rt.stream();
            let (dx, dy) = (DeviceTensor::upload(s, &x)?, DeviceTensor::upload(s, &y)?);
            let dout = DeviceTensor::poisoned(s, DType::F32, &[n])?;
            k.launch(s, grid, &dx, &dy, &dout)?;
            let err = max_abs_err(&dout.download()?, &want);
            println!("gpu  vector_add N={n}: max_abs_err {err:.2e} {}", if err < 1e-6 { "ok" } else { "FAIL" });
            assert!(err < 1e-6);
        }
    }
    Ok(())
}
