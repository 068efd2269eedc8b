//! Which loads go straight from global to shared memory with `cp.async`.
//!
//! A tile that is loaded only to be a tensor-core `dot` operand never needs to be in
//! registers: the emitter gives it its own shared-memory region, starts the copy with
//! `cp.async` where the load is, and waits for it just before the product. The copy
//! then overlaps whatever the program does in between (in flash-decoding, the V tile
//! streams in while the scores and the softmax are computed), and the tile costs no
//! registers.

use std::collections::HashMap;

use super::kernel::align16;
use crate::ir::{index_operands, DType, Index, Kernel, Op, ParamKind, Stmt, ValueId};

/// A staged tile: its shared-memory region and row stride (in elements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Staged {
    pub offset: usize,
    pub ld: usize,
}

/// Row padding of staged and stashed `dot` operands: staggers rows across banks.
pub const DOT_ROW_PAD: usize = 8;

/// Whether `dot` over these shapes and dtype runs on tensor cores (`mma_tile`).
pub fn tensor_core_dot(d: DType, k: usize, n: usize) -> bool {
    matches!(d, DType::BF16 | DType::F16) && k.is_multiple_of(16) && n.is_multiple_of(8)
}

/// Picks the staged loads of a kernel; returns them and the bytes they occupy.
pub fn plan(k: &Kernel) -> (HashMap<ValueId, Staged>, usize) {
    let mut uses: HashMap<ValueId, usize> = HashMap::new();
    let mut dot_operands: HashMap<ValueId, ()> = HashMap::new();
    let mut loads = Vec::new();
    walk(k, &k.body, &mut uses, &mut dot_operands, &mut loads);
    let mut staged = HashMap::new();
    let mut bytes = 0;
    for (v, rows, cols, d) in loads {
        if uses.get(&v) == Some(&1) && dot_operands.contains_key(&v) {
            let ld = cols + DOT_ROW_PAD;
            staged.insert(v, Staged { offset: bytes, ld });
            bytes = align16(bytes + rows * ld * d.size_bytes());
        }
    }
    (staged, bytes)
}

fn walk(
    k: &Kernel,
    body: &[Stmt],
    uses: &mut HashMap<ValueId, usize>,
    dot_operands: &mut HashMap<ValueId, ()>,
    loads: &mut Vec<(ValueId, usize, usize, DType)>,
) {
    let count = |v: ValueId, uses: &mut HashMap<ValueId, usize>| *uses.entry(v).or_default() += 1;
    for s in body {
        match s {
            Stmt::Let { results, op } => {
                for v in op.operands() {
                    count(v, uses);
                }
                if let Op::Dot { a, b, trans_b } = op {
                    let (ta, tb) = (k.ty(*a), k.ty(*b));
                    let n = if *trans_b { tb.shape[0] } else { tb.shape[1] };
                    if tensor_core_dot(ta.dtype, ta.shape[1], n) {
                        dot_operands.insert(*a, ());
                        dot_operands.insert(*b, ());
                    }
                }
                if let Op::Load { tensor, index, other, .. } = op {
                    let ty = k.ty(results[0]);
                    let read_only = matches!(k.param(*tensor).kind, ParamKind::Tensor { writable: false, .. });
                    let last_is_range =
                        matches!(index.iter().rev().find(|i| !matches!(i, Index::At(_))), Some(Index::Range { .. }));
                    if read_only && *other == 0.0 && ty.rank() == 2 && last_is_range && !k.value(results[0]).mutable {
                        loads.push((results[0], ty.shape[0], ty.shape[1], ty.dtype));
                    }
                }
            }
            Stmt::Assign { var, value } => {
                count(*var, uses);
                count(*value, uses);
            }
            Stmt::Store { index, value, mask, .. } | Stmt::Atomic { index, value, mask, .. } => {
                for v in index_operands(index).chain(Some(*value)).chain(*mask) {
                    count(v, uses);
                }
            }
            Stmt::For { start, end, body, .. } => {
                count(*start, uses);
                count(*end, uses);
                walk(k, body, uses, dot_operands, loads);
            }
            Stmt::If { cond, then, otherwise } => {
                count(*cond, uses);
                walk(k, then, uses, dot_operands, loads);
                walk(k, otherwise, uses, dot_operands, loads);
            }
            Stmt::Return => {}
        }
    }
}
