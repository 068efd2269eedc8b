//! The split combine: merges `S` partial results by log-sum-exp (log2 units).
//!
//! Grid `[rows, batch]`: one program per output row (query head, or query head × tree
//! node). Partial results with LSE = -inf (empty splits) weigh nothing; when every split
//! is empty the output is zero and the LSE -inf.

use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_dsl_support::prelude::*;
use tessera_runtime::DeviceTensor;

use crate::error::{expect, invalid, KernelError, TensorMeta};

/// Merges per-split partial outputs and log2-sum-exps into the final output (optionally its LSE).
#[kernel(example(HEAD_DIM = 128, MAX_SPLITS = 16, WRITE_LSE = 1))]
pub fn attn_combine<OUT, const HEAD_DIM: usize, const MAX_SPLITS: usize, const WRITE_LSE: usize, const WARPS: usize>(
    o_part: Tensor<f32, 4>,   // [B, R, S, D]
    lse_part: Tensor<f32, 3>, // [B, R, S]
    out: &mut Tensor<OUT, 3>, // [B, R, D], bf16 (OUT = 0) or f16 (OUT = 1)
    lse: &mut Tensor<f32, 2>, // [B, R] (written when WRITE_LSE == 1)
) {
    let row = program_id(0);
    let batch = program_id(1);
    // Both loads first: the partial outputs are in flight while the weights reduce
    // (the emitted code keeps program order, so a later load would wait for the max).
    let parts = o_part.load([at(batch), at(row), range(0, MAX_SPLITS), range(0, HEAD_DIM)]);
    let l = lse_part.load_or([at(batch), at(row), range(0, MAX_SPLITS)], f32::NEG_INFINITY);
    let m = l.max(0);
    let m_use = where_(m == f32::NEG_INFINITY, 0.0, m);
    let w = exp2(l - m_use);
    let total = w.sum(0);
    let nonempty = total > 0.0;
    let o = (parts * w.expand_dims(1)).sum(0) / where_(nonempty, total, 1.0);
    out.store([at(batch), at(row), range(0, HEAD_DIM)], o.cast::<OUT>());
    if WRITE_LSE == 1 {
        lse.store(
            [at(batch), at(row)],
            where_(nonempty, m_use + log2(where_(nonempty, total, 1.0)), f32::NEG_INFINITY),
        );
    }
}

/// Host op of [`attn_combine`](AttnCombine): `out[b, r] = Σ_s w_s o_part[b, r, s] / Σ_s w_s`,
/// `w_s = exp2(lse_part[b, r, s] - max_s lse_part[b, r, s])`.
pub struct LseCombine {
    pub head_dim: usize,
    pub max_splits: usize,
    pub write_lse: bool,
    /// Element type of `out` (bf16 unless built with [`LseCombine::typed`]).
    pub out_dtype: DType,
    kernel: AttnCombineKernel,
}

impl LseCombine {
    const NAME: &'static str = "attn_combine";

    pub fn config(head_dim: usize, max_splits: usize, write_lse: bool) -> KernelConfig {
        KernelConfig::from_pairs(&[
            ("HEAD_DIM", head_dim as i64),
            ("MAX_SPLITS", max_splits as i64),
            ("WRITE_LSE", write_lse as i64),
            ("WARPS", 4),
        ])
    }

    /// A combine writing `out` in `out_dtype` (bf16 or f16); on the interpreter when `rt`
    /// is `None`.
    pub fn typed(
        rt: Option<&Runtime>,
        head_dim: usize,
        max_splits: usize,
        write_lse: bool,
        out_dtype: DType,
    ) -> Result<Self, KernelError> {
        let code = match out_dtype {
            DType::BF16 | DType::F16 => tessera_dsl_support::elem_code(out_dtype).expect("a half type"),
            other => return Err(invalid(Self::NAME, format!("out must be bf16 or f16, not {other:?}"))),
        };
        let config = Self::config(head_dim, max_splits, write_lse).with("OUT", code);
        let kernel = match rt {
            Some(rt) => AttnCombine::new(rt, &config)?,
            None => AttnCombine::cpu(&config)?,
        };
        Ok(LseCombine { head_dim, max_splits, write_lse, out_dtype, kernel })
    }

    /// For the interpreter.
    pub fn cpu(head_dim: usize, max_splits: usize, write_lse: bool) -> Result<Self, KernelError> {
        Self::typed(None, head_dim, max_splits, write_lse, DType::BF16)
    }

    /// Compiled and loaded on `rt`'s GPU.
    pub fn new(rt: &Runtime, head_dim: usize, max_splits: usize, write_lse: bool) -> Result<Self, KernelError> {
        Self::typed(Some(rt), head_dim, max_splits, write_lse, DType::BF16)
    }

    /// Checks `o_part [B, R, S, D] f32`, `lse_part [B, R, S] f32`, `out [B, R, D]` (bf16 or f16),
    /// `lse [B, R] f32` (when written), `S <= max_splits`.
    pub fn check_args(
        &self,
        o_part: &dyn TensorMeta,
        lse_part: &dyn TensorMeta,
        out: &dyn TensorMeta,
        lse: Option<&dyn TensorMeta>,
    ) -> Result<(), KernelError> {
        let k = Self::NAME;
        expect(k, "o_part", o_part, DType::F32, &[None, None, None, Some(self.head_dim)])?;
        let s = o_part.shape();
        let (b, r, splits) = (s[0], s[1], s[2]);
        if splits > self.max_splits {
            return Err(invalid(k, format!("{splits} splits exceed MAX_SPLITS = {}", self.max_splits)));
        }
        expect(k, "lse_part", lse_part, DType::F32, &[Some(b), Some(r), Some(splits)])?;
        expect(k, "out", out, self.out_dtype, &[Some(b), Some(r), Some(self.head_dim)])?;
        match (self.write_lse, lse) {
            (true, Some(l)) => expect(k, "lse", l, DType::F32, &[Some(b), Some(r)]),
            (true, None) => Err(invalid(k, "built with write_lse but no `lse` tensor given")),
            _ => Ok(()),
        }
    }

    /// Runs on the interpreter; grid `[R, B]`.
    pub fn run_cpu(
        &self,
        o_part: &HostTensor,
        lse_part: &HostTensor,
        out: &mut HostTensor,
        lse: Option<&mut HostTensor>,
    ) -> Result<(), KernelError> {
        self.check_args(o_part, lse_part, out, lse.as_deref().map(|l| l as &dyn TensorMeta))?;
        let grid = [o_part.shape[1] as u32, o_part.shape[0] as u32, 1];
        let mut dummy = HostTensor::full(DType::F32, &[1, 1], 0.0);
        let lse = lse.unwrap_or(&mut dummy);
        Ok(self.kernel.run_cpu(grid, o_part, lse_part, out, lse)?)
    }

    /// Launches on `rt`'s stream; grid `[R, B]`.
    pub fn launch(
        &self,
        rt: &Runtime,
        o_part: &DeviceTensor,
        lse_part: &DeviceTensor,
        out: &DeviceTensor,
        lse: Option<&DeviceTensor>,
    ) -> Result<(), KernelError> {
        self.check_args(o_part, lse_part, out, lse.map(|l| l as &dyn TensorMeta))?;
        let grid = [o_part.shape()[1] as u32, o_part.shape()[0] as u32, 1];
        let dummy;
        let lse = match lse {
            Some(l) => l,
            None => {
                dummy = DeviceTensor::zeros(rt.stream(), DType::F32, &[1, 1])?;
                &dummy
            }
        };
        Ok(self.kernel.launch(rt.stream(), grid, o_part, lse_part, out, lse)?)
    }
}
