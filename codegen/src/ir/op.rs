//! Operations and statements of the tile IR.

use super::types::DType;

/// Identifier of an IR value (an SSA value or a mutable variable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

/// Identifier of a kernel parameter (index into [`super::Kernel::params`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(pub u32);

/// Element-wise binary operators. Operands broadcast with NumPy rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// Remainder (integers only).
    Rem,
    Max,
    Min,
    /// Bitwise/logical and (integers and bools).
    And,
    /// Bitwise/logical or (integers and bools).
    Or,
    /// Shift left (integers only).
    Shl,
    /// Shift right (integers only; arithmetic for signed types).
    Shr,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl BinaryOp {
    /// Comparisons produce `bool` tiles.
    pub fn is_comparison(self) -> bool {
        use BinaryOp::*;
        matches!(self, Lt | Le | Gt | Ge | Eq | Ne)
    }

    pub fn name(self) -> &'static str {
        use BinaryOp::*;
        match self {
            Add => "add",
            Sub => "sub",
            Mul => "mul",
            Div => "div",
            Rem => "rem",
            Max => "max",
            Min => "min",
            And => "and",
            Or => "or",
            Shl => "shl",
            Shr => "shr",
            Lt => "lt",
            Le => "le",
            Gt => "gt",
            Ge => "ge",
            Eq => "eq",
            Ne => "ne",
        }
    }
}

/// Element-wise unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    /// Logical not (bool) or bitwise not (integers).
    Not,
    Abs,
    Exp2,
    Log2,
    Exp,
    Sqrt,
    Rsqrt,
}

impl UnaryOp {
    /// Transcendental ops need a float operand.
    pub fn needs_float(self) -> bool {
        matches!(self, UnaryOp::Exp2 | UnaryOp::Log2 | UnaryOp::Exp | UnaryOp::Sqrt | UnaryOp::Rsqrt)
    }

    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Not => "not",
            UnaryOp::Abs => "abs",
            UnaryOp::Exp2 => "exp2",
            UnaryOp::Log2 => "log2",
            UnaryOp::Exp => "exp",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
        }
    }
}

/// Reductions along one axis of a tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
    /// Index (i32) of the largest element; ties go to the smallest index.
    Argmax,
}

impl ReduceOp {
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::Argmax => "argmax",
        }
    }
}

/// How one dimension of a global tensor is addressed by a tile load or store.
#[derive(Clone, Debug, PartialEq)]
pub enum Index {
    /// One position (scalar integer value): the dimension is dropped from the tile.
    At(ValueId),
    /// `len` consecutive positions starting at a scalar integer value: one tile axis.
    /// Positions at or past the tensor's runtime size are masked automatically.
    Range { start: ValueId, len: usize },
    /// Positions given by a 1-D integer tile (a gather/scatter): one tile axis.
    /// Indices outside `[0, size)` are masked automatically.
    Gather(ValueId),
}

/// Atomic read-modify-write operations on global memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AtomicOp {
    Add,
    Max,
}

/// A value-producing operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A compile-time constant scalar (integers are exact in `f64` up to 2^53).
    Const {
        value: f64,
        dtype: DType,
    },
    /// A runtime scalar kernel argument.
    Arg(ParamId),
    /// `blockIdx.{x,y,z}` as i32.
    ProgramId(u8),
    /// `gridDim.{x,y,z}` as i32.
    NumPrograms(u8),
    /// Runtime size of a tensor dimension, as i64.
    Dim {
        tensor: ParamId,
        axis: usize,
    },
    /// `[start, start + len)` as a 1-D i32 tile.
    Arange {
        start: i64,
        len: usize,
    },
    /// A tile of `shape` filled with a scalar value.
    Splat {
        value: ValueId,
        shape: Vec<usize>,
    },
    /// Broadcasts a tile to a larger shape (NumPy rules).
    Broadcast {
        value: ValueId,
        shape: Vec<usize>,
    },
    /// Inserts a unit axis at `axis`.
    ExpandDims {
        value: ValueId,
        axis: usize,
    },
    Unary {
        op: UnaryOp,
        value: ValueId,
    },
    Binary {
        op: BinaryOp,
        lhs: ValueId,
        rhs: ValueId,
    },
    /// Element-wise `cond ? on_true : on_false` (all broadcast together).
    Select {
        cond: ValueId,
        on_true: ValueId,
        on_false: ValueId,
    },
    Cast {
        value: ValueId,
        dtype: DType,
    },
    /// Reduction along `axis`; the axis is removed.
    Reduce {
        op: ReduceOp,
        value: ValueId,
        axis: usize,
    },
    /// Inclusive prefix sum along `axis` of a 1-D i32 or f32 tile (same type): element `i`
    /// is `x[0] + … + x[i]`, summed in index order (i32 wraps).
    CumSum {
        value: ValueId,
        axis: usize,
    },
    /// Tile matrix product with f32 accumulation: `[M,K] x [K,N]`, or `[M,K] x [N,K]^T`
    /// when `trans_b`. Operands must share a dtype.
    Dot {
        a: ValueId,
        b: ValueId,
        trans_b: bool,
    },
    /// The `k` largest elements along the last axis. Sorted: in descending order (ties:
    /// smaller index first). Unsorted: those greater than the k-th largest value first,
    /// then those equal to it, each group in index order (no sort pass: the selection
    /// only). Results: values (input dtype) and indices (i32), shape `[.., k]`.
    TopK {
        value: ValueId,
        k: usize,
        sorted: bool,
    },
    /// A tile from a global tensor; masked-off or out-of-bounds elements read `other`.
    Load {
        tensor: ParamId,
        index: Vec<Index>,
        mask: Option<ValueId>,
        other: f64,
    },
    /// A fresh copy of a value, used to start a mutable variable.
    Copy(ValueId),
}

/// A statement of a block.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// Binds the results of `op`. Most ops have one result; `TopK` has two.
    Let { results: Vec<ValueId>, op: Op },
    /// Overwrites a mutable variable with a value of the same type.
    Assign { var: ValueId, value: ValueId },
    /// Writes a tile into a global tensor; masked-off or out-of-bounds elements are skipped.
    Store { tensor: ParamId, index: Vec<Index>, value: ValueId, mask: Option<ValueId> },
    /// Atomic update of global memory at the addressed elements.
    Atomic { op: AtomicOp, tensor: ParamId, index: Vec<Index>, value: ValueId, mask: Option<ValueId> },
    /// `for var in (start..end).step_by(step)`; bounds are scalar integer values that may be
    /// runtime values. `var` is an i32 scalar visible in `body`.
    For { var: ValueId, start: ValueId, end: ValueId, step: i64, body: Vec<Stmt> },
    /// `if cond { then } else { otherwise }` on a scalar bool.
    If { cond: ValueId, then: Vec<Stmt>, otherwise: Vec<Stmt> },
    /// Ends this program instance early. Conditions are block-uniform, so every thread leaves.
    Return,
}

impl Op {
    /// Short name used in verifier messages and emitted comments.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Const { .. } => "const",
            Op::Arg(_) => "arg",
            Op::ProgramId(_) => "program_id",
            Op::NumPrograms(_) => "num_programs",
            Op::Dim { .. } => "dim",
            Op::Arange { .. } => "arange",
            Op::Splat { .. } => "splat",
            Op::Broadcast { .. } => "broadcast",
            Op::ExpandDims { .. } => "expand_dims",
            Op::Unary { op, .. } => op.name(),
            Op::Binary { op, .. } => op.name(),
            Op::Select { .. } => "select",
            Op::Cast { .. } => "cast",
            Op::Reduce { op, .. } => op.name(),
            Op::CumSum { .. } => "cumsum",
            Op::Dot { .. } => "dot",
            Op::TopK { .. } => "topk",
            Op::Load { .. } => "load",
            Op::Copy(_) => "copy",
        }
    }

    /// Values this op reads.
    pub fn operands(&self) -> Vec<ValueId> {
        match self {
            Op::Const { .. }
            | Op::Arg(_)
            | Op::ProgramId(_)
            | Op::NumPrograms(_)
            | Op::Dim { .. }
            | Op::Arange { .. } => vec![],
            Op::Splat { value, .. }
            | Op::Broadcast { value, .. }
            | Op::ExpandDims { value, .. }
            | Op::Unary { value, .. }
            | Op::Cast { value, .. }
            | Op::Reduce { value, .. }
            | Op::CumSum { value, .. }
            | Op::TopK { value, .. }
            | Op::Copy(value) => vec![*value],
            Op::Binary { lhs, rhs, .. } => vec![*lhs, *rhs],
            Op::Select { cond, on_true, on_false } => vec![*cond, *on_true, *on_false],
            Op::Dot { a, b, .. } => vec![*a, *b],
            Op::Load { index, mask, .. } => index_operands(index).chain(*mask).collect(),
        }
    }
}

/// Values referenced by a list of indices.
pub fn index_operands(index: &[Index]) -> impl Iterator<Item = ValueId> + '_ {
    index.iter().map(|i| match i {
        Index::At(v) | Index::Gather(v) => *v,
        Index::Range { start, .. } => *start,
    })
}
