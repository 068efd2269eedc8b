//! The CPU interpreter: the executable specification of the tile IR.
//!
//! [`run`] executes every program instance of a launch sequentially (`blockIdx.x`
//! fastest, then y, then z). A tile is a dense row-major array; a scalar is a rank-0 tile.
//! The GPU emitter must produce the same results, so the rules below are normative:
//!
//! - **Floats.** f32 ops compute in f32. f16/bf16 ops convert their operands to f32,
//!   compute in f32 and round the result to the dtype (round-to-nearest-even), like CUDA's
//!   `__half`/`__nv_bfloat16` arithmetic. `Max`/`Min` follow `fmaxf`/`fminf` (a NaN operand
//!   gives the other operand). `Exp2`, `Log2`, `Exp`, `Sqrt` use the f32 functions;
//!   `Rsqrt` is `1 / sqrt(x)`.
//! - **Integers** wrap (two's complement) in their width. `Div`/`Rem` by zero is an error
//!   ([`InterpError::DivisionByZero`]); `i32::MIN / -1` wraps to `i32::MIN`. Shift amounts
//!   are taken modulo the bit width; `Shr` is arithmetic for signed types. Comparisons
//!   give bool.
//! - **Cast**: float → integer truncates toward zero and saturates, NaN → 0 (Rust `as`);
//!   integer → integer wraps; number → bool is `!= 0`; bool → number is 0/1; to f16/bf16
//!   rounds to nearest even.
//! - **Reduce**: sums accumulate in f32 in index order (then round, for f16/bf16) or wrap
//!   for integers; `Max`/`Min` ignore NaN unless all are NaN; `Argmax` is i32, ties go to
//!   the smallest index, NaN never wins (0 when every element is NaN).
//! - **Dot**: operands converted to f32, products accumulated in f32 in k order (multiply
//!   then add); the result is f32 `[M, N]`.
//! - **TopK** along the last axis: values descending, ties to the smaller index first, NaN
//!   ranks below every number; indices are i32.
//! - **Load/Store/Atomic**: `At(v)` fixes a dimension, `Range { start, len }` covers
//!   `start..start + len` on one tile axis, `Gather(t)` uses the integer values of `t`. An
//!   element is masked when any of its per-dimension positions is outside `[0, size)` of
//!   the tensor, or when the (broadcast) mask is false. Masked loads read `other` (converted
//!   to the dtype like a cast from f64); masked stores and atomics are skipped. Stored values
//!   broadcast to the addressed shape. When a store addresses one element several times,
//!   the last in row-major tile order wins; atomics apply every update in that order.
//! - **Control flow**: `For` runs an i32 variable from `start` while `var < end` (step > 0)
//!   or `var > end` (step < 0), with bounds read once at entry; it also stops if the
//!   variable would overflow i32. `If` branches on a bool scalar; `Return` ends the
//!   program instance. `Assign` overwrites a mutable variable; `Copy` copies.
//! - `ProgramId`/`NumPrograms` are `blockIdx`/`gridDim` as i32; `Dim` is the runtime size
//!   as i64.
//!
//! The kernel is verified and every argument is checked before any instance runs.

mod elementwise;
mod error;
mod exec;
mod memory;
mod tile_ops;
mod value;

#[cfg(test)]
mod tests;

pub use error::InterpError;

use crate::host::{HostTensor, ScalarValue};
use crate::ir::{verify, Kernel};

/// One kernel argument, in parameter order.
#[derive(Debug)]
pub enum Arg<'a> {
    /// A tensor the kernel only reads.
    In(&'a HostTensor),
    /// A tensor the kernel may write (required for writable parameters; also accepted for
    /// read-only ones).
    Out(&'a mut HostTensor),
    /// A runtime scalar; its dtype must equal the parameter's.
    Scalar(ScalarValue),
}

/// Runs `kernel` over `grid` on the CPU, writing into the `Out` tensors.
pub fn run(kernel: &Kernel, grid: [u32; 3], args: &mut [Arg<'_>]) -> Result<(), InterpError> {
    verify(kernel)?;
    let slots = memory::bind(kernel, args)?;
    if grid.contains(&0) {
        return Err(InterpError::EmptyGrid { grid });
    }
    if grid.iter().any(|&g| g > i32::MAX as u32) {
        return Err(InterpError::GridTooLarge { grid });
    }
    let mut m = exec::Machine::new(kernel, slots, grid);
    for z in 0..grid[2] {
        for y in 0..grid[1] {
            for x in 0..grid[0] {
                m.run_program([x, y, z])?;
            }
        }
    }
    Ok(())
}
