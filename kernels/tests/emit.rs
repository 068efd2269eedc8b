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
        BlockSparseDecodeSplit::build(&cfg(&dec).with("BLOCK_SIZE", 128).with("KV_SHARE", 1)).unwrap(),
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
    for k in &kernels {
        let e = emit_cuda(k);
        assert!(!format!("{e:?}").is_empty(), "{}", k.name);
    }
}
