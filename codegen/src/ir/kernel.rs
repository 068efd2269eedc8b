//! A whole tile program: parameters, values and the statement tree.

use super::op::{ParamId, Stmt, ValueId};
use super::types::{DType, TileType};

/// What a kernel parameter is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// A global tensor: element type, rank and whether the kernel writes it. Sizes and
    /// strides (in elements) are runtime values passed with the pointer.
    Tensor { dtype: DType, rank: usize, writable: bool },
    /// A runtime scalar argument.
    Scalar { dtype: DType },
}

/// One kernel parameter.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Param {
    pub name: String,
    pub kind: ParamKind,
}

/// Type and naming information of one value.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    pub ty: TileType,
    /// A readable name hint (a DSL variable name); emission appends the id to stay unique.
    pub name: Option<String>,
    /// Whether `Stmt::Assign` may overwrite this value.
    pub mutable: bool,
}

/// One program instance (a CUDA block) of a tile program, already specialised for its
/// compile-time parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<Param>,
    pub values: Vec<ValueInfo>,
    pub body: Vec<Stmt>,
    /// Warps per program instance (threads = 32 * num_warps).
    pub num_warps: u32,
    /// Program instances each SM should hold at once (0: no hint). Becomes the second
    /// argument of `__launch_bounds__`, which caps registers so that many fit: a tuning
    /// knob for latency-bound kernels.
    pub min_blocks_per_sm: u32,
    /// Buffers of each pipelined loop's staged loads (see `emit::staging`): 2 is double
    /// buffering (the next tile streams in while this one is used); 3 or 4 keep more
    /// tiles in flight, for kernels with few programs per SM, at the cost of shared memory.
    pub pipeline_stages: u32,
    /// The compile-time parameters this instance was specialised with, for naming,
    /// hashing and the header comment of the emitted source.
    pub constants: Vec<(String, i64)>,
}

impl Kernel {
    pub fn value(&self, id: ValueId) -> &ValueInfo {
        &self.values[id.0 as usize]
    }

    pub fn ty(&self, id: ValueId) -> &TileType {
        &self.value(id).ty
    }

    pub fn param(&self, id: ParamId) -> &Param {
        &self.params[id.0 as usize]
    }

    /// Threads per program instance.
    pub fn num_threads(&self) -> u32 {
        self.num_warps * 32
    }

    /// Parameter ids of the tensor parameters, in declaration order.
    pub fn tensor_params(&self) -> impl Iterator<Item = (ParamId, &Param)> {
        self.params
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p.kind, ParamKind::Tensor { .. }))
            .map(|(i, p)| (ParamId(i as u32), p))
    }

    /// Finds a parameter by name.
    pub fn param_by_name(&self, name: &str) -> Option<ParamId> {
        self.params.iter().position(|p| p.name == name).map(|i| ParamId(i as u32))
    }
}
