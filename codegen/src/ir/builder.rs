//! A programmatic builder for tile programs.
//!
//! The `#[kernel]` macro generates calls to this builder; hand-written programs (tests,
//! samples) use it directly. Type errors are recorded at the first offending op and
//! returned by [`KernelBuilder::finish`], which also runs the full verifier.

use super::kernel::{Kernel, Param, ParamKind, ValueInfo};
use super::op::{AtomicOp, BinaryOp, Index, Op, ParamId, ReduceOp, Stmt, UnaryOp, ValueId};
use super::types::{DType, TileType};
use super::verify::{infer, verify, VerifyError};

/// Builds one [`Kernel`].
pub struct KernelBuilder {
    kernel: Kernel,
    /// Open blocks: the innermost is last.
    blocks: Vec<Vec<Stmt>>,
    error: Option<VerifyError>,
}

impl KernelBuilder {
    /// A new kernel with `num_warps` warps per program instance.
    pub fn new(name: &str, num_warps: u32) -> Self {
        KernelBuilder {
            kernel: Kernel {
                name: name.to_string(),
                params: Vec::new(),
                values: Vec::new(),
                body: Vec::new(),
                num_warps,
                min_blocks_per_sm: 0,
                pipeline_stages: 2,
                constants: Vec::new(),
            },
            blocks: vec![Vec::new()],
            error: None,
        }
    }

    /// Records a compile-time parameter value (for naming, hashing and the emitted header).
    pub fn constant(&mut self, name: &str, value: i64) {
        self.kernel.constants.push((name.to_string(), value));
    }

    /// Asks for `n` program instances per SM (see [`Kernel::min_blocks_per_sm`]).
    pub fn min_blocks_per_sm(&mut self, n: u32) {
        self.kernel.min_blocks_per_sm = n;
    }

    /// Buffers per pipelined staged load (see [`Kernel::pipeline_stages`]; 2 to 4).
    pub fn pipeline_stages(&mut self, n: u32) {
        self.kernel.pipeline_stages = n.clamp(2, 4);
    }

    /// Declares a read-only global tensor parameter.
    pub fn tensor(&mut self, name: &str, dtype: DType, rank: usize) -> ParamId {
        self.param(name, ParamKind::Tensor { dtype, rank, writable: false })
    }

    /// Declares a global tensor parameter the kernel writes.
    pub fn tensor_mut(&mut self, name: &str, dtype: DType, rank: usize) -> ParamId {
        self.param(name, ParamKind::Tensor { dtype, rank, writable: true })
    }

    /// Declares a runtime scalar parameter and returns its value.
    pub fn scalar_arg(&mut self, name: &str, dtype: DType) -> ValueId {
        let p = self.param(name, ParamKind::Scalar { dtype });
        let v = self.op(Op::Arg(p));
        self.name(v, name);
        v
    }

    fn param(&mut self, name: &str, kind: ParamKind) -> ParamId {
        self.kernel.params.push(Param { name: name.to_string(), kind });
        ParamId(self.kernel.params.len() as u32 - 1)
    }

    /// Gives a value a readable name in the emitted source.
    pub fn name(&mut self, v: ValueId, name: &str) -> ValueId {
        if let Some(info) = self.kernel.values.get_mut(v.0 as usize) {
            info.name = Some(name.to_string());
        }
        v
    }

    /// Type of a value.
    pub fn ty(&self, v: ValueId) -> &TileType {
        self.kernel.ty(v)
    }

    fn new_value(&mut self, ty: TileType) -> ValueId {
        self.kernel.values.push(ValueInfo { ty, name: None, mutable: false });
        ValueId(self.kernel.values.len() as u32 - 1)
    }

    fn push(&mut self, s: Stmt) {
        self.blocks.last_mut().unwrap().push(s);
    }

    /// Appends an op and returns all of its results.
    pub fn op_multi(&mut self, op: Op) -> Vec<ValueId> {
        let types = &self.kernel.values;
        let tys = match infer(&self.kernel.params, &|v| types.get(v.0 as usize).map(|i| i.ty.clone()), &op) {
            Ok(t) => t,
            Err(e) => {
                self.error.get_or_insert(e);
                vec![TileType::scalar(DType::I32)]
            }
        };
        let results: Vec<ValueId> = tys.into_iter().map(|t| self.new_value(t)).collect();
        self.push(Stmt::Let { results: results.clone(), op });
        results
    }

    /// Appends a single-result op.
    pub fn op(&mut self, op: Op) -> ValueId {
        self.op_multi(op)[0]
    }

    // ---- scalars and indices -------------------------------------------------------

    pub fn const_f32(&mut self, x: f32) -> ValueId {
        self.op(Op::Const { value: x as f64, dtype: DType::F32 })
    }
    pub fn const_i32(&mut self, x: i32) -> ValueId {
        self.op(Op::Const { value: x as f64, dtype: DType::I32 })
    }
    pub fn const_i64(&mut self, x: i64) -> ValueId {
        self.op(Op::Const { value: x as f64, dtype: DType::I64 })
    }
    pub fn constant_of(&mut self, x: f64, dtype: DType) -> ValueId {
        self.op(Op::Const { value: x, dtype })
    }
    pub fn program_id(&mut self, axis: u8) -> ValueId {
        self.op(Op::ProgramId(axis))
    }
    pub fn num_programs(&mut self, axis: u8) -> ValueId {
        self.op(Op::NumPrograms(axis))
    }
    /// Runtime size of `axis` of a tensor (i64).
    pub fn dim(&mut self, tensor: ParamId, axis: usize) -> ValueId {
        self.op(Op::Dim { tensor, axis })
    }
    pub fn arange(&mut self, start: i64, len: usize) -> ValueId {
        self.op(Op::Arange { start, len })
    }
    pub fn splat(&mut self, value: ValueId, shape: &[usize]) -> ValueId {
        self.op(Op::Splat { value, shape: shape.to_vec() })
    }
    /// A tile filled with a constant.
    pub fn full(&mut self, shape: &[usize], x: f64, dtype: DType) -> ValueId {
        let c = self.constant_of(x, dtype);
        self.splat(c, shape)
    }
    pub fn broadcast(&mut self, value: ValueId, shape: &[usize]) -> ValueId {
        self.op(Op::Broadcast { value, shape: shape.to_vec() })
    }
    pub fn expand_dims(&mut self, value: ValueId, axis: usize) -> ValueId {
        self.op(Op::ExpandDims { value, axis })
    }

    // ---- element-wise ----------------------------------------------------------------

    pub fn binary(&mut self, op: BinaryOp, lhs: ValueId, rhs: ValueId) -> ValueId {
        self.op(Op::Binary { op, lhs, rhs })
    }
    pub fn add(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinaryOp::Add, a, b)
    }
    pub fn sub(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinaryOp::Sub, a, b)
    }
    pub fn mul(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinaryOp::Mul, a, b)
    }
    pub fn div(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinaryOp::Div, a, b)
    }
    pub fn max(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinaryOp::Max, a, b)
    }
    pub fn min(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinaryOp::Min, a, b)
    }
    pub fn lt(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinaryOp::Lt, a, b)
    }
    pub fn unary(&mut self, op: UnaryOp, value: ValueId) -> ValueId {
        self.op(Op::Unary { op, value })
    }
    pub fn exp2(&mut self, v: ValueId) -> ValueId {
        self.unary(UnaryOp::Exp2, v)
    }
    pub fn select(&mut self, cond: ValueId, on_true: ValueId, on_false: ValueId) -> ValueId {
        self.op(Op::Select { cond, on_true, on_false })
    }
    pub fn cast(&mut self, value: ValueId, dtype: DType) -> ValueId {
        self.op(Op::Cast { value, dtype })
    }

    // ---- tile-wide ---------------------------------------------------------------------

    pub fn reduce(&mut self, op: ReduceOp, value: ValueId, axis: usize) -> ValueId {
        self.op(Op::Reduce { op, value, axis })
    }

    /// Inclusive prefix sum of a 1-D tile along `axis` (0).
    pub fn cumsum(&mut self, value: ValueId, axis: usize) -> ValueId {
        self.op(Op::CumSum { value, axis })
    }
    pub fn dot(&mut self, a: ValueId, b: ValueId, trans_b: bool) -> ValueId {
        self.op(Op::Dot { a, b, trans_b })
    }
    /// Top-k along the last axis: (values, indices).
    pub fn topk(&mut self, value: ValueId, k: usize) -> (ValueId, ValueId) {
        self.topk_with(value, k, true)
    }

    /// [`Self::topk`], sorted or not (see [`Op::TopK`]).
    pub fn topk_with(&mut self, value: ValueId, k: usize, sorted: bool) -> (ValueId, ValueId) {
        let r = self.op_multi(Op::TopK { value, k, sorted });
        (r[0], *r.get(1).unwrap_or(&r[0]))
    }

    // ---- memory ------------------------------------------------------------------------

    pub fn load(&mut self, tensor: ParamId, index: Vec<Index>, mask: Option<ValueId>, other: f64) -> ValueId {
        self.op(Op::Load { tensor, index, mask, other })
    }
    pub fn store(&mut self, tensor: ParamId, index: Vec<Index>, value: ValueId, mask: Option<ValueId>) {
        self.push(Stmt::Store { tensor, index, value, mask });
    }
    pub fn atomic(&mut self, op: AtomicOp, tensor: ParamId, index: Vec<Index>, value: ValueId, mask: Option<ValueId>) {
        self.push(Stmt::Atomic { op, tensor, index, value, mask });
    }

    // ---- variables and control flow ------------------------------------------------------

    /// A mutable variable initialised with a copy of `init`.
    pub fn var(&mut self, init: ValueId, name: &str) -> ValueId {
        let v = self.op(Op::Copy(init));
        self.kernel.values[v.0 as usize].mutable = true;
        self.name(v, name)
    }
    pub fn assign(&mut self, var: ValueId, value: ValueId) {
        self.push(Stmt::Assign { var, value });
    }

    /// `for i in (start..end).step_by(step) { body(i) }`.
    pub fn for_range(
        &mut self,
        start: ValueId,
        end: ValueId,
        step: i64,
        name: &str,
        body: impl FnOnce(&mut Self, ValueId),
    ) {
        let var = self.new_value(TileType::scalar(DType::I32));
        self.name(var, name);
        self.blocks.push(Vec::new());
        body(self, var);
        let body = self.blocks.pop().unwrap();
        self.push(Stmt::For { var, start, end, step, body });
    }

    pub fn if_then(&mut self, cond: ValueId, then: impl FnOnce(&mut Self)) {
        self.if_else(cond, then, |_| {});
    }

    pub fn if_else(&mut self, cond: ValueId, then: impl FnOnce(&mut Self), otherwise: impl FnOnce(&mut Self)) {
        self.blocks.push(Vec::new());
        then(self);
        let then = self.blocks.pop().unwrap();
        self.blocks.push(Vec::new());
        otherwise(self);
        let otherwise = self.blocks.pop().unwrap();
        self.push(Stmt::If { cond, then, otherwise });
    }

    pub fn ret(&mut self) {
        self.push(Stmt::Return);
    }

    /// Finishes the kernel and verifies it.
    pub fn finish(mut self) -> Result<Kernel, VerifyError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        assert_eq!(self.blocks.len(), 1, "unbalanced blocks");
        self.kernel.body = self.blocks.pop().unwrap();
        verify(&self.kernel)?;
        Ok(self.kernel)
    }

    /// Finishes without verifying (for tests of the verifier itself).
    pub fn finish_unchecked(mut self) -> Kernel {
        self.kernel.body = self.blocks.pop().unwrap();
        self.kernel
    }
}
