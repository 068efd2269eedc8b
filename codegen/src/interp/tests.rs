//! Unit tests of the tricky semantics.

use super::{run, Arg, InterpError};
use crate::host::{HostTensor, ScalarValue};
use crate::ir::{AtomicOp, BinaryOp, DType, Index, Kernel, KernelBuilder, ReduceOp, UnaryOp};

/// `out[0..n] = f(x[0..n], y[0..n])` over one program, with the given dtypes.
fn binary_kernel(
    d: DType,
    out_d: DType,
    n: usize,
    f: impl FnOnce(&mut KernelBuilder, crate::ir::ValueId, crate::ir::ValueId) -> crate::ir::ValueId,
) -> Kernel {
    let mut b = KernelBuilder::new("bin", 1);
    let x = b.tensor("x", d, 1);
    let y = b.tensor("y", d, 1);
    let out = b.tensor_mut("out", out_d, 1);
    let zero = b.const_i32(0);
    let xs = b.load(x, vec![Index::Range { start: zero, len: n }], None, 0.0);
    let ys = b.load(y, vec![Index::Range { start: zero, len: n }], None, 0.0);
    let r = f(&mut b, xs, ys);
    b.store(out, vec![Index::Range { start: zero, len: n }], r, None);
    b.finish().unwrap()
}

fn run_binary(k: &Kernel, d: DType, out_d: DType, x: &[f64], y: &[f64]) -> Vec<f64> {
    let (x, y) = (HostTensor::from_f64(d, &[x.len()], x), HostTensor::from_f64(d, &[y.len()], y));
    let mut out = HostTensor::full(out_d, &[x.numel()], -99.0);
    run(k, [1, 1, 1], &mut [Arg::In(&x), Arg::In(&y), Arg::Out(&mut out)]).unwrap();
    out.to_f64()
}

fn op(op: BinaryOp) -> impl FnOnce(&mut KernelBuilder, crate::ir::ValueId, crate::ir::ValueId) -> crate::ir::ValueId {
    move |b, x, y| b.binary(op, x, y)
}

#[test]
fn bf16_and_f16_round_each_op_to_nearest_even() {
    let k = binary_kernel(DType::BF16, DType::BF16, 3, op(BinaryOp::Add));
    let e = 2f64.powi(-8);
    // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even wins (1). 1 + 3*2^-8: 1 + 2^-6.
    let r = run_binary(&k, DType::BF16, DType::BF16, &[1.0, 1.0, 1.0], &[e, 3.0 * e, 1.5 * e]);
    assert_eq!(r, vec![1.0, 1.0 + 4.0 * e, 1.0 + 2.0 * e]);
    let k = binary_kernel(DType::F16, DType::F16, 2, op(BinaryOp::Add));
    let e = 2f64.powi(-11);
    let r = run_binary(&k, DType::F16, DType::F16, &[1.0, 1.0], &[e, 3.0 * e]);
    assert_eq!(r, vec![1.0, 1.0 + 4.0 * e]);
}

#[test]
fn f32_ops_compute_in_f32() {
    let k = binary_kernel(DType::F32, DType::F32, 2, op(BinaryOp::Add));
    let r = run_binary(&k, DType::F32, DType::F32, &[16777216.0, 0.1], &[1.0, 0.2]);
    assert_eq!(r, vec![16777216.0, (0.1f32 + 0.2f32) as f64]);
}

#[test]
fn float_max_min_ignore_nan() {
    let k = binary_kernel(DType::F32, DType::F32, 3, op(BinaryOp::Max));
    let r = run_binary(&k, DType::F32, DType::F32, &[f64::NAN, 1.0, -1.0], &[2.0, f64::NAN, -3.0]);
    assert_eq!(r, vec![2.0, 1.0, -1.0]);
    let k = binary_kernel(DType::F32, DType::F32, 2, op(BinaryOp::Min));
    let r = run_binary(&k, DType::F32, DType::F32, &[f64::NAN, 1.0], &[2.0, f64::NAN]);
    assert_eq!(r, vec![2.0, 1.0]);
}

#[test]
fn integers_wrap_and_shift() {
    let k = binary_kernel(DType::I32, DType::I32, 2, op(BinaryOp::Add));
    let r = run_binary(&k, DType::I32, DType::I32, &[i32::MAX as f64, -5.0], &[1.0, 2.0]);
    assert_eq!(r, vec![i32::MIN as f64, -3.0]);
    let k = binary_kernel(DType::I32, DType::I32, 3, op(BinaryOp::Shr));
    let r = run_binary(&k, DType::I32, DType::I32, &[-8.0, 8.0, -1.0], &[1.0, 33.0, 31.0]);
    assert_eq!(r, vec![-4.0, 4.0, -1.0]);
    let k = binary_kernel(DType::U32, DType::U32, 2, op(BinaryOp::Shr));
    let r = run_binary(&k, DType::U32, DType::U32, &[4294967288.0, 1.0], &[1.0, 0.0]);
    assert_eq!(r, vec![2147483644.0, 1.0]);
    let k = binary_kernel(DType::U32, DType::U32, 1, op(BinaryOp::Sub));
    let r = run_binary(&k, DType::U32, DType::U32, &[1.0], &[2.0]);
    assert_eq!(r, vec![u32::MAX as f64]);
    let k = binary_kernel(DType::I32, DType::I32, 3, op(BinaryOp::Div));
    let r = run_binary(&k, DType::I32, DType::I32, &[-7.0, 7.0, i32::MIN as f64], &[2.0, -2.0, -1.0]);
    assert_eq!(r, vec![-3.0, -3.0, i32::MIN as f64]);
    let k = binary_kernel(DType::I32, DType::I32, 2, op(BinaryOp::Rem));
    let r = run_binary(&k, DType::I32, DType::I32, &[-7.0, 7.0], &[2.0, -2.0]);
    assert_eq!(r, vec![-1.0, 1.0]);
}

#[test]
fn comparisons_give_bool() {
    let k = binary_kernel(DType::F32, DType::I32, 3, |b, x, y| {
        let c = b.binary(BinaryOp::Lt, x, y);
        assert_eq!(b.ty(c).dtype, DType::Bool);
        b.cast(c, DType::I32)
    });
    let r = run_binary(&k, DType::F32, DType::I32, &[1.0, 2.0, f64::NAN], &[2.0, 2.0, 1.0]);
    assert_eq!(r, vec![1.0, 0.0, 0.0]);
}

#[test]
fn integer_division_by_zero_is_an_error() {
    let mut b = KernelBuilder::new("div0", 1);
    let out = b.tensor_mut("out", DType::I32, 1);
    let d = b.scalar_arg("d", DType::I32);
    let seven = b.const_i32(7);
    let q = b.div(seven, d);
    let zero = b.const_i32(0);
    b.store(out, vec![Index::At(zero)], q, None);
    let k = b.finish().unwrap();
    let mut o = HostTensor::full(DType::I32, &[1], 0.0);
    run(&k, [1, 1, 1], &mut [Arg::Out(&mut o), Arg::Scalar(ScalarValue::I32(2))]).unwrap();
    assert_eq!(o.to_f64(), vec![3.0]);
    let e = run(&k, [2, 1, 1], &mut [Arg::Out(&mut o), Arg::Scalar(ScalarValue::I32(0))]).unwrap_err();
    assert_eq!(e, InterpError::DivisionByZero { op: "div", program: [0, 0, 0] });
}

/// `out[0..n] = cast(x[0..n])`.
fn cast_kernel(from: DType, to: DType, n: usize) -> Kernel {
    let mut b = KernelBuilder::new("cast", 1);
    let x = b.tensor("x", from, 1);
    let out = b.tensor_mut("out", to, 1);
    let zero = b.const_i32(0);
    let xs = b.load(x, vec![Index::Range { start: zero, len: n }], None, 0.0);
    let c = b.cast(xs, to);
    b.store(out, vec![Index::Range { start: zero, len: n }], c, None);
    b.finish().unwrap()
}

fn run_cast(from: DType, to: DType, x: &[f64]) -> Vec<f64> {
    let k = cast_kernel(from, to, x.len());
    let x = HostTensor::from_f64(from, &[x.len()], x);
    let mut out = HostTensor::full(to, &[x.numel()], 0.0);
    run(&k, [1, 1, 1], &mut [Arg::In(&x), Arg::Out(&mut out)]).unwrap();
    out.to_f64()
}

#[test]
fn casts_truncate_saturate_and_round() {
    assert_eq!(
        run_cast(DType::F32, DType::I32, &[-1.7, 2.9, f64::NAN, 1e20, -1e20]),
        vec![-1.0, 2.0, 0.0, i32::MAX as f64, i32::MIN as f64]
    );
    assert_eq!(run_cast(DType::F32, DType::U32, &[-5.0, 3.5]), vec![0.0, 3.0]);
    // 1 + 2^-8 ties to 1 in bf16; 1 + 2^-8 + 2^-20 rounds up.
    let e = 2f64.powi(-8);
    assert_eq!(run_cast(DType::F32, DType::BF16, &[1.0 + e, 1.0 + e + 2f64.powi(-20)]), vec![1.0, 1.0 + 2.0 * e]);
    // i32 -> i32 -> u32 wraps; i64 -> i32 truncates.
    assert_eq!(run_cast(DType::I32, DType::U32, &[-1.0]), vec![u32::MAX as f64]);
    assert_eq!(run_cast(DType::I64, DType::I32, &[4294967297.0]), vec![1.0]);
    // 2049 is not an f16: ties to even gives 2048.
    assert_eq!(run_cast(DType::I32, DType::F16, &[2049.0, 2051.0]), vec![2048.0, 2052.0]);
}

#[test]
fn cast_to_and_from_bool() {
    let mut b = KernelBuilder::new("bools", 1);
    let x = b.tensor("x", DType::F32, 1);
    let out = b.tensor_mut("out", DType::F32, 1);
    let zero = b.const_i32(0);
    let xs = b.load(x, vec![Index::Range { start: zero, len: 3 }], None, 0.0);
    let c = b.cast(xs, DType::Bool);
    let n = b.unary(UnaryOp::Not, c);
    let f = b.cast(n, DType::F32);
    b.store(out, vec![Index::Range { start: zero, len: 3 }], f, None);
    let k = b.finish().unwrap();
    let x = HostTensor::from_f64(DType::F32, &[3], &[0.0, -2.5, f64::NAN]);
    let mut o = HostTensor::full(DType::F32, &[3], 9.0);
    run(&k, [1, 1, 1], &mut [Arg::In(&x), Arg::Out(&mut o)]).unwrap();
    assert_eq!(o.to_f64(), vec![1.0, 0.0, 0.0]);
}

#[test]
fn loads_mask_out_of_bounds_and_masked_elements() {
    // out[4] = load(x[start..start+4], mask = [t, f, t, t], other = 7)
    let mut b = KernelBuilder::new("masked", 1);
    let x = b.tensor("x", DType::F16, 1);
    let out = b.tensor_mut("out", DType::F16, 1);
    let start = b.scalar_arg("start", DType::I32);
    let zero = b.const_i32(0);
    let idx = b.arange(0, 4);
    let one = b.const_i32(1);
    let m = b.binary(BinaryOp::Ne, idx, one);
    let xs = b.load(x, vec![Index::Range { start, len: 4 }], Some(m), 7.3);
    b.store(out, vec![Index::Range { start: zero, len: 4 }], xs, None);
    let k = b.finish().unwrap();
    let x = HostTensor::from_f64(DType::F16, &[3], &[1.0, 2.0, 3.0]);
    let mut o = HostTensor::full(DType::F16, &[4], 0.0);
    run(&k, [1, 1, 1], &mut [Arg::In(&x), Arg::Out(&mut o), Arg::Scalar(ScalarValue::I32(-1))]).unwrap();
    // positions -1, 0, 1, 2: -1 out of range, 0 masked; `other` rounds to f16.
    let other = half::f16::from_f64(7.3).to_f64();
    assert_eq!(o.to_f64(), vec![other, other, 2.0, 3.0]);
}

#[test]
fn gather_and_scatter_skip_out_of_range_indices() {
    // out[idx[i], :] = table[idx[i], :] + 1 for a gather with bad indices
    let mut b = KernelBuilder::new("gather", 1);
    let table = b.tensor("table", DType::F32, 2);
    let idx = b.tensor("idx", DType::I32, 1);
    let out = b.tensor_mut("out", DType::F32, 2);
    let gathered = b.tensor_mut("gathered", DType::F32, 2);
    let zero = b.const_i32(0);
    let ids = b.load(idx, vec![Index::Range { start: zero, len: 5 }], None, 0.0);
    let rows = b.load(table, vec![Index::Gather(ids), Index::Range { start: zero, len: 2 }], None, -1.0);
    b.store(gathered, vec![Index::Range { start: zero, len: 5 }, Index::Range { start: zero, len: 2 }], rows, None);
    let one = b.const_f32(1.0);
    let plus = b.add(rows, one);
    b.store(out, vec![Index::Gather(ids), Index::Range { start: zero, len: 2 }], plus, None);
    let k = b.finish().unwrap();
    let t = HostTensor::from_f64(DType::F32, &[3, 2], &[0.0, 1.0, 10.0, 11.0, 20.0, 21.0]);
    let ids = HostTensor::from_f64(DType::I32, &[5], &[-1.0, 2.0, 3.0, 0.0, 2.0]);
    let mut o = HostTensor::full(DType::F32, &[3, 2], 99.0);
    let mut g = HostTensor::full(DType::F32, &[5, 2], 99.0);
    run(&k, [1, 1, 1], &mut [Arg::In(&t), Arg::In(&ids), Arg::Out(&mut o), Arg::Out(&mut g)]).unwrap();
    assert_eq!(g.to_f64(), vec![-1.0, -1.0, 20.0, 21.0, -1.0, -1.0, 0.0, 1.0, 20.0, 21.0]);
    assert_eq!(o.to_f64(), vec![1.0, 2.0, 99.0, 99.0, 21.0, 22.0]);
}

#[test]
fn store_broadcasts_and_atomics_accumulate_repeated_indices() {
    let mut b = KernelBuilder::new("atomics", 1);
    let idx = b.tensor("idx", DType::I32, 1);
    let hist = b.tensor_mut("hist", DType::I32, 1);
    let best = b.tensor_mut("best", DType::I32, 1);
    let zero = b.const_i32(0);
    let ids = b.load(idx, vec![Index::Range { start: zero, len: 6 }], None, 0.0);
    let one = b.const_i32(1);
    b.atomic(AtomicOp::Add, hist, vec![Index::Gather(ids)], one, None);
    let pid = b.program_id(0);
    b.atomic(AtomicOp::Max, best, vec![Index::Gather(ids)], pid, None);
    let k = b.finish().unwrap();
    let ids = HostTensor::from_f64(DType::I32, &[6], &[0.0, 2.0, 2.0, 9.0, 2.0, -3.0]);
    let mut h = HostTensor::full(DType::I32, &[3], 0.0);
    let mut m = HostTensor::full(DType::I32, &[3], -1.0);
    run(&k, [3, 1, 1], &mut [Arg::In(&ids), Arg::Out(&mut h), Arg::Out(&mut m)]).unwrap();
    assert_eq!(h.to_f64(), vec![3.0, 0.0, 9.0]);
    assert_eq!(m.to_f64(), vec![2.0, -1.0, 2.0]);
}

/// `out[row, 0] = reduce(x[row, :])` for every row.
fn run_reduce(op: ReduceOp, d: DType, out_d: DType, x: &[f64]) -> f64 {
    let mut b = KernelBuilder::new("reduce", 1);
    let xt = b.tensor("x", d, 1);
    let out = b.tensor_mut("out", out_d, 1);
    let zero = b.const_i32(0);
    let xs = b.load(xt, vec![Index::Range { start: zero, len: x.len() }], None, 0.0);
    let r = b.reduce(op, xs, 0);
    b.store(out, vec![Index::At(zero)], r, None);
    let k = b.finish().unwrap();
    let xh = HostTensor::from_f64(d, &[x.len()], x);
    let mut o = HostTensor::full(out_d, &[1], -99.0);
    run(&k, [1, 1, 1], &mut [Arg::In(&xh), Arg::Out(&mut o)]).unwrap();
    o.get_f64(0)
}

#[test]
fn argmax_prefers_the_first_of_ties_and_skips_nan() {
    assert_eq!(run_reduce(ReduceOp::Argmax, DType::F32, DType::I32, &[1.0, 3.0, f64::NAN, 3.0, 2.0]), 1.0);
    assert_eq!(run_reduce(ReduceOp::Argmax, DType::F32, DType::I32, &[f64::NAN, f64::NAN]), 0.0);
    assert_eq!(run_reduce(ReduceOp::Argmax, DType::F32, DType::I32, &[f64::NAN, -1.0]), 1.0);
    assert_eq!(run_reduce(ReduceOp::Argmax, DType::I32, DType::I32, &[4.0, 7.0, 7.0]), 1.0);
    assert_eq!(run_reduce(ReduceOp::Max, DType::F32, DType::F32, &[f64::NAN, -1.0, -2.0]), -1.0);
    assert_eq!(run_reduce(ReduceOp::Min, DType::I32, DType::I32, &[3.0, -4.0, 5.0]), -4.0);
}

#[test]
fn half_sums_accumulate_in_f32_and_round_once() {
    // In f16 step by step 2048 + 1 + 1 would stay 2048; accumulating in f32 gives 2050.
    assert_eq!(run_reduce(ReduceOp::Sum, DType::F16, DType::F16, &[2048.0, 1.0, 1.0]), 2050.0);
    assert_eq!(run_reduce(ReduceOp::Sum, DType::I32, DType::I32, &[i32::MAX as f64, 2.0]), (i32::MIN + 1) as f64);
}

#[test]
fn reduce_over_a_middle_axis() {
    let mut b = KernelBuilder::new("reduce3", 1);
    let xt = b.tensor("x", DType::F32, 3);
    let out = b.tensor_mut("out", DType::F32, 2);
    let z = b.const_i32(0);
    let r = |len| Index::Range { start: z, len };
    let xs = b.load(xt, vec![r(2), r(3), r(2)], None, 0.0);
    let s = b.reduce(ReduceOp::Sum, xs, 1);
    b.store(out, vec![r(2), r(2)], s, None);
    let k = b.finish().unwrap();
    let vals: Vec<f64> = (0..12).map(|i| i as f64).collect();
    let x = HostTensor::from_f64(DType::F32, &[2, 3, 2], &vals);
    let mut o = HostTensor::full(DType::F32, &[2, 2], 0.0);
    run(&k, [1, 1, 1], &mut [Arg::In(&x), Arg::Out(&mut o)]).unwrap();
    assert_eq!(o.to_f64(), vec![6.0, 9.0, 24.0, 27.0]);
}

#[test]
fn topk_orders_ties_by_index() {
    let mut b = KernelBuilder::new("topk", 1);
    let xt = b.tensor("x", DType::F32, 2);
    let vals = b.tensor_mut("vals", DType::F32, 2);
    let idx = b.tensor_mut("idx", DType::I32, 2);
    let z = b.const_i32(0);
    let xs = b.load(xt, vec![Index::Range { start: z, len: 2 }, Index::Range { start: z, len: 6 }], None, 0.0);
    let (v, i) = b.topk(xs, 4);
    let out = vec![Index::Range { start: z, len: 2 }, Index::Range { start: z, len: 4 }];
    b.store(vals, out.clone(), v, None);
    b.store(idx, out, i, None);
    let k = b.finish().unwrap();
    let nan = f64::NAN;
    let x = HostTensor::from_f64(DType::F32, &[2, 6], &[1., 5., 3., 5., nan, 3., nan, nan, 0., -1., 0., -0.]);
    let mut v = HostTensor::full(DType::F32, &[2, 4], 0.0);
    let mut ix = HostTensor::full(DType::I32, &[2, 4], 0.0);
    run(&k, [1, 1, 1], &mut [Arg::In(&x), Arg::Out(&mut v), Arg::Out(&mut ix)]).unwrap();
    assert_eq!(v.to_f64(), vec![5., 5., 3., 3., 0., 0., 0., -1.]);
    assert_eq!(ix.to_f64(), vec![1., 3., 2., 5., 2., 4., 5., 3.]);
}

#[test]
fn dot_with_and_without_transpose() {
    let mut b = KernelBuilder::new("dot", 1);
    let at = b.tensor("a", DType::BF16, 2);
    let bt = b.tensor("b", DType::BF16, 2);
    let c = b.tensor_mut("c", DType::F32, 2);
    let ct = b.tensor_mut("ct", DType::F32, 2);
    let z = b.const_i32(0);
    let r = |len| Index::Range { start: z, len };
    let a = b.load(at, vec![r(2), r(3)], None, 0.0);
    let bb = b.load(bt, vec![r(3), r(3)], None, 0.0);
    let p = b.dot(a, bb, false);
    let q = b.dot(a, bb, true);
    b.store(c, vec![r(2), r(3)], p, None);
    b.store(ct, vec![r(2), r(3)], q, None);
    let k = b.finish().unwrap();
    let a = HostTensor::from_f64(DType::BF16, &[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let bm = HostTensor::from_f64(DType::BF16, &[3, 3], &[1., 0., 2., 0., 1., 0., 1., 1., 1.]);
    let mut c = HostTensor::full(DType::F32, &[2, 3], 0.0);
    let mut ct = HostTensor::full(DType::F32, &[2, 3], 0.0);
    run(&k, [1, 1, 1], &mut [Arg::In(&a), Arg::In(&bm), Arg::Out(&mut c), Arg::Out(&mut ct)]).unwrap();
    assert_eq!(c.to_f64(), vec![4., 5., 5., 10., 11., 14.]);
    assert_eq!(ct.to_f64(), vec![7., 2., 6., 16., 5., 15.]);
}

/// `out[0] = sum of the loop variable over range(start, end, step)`, and the trip count.
fn run_loop(start: i32, end: i64, step: i64) -> (f64, f64) {
    let mut b = KernelBuilder::new("loop", 1);
    let out = b.tensor_mut("out", DType::I32, 1);
    let s = b.scalar_arg("start", DType::I32);
    let e = b.scalar_arg("end", DType::I64);
    let z = b.const_i32(0);
    let one = b.const_i32(1);
    let sum = b.var(z, "sum");
    let count = b.var(z, "count");
    b.for_range(s, e, step, "i", |b, i| {
        let n = b.add(sum, i);
        b.assign(sum, n);
        let c = b.add(count, one);
        b.assign(count, c);
    });
    b.store(out, vec![Index::At(z)], sum, None);
    b.store(out, vec![Index::At(one)], count, None);
    let k = b.finish().unwrap();
    let mut o = HostTensor::full(DType::I32, &[2], -1.0);
    run(
        &k,
        [1, 1, 1],
        &mut [Arg::Out(&mut o), Arg::Scalar(ScalarValue::I32(start)), Arg::Scalar(ScalarValue::I64(end))],
    )
    .unwrap();
    (o.get_f64(0), o.get_f64(1))
}

#[test]
fn loops_run_both_directions() {
    assert_eq!(run_loop(10, 0, -3), (22.0, 4.0)); // 10, 7, 4, 1
    assert_eq!(run_loop(0, 10, 3), (18.0, 4.0)); // 0, 3, 6, 9
    assert_eq!(run_loop(5, 5, 1), (0.0, 0.0));
    assert_eq!(run_loop(5, 9, -1), (0.0, 0.0));
    // The i32 variable never overflows: the loop stops at the last representable value.
    assert_eq!(run_loop(i32::MAX - 1, i64::MAX, 1).1, 2.0);
}

#[test]
fn return_ends_only_the_current_program() {
    // Programs 0 and 2 write their id; program 1 returns before its store.
    let mut b = KernelBuilder::new("early", 1);
    let out = b.tensor_mut("out", DType::I32, 1);
    let pid = b.program_id(0);
    let one = b.const_i32(1);
    let is_one = b.binary(BinaryOp::Eq, pid, one);
    b.if_else(is_one, |b| b.ret(), |_| {});
    let n = b.num_programs(0);
    let v = b.mul(pid, n);
    b.store(out, vec![Index::At(pid)], v, None);
    let k = b.finish().unwrap();
    let mut o = HostTensor::full(DType::I32, &[3], -7.0);
    run(&k, [3, 1, 1], &mut [Arg::Out(&mut o)]).unwrap();
    assert_eq!(o.to_f64(), vec![0.0, -7.0, 6.0]);
}

#[test]
fn programs_cover_the_grid_x_fastest() {
    // Each program appends its linear id at position (z, y, x); atomics count visits.
    let mut b = KernelBuilder::new("grid", 1);
    let out = b.tensor_mut("out", DType::I32, 3);
    let (x, y, z) = (b.program_id(0), b.program_id(1), b.program_id(2));
    let one = b.const_i32(1);
    b.atomic(AtomicOp::Add, out, vec![Index::At(z), Index::At(y), Index::At(x)], one, None);
    let k = b.finish().unwrap();
    let mut o = HostTensor::full(DType::I32, &[2, 3, 4], 0.0);
    run(&k, [4, 3, 2], &mut [Arg::Out(&mut o)]).unwrap();
    assert!(o.to_f64().iter().all(|&v| v == 1.0));
}

fn two_param_kernel() -> Kernel {
    let mut b = KernelBuilder::new("args", 1);
    let x = b.tensor("x", DType::F32, 2);
    let out = b.tensor_mut("out", DType::F32, 2);
    let _s = b.scalar_arg("s", DType::I32);
    let z = b.const_i32(0);
    let t = b.load(x, vec![Index::At(z), Index::At(z)], None, 0.0);
    b.store(out, vec![Index::At(z), Index::At(z)], t, None);
    b.finish().unwrap()
}

#[test]
fn arguments_are_checked_before_running() {
    let k = two_param_kernel();
    let x = HostTensor::full(DType::F32, &[2, 2], 1.0);
    let mut o = HostTensor::full(DType::F32, &[2, 2], 0.0);
    let s = ScalarValue::I32(1);
    let g = [1, 1, 1];
    let err = |r: Result<(), InterpError>| r.unwrap_err();
    assert!(matches!(
        err(run(&k, g, &mut [Arg::In(&x), Arg::Out(&mut o)])),
        InterpError::ArgCount { expected: 3, got: 2, .. }
    ));
    match err(run(&k, g, &mut [Arg::In(&x), Arg::In(&x), Arg::Scalar(s)])) {
        InterpError::ArgKind { param, .. } => assert_eq!(param, "out"),
        e => panic!("{e}"),
    }
    match err(run(&k, g, &mut [Arg::Scalar(s), Arg::Out(&mut o), Arg::Scalar(s)])) {
        InterpError::ArgKind { param, .. } => assert_eq!(param, "x"),
        e => panic!("{e}"),
    }
    match err(run(&k, g, &mut [Arg::In(&x), Arg::Out(&mut o), Arg::In(&x)])) {
        InterpError::ArgKind { param, .. } => assert_eq!(param, "s"),
        e => panic!("{e}"),
    }
    let xi = HostTensor::full(DType::I32, &[2, 2], 1.0);
    assert!(matches!(
        err(run(&k, g, &mut [Arg::In(&xi), Arg::Out(&mut o), Arg::Scalar(s)])),
        InterpError::ArgDType { expected: DType::F32, got: DType::I32, .. }
    ));
    assert!(matches!(
        err(run(&k, g, &mut [Arg::In(&x), Arg::Out(&mut o), Arg::Scalar(ScalarValue::I64(1))])),
        InterpError::ArgDType { expected: DType::I32, got: DType::I64, .. }
    ));
    let x1 = HostTensor::full(DType::F32, &[4], 1.0);
    match err(run(&k, g, &mut [Arg::In(&x1), Arg::Out(&mut o), Arg::Scalar(s)])) {
        InterpError::ArgRank { param, expected: 2, .. } => assert_eq!(param, "x"),
        e => panic!("{e}"),
    }
    let bad = HostTensor { shape: vec![3, 2], data: x.data.clone() };
    assert!(matches!(
        err(run(&k, g, &mut [Arg::In(&bad), Arg::Out(&mut o), Arg::Scalar(s)])),
        InterpError::ArgData { expected: 6, got: 4, .. }
    ));
    assert!(matches!(
        err(run(&k, [1, 0, 1], &mut [Arg::In(&x), Arg::Out(&mut o), Arg::Scalar(s)])),
        InterpError::EmptyGrid { .. }
    ));
    assert_eq!(o.to_f64(), vec![0.0; 4], "nothing ran");
    // A read-only parameter also accepts a writable view.
    let mut x2 = x.clone();
    run(&k, g, &mut [Arg::Out(&mut x2), Arg::Out(&mut o), Arg::Scalar(s)]).unwrap();
    assert_eq!(o.get_f64(0), 1.0);
}

#[test]
fn unverified_kernels_are_refused() {
    let mut b = KernelBuilder::new("bad", 1);
    let x = b.tensor("x", DType::F32, 1);
    let z = b.const_i32(0);
    let t = b.load(x, vec![Index::At(z)], None, 0.0);
    b.store(x, vec![Index::At(z)], t, None); // x is read-only
    let k = b.finish_unchecked();
    let xt = HostTensor::full(DType::F32, &[1], 0.0);
    assert!(matches!(run(&k, [1, 1, 1], &mut [Arg::In(&xt)]), Err(InterpError::Verify(_))));
}

/// `out = cumsum(x)` over one 1-D tile.
fn run_cumsum(d: DType, x: &[f64]) -> Vec<f64> {
    let mut b = KernelBuilder::new("cumsum", 1);
    let xt = b.tensor("x", d, 1);
    let out = b.tensor_mut("out", d, 1);
    let zero = b.const_i32(0);
    let whole = || Index::Range { start: zero, len: x.len() };
    let xs = b.load(xt, vec![whole()], None, 0.0);
    let c = b.cumsum(xs, 0);
    b.store(out, vec![whole()], c, None);
    let k = b.finish().unwrap();
    let xh = HostTensor::from_f64(d, &[x.len()], x);
    let mut o = HostTensor::full(d, &[x.len()], -99.0);
    run(&k, [1, 1, 1], &mut [Arg::In(&xh), Arg::Out(&mut o)]).unwrap();
    o.to_f64()
}

#[test]
fn cumsum_is_inclusive_in_index_order() {
    assert_eq!(run_cumsum(DType::I32, &[3.0, 0.0, -1.0, 5.0]), vec![3.0, 3.0, 2.0, 7.0]);
    assert_eq!(run_cumsum(DType::F32, &[0.5, 0.25, 2.0]), vec![0.5, 0.75, 2.75]);
    assert_eq!(run_cumsum(DType::I32, &[i32::MAX as f64, 1.0]), vec![i32::MAX as f64, i32::MIN as f64]);
}

#[test]
fn cumsum_refuses_2d_tiles_and_bool() {
    let mut b = KernelBuilder::new("cumsum2d", 1);
    let xt = b.tensor("x", DType::F32, 2);
    let z = b.const_i32(0);
    let xs = b.load(xt, vec![Index::Range { start: z, len: 2 }, Index::Range { start: z, len: 4 }], None, 0.0);
    b.cumsum(xs, 1);
    assert!(b.finish().unwrap_err().to_string().contains("1-D tile"));
    let mut b = KernelBuilder::new("cumsum_bool", 1);
    let xt = b.tensor("x", DType::Bool, 1);
    let z = b.const_i32(0);
    let xs = b.load(xt, vec![Index::Range { start: z, len: 4 }], None, 0.0);
    b.cumsum(xs, 0);
    assert!(b.finish().unwrap_err().to_string().contains("cast first"));
}

#[test]
fn unsorted_topk_puts_values_above_the_kth_first_in_index_order() {
    let mut b = KernelBuilder::new("topk_unsorted", 1);
    let xt = b.tensor("x", DType::F32, 1);
    let idx = b.tensor_mut("idx", DType::I32, 1);
    let z = b.const_i32(0);
    let xs = b.load(xt, vec![Index::Range { start: z, len: 7 }], None, 0.0);
    let (_, i) = b.topk_with(xs, 4, false);
    b.store(idx, vec![Index::Range { start: z, len: 4 }], i, None);
    let k = b.finish().unwrap();
    // The 4th largest is 2.0 (indices 1, 3, 6): 5.0 and 3.0 first by index, then the
    // first two 2.0s.
    let x = HostTensor::from_f64(DType::F32, &[7], &[1.0, 2.0, 5.0, 2.0, 0.0, 3.0, 2.0]);
    let mut o = HostTensor::full(DType::I32, &[4], -1.0);
    run(&k, [1, 1, 1], &mut [Arg::In(&x), Arg::Out(&mut o)]).unwrap();
    assert_eq!(o.to_f64(), vec![2.0, 5.0, 1.0, 3.0]);
}
