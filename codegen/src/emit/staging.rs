//! Which loads go straight from global to shared memory with `cp.async`.
//!
//! A tile that is loaded only to be a tensor-core `dot` operand never needs to be in
//! registers: the emitter gives it its own shared-memory region, starts the copy with
//! `cp.async` where the load is, and waits for it just before the product. The copy
//! then overlaps whatever the program does in between (in flash-decoding, the V tile
//! streams in while the scores and the softmax are computed), and the tile costs no
//! registers.
//!
//! Inside a `for` loop a staged load is also *pipelined* when its addresses and mask
//! depend only on the loop variable and loop-invariant values (a pure "slice" of the
//! body): it gets two buffers, the load for the first iteration is issued before the
//! loop, and each iteration issues the next iteration's load (re-evaluating the slice
//! with the loop variable advanced) before working on the current tile. Memory traffic
//! then overlaps the whole body, not just the part after the load.

use std::collections::HashMap;

use super::kernel::align16;
use crate::ir::{index_operands, DType, Index, Kernel, Op, ParamKind, Stmt, ValueId};

/// A staged tile: its shared-memory region and row stride (in elements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Staged {
    pub offset: usize,
    pub ld: usize,
    /// Bytes of one buffer.
    pub size: usize,
    /// Buffers: 1, or the kernel's pipeline stages for a pipelined load (buffer `i` at
    /// `offset + i * size`).
    pub buffers: usize,
}

/// The pipelined loads of one loop: statement indices (in the loop body) of the loads
/// and of the pure statements their operands need, in body order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pipeline {
    pub loads: Vec<usize>,
    pub slice: Vec<usize>,
}

/// Where staged tiles live, and which loops are pipelined (keyed by loop variable).
#[derive(Clone, Debug, Default)]
pub struct StagingPlan {
    pub staged: HashMap<ValueId, Staged>,
    pub pipelines: HashMap<ValueId, Pipeline>,
    /// Bytes of shared memory the staged tiles take (the scratch arena follows).
    pub bytes: usize,
}

/// Row padding of staged and stashed `dot` operands: staggers rows across banks.
pub const DOT_ROW_PAD: usize = 8;

/// Whether `dot` over these shapes and dtype runs on tensor cores (`mma_tile`).
pub fn tensor_core_dot(d: DType, k: usize, n: usize) -> bool {
    matches!(d, DType::BF16 | DType::F16) && k.is_multiple_of(16) && n.is_multiple_of(8)
}

/// Picks the staged and pipelined loads of a kernel and lays out their buffers.
pub fn plan(k: &Kernel) -> StagingPlan {
    let mut uses: HashMap<ValueId, usize> = HashMap::new();
    // Uses of each value as a tensor-core `dot` operand.
    let mut dot_operands: HashMap<ValueId, usize> = HashMap::new();
    // Loads with the top-level statement that holds them (`None`: a top-level load).
    let mut loads = Vec::new();
    for (i, st) in k.body.iter().enumerate() {
        let mut found = Vec::new();
        walk(k, std::slice::from_ref(st), &mut uses, &mut dot_operands, &mut found);
        let top_level = matches!(st, Stmt::Let { .. });
        loads.extend(found.into_iter().map(|l| (l, (!top_level).then_some(i))));
    }
    // Staged: loads used only as dot operands (the query tile of a kernel with two key
    // loops feeds two products).
    let candidates: Vec<_> =
        loads.into_iter().filter(|((v, ..), _)| dot_operands.get(v).is_some_and(|n| uses.get(v) == Some(n))).collect();
    let staged_ids: Vec<ValueId> = candidates.iter().map(|c| c.0 .0).collect();
    let mut pipelines = HashMap::new();
    find_pipelines(k, &k.body, &staged_ids, &mut pipelines);
    let mut double = std::collections::HashSet::new();
    collect_pipelined(&k.body, &pipelines, &mut double);
    let mut plan = StagingPlan { staged: HashMap::new(), pipelines, bytes: 0 };
    let stages = k.pipeline_stages.clamp(2, 4) as usize;
    let buffers = |v: ValueId| if double.contains(&v) { stages } else { 1 };
    // Top-level loads keep their region for the whole kernel. A load inside a top-level
    // loop or `if` is dead once that statement ends (values are scoped to their body, and
    // a pipelined loop never prefetches past its last iteration), so the regions of
    // sibling statements overlap: block-sparse decode's sink, window and block loops
    // share one set of buffers.
    let (top, scoped): (Vec<_>, Vec<_>) = candidates.into_iter().partition(|(_, scope)| scope.is_none());
    for ((v, rows, cols, d), _) in top {
        let at = plan.bytes;
        plan.bytes = place(&mut plan, v, rows, cols, d, buffers(v), at);
    }
    let base = plan.bytes;
    let mut end = base;
    let mut cursor = HashMap::new();
    for ((v, rows, cols, d), scope) in scoped {
        let at = cursor.entry(scope).or_insert(base);
        *at = place(&mut plan, v, rows, cols, d, buffers(v), *at);
        end = end.max(*at);
    }
    plan.bytes = end;
    plan
}

/// Gives the staged load `v` its `buffers` regions at `offset`; returns the end of them.
fn place(
    plan: &mut StagingPlan,
    v: ValueId,
    rows: usize,
    cols: usize,
    d: DType,
    buffers: usize,
    offset: usize,
) -> usize {
    let ld = cols + DOT_ROW_PAD;
    let size = align16(rows * ld * d.size_bytes());
    plan.staged.insert(v, Staged { offset, ld, size, buffers });
    offset + size * buffers
}

/// Values loaded by the pipelined load statements of every loop.
fn collect_pipelined(
    body: &[Stmt],
    pipelines: &HashMap<ValueId, Pipeline>,
    out: &mut std::collections::HashSet<ValueId>,
) {
    for s in body {
        match s {
            Stmt::For { var, body, .. } => {
                if let Some(p) = pipelines.get(var) {
                    for &i in &p.loads {
                        if let Stmt::Let { results, .. } = &body[i] {
                            out.insert(results[0]);
                        }
                    }
                }
                collect_pipelined(body, pipelines, out);
            }
            Stmt::If { then, otherwise, .. } => {
                collect_pipelined(then, pipelines, out);
                collect_pipelined(otherwise, pipelines, out);
            }
            _ => {}
        }
    }
}

/// Ops a prefetch may re-evaluate: pure, cheap, no block-wide work other than layout
/// changes. Loads qualify only from tensors the kernel never writes (no program can
/// change what they read mid-loop): in block-sparse decode the next tile's block index is
/// read one iteration ahead, so the gathered K/V tiles still stream in the background.
fn pure(k: &Kernel, op: &Op) -> bool {
    match op {
        Op::Load { tensor, .. } => matches!(k.param(*tensor).kind, ParamKind::Tensor { writable: false, .. }),
        Op::Reduce { .. } | Op::CumSum { .. } | Op::Dot { .. } | Op::TopK { .. } | Op::Copy(_) => false,
        _ => true,
    }
}

fn find_pipelines(k: &Kernel, body: &[Stmt], staged: &[ValueId], out: &mut HashMap<ValueId, Pipeline>) {
    for s in body {
        match s {
            Stmt::For { var, body: inner, .. } => {
                let mut p = Pipeline::default();
                let mut slice = std::collections::BTreeSet::new();
                for (j, st) in inner.iter().enumerate() {
                    let Stmt::Let { results, op } = st else { continue };
                    if !staged.contains(&results[0]) {
                        continue;
                    }
                    if let Some(deps) = slice_of(k, inner, j, op.operands(), *var) {
                        p.loads.push(j);
                        slice.extend(deps);
                    }
                }
                if !p.loads.is_empty() {
                    p.slice = slice.into_iter().collect();
                    out.insert(*var, p);
                }
                find_pipelines(k, inner, staged, out);
            }
            Stmt::If { then, otherwise, .. } => {
                find_pipelines(k, then, staged, out);
                find_pipelines(k, otherwise, staged, out);
            }
            _ => {}
        }
    }
}

/// Indices of the statements before `j` in `body` that compute `needed`, when all of
/// them are pure and no mutable value is involved; `None` otherwise.
fn slice_of(k: &Kernel, body: &[Stmt], j: usize, needed: Vec<ValueId>, loop_var: ValueId) -> Option<Vec<usize>> {
    let mut needed: std::collections::HashSet<ValueId> = needed.into_iter().collect();
    let mut out = Vec::new();
    for i in (0..j).rev() {
        match &body[i] {
            Stmt::Let { results, op } if results.iter().any(|r| needed.contains(r)) => {
                if !pure(k, op) {
                    return None;
                }
                needed.extend(op.operands());
                out.push(i);
            }
            Stmt::Let { .. } | Stmt::Store { .. } | Stmt::Atomic { .. } => {}
            // Control flow or assignments before the load: keep it simple, no prefetch.
            _ => return None,
        }
    }
    if needed.iter().any(|v| *v != loop_var && k.value(*v).mutable) {
        return None;
    }
    out.reverse();
    Some(out)
}

fn walk(
    k: &Kernel,
    body: &[Stmt],
    uses: &mut HashMap<ValueId, usize>,
    dot_operands: &mut HashMap<ValueId, usize>,
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
                        *dot_operands.entry(*a).or_default() += 1;
                        *dot_operands.entry(*b).or_default() += 1;
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
