//! f64 reference implementations of the sample problems.
//!
//! All tensors are flat row-major slices; the functions compute in f64 from inputs that
//! are already rounded to their storage dtype.

/// `x + y`.
pub fn vector_add(x: &[f64], y: &[f64]) -> Vec<f64> {
    x.iter().zip(y).map(|(a, b)| a + b).collect()
}

/// Softmax of each row of a `[rows, cols]` matrix.
pub fn softmax_rows(x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        out.extend(e.iter().map(|v| v / s));
    }
    out
}

/// `a [m, k] x b [k, n]`.
pub fn matmul(a: &[f64], b: &[f64], m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for kk in 0..k {
            let p = a[i * k + kk];
            for j in 0..n {
                out[i * n + j] += p * b[kk * n + j];
            }
        }
    }
    out
}

/// `out[i, :] = scale * table[idx[i], :]` for a `[rows, d]` table; indices outside
/// `[0, rows)` give zero rows.
pub fn gather_rows(table: &[f64], rows: usize, d: usize, idx: &[i64], scale: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(idx.len() * d);
    for &i in idx {
        if (0..rows as i64).contains(&i) {
            out.extend(table[i as usize * d..(i as usize + 1) * d].iter().map(|v| scale * v));
        } else {
            out.extend(std::iter::repeat_n(0.0, d));
        }
    }
    out
}

/// The `k` largest values of each row of a `[rows, n]` matrix, ties to the smaller index
/// first; sorted: descending; unsorted: those above the k-th largest value, then those
/// equal to it, each in index order. Returns (values, indices), each `[rows, k]`.
pub fn topk_rows(x: &[f64], rows: usize, n: usize, k: usize, sorted: bool) -> (Vec<f64>, Vec<i64>) {
    let (mut vals, mut idx) = (Vec::with_capacity(rows * k), Vec::with_capacity(rows * k));
    for r in 0..rows {
        let row = &x[r * n..(r + 1) * n];
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&i, &j| row[j].total_cmp(&row[i]).then(i.cmp(&j)));
        order.truncate(k);
        if !sorted {
            let kth = row[order[k - 1]];
            order.sort_by_key(|&i| (row[i] == kth, i));
        }
        for &i in &order {
            vals.push(row[i]);
            idx.push(i as i64);
        }
    }
    (vals, idx)
}

/// Inclusive prefix sums of each row of a `[rows, n]` matrix.
pub fn prefix_sums(x: &[f64], rows: usize, n: usize) -> Vec<f64> {
    (0..rows)
        .flat_map(|r| {
            x[r * n..(r + 1) * n].iter().scan(0.0, |acc, &v| {
                *acc += v;
                Some(*acc)
            })
        })
        .collect()
}

/// Single-query attention with grouped KV heads: `q [b, hq, d]`, `k`/`v [b, hkv, n, d]`;
/// query head `h` attends with KV head `h / (hq / hkv)`. Returns `softmax(q·kᵀ·scale)·v`,
/// `[b, hq, d]`.
#[allow(clippy::too_many_arguments)]
pub fn attention_decode(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    b: usize,
    hq: usize,
    hkv: usize,
    n: usize,
    d: usize,
    scale: f64,
) -> Vec<f64> {
    let group = hq / hkv;
    let mut out = vec![0.0; b * hq * d];
    for bi in 0..b {
        for h in 0..hq {
            let qv = &q[(bi * hq + h) * d..(bi * hq + h + 1) * d];
            let kv = bi * hkv + h / group;
            let scores: Vec<f64> = (0..n)
                .map(|t| {
                    let kr = &k[(kv * n + t) * d..(kv * n + t + 1) * d];
                    scale * qv.iter().zip(kr).map(|(x, y)| x * y).sum::<f64>()
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let denom: f64 = w.iter().sum();
            let o = &mut out[(bi * hq + h) * d..(bi * hq + h + 1) * d];
            for (t, wt) in w.iter().enumerate() {
                let vr = &v[(kv * n + t) * d..(kv * n + t + 1) * d];
                for (oe, ve) in o.iter_mut().zip(vr) {
                    *oe += wt * ve;
                }
            }
            o.iter_mut().for_each(|x| *x /= denom);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_cases() {
        assert_eq!(softmax_rows(&[0.0, 0.0], 1, 2), vec![0.5, 0.5]);
        assert_eq!(matmul(&[1., 2., 3., 4.], &[1., 0., 0., 1.], 2, 2, 2), vec![1., 2., 3., 4.]);
        assert_eq!(gather_rows(&[1., 2., 3., 4.], 2, 2, &[1, -1, 2, 0], 2.0), vec![6., 8., 0., 0., 0., 0., 2., 4.]);
        assert_eq!(topk_rows(&[1., 3., 3., 2.], 1, 4, 3, true), (vec![3., 3., 2.], vec![1, 2, 3]));
        assert_eq!(topk_rows(&[2., 3., 2., 2., 5.], 1, 5, 3, false), (vec![3., 5., 2.], vec![1, 4, 0]));
        // One key: the output is that value row; GQA maps heads 0,1 -> kv 0.
        let o = attention_decode(&[1., 0., 0., 1.], &[5., 5.], &[2., 3.], 1, 2, 1, 1, 2, 0.7);
        assert_eq!(o, vec![2., 3., 2., 3.]);
    }
}
