//! The online-softmax step every attention kernel takes per KV tile, as tile functions
//! (`#[tile_fn]`: recorded into each calling kernel, the same IR as written out).
//!
//! A kernel keeps per query row the running maximum `row_max`, the running sum `row_sum`
//! and the accumulator `acc`; per tile of masked scores (log2 units) it calls one of these
//! and then updates its state:
//!
//! ```ignore
//! let (m_new, alpha, probs) = online_softmax(scores, row_max);
//! row_sum = row_sum * alpha + probs.sum(1);
//! acc = acc * alpha.expand_dims(1) + dot(probs.cast::<KV>(), v_tile);
//! row_max = m_new;
//! ```
//!
//! The decode kernels keep `sum_part = sum_part * alpha.expand_dims(1) + probs` instead (a
//! `[rows, BLOCK_N]` tile) and take `sum_part.sum(1)` once after the loop: a row sum per
//! tile is a reduction across the warps that share a row, one barrier per tile.

use tessera_dsl_support::prelude::*;

/// The new row maximum, the factor that rescales the old `row_sum` / `acc`, and the tile's
/// probabilities `2^(scores − m_new)`. For tiles where every row sees at least one key
/// before or in this tile (a row of all `-inf` would give NaN).
#[tile_fn]
pub fn online_softmax(scores: Tile, row_max: Tile) -> (Tile, Tile, Tile) {
    let m_new = max(row_max, scores.max(1));
    let alpha = exp2(row_max - m_new);
    let probs = exp2(scores - m_new.expand_dims(1));
    (m_new, alpha, probs)
}

/// [`online_softmax`] for tiles that may mask whole rows (tree masks, sparse blocks inside
/// the window, padding rows): a row still at `-inf` rescales by 1 and gets zero
/// probabilities instead of NaN.
#[tile_fn]
pub fn online_softmax_masked(scores: Tile, row_max: Tile) -> (Tile, Tile, Tile) {
    let m_new = max(row_max, scores.max(1));
    let m_use = where_(m_new == f32::NEG_INFINITY, 0.0, m_new);
    let alpha = exp2(row_max - m_use);
    let probs = exp2(scores - m_use.expand_dims(1));
    (m_new, alpha, probs)
}
