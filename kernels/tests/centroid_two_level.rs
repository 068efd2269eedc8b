//! The two-level centroid lookup on the interpreter: fine k-means, coarse level,
//! re-permuted cache, decode — selection and output against the f64 reference.

use tessera_kernels::cases::{CentroidTwoLevelCase, KernelCase};
use tessera_kernels::centroid_two_level::{select_two_level, CentroidTwoLevelDecode};
use tessera_kernels::reference::DecodeDims;
use tessera_kernels::DecodeParams;

fn dims(batch: usize, kv_heads: usize, group: usize, cap: usize, head_dim: usize) -> DecodeDims {
    DecodeDims { batch, kv_heads, group, cap, head_dim }
}

fn run(mut c: CentroidTwoLevelCase) {
    let t = std::time::Instant::now();
    c.run_cpu().unwrap_or_else(|e| panic!("{}: {e}", c.name()));
    let e = c.check().unwrap_or_else(|e| panic!("{}: {e}", c.name()));
    let kept = c.keep_count.to_f64();
    let max_fine = c.layout.as_ref().unwrap().max_fine;
    eprintln!("{}: rel err {e:.2e}, kept {kept:?}, max_fine {max_fine} ({:.2} s)", c.name(), t.elapsed().as_secs_f64());
}

#[test]
fn two_level_lookup_matches_reference() {
    let inf = f32::NEG_INFINITY;
    // (dims, fixed, seq, fine, coarse, keep_coarse, keep, pack_programs, threshold, seed)
    run(CentroidTwoLevelCase::new(dims(1, 2, 4, 700, 64), 600, 650, 30, 5, 2, 5, 2, inf, 1));
    run(CentroidTwoLevelCase::new(dims(2, 1, 3, 400, 32), 333, 399, 24, 4, 3, 24, 4, inf, 2)); // keep > explored
    run(CentroidTwoLevelCase::new(dims(1, 2, 2, 500, 64), 450, 499, 25, 5, 3, 15, 3, -8.5, 3)); // threshold: keeps some, not all
    run(CentroidTwoLevelCase::new(dims(1, 1, 2, 300, 32), 300, 300, 20, 20, 20, 20, 5, inf, 4));
    // one fine per coarse, no recent rows
}

/// bf16 fine and coarse centroids (`CentroidTwoLevelDecode::with_centroid_dtype`): both
/// levels score the rounded centroids, the selection checked against them.
#[test]
fn two_level_lookup_with_bf16_centroids_matches_reference() {
    use tessera_codegen::ir::DType;
    let inf = f32::NEG_INFINITY;
    let bf16 = |c: CentroidTwoLevelCase| c.with_centroid_dtype(DType::BF16);
    run(bf16(CentroidTwoLevelCase::new(dims(1, 2, 4, 700, 64), 600, 650, 30, 5, 2, 5, 2, inf, 11)));
    run(bf16(CentroidTwoLevelCase::new(dims(1, 2, 2, 500, 64), 450, 499, 25, 5, 3, 15, 3, -8.5, 13)));
    let c = CentroidTwoLevelCase::new(dims(1, 2, 4, 700, 64), 600, 650, 30, 5, 2, 5, 2, inf, 14);
    let err = c.with_centroid_dtype(DType::F16).run_cpu().expect_err("f16 centroids are refused");
    assert!(format!("{err}").contains("f32 or bf16"), "{err}");
}

#[test]
fn two_level_reference_explores_only_kept_coarse_clusters() {
    // 4 fine clusters in 2 coarse clusters (fine 0-1 | 2-3), d = 2, one query along x.
    let fine = [1.0, 0.0, 0.9, 0.1, -1.0, 0.0, -0.9, -0.1];
    let coarse = [0.95, 0.05, -0.95, -0.05];
    let (kept, scores) = select_two_level(
        &[4.0, 0.0],
        &fine,
        &[3, 3, 3, 3],
        &coarse,
        &[6, 6],
        &[0, 2, 4],
        2,
        1,
        4,
        f64::NEG_INFINITY,
        1.0,
    );
    assert_eq!(kept, vec![0, 1]);
    assert!(scores[2] == f64::NEG_INFINITY && scores[3] == f64::NEG_INFINITY);
    assert!(scores[0] > scores[1]);
}

#[test]
fn two_level_refuses_bad_configs() {
    let p = DecodeParams::new(4, 64);
    assert!(CentroidTwoLevelDecode::cpu(p.clone(), 0, 8, 4, 4, 2).is_err()); // no coarse cluster explored
    assert!(CentroidTwoLevelDecode::cpu(p.clone(), 9, 8, 4, 4, 2).is_err()); // more than there are
                                                                             // keep > 2 x 8 candidate slots (max_fine 4 rounded up to a multiple of 8)
    assert!(CentroidTwoLevelDecode::cpu(p.clone(), 2, 8, 17, 4, 2).is_err());
    assert!(CentroidTwoLevelDecode::cpu(p, 2, 8, 8, 4, 2).is_ok());
}

/// The decode kernels at the GPU cases' sizes (and the bench's: 6502 fine clusters in 406
/// coarse, 102 explored, 650 kept, up to 64 fine per coarse) compile to sm_90a PTX
/// within the shared memory of a block.
#[test]
fn two_level_kernels_compile_for_sm90a() {
    use tessera_codegen::emit::emit_cuda;
    use tessera_kernels::block_sparse::BlockSparseDecodeSplit;
    use tessera_kernels::centroid::{CentroidPackRows, CentroidSelect, CentroidTileLse};
    use tessera_kernels::centroid_two_level::{CentroidFineScores, CentroidLse, CentroidSelectIds};
    for (g, d, coarse, keep_coarse, keep, max_fine) in
        [(4, 128, 34, 9, 56, 40), (3, 64, 14, 4, 30, 32), (4, 128, 406, 102, 650, 64)]
    {
        let p = DecodeParams::new(g, d);
        let ([t, cs, pack, a], [l, f, sel]) =
            CentroidTwoLevelDecode::configs(&p, keep_coarse, (coarse as usize).next_power_of_two(), keep, max_fine, 8);
        // The bf16-centroid variants of the two scoring kernels.
        let ([tb, ..], [_, fb, _]) = CentroidTwoLevelDecode::configs_typed(
            &p,
            keep_coarse,
            (coarse as usize).next_power_of_two(),
            keep,
            max_fine,
            8,
            tessera_codegen::ir::DType::BF16,
        );
        let kernels = [
            CentroidTileLse::build(&tb).unwrap(),
            CentroidFineScores::build(&fb).unwrap(),
            CentroidTileLse::build(&t).unwrap(),
            CentroidSelect::build(&cs).unwrap(),
            CentroidPackRows::build(&pack).unwrap(),
            BlockSparseDecodeSplit::build(&a).unwrap(),
            CentroidLse::build(&l).unwrap(),
            CentroidFineScores::build(&f).unwrap(),
            CentroidSelectIds::build(&sel).unwrap(),
        ];
        for k in &kernels {
            let e = emit_cuda(k);
            assert!(e.shared_bytes <= 227 * 1024, "{}: {} B of shared memory", k.name, e.shared_bytes);
            match tessera_runtime::compile_ptx(&e.source, &e.entry, "sm_90a") {
                Ok(_) => {}
                Err(tessera_runtime::RuntimeError::Compile { log, .. }) => panic!("{}: {log}", k.name),
                Err(other) => eprintln!("{}: no NVRTC here ({other})", k.name),
            }
        }
    }
}
