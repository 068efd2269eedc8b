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
#[ignore = "GPU-suite shapes on the interpreter: run with --release (~2 min)"]
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

fn ptx(name: &str, e: tessera_codegen::emit::EmittedKernel) {
    match tessera_runtime::compile_ptx(&e.source, &e.entry, "sm_90a") {
        Ok(p) => eprintln!("{name}: PTX ok ({} B), {} threads, {} B shared", p.ptx.len(), e.threads, e.shared_bytes),
        Err(err) if !format!("{err}").contains("error:") => eprintln!("{name}: not compiled here ({err})"),
        Err(err) => panic!("{name}: {err}"),
    }
}

/// NVRTC (no GPU needed) on every kernel config the new GPU cases launch.
#[test]
fn gpu_case_configs_compile_to_ptx() {
    use tessera_codegen::emit::emit_cuda;
    use tessera_dsl_support::KernelConfig;
    use tessera_kernels::centroid::*;
    use tessera_kernels::hip::*;
    use tessera_kernels::snapkv::*;
    let c = |p: &[(&str, i64)]| KernelConfig::from_pairs(p);
    // HiP: (group, head_dim, bk, k_nodes, child_tile) of hip_gpu_cases.
    for (g, d, bk, kn, ct) in [(4, 128, 16, 64, 64), (3, 64, 2, 128, 32)] {
        let a = c(&[("TOPK", kn), ("WARPS", 4)]);
        let s = c(&[("GROUP", g), ("HEAD_DIM", d), ("BK", bk), ("CHILD_TILE", ct), ("WARPS", 4)]);
        ptx("hip_init_nodes", emit_cuda(&HipInitNodes::build(&a).unwrap()));
        ptx("hip_score_children", emit_cuda(&HipScoreChildren::build(&s).unwrap()));
        ptx("hip_select_children", emit_cuda(&HipSelectChildren::build(&a).unwrap()));
        ptx("hip_finalize", emit_cuda(&HipFinalize::build(&a).unwrap()));
    }
    for case in snapkv_gpu_cases(7) {
        let d = case.dims;
        let max_cand = (case.t - case.window).div_ceil(case.pool_tile) * (case.capacity - case.window);
        let op = SnapKvCompress::cpu(
            d.group,
            case.window,
            d.head_dim,
            case.capacity,
            case.kernel_size,
            case.pool,
            case.pool_tile,
            max_cand,
        )
        .unwrap();
        let [a, r, b, p, m, k] = op.configs();
        ptx("snapkv_row_stats", emit_cuda(&SnapkvRowStats::build(&a).unwrap()));
        ptx("snapkv_row_merge", emit_cuda(&SnapkvRowMerge::build(&r).unwrap()));
        ptx("snapkv_votes", emit_cuda(&SnapkvVotes::build(&b).unwrap()));
        ptx("snapkv_pool_topk", emit_cuda(&SnapkvPoolTopk::build(&p).unwrap()));
        ptx("snapkv_merge", emit_cuda(&SnapkvMerge::build(&m).unwrap()));
        ptx("snapkv_compress", emit_cuda(&SnapkvCompress::build(&k).unwrap()));
    }
    for case in centroid_gpu_cases(7) {
        let d = case.dims;
        let (g, hd) = (d.group as i64, d.head_dim as i64);
        let cand = case.init.shape[2].next_power_of_two() as i64;
        for n in [0, 1] {
            let a = [("HEAD_DIM", hd), ("NORMALIZE", n), ("KEY_TILE", 64), ("C_TILE", 64), ("WARPS", 4)];
            ptx("kmeans_assign", emit_cuda(&KmeansAssign::build(&c(&a)).unwrap()));
            let b = [("HEAD_DIM", hd), ("NORMALIZE", n), ("KEY_TILE", 64), ("WARPS", 4)];
            ptx("kmeans_accumulate", emit_cuda(&KmeansAccumulate::build(&c(&b)).unwrap()));
        }
        let f = c(&[("HEAD_DIM", hd), ("C_TILE", 32), ("WARPS", 4)]);
        ptx("kmeans_finalize", emit_cuda(&KmeansFinalize::build(&f).unwrap()));
        let p = c(&[("HEAD_DIM", hd), ("ROWS", 64), ("WARPS", 4)]);
        ptx("centroid_permute", emit_cuda(&CentroidPermute::build(&p).unwrap()));
        let s = c(&[("GROUP", g), ("HEAD_DIM", hd), ("C_TILE", 64), ("WARPS", 4), ("CT", 2)]);
        ptx("centroid_tile_lse", emit_cuda(&CentroidTileLse::build(&s).unwrap()));
        let k = c(&[("KEEP", case.keep as i64), ("CAND", cand), ("GROUP", g), ("MAX_TILES", 128), ("WARPS", 4)]);
        ptx("centroid_select", emit_cuda(&CentroidSelect::build(&k).unwrap()));
        let r = CentroidDecode::pack_config(case.keep, case.pack_programs);
        ptx("centroid_pack_rows", emit_cuda(&CentroidPackRows::build(&r).unwrap()));
    }
}
