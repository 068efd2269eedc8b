//! Every kernel's IR goes through the CUDA emitter (no GPU or NVRTC needed).

use tessera_codegen::emit::emit_cuda;
use tessera_dsl_support::KernelConfig;
use tessera_kernels::append::{KvAppendRows, LandmarksMean};
use tessera_kernels::block_sparse::BlockSparseDecodeSplit;
use tessera_kernels::combine::AttnCombine;
use tessera_kernels::dense::DenseDecodeSplit;
use tessera_kernels::sink_window::SinkWindowDecodeSplit;
use tessera_kernels::topk::{BlockScoresTopk, TopkMerge};
use tessera_kernels::tree::TreeVerifySplit;

fn cfg(pairs: &[(&str, i64)]) -> KernelConfig {
    KernelConfig::from_pairs(pairs)
}

#[test]
fn all_kernels_emit_cuda() {
    let dec = [("GROUP", 4), ("HEAD_DIM", 128), ("BLOCK_N", 64), ("WARPS", 4), ("STAGES", 3)];
    let kernels = vec![
        DenseDecodeSplit::build(&cfg(&dec)).unwrap(),
        SinkWindowDecodeSplit::build(&cfg(&dec)).unwrap(),
        BlockSparseDecodeSplit::build(&cfg(&dec).with("BLOCK_SIZE", 128).with("KV_SHARE", 1).with("MIN_BLOCKS", 0))
            .unwrap(),
        AttnCombine::build(&cfg(&[("HEAD_DIM", 128), ("MAX_SPLITS", 16), ("WRITE_LSE", 1)])).unwrap(),
        BlockScoresTopk::build(&cfg(&[
            ("GROUP", 4),
            ("HEAD_DIM", 128),
            ("LM_TILE", 128),
            ("TOPK", 64),
            ("SUM_HEADS", 0),
        ]))
        .unwrap(),
        TopkMerge::build(&cfg(&[("TOPK", 64), ("CAND", 1024)])).unwrap(),
        TreeVerifySplit::build(&cfg(&[("GROUP", 4), ("T_PAD", 16), ("HEAD_DIM", 128), ("BLOCK_N", 64), ("ROWS", 64)]))
            .unwrap(),
        LandmarksMean::build(&cfg(&[("HEAD_DIM", 128), ("BLOCK_SIZE", 64)])).unwrap(),
        KvAppendRows::build(&cfg(&[("HEAD_DIM", 128), ("TILE_T", 16), ("BLOCK_SIZE", 64), ("UPDATE_LANDMARKS", 1)]))
            .unwrap(),
    ];
    // Landmarks in f32 (LM = 2) as well as the default bf16.
    let f32_landmarks = vec![
        BlockScoresTopk::build(&cfg(&[
            ("LM", 2),
            ("GROUP", 4),
            ("HEAD_DIM", 128),
            ("LM_TILE", 32),
            ("TOPK", 64),
            ("SUM_HEADS", 0),
        ]))
        .unwrap(),
        LandmarksMean::build(&cfg(&[("LM", 2), ("HEAD_DIM", 128), ("BLOCK_SIZE", 64)])).unwrap(),
        KvAppendRows::build(&cfg(&[
            ("LM", 2),
            ("HEAD_DIM", 128),
            ("TILE_T", 16),
            ("BLOCK_SIZE", 64),
            ("UPDATE_LANDMARKS", 1),
        ]))
        .unwrap(),
    ];
    let kernels: Vec<_> = kernels.into_iter().chain(f32_landmarks).collect();
    for k in &kernels {
        let e = emit_cuda(k);
        assert!(!format!("{e:?}").is_empty(), "{}", k.name);
    }
}

/// The CUDA of the block-sparse split with one-row blocks (gathered K/V rows: the centroid
/// lookup's packed rows), GQA 4, D 128, 32-row tiles.
fn one_row_block_sparse_cuda() -> String {
    let c = cfg(&[
        ("GROUP", 4),
        ("HEAD_DIM", 128),
        ("BLOCK_SIZE", 1),
        ("KV_SHARE", 1),
        ("MIN_BLOCKS", 0),
        ("BLOCK_N", 32),
        ("WARPS", 4),
        ("STAGES", 2),
    ]);
    emit_cuda(&BlockSparseDecodeSplit::build(&c).unwrap()).source
}

/// Gathered K/V tiles (block-sparse with one-row blocks, the centroid lookup's packed rows):
/// the block index is read without staging its arange index tile, the V copy reads the
/// mask and row positions the K copy staged (no second stash, no barrier between them), and
/// the barrier that frees scratch comes after the V copy, before anything stashes again.
#[test]
fn gathered_k_and_v_tiles_share_one_stash() {
    let src = one_row_block_sparse_cuda();
    let lines: Vec<&str> = src.lines().map(str::trim).collect();
    let is_load = |l: &str, t: &str| l.starts_with("//") && l.contains(&format!("= load {t}["));
    let mut copies = 0;
    for (i, l) in lines.iter().enumerate() {
        if is_load(l, "block_idx") && lines[i..].iter().any(|x| x.contains("gather")) {
            // The index tile is arange arithmetic: recomputed, never stashed.
            assert!(!lines[i + 1].starts_with("tsr::stash"), "block index staged: {}", lines[i + 1]);
        }
        // Gathered K loads only (`k[b, h, [pos], ..]`); the sink/window tiles are affine.
        if !is_load(l, "k") || !l.contains(", [pos") || lines[i + 1].contains("prefetched") {
            continue;
        }
        // A K copy (prologue or prefetch): stash, one barrier, K copies, then the V load.
        let v = i + lines[i..].iter().position(|x| is_load(x, "v")).expect("a V load follows");
        let between = &lines[i..v];
        assert_eq!(between.iter().filter(|x| x.starts_with("tsr::stash")).count(), 2, "mask + positions");
        assert_eq!(between.iter().filter(|x| x.starts_with("__syncthreads")).count(), 1);
        // The V copy stashes nothing and is followed by the freeing barrier before any stash.
        let next_sync = v + lines[v..].iter().position(|x| x.starts_with("__syncthreads")).expect("a barrier");
        assert!(lines[v..next_sync].iter().all(|x| !x.starts_with("tsr::stash")), "V restaged its indices");
        assert!(lines[v..next_sync].iter().any(|x| x.contains("cp_async_chunks")), "V copies before the barrier");
        copies += 1;
    }
    assert!(copies >= 2, "prologue and in-loop prefetch copies, found {copies}");
}

/// A dense decode tile costs four barriers: the landed K/V copies, the cross-warp row
/// maximum, the probabilities staged for `P · V`, and the one that frees the buffers before
/// the next prefetch. The product's operands and each reduction's partials are not freed by
/// a barrier of their own (the emitter owes it to the next writer, and reductions place
/// their partials above what is owed); the row sum is a per-column sum taken after the loop.
/// The copies' rare unaligned fallback is a rolled loop, so the fast path is not merged with it.
#[test]
fn dense_decode_tile_has_four_barriers_and_a_rolled_fallback() {
    let c = cfg(&[("GROUP", 4), ("HEAD_DIM", 128), ("BLOCK_N", 64), ("WARPS", 4), ("STAGES", 2)]);
    let src = emit_cuda(&DenseDecodeSplit::build(&c).unwrap()).source;
    let lines: Vec<&str> = src.lines().map(str::trim).collect();
    let start = lines.iter().position(|l| l.starts_with("for (int kv_start")).expect("the key loop");
    // The loop body ends where its braces balance again.
    let mut depth = 0i32;
    let end = start
        + lines[start..]
            .iter()
            .position(|l| {
                depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                depth == 0
            })
            .expect("loop end");
    let body = &lines[start..=end];
    // Three in the body, one inside the row reduction (between its warps' writes and reads).
    let barriers = body.iter().filter(|l| l.starts_with("__syncthreads")).count();
    assert_eq!(barriers, 3, "barriers per tile:\n{}", body.join("\n"));
    let reductions = body.iter().filter(|l| l.starts_with("tsr::frag_row_reduce")).count();
    assert_eq!(reductions, 1, "one row reduction per tile (the maximum)");
    let rolled = src.lines().filter(|l| l.trim() == "#pragma unroll 1").count();
    assert!(rolled >= 2, "the K and V copies' fallbacks are rolled loops");
}

/// Gathered K/V rows (one-row blocks) take the per-access fast path: the row index is read
/// per vector and added as a 32-bit offset, the checks that hold for the whole access are
/// made once (`tile_offset32` over the gathered axis), and the per-vector general path is
/// only the rolled fallback.
#[test]
fn gathered_rows_take_the_fast_path() {
    let src = one_row_block_sparse_cuda();
    for t in ["k", "v"] {
        let guard = format!("tsr::tile_offset32({t}_stride2, {t}_size2)");
        assert!(src.contains(&guard), "no gathered fast path for {t}");
    }
    assert!(src.contains("(g2_ok ? (int)g2 : 0) * st2"), "gathered rows addressed in 32 bits");
}

/// A staged tile that does not fill every thread's last vector (24 × 64 bf16 centroids: 1536
/// elements over 128 threads × 8 × 2 slots) must not zero-fill past its end: a masked-off
/// `cp.async` still writes its 16 bytes, which landed past the shared-memory allocation
/// (found by compute-sanitizer on the H200: two-level bf16 centroids, GROUP 3, D 64).
/// The copy runs in rounds of 16 rows, and the second round's rows 24..32 skip the copy.
/// Whole tiles (the decode kernels' K/V) keep the unguarded copy.
#[test]
fn ragged_staged_tile_copies_only_its_own_slots() {
    let c = cfg(&[("GROUP", 3), ("HEAD_DIM", 64), ("MAX_FINE", 24), ("WARPS", 4), ("CT", 0)]);
    let src = emit_cuda(&tessera_kernels::centroid_two_level::CentroidFineScores::build(&c).unwrap()).source;
    assert!(src.contains("if (c0 < 24) tsr::cp_async_to<16, 1>"), "ragged tile copies guarded:\n{src}");
    let c = cfg(&[("GROUP", 4), ("HEAD_DIM", 128), ("BLOCK_N", 64), ("WARPS", 4), ("STAGES", 2)]);
    let src = emit_cuda(&DenseDecodeSplit::build(&c).unwrap()).source;
    assert!(!src.contains("if (c0 < 64) tsr::cp_async"), "whole tiles need no guard");
    assert!(src.contains("tsr::cp_async_to<16, 1>(s + k * 2176u, g, "), "the fast path copies rounds of 8 rows");
}

/// The block index a block-sparse tile's copies are addressed by is read one iteration
/// ahead into a register (`<name>_ahead`) and taken from it by the prefetch, for the
/// scalar index of contiguous blocks and the index tile of one-row blocks alike.
#[test]
fn block_indices_are_read_one_iteration_ahead() {
    let c = cfg(&[
        ("GROUP", 4),
        ("HEAD_DIM", 128),
        ("BLOCK_SIZE", 128),
        ("KV_SHARE", 1),
        ("MIN_BLOCKS", 0),
        ("BLOCK_N", 64),
        ("WARPS", 4),
        ("STAGES", 2),
    ]);
    let contiguous = emit_cuda(&BlockSparseDecodeSplit::build(&c).unwrap()).source;
    for src in [contiguous, one_row_block_sparse_cuda()] {
        let read = src.lines().filter(|l| l.contains("_ahead = blk_") || l.contains("_ahead[i] = blk_")).count();
        let taken = src
            .lines()
            .filter(|l| l.contains("= blk_") && (l.ends_with("_ahead;") || l.ends_with("_ahead[i];")))
            .count();
        assert!(read >= 2, "the index is read ahead before and inside the loop:\n{src}");
        assert!(taken >= 1, "the prefetch takes the index read ahead");
        assert!(src.contains("_ahead_it"), "read-ahead iterations are guarded by the loop bound");
    }
}

/// The query tile's copy is not waited for before the K/V loop: its commit group is older
/// than the loop's, so the loop's first `wait_pending` completes it and its latency
/// overlaps the prologue's copies. A `wait_all` follows the loop (a loop that ran no
/// iteration waited for nothing).
#[test]
fn query_copy_completes_under_the_loops_first_wait() {
    let c = cfg(&[("GROUP", 4), ("HEAD_DIM", 128), ("BLOCK_N", 64), ("WARPS", 4), ("STAGES", 2)]);
    let src = emit_cuda(&DenseDecodeSplit::build(&c).unwrap()).source;
    let body = &src[src.find("extern \"C\"").expect("a kernel")..];
    let (before, after) = body.split_at(body.find("// Pipelined loop").expect("a pipelined loop"));
    assert!(!before.contains("tsr::cp_async_wait_all();"), "no wait before the loop:\n{before}");
    let loop_start = after.find("for (int").unwrap();
    let first_wait = after.find("tsr::cp_async_wait_pending<1>();").expect("the loop waits");
    assert!(first_wait > loop_start, "the first wait is the loop's");
    assert!(after.contains("tsr::cp_async_wait_all();"), "a wait_all after the loop");
}
