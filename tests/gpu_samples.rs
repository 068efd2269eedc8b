//! Every sample problem on the GPU: compiled through NVRTC, launched on poisoned
//! outputs, compared with the f64 reference and (small suite) with the CPU interpreter.
//!
//! Runs only with `TESSERA_GPU_TESTS=1` on a machine with a GPU; elsewhere it prints a
//! skip line. `tessera check` runs the same problems from the command line.

use tessera::gpu::check_problem;
use tessera_codegen::problems::{gpu_suite, small_suite};
use tessera_runtime::Runtime;

fn runtime() -> Option<Runtime> {
    if std::env::var("TESSERA_GPU_TESTS").as_deref() != Ok("1") {
        eprintln!("SKIPPED: set TESSERA_GPU_TESTS=1 on a GPU machine to run the GPU sample checks");
        return None;
    }
    Some(Runtime::new(0).expect("TESSERA_GPU_TESTS=1 but no usable GPU"))
}

fn seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[test]
fn small_suite_matches_reference_and_interpreter() {
    let Some(rt) = runtime() else { return };
    let seed = seed();
    for mut p in small_suite(seed) {
        let c = check_problem(&rt, &mut p, true).unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
        let vs = c.vs_interpreter.unwrap();
        // The interpreter rounds like the GPU but sums in another order.
        assert!(vs <= 1e-2, "seed {seed}: {} differs from the interpreter by {vs:e}", p.name);
    }
}

#[test]
fn gpu_suite_matches_reference() {
    let Some(rt) = runtime() else { return };
    let seed = seed();
    for mut p in gpu_suite(seed) {
        check_problem(&rt, &mut p, false).unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
    }
}
