//! KV cache maintenance: `landmarks_mean` (the mean key of every block, computed from
//! the cache) and `kv_append_rows` (writes new K/V rows at a per-batch position and
//! recomputes the landmarks of the touched blocks).
//!
//! Landmark of block `j` = mean of the keys `[j·BS, min((j+1)·BS, seq_len))`, summed in
//! f32 and stored in the landmark element type (`LM`: f32 by default, or bf16 — half the
//! bytes for [`crate::TopkBlockSelect`] to read); a partial last block averages the keys
//! it has; a block with none is zero. The append recomputes a touched block's landmark
//! from its rows (`[j·BS, pos)` from the cache, the rest from the new rows), not from the
//! old landmark: appending token by token and computing from scratch give the same sum,
//! and a bf16 landmark is rounded once, never accumulated. Cost per touched block: up to
//! `BS − 1` cached key rows read (16 KB at BS 64, d 128, bf16).

use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_dsl_support::prelude::*;
use tessera_runtime::DeviceTensor;

use crate::error::{expect, host_ints, invalid, KernelError, TensorMeta};

/// Landmark of every KV block: the mean key of its `BLOCK_SIZE` rows (top-k selection scores against it).
#[kernel(example(HEAD_DIM = 128, BLOCK_SIZE = 64))]
pub fn landmarks_mean<LM, const HEAD_DIM: usize, const BLOCK_SIZE: usize, const WARPS: usize>(
    k: Tensor<bf16, 4>,            // [B, Hkv, N, D]
    landmarks: &mut Tensor<LM, 4>, // [B, Hkv, NB_cap, D]
    seq_len: i32,
) {
    let blk = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let start = blk * BLOCK_SIZE as i32;
    let valid = arange(0, BLOCK_SIZE) + start < seq_len;
    let keys = k.load_masked(
        [at(batch), at(kv_head), range(start, BLOCK_SIZE), range(0, HEAD_DIM)],
        valid.expand_dims(1),
        0.0,
    );
    let n = max(min(seq_len - start, BLOCK_SIZE as i32), 1).cast::<f32>();
    landmarks
        .store([at(batch), at(kv_head), at(blk), range(0, HEAD_DIM)], (keys.cast::<f32>().sum(0) / n).cast::<LM>());
}

/// Writes new K/V rows into the cache and (optionally) recomputes the landmarks of the blocks they touch.
#[kernel(tune(TILE_T = [16, 32, 64]), example(HEAD_DIM = 128, BLOCK_SIZE = 64, UPDATE_LANDMARKS = 1))]
pub fn kv_append_rows<
    LM,
    const HEAD_DIM: usize,
    const TILE_T: usize,
    const BLOCK_SIZE: usize,
    const UPDATE_LANDMARKS: usize,
    const WARPS: usize,
>(
    k_new: Tensor<bf16, 4>,        // [B, Hkv, T, D]
    v_new: Tensor<bf16, 4>,        // [B, Hkv, T, D]
    pos: Tensor<i32, 1>,           // [B]: first cache row written
    k_cache: &mut Tensor<bf16, 4>, // [B, Hkv, N, D]
    v_cache: &mut Tensor<bf16, 4>, // [B, Hkv, N, D]
    landmarks: &mut Tensor<LM, 4>, // [B, Hkv, NB_cap, D]
) {
    let kv_head = program_id(0);
    let batch = program_id(1);
    let p = pos.load([at(batch)]);
    let t_new = k_new.dim(2).cast::<i32>();
    for t0 in (0..t_new).step_by(TILE_T) {
        let rows = (arange(0, TILE_T) + t0 < t_new).expand_dims(1);
        let kt = k_new.load([at(batch), at(kv_head), range(t0, TILE_T), range(0, HEAD_DIM)]);
        let vt = v_new.load([at(batch), at(kv_head), range(t0, TILE_T), range(0, HEAD_DIM)]);
        k_cache.store_masked([at(batch), at(kv_head), range(p + t0, TILE_T), range(0, HEAD_DIM)], kt, rows);
        v_cache.store_masked([at(batch), at(kv_head), range(p + t0, TILE_T), range(0, HEAD_DIM)], vt, rows);
    }
    if UPDATE_LANDMARKS == 1 {
        if t_new > 0 {
            let end = p + t_new;
            let first = p / BLOCK_SIZE as i32;
            let last = (end - 1) / BLOCK_SIZE as i32;
            for blk in first..last + 1 {
                let b_start = blk * BLOCK_SIZE as i32;
                let lo = max(p, b_start);
                let hi = min(end, b_start + BLOCK_SIZE as i32);
                let valid = (arange(0, BLOCK_SIZE) + lo < hi).expand_dims(1);
                let keys = k_new.load_masked(
                    [at(batch), at(kv_head), range(lo - p, BLOCK_SIZE), range(0, HEAD_DIM)],
                    valid,
                    0.0,
                );
                // The block's rows before `p` were written by earlier appends (never by
                // this launch, which writes rows `>= p`).
                let cached = (arange(0, BLOCK_SIZE) + b_start < lo).expand_dims(1);
                let old = k_cache.load_masked(
                    [at(batch), at(kv_head), range(b_start, BLOCK_SIZE), range(0, HEAD_DIM)],
                    cached,
                    0.0,
                );
                let n_new = (hi - b_start).cast::<f32>();
                landmarks.store(
                    [at(batch), at(kv_head), at(blk), range(0, HEAD_DIM)],
                    ((old.cast::<f32>().sum(0) + keys.cast::<f32>().sum(0)) / n_new).cast::<LM>(),
                );
            }
        }
    }
}

/// Host op: landmarks from scratch.
pub struct Landmarks {
    pub head_dim: usize,
    pub block_size: usize,
    /// Element type of `landmarks`: f32 (default) or bf16 ([`Self::typed`]).
    pub landmark_dtype: DType,
    kernel: LandmarksMeanKernel,
}

impl Landmarks {
    const NAME: &'static str = "landmarks";

    fn config(head_dim: usize, block_size: usize, code: i64) -> KernelConfig {
        KernelConfig::from_pairs(&[
            ("HEAD_DIM", head_dim as i64),
            ("BLOCK_SIZE", block_size as i64),
            ("WARPS", 4),
            ("LM", code),
        ])
    }

    /// Landmarks stored as `landmark_dtype` (f32 or bf16); on the interpreter when `rt`
    /// is `None`.
    pub fn typed(
        rt: Option<&Runtime>,
        head_dim: usize,
        block_size: usize,
        landmark_dtype: DType,
    ) -> Result<Self, KernelError> {
        let config = Self::config(head_dim, block_size, landmark_code(Self::NAME, landmark_dtype)?);
        let kernel = match rt {
            Some(rt) => LandmarksMean::new(rt, &config)?,
            None => LandmarksMean::cpu(&config)?,
        };
        Ok(Landmarks { head_dim, block_size, landmark_dtype, kernel })
    }

    /// f32 landmarks, for the interpreter.
    pub fn cpu(head_dim: usize, block_size: usize) -> Result<Self, KernelError> {
        Self::typed(None, head_dim, block_size, DType::F32)
    }

    /// f32 landmarks, compiled and loaded on `rt`'s GPU.
    pub fn new(rt: &Runtime, head_dim: usize, block_size: usize) -> Result<Self, KernelError> {
        Self::typed(Some(rt), head_dim, block_size, DType::F32)
    }

    /// Checks `k [B, Hkv, N, D] bf16`, `landmarks [B, Hkv, NB_cap, D]` ([`Self::landmark_dtype`]) with
    /// `NB_cap >= ceil(seq_len / BS)`, `seq_len <= N`; returns the grid
    /// `[ceil(seq_len / BS), Hkv, B]` (blocks past `seq_len` are left untouched).
    pub fn check_args(
        &self,
        k: &dyn TensorMeta,
        landmarks: &dyn TensorMeta,
        seq_len: usize,
    ) -> Result<[u32; 3], KernelError> {
        let n = Self::NAME;
        expect(n, "k", k, DType::BF16, &[None, None, None, Some(self.head_dim)])?;
        let s = k.shape();
        expect(n, "landmarks", landmarks, self.landmark_dtype, &[Some(s[0]), Some(s[1]), None, Some(self.head_dim)])?;
        let nb = seq_len.div_ceil(self.block_size);
        if seq_len > s[2] || nb > landmarks.shape()[2] {
            return Err(invalid(
                n,
                format!("seq_len {seq_len}: cache {} rows, landmarks {} blocks", s[2], landmarks.shape()[2]),
            ));
        }
        Ok([nb.max(1) as u32, s[1] as u32, s[0] as u32])
    }

    pub fn run_cpu(&self, k: &HostTensor, landmarks: &mut HostTensor, seq_len: usize) -> Result<(), KernelError> {
        let grid = self.check_args(k, landmarks, seq_len)?;
        if seq_len == 0 {
            return Ok(());
        }
        Ok(self.kernel.run_cpu(grid, k, landmarks, seq_len as i32)?)
    }

    pub fn launch(
        &self,
        rt: &Runtime,
        k: &DeviceTensor,
        landmarks: &DeviceTensor,
        seq_len: usize,
    ) -> Result<(), KernelError> {
        let grid = self.check_args(k, landmarks, seq_len)?;
        if seq_len == 0 {
            return Ok(());
        }
        Ok(self.kernel.launch(rt.stream(), grid, k, landmarks, seq_len as i32)?)
    }
}

/// Host op: append rows (and update landmarks).
pub struct KvAppend {
    pub head_dim: usize,
    pub block_size: usize,
    pub update_landmarks: bool,
    /// Element type of `landmarks`: f32 (default) or bf16 ([`Self::typed`]).
    pub landmark_dtype: DType,
    kernel: KvAppendRowsKernel,
}

impl KvAppend {
    const NAME: &'static str = "kv_append";

    fn config(head_dim: usize, block_size: usize, update: bool, code: i64) -> KernelConfig {
        KernelConfig::from_pairs(&[
            ("HEAD_DIM", head_dim as i64),
            ("TILE_T", 16),
            ("BLOCK_SIZE", block_size as i64),
            ("UPDATE_LANDMARKS", update as i64),
            ("WARPS", 4),
            ("LM", code),
        ])
    }

    /// An append whose landmarks are `landmark_dtype` (f32 or bf16); on the interpreter
    /// when `rt` is `None`.
    pub fn typed(
        rt: Option<&Runtime>,
        head_dim: usize,
        block_size: usize,
        update_landmarks: bool,
        landmark_dtype: DType,
    ) -> Result<Self, KernelError> {
        let code = landmark_code(Self::NAME, landmark_dtype)?;
        let config = Self::config(head_dim, block_size, update_landmarks, code);
        let kernel = match rt {
            Some(rt) => KvAppendRows::new(rt, &config)?,
            None => KvAppendRows::cpu(&config)?,
        };
        Ok(KvAppend { head_dim, block_size, update_landmarks, landmark_dtype, kernel })
    }

    /// f32 landmarks, for the interpreter.
    pub fn cpu(head_dim: usize, block_size: usize, update_landmarks: bool) -> Result<Self, KernelError> {
        Self::typed(None, head_dim, block_size, update_landmarks, DType::F32)
    }

    /// f32 landmarks, compiled and loaded on `rt`'s GPU.
    pub fn new(rt: &Runtime, head_dim: usize, block_size: usize, update_landmarks: bool) -> Result<Self, KernelError> {
        Self::typed(Some(rt), head_dim, block_size, update_landmarks, DType::F32)
    }

    /// Checks `k_new`/`v_new [B, Hkv, T, D] bf16`, `pos [B] i32`, caches `[B, Hkv, N, D]`
    /// bf16, `landmarks [B, Hkv, NB_cap, D]` ([`Self::landmark_dtype`]; `NB_cap >= ceil(N / BS)` when updated);
    /// for a host `pos`, every `pos[b]` in `[0, N − T]`. Returns the grid `[Hkv, B]`.
    #[allow(clippy::too_many_arguments)]
    pub fn check_args(
        &self,
        k_new: &dyn TensorMeta,
        v_new: &dyn TensorMeta,
        pos: &dyn TensorMeta,
        k_cache: &dyn TensorMeta,
        v_cache: &dyn TensorMeta,
        landmarks: &dyn TensorMeta,
    ) -> Result<[u32; 3], KernelError> {
        let n = Self::NAME;
        let d = Some(self.head_dim);
        expect(n, "k_cache", k_cache, DType::BF16, &[None, None, None, d])?;
        let s = k_cache.shape().to_vec();
        let (b, h, cap) = (Some(s[0]), Some(s[1]), s[2]);
        expect(n, "v_cache", v_cache, DType::BF16, &[b, h, Some(cap), d])?;
        expect(n, "k_new", k_new, DType::BF16, &[b, h, None, d])?;
        let t = k_new.shape()[2];
        expect(n, "v_new", v_new, DType::BF16, &[b, h, Some(t), d])?;
        expect(n, "pos", pos, DType::I32, &[b])?;
        let nb = if self.update_landmarks { Some(cap.div_ceil(self.block_size)) } else { None };
        expect(n, "landmarks", landmarks, self.landmark_dtype, &[b, h, None, d])?;
        if let Some(nb) = nb {
            if landmarks.shape()[2] < nb {
                return Err(invalid(
                    n,
                    format!("landmarks hold {} blocks, the cache needs {nb}", landmarks.shape()[2]),
                ));
            }
        }
        if t > cap {
            return Err(invalid(n, format!("{t} new rows exceed the cache length {cap}")));
        }
        if let Some(p) = host_ints(pos) {
            for (i, &x) in p.iter().enumerate() {
                if x < 0 || x as usize + t > cap {
                    let hi = (cap - t) as i64 + 1;
                    return Err(KernelError::IndexOutOfRange {
                        kernel: n,
                        arg: "pos",
                        at: vec![i],
                        value: x,
                        lo: 0,
                        hi,
                    });
                }
            }
        }
        Ok([s[1] as u32, s[0] as u32, 1])
    }

    /// `landmarks` may be a `[B, Hkv, 1, D]` dummy when built without landmark updates.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu(
        &self,
        k_new: &HostTensor,
        v_new: &HostTensor,
        pos: &HostTensor,
        k_cache: &mut HostTensor,
        v_cache: &mut HostTensor,
        landmarks: &mut HostTensor,
    ) -> Result<(), KernelError> {
        let grid = self.check_args(k_new, v_new, pos, k_cache, v_cache, landmarks)?;
        Ok(self.kernel.run_cpu(grid, k_new, v_new, pos, k_cache, v_cache, landmarks)?)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn launch(
        &self,
        rt: &Runtime,
        k_new: &DeviceTensor,
        v_new: &DeviceTensor,
        pos: &DeviceTensor,
        k_cache: &DeviceTensor,
        v_cache: &DeviceTensor,
        landmarks: &DeviceTensor,
    ) -> Result<(), KernelError> {
        let grid = self.check_args(k_new, v_new, pos, k_cache, v_cache, landmarks)?;
        Ok(self.kernel.launch(rt.stream(), grid, k_new, v_new, pos, k_cache, v_cache, landmarks)?)
    }
}

/// The `LM` config code of a landmark element type: f32 or bf16 (the mean of bf16 keys
/// gains nothing from f16's extra mantissa bits, and loses range).
pub(crate) fn landmark_code(kernel: &'static str, dtype: DType) -> Result<i64, KernelError> {
    match dtype {
        DType::F32 | DType::BF16 => Ok(tessera_dsl_support::elem_code(dtype).expect("f32 and bf16 have codes")),
        other => Err(invalid(kernel, format!("landmarks must be f32 or bf16, not {other:?}"))),
    }
}
