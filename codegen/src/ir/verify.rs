//! The verifier: type and shape rules of every op, scoping of values, mutability.
//!
//! [`infer`] computes the result types of one op (the builder uses it while a program is
//! built); [`verify`] walks a whole kernel. Errors name the op and the reason.

use std::collections::HashSet;
use std::fmt;

use super::kernel::{Kernel, ParamKind};
use super::op::{AtomicOp, BinaryOp, Index, Op, ReduceOp, Stmt, UnaryOp, ValueId};
use super::types::{broadcast_shapes, DType, TileType};

/// A rejected program: which op, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    /// The op or statement that is wrong (`dot`, `load`, `assign`, ...).
    pub op: String,
    pub reason: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.op, self.reason)
    }
}

impl std::error::Error for VerifyError {}

fn err<T>(op: &str, reason: impl Into<String>) -> Result<T, VerifyError> {
    Err(VerifyError { op: op.to_string(), reason: reason.into() })
}

/// Result types of `op`, given the types of the values defined so far.
pub fn infer(
    kernel_params: &[super::kernel::Param],
    types: &dyn Fn(ValueId) -> Option<TileType>,
    op: &Op,
) -> Result<Vec<TileType>, VerifyError> {
    let name = op.name();
    let ty = |v: ValueId| -> Result<TileType, VerifyError> {
        types(v).ok_or_else(|| VerifyError { op: name.into(), reason: format!("operand %{} is not defined here", v.0) })
    };
    let one = |t: TileType| Ok(vec![t]);
    match op {
        Op::Const { value, dtype } => {
            if dtype.is_int() && value.fract() != 0.0 {
                return err(name, format!("{value} is not an integer but the constant is {dtype}"));
            }
            one(TileType::scalar(*dtype))
        }
        Op::Arg(p) => match kernel_params.get(p.0 as usize).map(|p| &p.kind) {
            Some(ParamKind::Scalar { dtype }) => one(TileType::scalar(*dtype)),
            Some(ParamKind::Tensor { .. }) => {
                err(name, format!("parameter `{}` is a tensor, not a scalar", kernel_params[p.0 as usize].name))
            }
            None => err(name, format!("no parameter #{}", p.0)),
        },
        Op::ProgramId(axis) | Op::NumPrograms(axis) => {
            if *axis > 2 {
                return err(name, format!("grid axis {axis} does not exist (0, 1 or 2)"));
            }
            one(TileType::scalar(DType::I32))
        }
        Op::Dim { tensor, axis } => {
            let (_, rank, _) = tensor_param(kernel_params, name, *tensor)?;
            if *axis >= rank {
                return err(name, format!("axis {axis} out of range for a rank-{rank} tensor"));
            }
            one(TileType::scalar(DType::I64))
        }
        Op::Arange { len, .. } => {
            if *len == 0 {
                return err(name, "length must be at least 1");
            }
            one(TileType::tile(DType::I32, &[*len]))
        }
        Op::Splat { value, shape } => {
            let t = ty(*value)?;
            if !t.is_scalar() {
                return err(name, format!("splat takes a scalar, got {t}"));
            }
            check_shape(name, shape)?;
            one(TileType::tile(t.dtype, shape))
        }
        Op::Broadcast { value, shape } => {
            let t = ty(*value)?;
            check_shape(name, shape)?;
            match broadcast_shapes(&t.shape, shape) {
                Some(s) if &s == shape => one(TileType::tile(t.dtype, shape)),
                _ => err(name, format!("cannot broadcast {:?} to {:?}", t.shape, shape)),
            }
        }
        Op::ExpandDims { value, axis } => {
            let t = ty(*value)?;
            if *axis > t.rank() {
                return err(name, format!("axis {axis} out of range for rank {}", t.rank()));
            }
            let mut shape = t.shape.clone();
            shape.insert(*axis, 1);
            one(TileType::tile(t.dtype, &shape))
        }
        Op::Unary { op, value } => {
            let t = ty(*value)?;
            let ok = match op {
                o if o.needs_float() => t.dtype.is_float(),
                UnaryOp::Not => t.dtype.is_int() || t.dtype == DType::Bool,
                _ => t.dtype != DType::Bool,
            };
            if !ok {
                return err(name, format!("not defined for {}", t.dtype));
            }
            one(t)
        }
        Op::Binary { op, lhs, rhs } => {
            let (a, b) = (ty(*lhs)?, ty(*rhs)?);
            if a.dtype != b.dtype {
                return err(
                    name,
                    format!("operands have different dtypes ({} and {}); cast one first", a.dtype, b.dtype),
                );
            }
            let shape = broadcast_shapes(&a.shape, &b.shape).ok_or_else(|| VerifyError {
                op: name.into(),
                reason: format!("shapes {:?} and {:?} do not broadcast", a.shape, b.shape),
            })?;
            let d = a.dtype;
            let ok = match op {
                BinaryOp::Rem | BinaryOp::Shl | BinaryOp::Shr => d.is_int(),
                BinaryOp::And | BinaryOp::Or => d.is_int() || d == DType::Bool,
                BinaryOp::Eq | BinaryOp::Ne => true,
                _ => d != DType::Bool,
            };
            if !ok {
                return err(name, format!("not defined for {d}"));
            }
            let out = if op.is_comparison() { DType::Bool } else { d };
            one(TileType { dtype: out, shape })
        }
        Op::Select { cond, on_true, on_false } => {
            let (c, a, b) = (ty(*cond)?, ty(*on_true)?, ty(*on_false)?);
            if c.dtype != DType::Bool {
                return err(name, format!("condition must be bool, got {}", c.dtype));
            }
            if a.dtype != b.dtype {
                return err(name, format!("branches have different dtypes ({} and {})", a.dtype, b.dtype));
            }
            let shape =
                broadcast_shapes(&a.shape, &b.shape).and_then(|s| broadcast_shapes(&s, &c.shape)).ok_or_else(|| {
                    VerifyError {
                        op: name.into(),
                        reason: format!("shapes {:?}, {:?} and {:?} do not broadcast", c.shape, a.shape, b.shape),
                    }
                })?;
            one(TileType { dtype: a.dtype, shape })
        }
        Op::Cast { value, dtype } => one(ty(*value)?.with_dtype(*dtype)),
        Op::Reduce { op, value, axis } => {
            let t = ty(*value)?;
            if t.is_scalar() {
                return err(name, "cannot reduce a scalar");
            }
            if *axis >= t.rank() {
                return err(name, format!("axis {axis} out of range for rank {}", t.rank()));
            }
            if t.dtype == DType::Bool {
                return err(name, "not defined for bool; cast to i32 first");
            }
            let mut shape = t.shape.clone();
            shape.remove(*axis);
            let dtype = if *op == ReduceOp::Argmax { DType::I32 } else { t.dtype };
            one(TileType { dtype, shape })
        }
        Op::CumSum { value, axis } => {
            let t = ty(*value)?;
            if t.rank() != 1 || *axis != 0 {
                return err(name, format!("takes a 1-D tile and axis 0, got {t} and axis {axis}"));
            }
            if !matches!(t.dtype, DType::I32 | DType::F32) {
                return err(name, format!("sums i32 or f32 tiles, got {}; cast first", t.dtype));
            }
            one(t.clone())
        }
        Op::Dot { a, b, trans_b } => {
            let (ta, tb) = (ty(*a)?, ty(*b)?);
            if ta.rank() != 2 || tb.rank() != 2 {
                return err(name, format!("operands must be 2-D tiles, got {ta} and {tb}"));
            }
            if ta.dtype != tb.dtype {
                return err(
                    name,
                    format!("operands have different dtypes ({} and {}); cast one first", ta.dtype, tb.dtype),
                );
            }
            if !ta.dtype.is_float() {
                return err(name, format!("operands must be f16, bf16 or f32, got {}", ta.dtype));
            }
            let (m, k) = (ta.shape[0], ta.shape[1]);
            let (kb, n) = if *trans_b { (tb.shape[1], tb.shape[0]) } else { (tb.shape[0], tb.shape[1]) };
            if k != kb {
                let t = if *trans_b { "^T" } else { "" };
                return err(name, format!("inner dimensions differ: a is {:?} and b{t} is [{kb}, {n}]", ta.shape));
            }
            one(TileType::tile(DType::F32, &[m, n]))
        }
        Op::TopK { value, k, .. } => {
            let t = ty(*value)?;
            if t.rank() != 1 && t.rank() != 2 {
                return err(name, format!("takes a 1-D or 2-D tile, got {t}"));
            }
            let last = *t.shape.last().unwrap();
            if *k == 0 || *k > last {
                return err(name, format!("k = {k} must be in 1..={last}"));
            }
            if t.dtype == DType::Bool {
                return err(name, "not defined for bool");
            }
            let mut shape = t.shape.clone();
            *shape.last_mut().unwrap() = *k;
            Ok(vec![TileType::tile(t.dtype, &shape), TileType::tile(DType::I32, &shape)])
        }
        Op::Load { tensor, index, mask, other } => {
            let (dtype, _, _) = tensor_param(kernel_params, name, *tensor)?;
            let shape = index_shape(kernel_params, name, *tensor, index, &ty)?;
            if dtype.is_int() && other.fract() != 0.0 {
                let pname = &kernel_params[tensor.0 as usize].name;
                return err(
                    name,
                    format!("fill value {other} for masked-off elements is not an integer but `{pname}` holds {dtype}"),
                );
            }
            if let Some(m) = mask {
                check_mask(name, &ty(*m)?, &shape)?;
            }
            one(TileType { dtype, shape })
        }
        Op::Copy(v) => one(ty(*v)?),
    }
}

fn check_shape(name: &str, shape: &[usize]) -> Result<(), VerifyError> {
    if shape.contains(&0) {
        return err(name, format!("shape {shape:?} has an empty dimension"));
    }
    Ok(())
}

fn check_mask(name: &str, mask: &TileType, shape: &[usize]) -> Result<(), VerifyError> {
    if mask.dtype != DType::Bool {
        return err(name, format!("mask must be bool, got {}", mask.dtype));
    }
    match broadcast_shapes(&mask.shape, shape) {
        Some(s) if s == shape => Ok(()),
        _ => err(name, format!("mask shape {:?} does not broadcast to the tile shape {:?}", mask.shape, shape)),
    }
}

fn tensor_param(
    params: &[super::kernel::Param],
    name: &str,
    p: super::op::ParamId,
) -> Result<(DType, usize, bool), VerifyError> {
    match params.get(p.0 as usize) {
        Some(super::kernel::Param { kind: ParamKind::Tensor { dtype, rank, writable }, .. }) => {
            Ok((*dtype, *rank, *writable))
        }
        Some(p) => err(name, format!("parameter `{}` is a scalar, not a tensor", p.name)),
        None => err(name, format!("no parameter #{}", p.0)),
    }
}

/// Shape of the tile addressed by `index` in `tensor`.
fn index_shape(
    params: &[super::kernel::Param],
    name: &str,
    tensor: super::op::ParamId,
    index: &[Index],
    ty: &dyn Fn(ValueId) -> Result<TileType, VerifyError>,
) -> Result<Vec<usize>, VerifyError> {
    let (_, rank, _) = tensor_param(params, name, tensor)?;
    let pname = &params[tensor.0 as usize].name;
    if index.len() != rank {
        return err(name, format!("`{pname}` has rank {rank} but {} indices were given", index.len()));
    }
    let mut shape = Vec::new();
    for (axis, i) in index.iter().enumerate() {
        match i {
            Index::At(v) | Index::Range { start: v, .. } => {
                let t = ty(*v)?;
                if !t.is_scalar() || !t.dtype.is_int() {
                    return err(name, format!("index of axis {axis} of `{pname}` must be an integer scalar, got {t}"));
                }
                if let Index::Range { len, .. } = i {
                    if *len == 0 {
                        return err(name, format!("range on axis {axis} of `{pname}` is empty"));
                    }
                    shape.push(*len);
                }
            }
            Index::Gather(v) => {
                let t = ty(*v)?;
                if t.rank() != 1 || !t.dtype.is_int() {
                    return err(
                        name,
                        format!("gather indices on axis {axis} of `{pname}` must be a 1-D integer tile, got {t}"),
                    );
                }
                shape.push(t.shape[0]);
            }
        }
    }
    Ok(shape)
}

/// Checks a whole kernel.
pub fn verify(k: &Kernel) -> Result<(), VerifyError> {
    if k.num_warps == 0 || k.num_warps > 32 {
        return err("kernel", format!("num_warps = {} must be in 1..=32", k.num_warps));
    }
    let mut seen = HashSet::new();
    for p in &k.params {
        if !seen.insert(p.name.as_str()) {
            return err("kernel", format!("parameter `{}` is declared twice", p.name));
        }
        if let ParamKind::Tensor { rank, dtype, .. } = p.kind {
            if rank == 0 || rank > 6 {
                return err("kernel", format!("tensor `{}` has rank {rank}; ranks 1..=6 are supported", p.name));
            }
            if dtype == DType::Bool {
                return err("kernel", format!("tensor `{}` is bool; store masks as i32 or u32", p.name));
            }
        }
    }
    let mut v = Verifier {
        k,
        defined: vec![false; k.values.len()],
        seen: vec![false; k.values.len()],
        scopes: vec![Vec::new()],
    };
    v.block(&k.body)
}

struct Verifier<'a> {
    k: &'a Kernel,
    defined: Vec<bool>,
    /// Values defined anywhere so far, in scope or not: every value has one definition.
    seen: Vec<bool>,
    scopes: Vec<Vec<ValueId>>,
}

impl Verifier<'_> {
    fn define(&mut self, stmt: &str, id: ValueId) -> Result<(), VerifyError> {
        let i = id.0 as usize;
        if i >= self.defined.len() {
            return err(stmt, format!("value %{} has no type information", id.0));
        }
        if self.seen[i] {
            return err(stmt, format!("value %{} is defined twice", id.0));
        }
        self.seen[i] = true;
        self.defined[i] = true;
        self.scopes.last_mut().unwrap().push(id);
        Ok(())
    }

    fn ty(&self, v: ValueId) -> Option<TileType> {
        self.defined.get(v.0 as usize).copied().unwrap_or(false).then(|| self.k.ty(v).clone())
    }

    fn use_(&self, stmt: &str, v: ValueId) -> Result<TileType, VerifyError> {
        self.ty(v)
            .ok_or_else(|| VerifyError { op: stmt.into(), reason: format!("operand %{} is not defined here", v.0) })
    }

    fn block(&mut self, body: &[Stmt]) -> Result<(), VerifyError> {
        self.scopes.push(Vec::new());
        for s in body {
            self.stmt(s)?;
        }
        for id in self.scopes.pop().unwrap() {
            self.defined[id.0 as usize] = false;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), VerifyError> {
        match s {
            Stmt::Let { results, op } => {
                let tys = infer(&self.k.params, &|v| self.ty(v), op)?;
                if tys.len() != results.len() {
                    return err(op.name(), format!("produces {} results but {} are bound", tys.len(), results.len()));
                }
                for (r, t) in results.iter().zip(&tys) {
                    self.define(op.name(), *r)?;
                    if self.k.ty(*r) != t {
                        return err(
                            op.name(),
                            format!("result %{} is declared {} but the op gives {t}", r.0, self.k.ty(*r)),
                        );
                    }
                }
                if results.len() > 1 && results.iter().any(|r| self.k.value(*r).mutable) {
                    return err(op.name(), "multi-result ops cannot bind mutable variables");
                }
                Ok(())
            }
            Stmt::Assign { var, value } => {
                let tv = self.use_("assign", *var)?;
                let tx = self.use_("assign", *value)?;
                if !self.k.value(*var).mutable {
                    return err("assign", format!("%{} is not a mutable variable", var.0));
                }
                if tv != tx {
                    return err("assign", format!("variable %{} is {tv} but the value is {tx}", var.0));
                }
                Ok(())
            }
            Stmt::Store { tensor, index, value, mask } | Stmt::Atomic { tensor, index, value, mask, .. } => {
                let name = if matches!(s, Stmt::Store { .. }) { "store" } else { "atomic" };
                let (dtype, _, writable) = tensor_param(&self.k.params, name, *tensor)?;
                let pname = &self.k.param(*tensor).name;
                if !writable {
                    return err(name, format!("tensor `{pname}` is read-only; declare it writable"));
                }
                let ty = |v: ValueId| self.use_(name, v);
                let shape = index_shape(&self.k.params, name, *tensor, index, &ty)?;
                let tv = self.use_(name, *value)?;
                if tv.dtype != dtype {
                    return err(name, format!("value is {} but `{pname}` holds {dtype}; cast first", tv.dtype));
                }
                match broadcast_shapes(&tv.shape, &shape) {
                    Some(s) if s == shape => {}
                    _ => {
                        return err(
                            name,
                            format!("value shape {:?} does not fit the addressed shape {:?}", tv.shape, shape),
                        )
                    }
                }
                if let Some(m) = mask {
                    check_mask(name, &self.use_(name, *m)?, &shape)?;
                }
                if let Stmt::Atomic { op, .. } = s {
                    let ok = match op {
                        AtomicOp::Add => matches!(dtype, DType::F32 | DType::I32 | DType::U32),
                        AtomicOp::Max => matches!(dtype, DType::I32 | DType::U32),
                    };
                    if !ok {
                        return err(name, format!("{op:?} is not supported on {dtype} tensors"));
                    }
                }
                Ok(())
            }
            Stmt::For { var, start, end, step, body } => {
                for b in [start, end] {
                    let t = self.use_("for", *b)?;
                    if !t.is_scalar() || !t.dtype.is_int() {
                        return err("for", format!("loop bounds must be integer scalars, got {t}"));
                    }
                }
                if *step == 0 {
                    return err("for", "step must not be zero");
                }
                self.scopes.push(Vec::new());
                self.define("for", *var)?;
                let tvar = self.k.ty(*var);
                if *tvar != TileType::scalar(DType::I32) {
                    return err("for", format!("the loop variable must be an i32 scalar, got {tvar}"));
                }
                self.block(body)?;
                self.defined[var.0 as usize] = false;
                self.scopes.pop();
                Ok(())
            }
            Stmt::If { cond, then, otherwise } => {
                let t = self.use_("if", *cond)?;
                if t != TileType::scalar(DType::Bool) {
                    return err("if", format!("condition must be a bool scalar, got {t}"));
                }
                self.block(then)?;
                self.block(otherwise)
            }
            Stmt::Return => Ok(()),
        }
    }
}
