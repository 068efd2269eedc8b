//! Which tile shapes of a kernel live in tensor-core fragment layouts.
//!
//! Every `[M, N]` result of a tensor-core `dot` with `M` a multiple of 16 gets the
//! fragment layout ([`Fragment::Tile`]), and so does every other tile of that shape (the
//! scores, their mask, the probabilities, the output accumulator): element-wise work
//! between them stays per slot. Their `[M]` row vectors get [`Fragment::Rows`], so row
//! reductions end in registers and broadcasts back along the rows need no shared memory.
//! Layouts remain a function of the shape, as the emitter assumes.
//!
//! `TESSERA_NO_FRAGMENTS=1` turns the plan off (every tile round-robin), for comparing
//! the two structures on the same kernel.

use std::collections::HashMap;

use super::layout::Fragment;
use super::staging::tensor_core_dot;
use crate::ir::{Kernel, Op, Stmt};

/// Shape → fragment, for the shapes that have one.
pub fn plan(k: &Kernel, threads: usize) -> HashMap<Vec<usize>, Fragment> {
    let mut out = HashMap::new();
    if std::env::var("TESSERA_NO_FRAGMENTS").is_ok_and(|v| v == "1") {
        return out;
    }
    walk(k, &k.body, threads, &mut out);
    out
}

fn walk(k: &Kernel, body: &[Stmt], threads: usize, out: &mut HashMap<Vec<usize>, Fragment>) {
    for s in body {
        match s {
            Stmt::Let { results, op: Op::Dot { a, .. } } => {
                let (ta, tr) = (k.ty(*a), k.ty(results[0]));
                let (m, kk, n) = (ta.shape[0], ta.shape[1], tr.shape[1]);
                if tensor_core_dot(ta.dtype, kk, n) {
                    if let Some(f @ Fragment::Tile { wm, .. }) = Fragment::for_product(m, n, threads) {
                        out.insert(vec![m, n], f);
                        out.insert(vec![m], Fragment::Rows { m, wm });
                    }
                }
            }
            Stmt::For { body, .. } => walk(k, body, threads, out),
            Stmt::If { then, otherwise, .. } => {
                walk(k, then, threads, out);
                walk(k, otherwise, threads, out);
            }
            _ => {}
        }
    }
}
