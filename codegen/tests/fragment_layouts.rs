//! The fragment layouts of tensor-core products (`emit/fragments.rs`): which broadcasts
//! and reductions stay in registers. A `[M]` row vector expanded to `[M, 1]` broadcasts
//! along the rows of the `[M, N]` fragment from registers; a bare `[N]` vector broadcasts
//! along the last axis (one value per column) and must not take that path, even when
//! `N == M` gives it the row layout (k-means' `x·c − |c|²/2` on the GPU caught this).

use tessera_codegen::emit::emit_cuda;
use tessera_codegen::ir::{DType, Index, KernelBuilder, ReduceOp};

/// `s = q · kᵀ` ([64, 64], 4 warps), then `s − rowmax(s)[:, None]` and `s − colv`, with
/// `colv` a `[64]` vector loaded from memory (not recomputable from indices).
fn emitted() -> String {
    let mut b = KernelBuilder::new("frag_probe", 4);
    let q = b.tensor("q", DType::BF16, 2);
    let k = b.tensor("k", DType::BF16, 2);
    let c = b.tensor("c", DType::F32, 1);
    let out = b.tensor_mut("out", DType::F32, 2);
    let c_out = b.tensor_mut("col_sums", DType::F32, 1);
    let zero = b.const_i32(0);
    let qt = b.load(q, vec![Index::Range { start: zero, len: 64 }, Index::Range { start: zero, len: 128 }], None, 0.0);
    let kt = b.load(k, vec![Index::Range { start: zero, len: 64 }, Index::Range { start: zero, len: 128 }], None, 0.0);
    let colv = b.load(c, vec![Index::Range { start: zero, len: 64 }], None, 0.0);
    let s = b.dot(qt, kt, true);
    let m = b.reduce(ReduceOp::Max, s, 1);
    let m2 = b.expand_dims(m, 1);
    let centred = b.sub(s, m2);
    let shifted = b.sub(centred, colv);
    b.store(out, vec![Index::Range { start: zero, len: 64 }, Index::Range { start: zero, len: 64 }], shifted, None);
    // Column sums (SnapKV's votes) reduce over the rows of the fragments.
    let votes = b.reduce(ReduceOp::Sum, shifted, 0);
    b.store(c_out, vec![Index::Range { start: zero, len: 64 }], votes, None);
    emit_cuda(&b.finish().unwrap()).source
}

#[test]
fn row_vectors_broadcast_from_registers_and_columns_do_not() {
    let src = emitted();
    let body = &src[src.find("__global__").unwrap()..];
    assert!(body.contains("tsr::mma_frag<tsr::bf16, 64, 64, 128"), "the product lands in fragments:\n{body}");
    assert!(body.contains("tsr::frag_row_reduce<tsr::MaxOp, 64, 64, 4>"), "row max by shuffles:\n{body}");
    // Exactly one register broadcast: the row maxima. The column vector goes through
    // shared memory, read by column (`f % 64`).
    assert_eq!(body.matches("::row_slot(i)]").count(), 1, "{body}");
    assert!(body.contains("[(f % 64)]"), "column broadcast through shared memory:\n{body}");
    assert!(body.contains("tsr::frag_col_reduce<tsr::SumOp, 64, 64, 4, tsr::RowFrag<64, 4>>"), "{body}");
}
