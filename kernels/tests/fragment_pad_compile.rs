//! Padded fragments for products of fewer than 16 rows (the default; `TESSERA_FRAGMENT_PAD=0`
//! turns them off): the decode kernels take the register path, and every configuration
//! of their tune spaces compiles with NVRTC without local memory. A test binary of its
//! own: the switch is process-wide, and this one must see the default.
//!
//! Needs NVRTC (CI installs it); without it the test says so and passes.

use tessera_codegen::emit::emit_cuda;
use tessera_dsl_support::KernelConfig;
use tessera_kernels::block_sparse::BlockSparseDecodeSplit;
use tessera_kernels::dense::DenseDecodeSplit;
use tessera_kernels::sink_window::SinkWindowDecodeSplit;
use tessera_runtime::RuntimeError;

#[test]
fn padded_decode_fragments_compile() {
    std::env::remove_var("TESSERA_FRAGMENT_PAD");
    let mut kernels = Vec::new();
    for group in [1, 4, 8] {
        for warps in [4, 8] {
            for block_n in [64, 128] {
                let c = KernelConfig::from_pairs(&[
                    ("GROUP", group),
                    ("HEAD_DIM", 128),
                    ("BLOCK_N", block_n),
                    ("WARPS", warps),
                    ("STAGES", 2),
                ]);
                kernels.push(DenseDecodeSplit::build(&c).unwrap());
                kernels.push(SinkWindowDecodeSplit::build(&c).unwrap());
                let bs = c.with("BLOCK_SIZE", 128).with("KV_SHARE", 1).with("MIN_BLOCKS", 0);
                kernels.push(BlockSparseDecodeSplit::build(&bs).unwrap());
            }
        }
    }
    let mut padded = 0;
    for k in &kernels {
        let e = emit_cuda(k);
        padded += usize::from(e.source.contains("tsr::mma_frag<"));
        match tessera_runtime::compile_ptx(&e.source, &e.entry, "sm_90a") {
            Ok(p) => assert!(!p.ptx.contains(".local"), "{}: a fragment spilled to local memory", k.name),
            Err(err @ RuntimeError::Compile { .. }) => panic!("{}: {err}", k.name),
            Err(other) => {
                eprintln!("SKIPPED: NVRTC unavailable ({other})");
                return;
            }
        }
    }
    assert_eq!(padded, kernels.len(), "every kernel takes the padded fragments");
}
