//! Comparing a problem's outputs with its reference.

use super::reference;
use super::{Problem, Reference};
use crate::host::HostTensor;
use crate::ir::DType;

/// How one output tensor compared.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputCheck {
    pub tensor: &'static str,
    pub elements: usize,
    pub max_abs_err: f64,
    /// `max_abs_err` divided by the largest reference magnitude of this output.
    pub max_rel_err: f64,
    /// The largest allowed `max_rel_err` (0 for outputs that must match exactly).
    pub tolerance: f64,
}

/// How a problem's outputs compared (maxima over all outputs, and per output).
#[derive(Clone, Debug, PartialEq)]
pub struct CheckReport {
    pub max_abs_err: f64,
    pub max_rel_err: f64,
    pub outputs: Vec<OutputCheck>,
}

/// Relative tolerance, of the output's magnitude, for a kernel-computed output of `dtype`.
fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 5e-3,
        DType::BF16 => 1e-2,
        _ => 0.0,
    }
}

fn multi_index(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for ax in (0..shape.len()).rev() {
        idx[ax] = i % shape[ax];
        i /= shape[ax];
    }
    idx
}

/// Compares `got` with `want`; `tol` is relative to the largest `|want|` (0: exact).
fn compare(name: &'static str, got: &HostTensor, want: &[f64], tol: f64) -> Result<OutputCheck, String> {
    assert_eq!(got.numel(), want.len(), "{name}: reference has the wrong size");
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(f64::MIN_POSITIVE);
    let (mut max_abs, mut bad, mut first_bad) = (0.0f64, 0usize, None);
    for (i, &w) in want.iter().enumerate() {
        let g = got.get_f64(i);
        let err = if g == w { 0.0 } else { (g - w).abs() };
        let ok = if err.is_nan() { false } else { err <= tol * scale };
        if !ok {
            bad += 1;
            first_bad.get_or_insert((i, g, w));
        }
        max_abs = if err.is_nan() { f64::NAN } else { max_abs.max(err) };
    }
    if let Some((i, g, w)) = first_bad {
        return Err(format!(
            "`{name}`: {bad} of {} elements differ; first at {:?}: got {g}, want {w} (tolerance {tol:e} x {scale:e})",
            want.len(),
            multi_index(i, &got.shape)
        ));
    }
    Ok(OutputCheck {
        tensor: name,
        elements: want.len(),
        max_abs_err: max_abs,
        max_rel_err: max_abs / scale,
        tolerance: tol,
    })
}

pub(crate) fn check(p: &Problem) -> Result<CheckReport, String> {
    let input = |name: &str| p.tensor(name).to_f64();
    // (output name, reference values, tolerance)
    let expected: Vec<(&'static str, Vec<f64>, f64)> = match &p.reference {
        Reference::VectorAdd => vec![("out", reference::vector_add(&input("x"), &input("y")), tolerance(DType::F32))],
        Reference::RowSoftmax { rows, cols } => {
            vec![("out", reference::softmax_rows(&input("x"), *rows, *cols), tolerance(DType::F16))]
        }
        Reference::Matmul { m, n, k } => {
            vec![("c", reference::matmul(&input("a"), &input("b"), *m, *n, *k), tolerance(DType::F32))]
        }
        Reference::GatherRows { rows, d } => {
            let idx: Vec<i64> = input("idx").iter().map(|&x| x as i64).collect();
            // 2 * x is exact in bf16, so the output must match exactly.
            vec![("out", reference::gather_rows(&input("table"), *rows, *d, &idx, 2.0), 0.0)]
        }
        Reference::TopK { rows, n, k, sorted } => {
            let (v, i) = reference::topk_rows(&input("scores"), *rows, *n, *k, *sorted);
            vec![("values", v, 0.0), ("indices", i.iter().map(|&x| x as f64).collect(), 0.0)]
        }
        Reference::PrefixSum { rows, n } => vec![("out", reference::prefix_sums(&input("x"), *rows, *n), 0.0)],
        Reference::FlashDecode { size: s } => {
            let o = reference::attention_decode(
                &input("q"),
                &input("k"),
                &input("v"),
                s.batch,
                s.kv_heads * s.group,
                s.kv_heads,
                s.seq_len,
                s.head_dim,
                1.0 / (s.head_dim as f64).sqrt(),
            );
            vec![("out", o, tolerance(DType::BF16))]
        }
    };
    let mut outputs = Vec::new();
    for (name, want, tol) in expected {
        outputs.push(compare(name, p.tensor(name), &want, tol).map_err(|e| format!("{}: {e}", p.name))?);
    }
    Ok(CheckReport {
        max_abs_err: outputs.iter().map(|o| o.max_abs_err).fold(0.0, f64::max),
        max_rel_err: outputs.iter().map(|o| o.max_rel_err).fold(0.0, f64::max),
        outputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_flags_poison_and_large_errors() {
        let t = HostTensor::from_f64(DType::F32, &[2, 2], &[1.0, 2.0, f64::NAN, 4.0]);
        let e = compare("t", &t, &[1.0, 2.0, 3.0, 4.0], 1e-5).unwrap_err();
        assert!(e.contains("[1, 0]"), "{e}");
        let t = HostTensor::from_f64(DType::F32, &[2], &[1.0, 2.001]);
        assert!(compare("t", &t, &[1.0, 2.0], 1e-5).is_err());
        let r = compare("t", &t, &[1.0, 2.0], 1e-3).unwrap();
        assert!((r.max_rel_err - 0.0005).abs() < 1e-6);
        let t = HostTensor::from_f64(DType::I32, &[2], &[3.0, 4.0]);
        assert!(compare("t", &t, &[3.0, 5.0], 0.0).is_err());
    }
}
