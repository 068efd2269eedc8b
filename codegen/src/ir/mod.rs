//! The tile IR: one GPU program instance (a CUDA block) as a typed statement tree.
//!
//! Values are tiles with compile-time shapes (a scalar is a rank-0 tile). Global memory
//! is reached only through structured loads and stores on tensor parameters, whose
//! sizes and strides are runtime values; out-of-bounds elements are masked by
//! construction, so a tile may overhang the end of a sequence.

mod builder;
mod kernel;
mod op;
mod types;
mod verify;

pub use builder::KernelBuilder;
pub use kernel::{Kernel, Param, ParamKind, ValueInfo};
pub use op::{index_operands, AtomicOp, BinaryOp, Index, Op, ParamId, ReduceOp, Stmt, UnaryOp, ValueId};
pub use types::{broadcast_shapes, DType, TileType};
pub use verify::{infer, verify, VerifyError};
