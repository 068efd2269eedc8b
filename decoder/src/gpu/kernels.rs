//! The two kernels the GPU path needs besides tessera-kernels' ops:
//!
//! - [`fill_uniform_bf16`](FillUniformBf16): a counter-based hash fill (no cuRAND, no host data), so the
//!   random-weight speed models (16 GB at Llama-3-8B shapes) and random KV caches are made
//!   on the device;
//! - [`copy4_bf16`](Copy4Bf16): a strided rank-4 copy; with a permuted source view it is the
//!   transpose between the token-major Q / attention output of the linear layers
//!   (`[T, H, D]`) and the head-major layout of `TreeVerify` (`[H, T, D]`).

use tessera_codegen::host::HostData;
use tessera_codegen::ir::DType;
use tessera_dsl_support::prelude::*;
use tessera_kernels::{KernelError, TensorMeta};

/// `out[i] = scale · (2·u(i) − 1)` with `u(i) ∈ [0, 1)` from the `lowbias32` integer hash of
/// `i · φ + seed` (24 bits); grid `[ceil(n / BLOCK)]`. The IR has no xor, so `a ^ b` is
/// written `(a | b) − (a & b)`.
#[kernel]
pub fn fill_uniform_bf16<const BLOCK: usize, const WARPS: usize>(
    out: &mut Tensor<bf16, 1>, // [n]
    seed: u32,
    scale: f32,
) {
    let start = program_id(0) * BLOCK as i32;
    let i = (arange(0, BLOCK) + start).cast::<u32>();
    let mut x = i * 2654435769u32 + seed;
    let mut s = x >> 16u32;
    x = (x | s) - (x & s);
    x = x * 2146121005u32;
    s = x >> 15u32;
    x = (x | s) - (x & s);
    x = x * 2221713035u32;
    s = x >> 16u32;
    x = (x | s) - (x & s);
    let u = (x >> 8u32).cast::<f32>() * 0.000000059604644775390625f32;
    out.store([range(start, BLOCK)], ((u * 2.0 - 1.0) * scale).cast::<bf16>());
}

/// `dst[a, b, c, :] = src[a, b, c, :]` for views of the same shape (any strides);
/// grid `[d2, d1, d0]`, the last axis in tiles of `BLOCK`.
#[kernel]
pub fn copy4_bf16<const BLOCK: usize, const WARPS: usize>(
    src: Tensor<bf16, 4>,      // [d0, d1, d2, d3]
    dst: &mut Tensor<bf16, 4>, // [d0, d1, d2, d3]
) {
    let c = program_id(0);
    let b = program_id(1);
    let a = program_id(2);
    let n = src.dim(3).cast::<i32>();
    for c0 in (0..n).step_by(BLOCK) {
        dst.store([at(a), at(b), at(c), range(c0, BLOCK)], src.load([at(a), at(b), at(c), range(c0, BLOCK)]));
    }
}

const FILL_BLOCK: usize = 1024;
/// Elements per fill launch: keeps the kernel's i32 indices far from overflow.
const FILL_CHUNK: usize = 1 << 28;

fn invalid(kernel: &'static str, message: impl Into<String>) -> KernelError {
    KernelError::Invalid { kernel, message: message.into() }
}

/// Host op of [`fill_uniform_bf16`](FillUniformBf16) for whole contiguous tensors of any size.
pub struct FillUniform {
    kernel: FillUniformBf16Kernel,
}

/// The seed of chunk `chunk` of a fill seeded `seed` (a splitmix64 step, folded to 32 bits).
pub fn chunk_seed(seed: u64, chunk: usize) -> u32 {
    let mut z = seed.wrapping_add((chunk as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u32
}

impl FillUniform {
    const NAME: &'static str = "fill_uniform";

    fn config() -> KernelConfig {
        KernelConfig::from_pairs(&[("BLOCK", FILL_BLOCK as i64), ("WARPS", 4)])
    }

    /// For the interpreter.
    pub fn cpu() -> Result<Self, KernelError> {
        Ok(FillUniform { kernel: FillUniformBf16::cpu(&Self::config())? })
    }

    /// Compiled and loaded on `rt`'s GPU.
    pub fn new(rt: &Runtime) -> Result<Self, KernelError> {
        Ok(FillUniform { kernel: FillUniformBf16::new(rt, &Self::config())? })
    }

    /// Fills a host bf16 tensor (one chunk: at most 2^28 elements).
    pub fn run_cpu(&self, out: &mut HostTensor, seed: u64, scale: f32) -> Result<(), KernelError> {
        let n = out.numel();
        if out.dtype() != DType::BF16 || n > FILL_CHUNK {
            return Err(invalid(Self::NAME, format!("host fill needs bf16 and <= {FILL_CHUNK} elements")));
        }
        if n == 0 {
            return Ok(());
        }
        let mut flat = HostTensor { shape: vec![n], data: std::mem::replace(&mut out.data, HostData::F32(vec![])) };
        let r = self.kernel.run_cpu([n.div_ceil(FILL_BLOCK) as u32, 1, 1], &mut flat, chunk_seed(seed, 0), scale);
        out.data = flat.data;
        Ok(r?)
    }

    /// Fills a contiguous bf16 device tensor with uniform values in `±scale`, chunk by
    /// chunk (asynchronous).
    pub fn fill(&self, rt: &Runtime, t: &DeviceTensor, seed: u64, scale: f32) -> Result<(), KernelError> {
        if t.dtype() != DType::BF16 || !t.is_contiguous() {
            return Err(invalid(
                Self::NAME,
                format!("needs a contiguous bf16 tensor, got {} {:?}", t.dtype(), t.shape()),
            ));
        }
        let n = t.numel();
        for (chunk, start) in (0..n).step_by(FILL_CHUNK).enumerate() {
            let len = FILL_CHUNK.min(n - start);
            let flat = t.view(&[len], &[1], t.offset() + start)?;
            let grid = [len.div_ceil(FILL_BLOCK) as u32, 1, 1];
            self.kernel.launch(rt.stream(), grid, &flat, chunk_seed(seed, chunk), scale)?;
        }
        Ok(())
    }
}

/// Host op of [`copy4_bf16`](Copy4Bf16).
pub struct Copy4 {
    block: usize,
    kernel: Copy4Bf16Kernel,
}

impl Copy4 {
    const NAME: &'static str = "copy4";

    fn config(block: usize) -> KernelConfig {
        KernelConfig::from_pairs(&[("BLOCK", block as i64), ("WARPS", 4)])
    }

    /// A copy for rows of `row` elements (the tile is `row` rounded up to a power of two,
    /// at least 128).
    pub fn cpu(row: usize) -> Result<Self, KernelError> {
        let block = row.next_power_of_two().max(128);
        Ok(Copy4 { block, kernel: Copy4Bf16::cpu(&Self::config(block))? })
    }

    /// Compiled and loaded on `rt`'s GPU; see [`Self::cpu`].
    pub fn new(rt: &Runtime, row: usize) -> Result<Self, KernelError> {
        let block = row.next_power_of_two().max(128);
        Ok(Copy4 { block, kernel: Copy4Bf16::new(rt, &Self::config(block))? })
    }

    /// The tile length along the last axis.
    pub fn block(&self) -> usize {
        self.block
    }

    /// Checks two rank-4 bf16 tensors of one shape whose middle axes fit the grid.
    pub fn check_args(&self, src: &dyn TensorMeta, dst: &dyn TensorMeta) -> Result<[u32; 3], KernelError> {
        let n = Self::NAME;
        for (arg, t) in [("src", src), ("dst", dst)] {
            if t.dtype() != DType::BF16 {
                return Err(KernelError::DType { kernel: n, arg, expected: DType::BF16, got: t.dtype() });
            }
            if t.shape().len() != 4 {
                return Err(invalid(n, format!("`{arg}` must be rank 4, got shape {:?}", t.shape())));
            }
        }
        let s = src.shape();
        if dst.shape() != s {
            return Err(KernelError::Shape {
                kernel: n,
                arg: "dst",
                expected: format!("{s:?}"),
                got: dst.shape().to_vec(),
            });
        }
        if s[0] > 65535 || s[1] > 65535 || s[2] > i32::MAX as usize {
            return Err(invalid(n, format!("shape {s:?} exceeds the grid")));
        }
        Ok([s[2] as u32, s[1] as u32, s[0] as u32])
    }

    /// Interpreter run (contiguous host tensors: a plain copy).
    pub fn run_cpu(&self, src: &HostTensor, dst: &mut HostTensor) -> Result<(), KernelError> {
        let grid = self.check_args(src, dst)?;
        if grid.contains(&0) {
            return Ok(());
        }
        Ok(self.kernel.run_cpu(grid, src, dst)?)
    }

    /// `dst = src` element by element (views with any strides), asynchronously.
    pub fn launch(&self, rt: &Runtime, src: &DeviceTensor, dst: &DeviceTensor) -> Result<(), KernelError> {
        let grid = self.check_args(src, dst)?;
        if grid.contains(&0) {
            return Ok(());
        }
        Ok(self.kernel.launch(rt.stream(), grid, src, dst)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_uniform_and_seeded() {
        let op = FillUniform::cpu().unwrap();
        let mut a = HostTensor::full(DType::BF16, &[3000], f64::NAN);
        op.run_cpu(&mut a, 7, 0.5).unwrap();
        let v = a.to_f64();
        assert!(v.iter().all(|x| x.abs() <= 0.5), "values within ±scale");
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        // Uniform on ±0.5: mean 0, variance 1/12.
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0 / 12.0).abs() < 0.01, "variance {var}");
        let distinct: std::collections::BTreeSet<u64> = v.iter().map(|x| x.to_bits()).collect();
        assert!(distinct.len() > 200, "{} distinct values", distinct.len());
        let mut b = HostTensor::full(DType::BF16, &[3000], 0.0);
        op.run_cpu(&mut b, 7, 0.5).unwrap();
        assert_eq!(a, b, "same seed, same values");
        op.run_cpu(&mut b, 8, 0.5).unwrap();
        assert_ne!(a, b, "another seed, other values");
        assert_ne!(chunk_seed(1, 0), chunk_seed(1, 1));
    }

    #[test]
    fn copy4_copies_and_checks() {
        let op = Copy4::cpu(64).unwrap();
        assert_eq!(op.block(), 128);
        let src =
            HostTensor::from_f64(DType::BF16, &[2, 3, 4, 200], &(0..4800).map(|i| (i % 97) as f64).collect::<Vec<_>>());
        let mut dst = HostTensor::full(DType::BF16, &[2, 3, 4, 200], f64::NAN);
        op.run_cpu(&src, &mut dst).unwrap();
        assert_eq!(src, dst);
        let mut wrong = HostTensor::full(DType::BF16, &[2, 3, 5, 200], 0.0);
        assert!(matches!(op.run_cpu(&src, &mut wrong), Err(KernelError::Shape { .. })));
        let mut f = HostTensor::full(DType::F32, &[2, 3, 4, 200], 0.0);
        assert!(op.run_cpu(&src, &mut f).is_err());
    }
}
