//! `out[i, :] = 2 * table[idx[i], :]`: a gather by a tile of computed row indices.
//! Indices outside the table (and the padding past the end of `idx`) read zeros.

use tessera_dsl_support::prelude::*;

#[kernel(tune(BLOCK_M = [16, 32], BLOCK_D = [128], WARPS = [4]))]
pub fn gather_rows<const BLOCK_M: usize, const BLOCK_D: usize, const WARPS: usize>(
    table: Tensor<bf16, 2>,
    idx: Tensor<i32, 1>,
    out: &mut Tensor<bf16, 2>,
) {
    let start = program_id(0) * BLOCK_M as i32;
    let row_ids = idx.load_or([range(start, BLOCK_M)], -1);
    let rows = table.load([gather(row_ids), range(0, BLOCK_D)]);
    out.store([range(start, BLOCK_M), range(0, BLOCK_D)], rows * 2.0);
}
