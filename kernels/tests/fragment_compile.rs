//! The tensor-core fragment layouts (`codegen/src/emit/fragments.rs`) compile with NVRTC
//! for every configuration the tuner may try of the kernels that use them, and their
//! fragment arrays stay in registers (no `.local` arrays in the PTX: a slot index the
//! compiler cannot fold would put a whole fragment in local memory).
//!
//! Needs NVRTC (CI installs it); without it the test says so and passes.

use tessera_codegen::emit::emit_cuda;
use tessera_codegen::ir::Kernel;
use tessera_dsl_support::KernelConfig;
use tessera_kernels::block_sparse::BlockSparseDecodeSplit;
use tessera_kernels::centroid::KmeansAssign;
use tessera_kernels::dense::DenseDecodeSplit;
use tessera_kernels::sink_window::SinkWindowDecodeSplit;
use tessera_kernels::snapkv::{SnapkvRowStats, SnapkvVotes};
use tessera_kernels::tree::TreeVerifySplit;
use tessera_runtime::RuntimeError;

fn cfg(pairs: &[(&str, i64)]) -> KernelConfig {
    KernelConfig::from_pairs(pairs)
}

/// Compiles `k` to sm_90a PTX; `None` when NVRTC is not installed.
fn ptx(k: &Kernel) -> Option<String> {
    let e = emit_cuda(k);
    assert!(e.source.contains("tsr::Frag<"), "{} uses no fragment layout", k.name);
    match tessera_runtime::compile_ptx(&e.source, &e.entry, "sm_90a") {
        Ok(p) => Some(p.ptx),
        Err(err @ RuntimeError::Compile { .. }) => panic!("{}: {err}", k.name),
        Err(other) => {
            eprintln!("SKIPPED: NVRTC unavailable ({other})");
            None
        }
    }
}

fn configs() -> Vec<Kernel> {
    let mut out = Vec::new();
    // Tree verification: ROWS × WARPS covers whole-row warps (WN = 1, P from registers)
    // and rows shared by 2–4 warps (cross-warp row reductions, P through shared memory).
    for (t_pad, rows) in [(16, 16), (16, 32), (16, 64), (64, 64)] {
        for warps in [4, 8] {
            for block_n in [32, 64, 128] {
                let c = cfg(&[
                    ("GROUP", 4),
                    ("T_PAD", t_pad),
                    ("HEAD_DIM", 128),
                    ("BLOCK_N", block_n),
                    ("ROWS", rows),
                    ("WARPS", warps),
                ]);
                out.push(TreeVerifySplit::build(&c).unwrap());
            }
        }
    }
    for warps in [4, 8] {
        for block_n in [32, 64, 128] {
            let snap = cfg(&[("GROUP", 4), ("WINDOW", 32), ("HEAD_DIM", 128), ("BLOCK_N", block_n), ("WARPS", warps)]);
            out.push(SnapkvRowStats::build(&snap).unwrap());
            out.push(SnapkvVotes::build(&snap).unwrap());
        }
        let km = cfg(&[("HEAD_DIM", 128), ("NORMALIZE", 0), ("KEY_TILE", 64), ("C_TILE", 64), ("WARPS", warps)]);
        out.push(KmeansAssign::build(&km).unwrap());
    }
    out
}

#[test]
fn fragment_kernels_compile_and_keep_fragments_in_registers() {
    for k in configs() {
        let Some(ptx) = ptx(&k) else { return };
        assert!(ptx.contains("mma.sync.aligned.m16n8k16"), "{}: no tensor-core instruction", k.name);
        assert!(ptx.contains("ldmatrix.sync.aligned"), "{}: operands not loaded with ldmatrix", k.name);
        assert!(!ptx.contains(".local"), "{}: a fragment spilled to local memory", k.name);
    }
}

/// The decode kernels at head dims 96 and 256 (the interpreter tests run them against the
/// reference: `head_dims_96_and_256`) compile for sm_90a with their fragments in registers.
#[test]
fn decode_kernels_compile_at_head_dims_96_and_256() {
    for d in [96, 256] {
        let dec = cfg(&[("GROUP", 4), ("HEAD_DIM", d), ("BLOCK_N", 64), ("WARPS", 4), ("STAGES", 2)]);
        let mut kernels = vec![DenseDecodeSplit::build(&dec).unwrap(), SinkWindowDecodeSplit::build(&dec).unwrap()];
        for bs in [8, 128] {
            let c = dec.clone().with("BLOCK_SIZE", bs).with("KV_SHARE", 1).with("MIN_BLOCKS", 0);
            kernels.push(BlockSparseDecodeSplit::build(&c).unwrap());
        }
        for k in kernels {
            let Some(ptx) = ptx(&k) else { return };
            assert!(ptx.contains("mma.sync.aligned.m16n8k16"), "{} D{d}: no tensor-core instruction", k.name);
            assert!(!ptx.contains(".local"), "{} D{d}: a fragment spilled to local memory", k.name);
        }
    }
}
