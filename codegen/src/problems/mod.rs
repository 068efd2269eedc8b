//! Sample problems: random inputs, launch grids and f64 references for the sample
//! programs, shared by the interpreter tests, the GPU checks and `tessera check`.
//!
//! A [`Problem`] owns every tensor it touches ([`Problem::tensors`]) and runs as one or
//! more [`Launch`]es that name those tensors by index, so a multi-kernel pipeline
//! (flash-decode split + combine) shares its intermediates without copies: run the
//! launches in order, then [`Problem::check`] compares the output tensors with the
//! reference. Outputs and intermediates start poisoned (NaN, or `i32::MIN` for integers)
//! so an element a kernel forgets to write fails the check.
//!
//! This module is GPU-agnostic: a GPU runner uploads [`Problem::tensors`], launches
//! [`Problem::launches`] (kernels from [`Problem::kernels`]), downloads the tensors whose
//! role is [`Role::Output`] back into `tensors`, and calls [`Problem::check`].

mod build;
mod compare;
pub mod reference;
mod suites;

pub use build::{flash_decode, gather_rows, matmul, prefix_sum, row_softmax, topk, vector_add, FlashDecodeSize};
pub use compare::{CheckReport, OutputCheck};
pub use suites::{gpu_suite, problems_for, small_suite, Suite};

use crate::host::{HostTensor, ScalarValue};
use crate::interp::{self, Arg, InterpError};
use crate::ir::{DType, Kernel, VerifyError};
use crate::samples::{self, Config};

/// What a problem does with one of its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Read by the kernels; random data.
    Input,
    /// Written by the kernels and checked against the reference.
    Output,
    /// Written by one launch and read by a later one (not checked directly).
    Scratch,
}

/// One tensor of a problem.
#[derive(Clone, Debug)]
pub struct ProblemTensor {
    /// The kernel parameter name it is passed as (first launch that uses it).
    pub name: &'static str,
    pub tensor: HostTensor,
    pub role: Role,
}

/// One kernel argument of a launch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LaunchArg {
    /// `Problem::tensors[tensor]`; `writes` when this launch writes it (a writable parameter).
    Tensor {
        tensor: usize,
        writes: bool,
    },
    Scalar(ScalarValue),
}

/// One kernel launch: a sample program specialised by `config`, over `grid`, with its
/// arguments in kernel parameter order.
#[derive(Clone, Debug)]
pub struct Launch {
    pub sample: &'static str,
    pub config: Config,
    pub grid: [u32; 3],
    pub args: Vec<LaunchArg>,
}

/// Which reference an output is checked against, and the sizes it needs.
#[derive(Clone, Debug)]
pub(crate) enum Reference {
    VectorAdd,
    RowSoftmax { rows: usize, cols: usize },
    Matmul { m: usize, n: usize, k: usize },
    GatherRows { rows: usize, d: usize },
    TopK { rows: usize, n: usize, k: usize, sorted: bool },
    PrefixSum { rows: usize, n: usize },
    FlashDecode { size: FlashDecodeSize },
}

/// A sample problem: tensors, launches and the reference to check against.
#[derive(Clone, Debug)]
pub struct Problem {
    /// The sample it exercises (for a pipeline, the first launch's sample).
    pub sample: &'static str,
    /// A readable description with the sizes, e.g. `matmul M=70 N=50 K=40`.
    pub name: String,
    pub tensors: Vec<ProblemTensor>,
    pub launches: Vec<Launch>,
    pub(crate) reference: Reference,
    pub(crate) bytes_moved: u64,
}

impl Problem {
    /// The index of the tensor called `name`. Panics if there is none.
    pub fn tensor_index(&self, name: &str) -> usize {
        self.tensors.iter().position(|t| t.name == name).unwrap_or_else(|| panic!("{}: no tensor `{name}`", self.name))
    }

    /// The tensor called `name`. Panics if there is none.
    pub fn tensor(&self, name: &str) -> &HostTensor {
        &self.tensors[self.tensor_index(name)].tensor
    }

    /// Builds the kernel of every launch.
    pub fn kernels(&self) -> Result<Vec<Kernel>, VerifyError> {
        self.launches
            .iter()
            .map(|l| {
                let s = samples::find(l.sample).unwrap_or_else(|| panic!("no sample `{}`", l.sample));
                (s.build)(&l.config)
            })
            .collect()
    }

    /// Interpreter arguments of launch `launch`: `Out` views of the tensors it writes, `In`
    /// views of the others, and its scalars.
    pub fn interp_args(&mut self, launch: usize) -> Vec<Arg<'_>> {
        let mut views: Vec<Option<&mut HostTensor>> = self.tensors.iter_mut().map(|t| Some(&mut t.tensor)).collect();
        self.launches[launch]
            .args
            .iter()
            .map(|a| match *a {
                LaunchArg::Tensor { tensor, writes } => {
                    let t = views[tensor].take().expect("a tensor is passed at most once per launch");
                    if writes {
                        Arg::Out(t)
                    } else {
                        Arg::In(t)
                    }
                }
                LaunchArg::Scalar(s) => Arg::Scalar(s),
            })
            .collect()
    }

    /// Runs every launch through the CPU interpreter, in order.
    pub fn run_interp(&mut self) -> Result<(), InterpError> {
        let kernels = self.kernels()?;
        for (i, k) in kernels.iter().enumerate() {
            let grid = self.launches[i].grid;
            interp::run(k, grid, &mut self.interp_args(i))?;
        }
        Ok(())
    }

    /// Refills the outputs and intermediates with poison (NaN, or `i32::MIN` for integers),
    /// e.g. before running the problem again.
    pub fn poison_outputs(&mut self) {
        for t in &mut self.tensors {
            if t.role != Role::Input {
                t.tensor = poisoned(t.tensor.dtype(), &t.tensor.shape.clone());
            }
        }
    }

    /// Compares the output tensors with the reference computed from the input tensors.
    /// `Err` describes the first failing output (tensor, element, values, tolerance).
    pub fn check(&self) -> Result<CheckReport, String> {
        compare::check(self)
    }

    /// Bytes the launches must read and write at minimum: each input once (for a gather,
    /// only the rows it reads), each output once, each intermediate twice (write + read).
    pub fn bytes_moved(&self) -> u64 {
        self.bytes_moved
    }
}

/// A tensor filled with poison: NaN for floats, `i32::MIN` (saturated to the dtype) for
/// integers.
pub fn poisoned(dtype: DType, shape: &[usize]) -> HostTensor {
    let v = if dtype.is_float() { f64::NAN } else { i32::MIN as f64 };
    HostTensor::full(dtype, shape, v)
}

/// Bytes of a tensor.
pub(crate) fn tensor_bytes(t: &HostTensor) -> u64 {
    (t.numel() * t.dtype().size_bytes()) as u64
}
