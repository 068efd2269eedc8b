//! NVRTC (no GPU needed) on every kernel configuration the GPU forward pass launches, for
//! SmolLM2-135M (9 q / 3 kv heads of 64, hidden 576) and the Llama-3-8B shapes (32 / 8 of
//! 128, hidden 4096). Skipped with a note when NVRTC is absent (set TESSERA_CUDA_LIB_DIR).

use tessera_codegen::emit::{emit_cuda, EmittedKernel};
use tessera_codegen::ir::Kernel;
use tessera_decoder::gpu::kernels::{Copy4Bf16, FillUniformBf16};
use tessera_decoder::gpu::plan::{decode_max_splits, prefill_chunk};
use tessera_dsl_support::{BuildError, KernelConfig};
use tessera_kernels::append::KvAppendRows;
use tessera_kernels::combine::AttnCombine;
use tessera_kernels::decoder_ops::{
    norm_block, AddRmsNormRows, ArgmaxRowsF32, EmbeddingBf16, RmsNormRows, RopeQk, SwigluRows,
};
use tessera_kernels::dense::DenseDecodeSplit;
use tessera_kernels::tree::TreeVerifySplit;

fn cfg(pairs: &[(&str, usize)]) -> KernelConfig {
    KernelConfig::from_pairs(&pairs.iter().map(|&(k, v)| (k, v as i64)).collect::<Vec<_>>())
}

fn ptx(name: &str, k: Result<Kernel, BuildError>) -> bool {
    let k = k.unwrap_or_else(|e| panic!("{name}: {e}"));
    let e: EmittedKernel = emit_cuda(&k);
    match tessera_runtime::compile_ptx(&e.source, &e.entry, "sm_90a") {
        Ok(p) => {
            eprintln!("{name}: PTX ok ({} B), {} threads, {} B shared", p.ptx.len(), e.threads, e.shared_bytes);
            true
        }
        Err(err) if !format!("{err}").contains("error") => {
            eprintln!("SKIPPED {name}: not compiled here ({err})");
            false
        }
        Err(err) => panic!("{name}: {err}"),
    }
}

#[test]
fn forward_pass_kernels_compile_to_ptx() {
    if !ptx("fill_uniform_bf16", FillUniformBf16::build(&cfg(&[("BLOCK", 1024), ("WARPS", 4)]))) {
        return;
    }
    ptx("copy4_bf16 128", Copy4Bf16::build(&cfg(&[("BLOCK", 128), ("WARPS", 4)])));
    // (hidden, heads, kv heads, head_dim, interleaved RoPE, batch)
    for (hidden, nh, nkv, d, inter, batch) in [(576, 9, 3, 64, 1, 1), (576, 9, 3, 64, 1, 8), (4096, 32, 8, 128, 0, 1)] {
        let g = nh / nkv;
        let nb = norm_block(hidden);
        let warps = if nb >= 4096 { 8 } else { 4 };
        let tag = format!("H{hidden} D{d} B{batch}");
        ptx(&format!("rms_norm {tag}"), RmsNormRows::build(&cfg(&[("BLOCK", nb), ("WARPS", warps)])));
        ptx(&format!("add_rms_norm {tag}"), AddRmsNormRows::build(&cfg(&[("BLOCK", nb), ("WARPS", warps)])));
        let bh = usize::max(nh, nkv).next_power_of_two().min(32);
        ptx(
            &format!("rope {tag}"),
            RopeQk::build(&cfg(&[("HEAD_DIM", d), ("BLOCK_H", bh), ("INTERLEAVED", inter), ("WARPS", 4)])),
        );
        ptx(&format!("embedding {tag}"), EmbeddingBf16::build(&cfg(&[("BLOCK", nb.min(1024)), ("WARPS", 4)])));
        ptx(
            &format!("kv_append {tag}"),
            KvAppendRows::build(&cfg(&[
                ("HEAD_DIM", d),
                ("TILE_T", 16),
                ("BLOCK_SIZE", 64),
                ("UPDATE_LANDMARKS", 0),
                ("WARPS", 4),
                ("LM", 2),
            ])),
        );
        ptx(
            &format!("dense split {tag}"),
            DenseDecodeSplit::build(&cfg(&[
                ("GROUP", g),
                ("HEAD_DIM", d),
                ("BLOCK_N", 64),
                ("WARPS", 4),
                ("STAGES", 2),
            ])),
        );
        let ms = decode_max_splits(batch, nkv, 132);
        ptx(
            &format!("combine {tag} MAX_SPLITS {ms}"),
            AttnCombine::build(&cfg(&[("HEAD_DIM", d), ("MAX_SPLITS", ms), ("WRITE_LSE", 0), ("WARPS", 4)])),
        );
        ptx(
            &format!("tree {tag}"),
            TreeVerifySplit::build(&cfg(&[
                ("GROUP", g),
                ("T_PAD", prefill_chunk(g, d)),
                ("HEAD_DIM", d),
                ("BLOCK_N", 64),
                ("ROWS", (g * prefill_chunk(g, d)).min(64)),
                ("WARPS", 4),
            ])),
        );
        // Shared memory of the tree kernel must fit the H200's 227 KiB opt-in limit.
        let k = TreeVerifySplit::build(&cfg(&[
            ("GROUP", g),
            ("T_PAD", prefill_chunk(g, d)),
            ("HEAD_DIM", d),
            ("BLOCK_N", 64),
            ("ROWS", (g * prefill_chunk(g, d)).min(64)),
            ("WARPS", 4),
        ]))
        .unwrap();
        assert!(
            emit_cuda(&k).shared_bytes as usize <= 227 * 1024,
            "tree {tag}: {} B shared",
            emit_cuda(&k).shared_bytes
        );
        ptx(&format!("copy4 {tag}"), Copy4Bf16::build(&cfg(&[("BLOCK", d.max(128)), ("WARPS", 4)])));
    }
    ptx("swiglu", SwigluRows::build(&cfg(&[("BLOCK", 1024), ("WARPS", 4)])));
    ptx("argmax", ArgmaxRowsF32::build(&cfg(&[("BLOCK", 1024), ("WARPS", 4)])));
    ptx(
        "combine 16",
        AttnCombine::build(&cfg(&[("HEAD_DIM", 64), ("MAX_SPLITS", 16), ("WRITE_LSE", 0), ("WARPS", 4)])),
    );
}
