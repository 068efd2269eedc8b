//! The GPU cases added with issue 5 (HiP, SnapKV, centroid decode), run on the
//! interpreter: `run_cpu` + `check` on small shapes here, and the exact GPU-suite shapes
//! under `--ignored` (slow in debug builds).

use tessera_kernels::cases::{centroid_gpu_cases, hip_gpu_cases, snapkv_gpu_cases, HipCase, KernelCase, SnapKvCase};
use tessera_kernels::reference::DecodeDims;
use tessera_kernels::snapkv::Pool;

fn dims(batch: usize, kv_heads: usize, group: usize, cap: usize, head_dim: usize) -> DecodeDims {
    DecodeDims { batch, kv_heads, group, cap, head_dim }
}

fn run(c: &mut dyn KernelCase) {
    let t = std::time::Instant::now();
    c.run_cpu().unwrap_or_else(|e| panic!("{}: {e}", c.name()));
    let e = c.check().unwrap_or_else(|e| panic!("{}: {e}", c.name()));
    eprintln!("{}: err {e:.2e} ({:.2} s)", c.name(), t.elapsed().as_secs_f64());
}

#[test]
fn hip_case_small() {
    run(&mut HipCase::new("hip_select", dims(2, 2, 4, 1203, 128), 1200, 64, 16, 8, 16, 1));
    run(&mut HipCase::new("hip_select", dims(1, 3, 3, 503, 64), 499, 10, 2, 16, 32, 2));
}

#[test]
fn snapkv_case_small() {
    run(&mut SnapKvCase::new("snapkv_compress", dims(1, 2, 4, 607, 128), 8, 600, 64, 7, Pool::Max, 128, 3));
    run(&mut SnapKvCase::new("snapkv_compress", dims(2, 2, 3, 410, 64), 5, 409, 37, 4, Pool::Avg, 64, 4));
}

#[test]
#[ignore = "GPU-suite shapes on the interpreter: minutes in debug"]
fn gpu_suite_shapes_on_the_interpreter() {
    for mut c in hip_gpu_cases(7) {
        run(&mut c);
    }
    for mut c in snapkv_gpu_cases(7) {
        run(&mut c);
    }
    for mut c in centroid_gpu_cases(7) {
        run(&mut c);
    }
}
