//! Tile-wide ops: reductions, the tile matrix product and top-k.

use std::cmp::Ordering;

use super::value::{round_f, wrap_i, Buf, Tile};
use crate::ir::{DType, ReduceOp};

/// Inclusive prefix sum of a 1-D tile: f32 accumulates in index order (the GPU sums each
/// thread's run, then the runs: the same up to f32 rounding), i32 wraps.
pub(crate) fn cumsum(t: &Tile) -> Tile {
    let d = t.dtype;
    match &t.buf {
        Buf::F(v) => {
            let mut acc = 0.0f32;
            Tile::floats(
                d,
                t.shape.clone(),
                v.iter()
                    .map(|&x| {
                        acc += x;
                        acc
                    })
                    .collect(),
            )
        }
        Buf::I(v) => {
            let mut acc = 0i64;
            Tile::ints(
                d,
                t.shape.clone(),
                v.iter()
                    .map(|&x| {
                        acc = wrap_i(d, acc.wrapping_add(x));
                        acc
                    })
                    .collect(),
            )
        }
    }
}

/// Reduction along `axis` (removed from the shape). Float sums accumulate in f32 in index
/// order and round once to the dtype; Max/Min ignore NaN unless every element is NaN;
/// Argmax gives the first index of the largest non-NaN element (0 if all are NaN).
pub(crate) fn reduce(op: ReduceOp, t: &Tile, axis: usize) -> Tile {
    let outer: usize = t.shape[..axis].iter().product();
    let n = t.shape[axis];
    let inner: usize = t.shape[axis + 1..].iter().product();
    let mut shape = t.shape.clone();
    shape.remove(axis);
    let at = |o: usize, j: usize, i: usize| o * n * inner + j * inner + i;
    let d = t.dtype;
    match (&t.buf, op) {
        (Buf::F(v), ReduceOp::Argmax) => {
            let mut out = Vec::with_capacity(outer * inner);
            for o in 0..outer {
                for i in 0..inner {
                    let mut best: Option<(usize, f32)> = None;
                    for j in 0..n {
                        let x = v[at(o, j, i)];
                        if !x.is_nan() && best.is_none_or(|(_, b)| x > b) {
                            best = Some((j, x));
                        }
                    }
                    out.push(best.map_or(0, |(j, _)| j as i64));
                }
            }
            Tile::ints(DType::I32, shape, out)
        }
        (Buf::F(v), _) => {
            let mut out = Vec::with_capacity(outer * inner);
            for o in 0..outer {
                for i in 0..inner {
                    let mut acc = match op {
                        ReduceOp::Sum => 0.0f32,
                        _ => f32::NAN,
                    };
                    for j in 0..n {
                        let x = v[at(o, j, i)];
                        acc = match op {
                            ReduceOp::Sum => acc + x,
                            ReduceOp::Max => acc.max(x),
                            _ => acc.min(x),
                        };
                    }
                    out.push(round_f(d, acc));
                }
            }
            Tile::floats(d, shape, out)
        }
        (Buf::I(v), _) => {
            let mut out = Vec::with_capacity(outer * inner);
            for o in 0..outer {
                for i in 0..inner {
                    let first = v[at(o, 0, i)];
                    let mut acc = if op == ReduceOp::Sum { 0 } else { first };
                    let mut arg = 0usize;
                    for j in 0..n {
                        let x = v[at(o, j, i)];
                        match op {
                            ReduceOp::Sum => acc = wrap_i(d, acc.wrapping_add(x)),
                            ReduceOp::Max => acc = acc.max(x),
                            ReduceOp::Min => acc = acc.min(x),
                            ReduceOp::Argmax => {
                                if x > acc {
                                    acc = x;
                                    arg = j;
                                }
                            }
                        }
                    }
                    out.push(if op == ReduceOp::Argmax { arg as i64 } else { acc });
                }
            }
            Tile::ints(if op == ReduceOp::Argmax { DType::I32 } else { d }, shape, out)
        }
    }
}

/// `a [M,K] x b [K,N]` (or `b [N,K]^T`): products of f32 operands accumulated in f32 in
/// k order (multiply then add, not fused); the result is f32 `[M,N]`.
pub(crate) fn dot(a: &Tile, b: &Tile, trans_b: bool) -> Tile {
    let (Buf::F(x), Buf::F(y)) = (&a.buf, &b.buf) else { unreachable!("verifier: dot on floats") };
    let (m, k) = (a.shape[0], a.shape[1]);
    let n = if trans_b { b.shape[0] } else { b.shape[1] };
    let mut out = vec![0.0f32; m * n];
    if trans_b {
        for i in 0..m {
            let row = &x[i * k..(i + 1) * k];
            for j in 0..n {
                let col = &y[j * k..(j + 1) * k];
                let mut acc = 0.0f32;
                for (p, q) in row.iter().zip(col) {
                    acc += p * q;
                }
                out[i * n + j] = acc;
            }
        }
    } else {
        // Same per-element k order, but walks b row by row for speed.
        for i in 0..m {
            let acc = &mut out[i * n..(i + 1) * n];
            for kk in 0..k {
                let p = x[i * k + kk];
                let brow = &y[kk * n..(kk + 1) * n];
                for (c, q) in acc.iter_mut().zip(brow) {
                    *c += p * q;
                }
            }
        }
    }
    Tile::floats(DType::F32, vec![m, n], out)
}

/// Descending order; NaN sorts below every number.
fn desc_f(a: f32, b: f32) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => b.partial_cmp(&a).unwrap(),
    }
}

/// The `k` largest elements along the last axis, descending; ties (and -0.0 vs 0.0) go to
/// the smaller index first; NaN ranks below every number. Returns (values, i32 indices).
pub(crate) fn topk(t: &Tile, k: usize, sorted: bool) -> (Tile, Tile) {
    let len = *t.shape.last().unwrap();
    let rows = t.numel() / len;
    let mut shape = t.shape.clone();
    *shape.last_mut().unwrap() = k;
    let mut idx_out = Vec::with_capacity(rows * k);
    for r in 0..rows {
        let cmp = |i: usize, j: usize| match &t.buf {
            Buf::F(v) => desc_f(v[r * len + i], v[r * len + j]),
            Buf::I(v) => v[r * len + j].cmp(&v[r * len + i]),
        };
        let mut order: Vec<usize> = (0..len).collect();
        order.sort_by(|&i, &j| cmp(i, j).then(i.cmp(&j)));
        order.truncate(k);
        if !sorted {
            // Greater than the k-th largest first, then equal to it, each in index order.
            let kth = order[k - 1];
            order.sort_by_key(|&i| (cmp(i, kth) == Ordering::Equal, i));
        }
        idx_out.extend(order.iter().map(|&i| i as i64));
    }
    let flat = |q: usize| (q / k) * len + idx_out[q] as usize;
    let values = match &t.buf {
        Buf::F(v) => Tile::floats(t.dtype, shape.clone(), (0..rows * k).map(|q| v[flat(q)]).collect()),
        Buf::I(v) => Tile::ints(t.dtype, shape.clone(), (0..rows * k).map(|q| v[flat(q)]).collect()),
    };
    (values, Tile::ints(DType::I32, shape, idx_out))
}
