//! Rejection tests for the tile-IR verifier: each test builds one malformed program and
//! checks the exact `VerifyError` (op and reason).
//!
//! Programs built through `KernelBuilder` are checked twice: through `finish()` (the
//! builder's eager type inference plus the verifier) and through `finish_unchecked()`
//! followed by `ir::verify` alone, so the verifier rejects them without the builder's help.

use tessera_codegen::ir::{
    self, BinaryOp, DType, Index, Kernel, KernelBuilder, Op, Param, ParamId, ParamKind, ReduceOp, Stmt, TileType,
    ValueId, ValueInfo, VerifyError,
};

fn verr(op: &str, reason: &str) -> VerifyError {
    VerifyError { op: op.to_string(), reason: reason.to_string() }
}

/// Builds the program twice and checks that both `finish()` and `ir::verify` on the
/// unchecked kernel reject it with `expected`.
fn assert_rejected(build: impl Fn() -> KernelBuilder, expected: VerifyError) {
    let through_builder = build().finish().expect_err("finish() accepted a malformed program");
    assert_eq!(through_builder, expected, "error from finish()");
    let kernel = build().finish_unchecked();
    let through_verify = ir::verify(&kernel).expect_err("ir::verify accepted a malformed program");
    assert_eq!(through_verify, expected, "error from ir::verify");
}

/// A kernel value table entry.
fn value(ty: TileType, mutable: bool) -> ValueInfo {
    ValueInfo { ty, name: None, mutable }
}

fn i32_scalar() -> ValueInfo {
    value(TileType::scalar(DType::I32), false)
}

fn const_i32() -> Op {
    Op::Const { value: 1.0, dtype: DType::I32 }
}

fn let1(result: u32, op: Op) -> Stmt {
    Stmt::Let { results: vec![ValueId(result)], op }
}

fn kernel(values: Vec<ValueInfo>, body: Vec<Stmt>) -> Kernel {
    Kernel {
        name: "k".into(),
        params: Vec::new(),
        values,
        body,
        num_warps: 4,
        min_blocks_per_sm: 0,
        pipeline_stages: 2,
        constants: Vec::new(),
    }
}

// ---- a well-formed control ---------------------------------------------------------------

/// The helpers above are not vacuous: a small correct program passes both paths.
#[test]
fn well_formed_program_is_accepted() {
    let build = || {
        let mut b = KernelBuilder::new("scale", 4);
        let x = b.tensor("x", DType::F32, 1);
        let y = b.tensor_mut("y", DType::F32, 1);
        let pid = b.program_id(0);
        let block = b.const_i32(128);
        let start = b.mul(pid, block);
        let offs = b.arange(0, 128);
        let s = b.splat(start, &[128]);
        let idx = b.add(s, offs);
        let n = b.dim(x, 0);
        let n32 = b.cast(n, DType::I32);
        let ns = b.splat(n32, &[128]);
        let mask = b.lt(idx, ns);
        let v = b.load(x, vec![Index::Range { start, len: 128 }], Some(mask), 0.0);
        let e = b.exp2(v);
        b.store(y, vec![Index::Range { start, len: 128 }], e, Some(mask));
        b
    };
    build().finish().expect("finish()");
    ir::verify(&build().finish_unchecked()).expect("ir::verify");
}

/// Every sample program passes the verifier (the rules here do not reject real programs).
#[test]
fn sample_programs_are_accepted() {
    for sample in tessera_codegen::samples::all() {
        let k = sample.build_default();
        assert_eq!(ir::verify(&k), Ok(()), "sample `{}`", sample.name);
    }
}

// ---- element-wise ops ----------------------------------------------------------------------

#[test]
fn binary_op_on_mixed_dtypes() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let x = b.full(&[16], 1.0, DType::F32);
            let y = b.full(&[16], 1.0, DType::F16);
            b.add(x, y);
            b
        },
        verr("add", "operands have different dtypes (f32 and f16); cast one first"),
    );
}

#[test]
fn binary_op_on_shapes_that_do_not_broadcast() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let x = b.full(&[16, 32], 1.0, DType::F32);
            let y = b.full(&[16], 1.0, DType::F32);
            b.mul(x, y);
            b
        },
        verr("mul", "shapes [16, 32] and [16] do not broadcast"),
    );
}

#[test]
fn exp2_on_an_integer_tile() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let x = b.arange(0, 16);
            b.exp2(x);
            b
        },
        verr("exp2", "not defined for i32"),
    );
}

#[test]
fn shift_on_a_float_tile() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let x = b.full(&[8], 2.0, DType::BF16);
            b.binary(BinaryOp::Shl, x, x);
            b
        },
        verr("shl", "not defined for bf16"),
    );
}

// ---- dot ----------------------------------------------------------------------------------

#[test]
fn dot_with_inner_dimension_mismatch() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let a = b.full(&[16, 32], 1.0, DType::F16);
            let c = b.full(&[64, 16], 1.0, DType::F16);
            b.dot(a, c, false);
            b
        },
        verr("dot", "inner dimensions differ: a is [16, 32] and b is [64, 16]"),
    );
}

#[test]
fn dot_with_inner_dimension_mismatch_transposed() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let a = b.full(&[16, 32], 1.0, DType::BF16);
            // b^T of [16, 64] is [64, 16]: K = 64 does not match a's 32.
            let c = b.full(&[16, 64], 1.0, DType::BF16);
            b.dot(a, c, true);
            b
        },
        verr("dot", "inner dimensions differ: a is [16, 32] and b^T is [64, 16]"),
    );
}

#[test]
fn dot_on_integer_tiles() {
    let build = || {
        let mut b = KernelBuilder::new("k", 4);
        let a = b.full(&[16, 16], 1.0, DType::I32);
        let c = b.full(&[16, 16], 1.0, DType::I32);
        b.dot(a, c, false);
        b
    };
    assert_rejected(build, verr("dot", "operands must be f16, bf16 or f32, got i32"));
    // The Display form names the op in backticks, then the reason.
    assert_eq!(build().finish().unwrap_err().to_string(), "`dot`: operands must be f16, bf16 or f32, got i32");
}

#[test]
fn dot_with_a_1d_operand() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let a = b.full(&[16], 1.0, DType::F16);
            let c = b.full(&[16, 16], 1.0, DType::F16);
            b.dot(a, c, false);
            b
        },
        verr("dot", "operands must be 2-D tiles, got tile<f16, [16]> and tile<f16, [16, 16]>"),
    );
}

// ---- reductions and top-k ------------------------------------------------------------------

#[test]
fn reduce_axis_out_of_range() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let x = b.full(&[16, 32], 1.0, DType::F32);
            b.reduce(ReduceOp::Sum, x, 2);
            b
        },
        verr("sum", "axis 2 out of range for rank 2"),
    );
}

#[test]
fn topk_with_k_larger_than_the_length() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let x = b.full(&[4, 64], 1.0, DType::F32);
            b.topk(x, 65);
            b
        },
        verr("topk", "k = 65 must be in 1..=64"),
    );
}

// ---- memory -------------------------------------------------------------------------------

#[test]
fn load_with_the_wrong_number_of_indices() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let q = b.tensor("q", DType::BF16, 2);
            let zero = b.const_i32(0);
            b.load(q, vec![Index::Range { start: zero, len: 64 }], None, 0.0);
            b
        },
        verr("load", "`q` has rank 2 but 1 indices were given"),
    );
}

#[test]
fn gather_with_a_2d_index_tile() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let kv = b.tensor("kv", DType::F16, 2);
            let rows = b.full(&[4, 4], 0.0, DType::I32);
            let zero = b.const_i32(0);
            b.load(kv, vec![Index::Gather(rows), Index::Range { start: zero, len: 64 }], None, 0.0);
            b
        },
        verr("load", "gather indices on axis 0 of `kv` must be a 1-D integer tile, got tile<i32, [4, 4]>"),
    );
}

#[test]
fn load_index_that_is_a_float() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let x = b.tensor("x", DType::F32, 1);
            let start = b.const_f32(0.0);
            b.load(x, vec![Index::Range { start, len: 16 }], None, 0.0);
            b
        },
        verr("load", "index of axis 0 of `x` must be an integer scalar, got f32"),
    );
}

#[test]
fn load_mask_that_is_not_bool() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let x = b.tensor("x", DType::F32, 1);
            let zero = b.const_i32(0);
            let mask = b.arange(0, 16);
            b.load(x, vec![Index::Range { start: zero, len: 16 }], Some(mask), 0.0);
            b
        },
        verr("load", "mask must be bool, got i32"),
    );
}

#[test]
fn store_mask_that_is_not_bool() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let y = b.tensor_mut("y", DType::F32, 1);
            let zero = b.const_i32(0);
            let v = b.full(&[16], 1.0, DType::F32);
            let mask = b.full(&[16], 1.0, DType::F32);
            b.store(y, vec![Index::Range { start: zero, len: 16 }], v, Some(mask));
            b
        },
        verr("store", "mask must be bool, got f32"),
    );
}

#[test]
fn store_to_a_read_only_tensor() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let o = b.tensor("o", DType::F32, 1);
            let zero = b.const_i32(0);
            let v = b.full(&[16], 1.0, DType::F32);
            b.store(o, vec![Index::Range { start: zero, len: 16 }], v, None);
            b
        },
        verr("store", "tensor `o` is read-only; declare it writable"),
    );
}

#[test]
fn store_with_a_dtype_mismatch() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let o = b.tensor_mut("o", DType::BF16, 1);
            let zero = b.const_i32(0);
            let v = b.full(&[16], 1.0, DType::F32);
            b.store(o, vec![Index::Range { start: zero, len: 16 }], v, None);
            b
        },
        verr("store", "value is f32 but `o` holds bf16; cast first"),
    );
}

#[test]
fn store_of_a_tile_larger_than_the_addressed_block() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let o = b.tensor_mut("o", DType::F32, 1);
            let zero = b.const_i32(0);
            let v = b.full(&[32], 1.0, DType::F32);
            b.store(o, vec![Index::Range { start: zero, len: 16 }], v, None);
            b
        },
        verr("store", "value shape [32] does not fit the addressed shape [16]"),
    );
}

// ---- variables ---------------------------------------------------------------------------

#[test]
fn assign_to_a_value_that_is_not_mutable() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let x = b.full(&[16], 0.0, DType::F32);
            assert_eq!(x, ValueId(1));
            let y = b.full(&[16], 1.0, DType::F32);
            b.assign(x, y);
            b
        },
        verr("assign", "%1 is not a mutable variable"),
    );
}

#[test]
fn assign_that_changes_the_shape() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let init = b.full(&[16], 0.0, DType::F32);
            let acc = b.var(init, "acc");
            assert_eq!(acc, ValueId(2));
            let wider = b.full(&[32], 1.0, DType::F32);
            b.assign(acc, wider);
            b
        },
        verr("assign", "variable %2 is tile<f32, [16]> but the value is tile<f32, [32]>"),
    );
}

#[test]
fn assign_that_changes_the_dtype() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let init = b.const_f32(0.0);
            let m = b.var(init, "m");
            assert_eq!(m, ValueId(1));
            let x = b.const_i32(3);
            b.assign(m, x);
            b
        },
        verr("assign", "variable %1 is f32 but the value is i32"),
    );
}

#[test]
fn assign_to_the_loop_variable() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let zero = b.const_i32(0);
            let n = b.const_i32(8);
            b.for_range(zero, n, 1, "i", |b, i| {
                assert_eq!(i, ValueId(2));
                b.assign(i, zero);
            });
            b
        },
        verr("assign", "%2 is not a mutable variable"),
    );
}

// ---- scoping ------------------------------------------------------------------------------

#[test]
fn value_from_inside_a_loop_used_after_the_loop() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let zero = b.const_i32(0);
            let n = b.const_i32(8);
            let mut inner = None;
            b.for_range(zero, n, 1, "i", |b, i| {
                inner = Some(b.add(i, i));
            });
            let inner = inner.unwrap();
            assert_eq!(inner, ValueId(3));
            b.add(inner, zero);
            b
        },
        verr("add", "operand %3 is not defined here"),
    );
}

#[test]
fn loop_variable_used_after_the_loop() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let zero = b.const_i32(0);
            let n = b.const_i32(8);
            let mut var = None;
            b.for_range(zero, n, 1, "i", |_, i| var = Some(i));
            let y = b.tensor_mut("y", DType::I32, 1);
            b.store(y, vec![Index::At(zero)], var.unwrap(), None);
            b
        },
        verr("store", "operand %2 is not defined here"),
    );
}

#[test]
fn value_from_the_then_branch_used_in_the_else_branch() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let t = b.constant_of(1.0, DType::Bool);
            let inner = std::cell::Cell::new(None);
            b.if_else(
                t,
                |b| inner.set(Some(b.const_f32(2.0))),
                |b| {
                    let v = inner.get().unwrap();
                    assert_eq!(v, ValueId(1));
                    b.exp2(v);
                },
            );
            b
        },
        verr("exp2", "operand %1 is not defined here"),
    );
}

// ---- control flow ---------------------------------------------------------------------------

#[test]
fn if_on_an_integer_condition() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let c = b.const_i32(1);
            b.if_then(c, |b| b.ret());
            b
        },
        verr("if", "condition must be a bool scalar, got i32"),
    );
}

#[test]
fn if_on_a_bool_tile() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let offs = b.arange(0, 16);
            let lim = b.full(&[16], 8.0, DType::I32);
            let c = b.lt(offs, lim);
            b.if_then(c, |b| b.ret());
            b
        },
        verr("if", "condition must be a bool scalar, got tile<bool, [16]>"),
    );
}

#[test]
fn for_loop_with_tile_bounds() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let start = b.arange(0, 16);
            let end = b.const_i32(64);
            b.for_range(start, end, 1, "i", |_, _| {});
            b
        },
        verr("for", "loop bounds must be integer scalars, got tile<i32, [16]>"),
    );
}

#[test]
fn for_loop_with_a_float_bound() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let start = b.const_i32(0);
            let end = b.const_f32(64.0);
            b.for_range(start, end, 1, "i", |_, _| {});
            b
        },
        verr("for", "loop bounds must be integer scalars, got f32"),
    );
}

#[test]
fn for_loop_with_step_zero() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            let start = b.const_i32(0);
            let end = b.const_i32(64);
            b.for_range(start, end, 0, "i", |_, _| {});
            b
        },
        verr("for", "step must not be zero"),
    );
}

// ---- kernel-level checks ----------------------------------------------------------------------

#[test]
fn zero_warps() {
    assert_rejected(|| KernelBuilder::new("k", 0), verr("kernel", "num_warps = 0 must be in 1..=32"));
}

#[test]
fn too_many_warps() {
    assert_rejected(|| KernelBuilder::new("k", 33), verr("kernel", "num_warps = 33 must be in 1..=32"));
}

#[test]
fn duplicate_parameter_names() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            b.tensor("x", DType::F32, 1);
            b.tensor_mut("x", DType::F32, 1);
            b
        },
        verr("kernel", "parameter `x` is declared twice"),
    );
}

#[test]
fn duplicate_parameter_names_tensor_and_scalar() {
    assert_rejected(
        || {
            let mut b = KernelBuilder::new("k", 4);
            b.tensor("n", DType::F32, 1);
            b.scalar_arg("n", DType::I32);
            b
        },
        verr("kernel", "parameter `n` is declared twice"),
    );
}

// ---- hand-built kernels (ir::verify only) -----------------------------------------------------

/// A `Let` whose declared result type disagrees with what the op produces.
#[test]
fn declared_result_type_disagrees_with_the_op() {
    let k = kernel(vec![value(TileType::scalar(DType::F32), false)], vec![let1(0, const_i32())]);
    assert_eq!(ir::verify(&k), Err(verr("const", "result %0 is declared f32 but the op gives i32")));
}

/// The same value bound twice in one block.
#[test]
fn value_defined_twice() {
    let k = kernel(vec![i32_scalar()], vec![let1(0, const_i32()), let1(0, const_i32())]);
    assert_eq!(ir::verify(&k), Err(verr("const", "value %0 is defined twice")));
}

/// A value bound inside a loop body and bound again after the loop: values are SSA, so
/// the second definition is rejected even though the first one is out of scope.
#[test]
fn value_redefined_after_its_scope_closed() {
    let k = kernel(
        vec![i32_scalar(), i32_scalar(), i32_scalar(), i32_scalar()],
        vec![
            let1(0, const_i32()),
            let1(1, const_i32()),
            Stmt::For {
                var: ValueId(2),
                start: ValueId(0),
                end: ValueId(1),
                step: 1,
                body: vec![let1(3, const_i32())],
            },
            let1(3, const_i32()),
        ],
    );
    assert_eq!(ir::verify(&k), Err(verr("const", "value %3 is defined twice")));
}

/// Two loops sharing one loop variable.
#[test]
fn loop_variable_reused_by_a_second_loop() {
    let for_loop = || Stmt::For { var: ValueId(2), start: ValueId(0), end: ValueId(1), step: 1, body: vec![] };
    let k = kernel(
        vec![i32_scalar(), i32_scalar(), i32_scalar()],
        vec![let1(0, const_i32()), let1(1, const_i32()), for_loop(), for_loop()],
    );
    assert_eq!(ir::verify(&k), Err(verr("for", "value %2 is defined twice")));
}

/// A loop variable with no entry in the value table is an error, not a panic.
#[test]
fn loop_variable_without_type_information() {
    let k = kernel(
        vec![i32_scalar(), i32_scalar()],
        vec![
            let1(0, const_i32()),
            let1(1, const_i32()),
            Stmt::For { var: ValueId(9), start: ValueId(0), end: ValueId(1), step: 1, body: vec![] },
        ],
    );
    assert_eq!(ir::verify(&k), Err(verr("for", "value %9 has no type information")));
}

/// A loop variable declared with another type than i32.
#[test]
fn loop_variable_that_is_not_i32() {
    let k = kernel(
        vec![i32_scalar(), i32_scalar(), value(TileType::scalar(DType::I64), false)],
        vec![
            let1(0, const_i32()),
            let1(1, const_i32()),
            Stmt::For { var: ValueId(2), start: ValueId(0), end: ValueId(1), step: 1, body: vec![] },
        ],
    );
    assert_eq!(ir::verify(&k), Err(verr("for", "the loop variable must be an i32 scalar, got i64")));
}

/// Top-k has two results; neither may be a mutable variable (here the second one is).
#[test]
fn multi_result_op_binding_a_mutable_variable() {
    let k = kernel(
        vec![
            value(TileType::tile(DType::I32, &[16]), false),
            value(TileType::tile(DType::I32, &[4]), false),
            value(TileType::tile(DType::I32, &[4]), true),
        ],
        vec![
            let1(0, Op::Arange { start: 0, len: 16 }),
            Stmt::Let { results: vec![ValueId(1), ValueId(2)], op: Op::TopK { value: ValueId(0), k: 4, sorted: true } },
        ],
    );
    assert_eq!(ir::verify(&k), Err(verr("topk", "multi-result ops cannot bind mutable variables")));
}

/// A load's fill value for masked-off elements must be representable in an integer
/// tensor's dtype.
#[test]
fn load_fill_value_that_is_not_an_integer_for_an_integer_tensor() {
    let mut k = kernel(
        vec![i32_scalar(), value(TileType::tile(DType::I32, &[16]), false)],
        vec![
            let1(0, const_i32()),
            let1(
                1,
                Op::Load {
                    tensor: ParamId(0),
                    index: vec![Index::Range { start: ValueId(0), len: 16 }],
                    mask: None,
                    other: f64::NEG_INFINITY,
                },
            ),
        ],
    );
    k.params
        .push(Param { name: "ids".into(), kind: ParamKind::Tensor { dtype: DType::I32, rank: 1, writable: false } });
    assert_eq!(
        ir::verify(&k),
        Err(verr("load", "fill value -inf for masked-off elements is not an integer but `ids` holds i32"))
    );
}
