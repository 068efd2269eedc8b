//! Broadcasting by recomputation.
//!
//! A tile built only from `arange`, scalars and element-wise ops (the position masks of
//! attention: `arange(0, BLOCK_N) + start < stop`) can be evaluated at any coordinate
//! directly, so broadcasting it to a larger shape needs no shared memory: each thread
//! recomputes the elements it holds. This removes the stash, the two barriers and the
//! shared-memory reads that moving the tile would cost, on every KV tile.

use std::collections::HashMap;

use super::kernel::{binary_expr, operand_coords_of as operand_coords, unary_expr, BodyWriter};
use super::layout::ctype;
use crate::ir::{Kernel, Op, Stmt, ValueId};

/// Largest expression (in ops) worth recomputing per element.
const MAX_OPS: usize = 12;

/// The defining op of every immutable value.
pub fn definitions(k: &Kernel) -> HashMap<ValueId, Op> {
    fn walk(k: &Kernel, body: &[Stmt], out: &mut HashMap<ValueId, Op>) {
        for s in body {
            match s {
                Stmt::Let { results, op } if results.len() == 1 && !k.value(results[0]).mutable => {
                    out.insert(results[0], op.clone());
                }
                Stmt::For { body, .. } => walk(k, body, out),
                Stmt::If { then, otherwise, .. } => {
                    walk(k, then, out);
                    walk(k, otherwise, out);
                }
                _ => {}
            }
        }
    }
    let mut out = HashMap::new();
    walk(k, &k.body, &mut out);
    out
}

impl BodyWriter<'_> {
    /// A C++ expression for element `coords` of `v`, when `v` can be recomputed there.
    pub(super) fn remat(&self, v: ValueId, coords: &[String]) -> Option<String> {
        let mut budget = MAX_OPS;
        self.remat_in(v, coords, &mut budget)
    }

    fn remat_in(&self, v: ValueId, coords: &[String], budget: &mut usize) -> Option<String> {
        let ty = self.k.ty(v);
        if ty.is_scalar() {
            return Some(self.name(v));
        }
        if self.k.value(v).mutable || *budget == 0 {
            return None;
        }
        *budget -= 1;
        let sub = |w: u32, c: &[String], b: &mut usize| self.remat_in(ValueId(w), c, b);
        let at = |x: ValueId, b: &mut usize| sub(x.0, &operand_coords(&self.k.ty(x).shape, coords), b);
        Some(match self.defs.get(&v)? {
            Op::Arange { start, .. } => format!("({start} + {})", coords[0]),
            Op::Splat { value, .. } => self.name(*value),
            Op::Broadcast { value, .. } => at(*value, budget)?,
            Op::ExpandDims { value, axis } => {
                let mut c = coords.to_vec();
                c.remove(*axis);
                sub(value.0, &c, budget)?
            }
            Op::Unary { op, value } => unary_expr(*op, self.k.ty(*value).dtype, &at(*value, budget)?),
            Op::Binary { op, lhs, rhs } => {
                let (a, b) = (at(*lhs, budget)?, at(*rhs, budget)?);
                format!("({})", binary_expr(*op, self.k.ty(*lhs).dtype, &a, &b))
            }
            Op::Select { cond, on_true, on_false } => {
                let (c, a, b) = (at(*cond, budget)?, at(*on_true, budget)?, at(*on_false, budget)?);
                format!("({c} ? {a} : {b})")
            }
            Op::Cast { value, dtype } => format!("tsr::cvt<{}>({})", ctype(*dtype), at(*value, budget)?),
            _ => return None,
        })
    }
}
