//! `#[tile_fn]`: a kernel that calls tile functions builds the same IR (the same CUDA) as
//! the kernel with their bodies written out, element-type arguments included.

use tessera_codegen::emit::emit_cuda;
use tessera_dsl_support::prelude::*;

/// One KV tile of online softmax: the new row maximum, the rescale factor of the old
/// statistics and the tile's probabilities.
#[tile_fn]
fn softmax_tile(q: Tile, k: Tile, valid: Tile, scale: Tile, row_max: Tile) -> (Tile, Tile, Tile) {
    let scores = where_(valid, dot_t(q, k) * scale, f32::NEG_INFINITY);
    let m_new = max(row_max, scores.max(1));
    let alpha = exp2(row_max - m_new);
    let probs = exp2(scores - m_new.expand_dims(1));
    (m_new, alpha, probs)
}

/// `probs · v` in the value dtype.
#[tile_fn]
fn weigh<KV>(probs: Tile, v: Tile) -> Tile {
    dot(probs.cast::<KV>(), v)
}

#[kernel(example(G = 4, D = 64, BLOCK_N = 32))]
fn kern_fns<KV, const G: usize, const D: usize, const BLOCK_N: usize, const WARPS: usize>(
    q: Tensor<KV, 2>,
    k: Tensor<KV, 2>,
    v: Tensor<KV, 2>,
    out: &mut Tensor<f32, 2>,
    n: i32,
    scale: f32,
) {
    let qt = q.load([range(0, G), range(0, D)]);
    let mut row_max = full([G], f32::NEG_INFINITY);
    let mut row_sum = zeros([G]);
    let mut acc = zeros([G, D]);
    for s in (0..n).step_by(BLOCK_N) {
        let valid = arange(0, BLOCK_N) + s < n;
        let kt = k.load_masked([range(s, BLOCK_N), range(0, D)], valid.expand_dims(1), 0.0);
        let vt = v.load_masked([range(s, BLOCK_N), range(0, D)], valid.expand_dims(1), 0.0);
        let (m_new, alpha, probs) = softmax_tile(qt, kt, valid, scale, row_max);
        row_sum = row_sum * alpha + probs.sum(1);
        acc = acc * alpha.expand_dims(1) + weigh::<KV>(probs, vt);
        row_max = m_new;
    }
    out.store([range(0, G), range(0, D)], acc / row_sum.expand_dims(1));
}

#[kernel(example(G = 4, D = 64, BLOCK_N = 32))]
fn kern_inline<KV, const G: usize, const D: usize, const BLOCK_N: usize, const WARPS: usize>(
    q: Tensor<KV, 2>,
    k: Tensor<KV, 2>,
    v: Tensor<KV, 2>,
    out: &mut Tensor<f32, 2>,
    n: i32,
    scale: f32,
) {
    let qt = q.load([range(0, G), range(0, D)]);
    let mut row_max = full([G], f32::NEG_INFINITY);
    let mut row_sum = zeros([G]);
    let mut acc = zeros([G, D]);
    for s in (0..n).step_by(BLOCK_N) {
        let valid = arange(0, BLOCK_N) + s < n;
        let kt = k.load_masked([range(s, BLOCK_N), range(0, D)], valid.expand_dims(1), 0.0);
        let vt = v.load_masked([range(s, BLOCK_N), range(0, D)], valid.expand_dims(1), 0.0);
        let scores = where_(valid, dot_t(qt, kt) * scale, f32::NEG_INFINITY);
        let m_new = max(row_max, scores.max(1));
        let alpha = exp2(row_max - m_new);
        let probs = exp2(scores - m_new.expand_dims(1));
        row_sum = row_sum * alpha + probs.sum(1);
        acc = acc * alpha.expand_dims(1) + dot(probs.cast::<KV>(), vt);
        row_max = m_new;
    }
    out.store([range(0, G), range(0, D)], acc / row_sum.expand_dims(1));
}

#[test]
fn tile_functions_inline_to_the_same_kernel() {
    for kv in [0, 1] {
        let c = KernelConfig::from_pairs(&[("G", 4), ("D", 64), ("BLOCK_N", 32), ("KV", kv)]);
        let a = emit_cuda(&KernFns::build(&c).unwrap()).source.replace("kern_fns", "K");
        let b = emit_cuda(&KernInline::build(&c).unwrap()).source.replace("kern_inline", "K");
        if a != b {
            let d = std::env::temp_dir();
            std::fs::write(d.join("tile_fn_a.cu"), &a).unwrap();
            std::fs::write(d.join("tile_fn_b.cu"), &b).unwrap();
        }
        assert!(a == b, "KV = {kv}: the emitted CUDA differs (written to the temp dir as tile_fn_a/b.cu)");
    }
}
