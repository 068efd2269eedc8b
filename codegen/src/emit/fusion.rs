//! `expand_dims` values that never need a layout of their own.
//!
//! Inserting a unit axis keeps the row-major order of the elements. When every use of
//! such a value reads it through shared memory anyway (as a broadcast operand, or as a
//! mask of another shape), the emitter stashes the original tile in its place and skips
//! the relayout: two block barriers and a shared-memory round trip saved per value,
//! which flash-decoding pays for its row maxima, rescale factors and row masks on every
//! KV tile.

use std::collections::{HashMap, HashSet};

use super::kernel::index_shape;
use crate::ir::{index_operands, Kernel, Op, Stmt, ValueId};

/// Maps each fusable `expand_dims` result to the value it expands.
pub fn fusable_expand_dims(k: &Kernel) -> HashMap<ValueId, ValueId> {
    let mut sources = HashMap::new();
    let mut other_use = HashSet::new();
    walk(k, &k.body, &mut sources, &mut other_use);
    sources.retain(|v, src| !other_use.contains(v) && !k.ty(*src).is_scalar());
    sources
}

fn walk(k: &Kernel, body: &[Stmt], sources: &mut HashMap<ValueId, ValueId>, other: &mut HashSet<ValueId>) {
    // A use through shared memory: a tile operand whose shape differs from the shape
    // it is read at.
    let through_smem = |v: ValueId, shape: &[usize]| {
        let t = k.ty(v);
        !t.is_scalar() && t.shape != shape
    };
    for s in body {
        match s {
            Stmt::Let { results, op } => {
                let shape = k.ty(results[0]).shape.clone();
                if let Op::ExpandDims { value, .. } = op {
                    sources.insert(results[0], *value);
                }
                let fusable: Vec<ValueId> = match op {
                    Op::Binary { lhs, rhs, .. } => vec![*lhs, *rhs],
                    Op::Select { cond, on_true, on_false } => vec![*cond, *on_true, *on_false],
                    Op::Broadcast { value, .. } => vec![*value],
                    Op::Load { mask: Some(m), .. } => vec![*m],
                    _ => vec![],
                };
                for v in op.operands() {
                    if !(fusable.contains(&v) && through_smem(v, &shape)) {
                        other.insert(v);
                    }
                }
            }
            Stmt::Store { index, value, mask, .. } | Stmt::Atomic { index, value, mask, .. } => {
                let shape = index_shape(index, k);
                for v in index_operands(index) {
                    other.insert(v);
                }
                for v in std::iter::once(*value).chain(*mask) {
                    if !through_smem(v, &shape) {
                        other.insert(v);
                    }
                }
            }
            Stmt::Assign { var, value } => {
                other.insert(*var);
                other.insert(*value);
            }
            Stmt::For { start, end, body, .. } => {
                other.insert(*start);
                other.insert(*end);
                walk(k, body, sources, other);
            }
            Stmt::If { cond, then, otherwise } => {
                other.insert(*cond);
                walk(k, then, sources, other);
                walk(k, otherwise, sources, other);
            }
            Stmt::Return => {}
        }
    }
}
