//! Errors of the interpreter: bad arguments (checked before anything runs) and runtime
//! faults of a program instance.

use crate::ir::{DType, VerifyError};

/// Why [`super::run`] refused or stopped.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum InterpError {
    #[error("kernel does not verify: {0}")]
    Verify(#[from] VerifyError),
    #[error("`{kernel}` takes {expected} arguments, got {got}")]
    ArgCount { kernel: String, expected: usize, got: usize },
    #[error("argument `{param}`: expected {expected}, got {got}")]
    ArgKind { param: String, expected: &'static str, got: &'static str },
    #[error("argument `{param}`: expected dtype {expected}, got {got}")]
    ArgDType { param: String, expected: DType, got: DType },
    #[error("argument `{param}`: expected a rank-{expected} tensor, got shape {shape:?}")]
    ArgRank { param: String, expected: usize, shape: Vec<usize> },
    #[error("argument `{param}`: shape {shape:?} needs {expected} elements but the data holds {got}")]
    ArgData { param: String, shape: Vec<usize>, expected: usize, got: usize },
    #[error("grid {grid:?} has an empty dimension")]
    EmptyGrid { grid: [u32; 3] },
    #[error("grid {grid:?} does not fit in i32 program ids")]
    GridTooLarge { grid: [u32; 3] },
    #[error("integer division by zero in `{op}` (program {program:?})")]
    DivisionByZero { op: &'static str, program: [u32; 3] },
}

/// A fault raised by an op, before the program id is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    DivisionByZero(&'static str),
}

impl Fault {
    pub(crate) fn at(self, program: [u32; 3]) -> InterpError {
        match self {
            Fault::DivisionByZero(op) => InterpError::DivisionByZero { op, program },
        }
    }
}
