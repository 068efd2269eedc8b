//! Host inputs for speed runs and tuning: gigabytes of random values generated in
//! parallel (deterministic per seed), and typed views of host tensors.

use half::bf16;
use tessera_codegen::host::{HostData, HostTensor};

/// `n` values from a per-chunk xorshift (parallel; deterministic for a seed).
pub fn par_fill<T: Copy + Default + Send>(n: usize, seed: u64, f: fn(u64) -> T) -> Vec<T> {
    let mut v = vec![T::default(); n];
    let threads = std::thread::available_parallelism().map_or(8, |x| x.get()).min(64);
    let chunk = n.div_ceil(threads).max(1 << 16);
    std::thread::scope(|s| {
        for (ci, part) in v.chunks_mut(chunk).enumerate() {
            s.spawn(move || {
                let mut st =
                    (seed ^ (ci as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                for x in part {
                    st ^= st << 13;
                    st ^= st >> 7;
                    st ^= st << 17;
                    *x = f(st);
                }
            });
        }
    });
    v
}

/// Uniform in [-1, 1).
pub fn unit(bits: u64) -> f32 {
    f32::from_bits(0x3f80_0000 | ((bits >> 41) as u32)) * 2.0 - 3.0
}

pub fn random_bf16(shape: &[usize], seed: u64) -> HostTensor {
    let n = shape.iter().product();
    HostTensor { shape: shape.to_vec(), data: HostData::BF16(par_fill(n, seed, |b| bf16::from_f32(unit(b)))) }
}

pub fn random_f32(shape: &[usize], seed: u64) -> HostTensor {
    let n = shape.iter().product();
    HostTensor { shape: shape.to_vec(), data: HostData::F32(par_fill(n, seed, unit)) }
}

pub fn bf16s(t: &HostTensor) -> &[bf16] {
    match &t.data {
        HostData::BF16(v) => v,
        _ => unreachable!("bf16 tensor"),
    }
}

pub fn f32s(t: &HostTensor) -> &[f32] {
    match &t.data {
        HostData::F32(v) => v,
        _ => unreachable!("f32 tensor"),
    }
}

/// Rows `[row0, row0 + rows)` of a flat `[.., d]` bf16 tensor, as f64.
pub fn rows_f64(t: &HostTensor, row0: usize, rows: usize, d: usize) -> Vec<f64> {
    bf16s(t)[row0 * d..(row0 + rows) * d].iter().map(|x| x.to_f64()).collect()
}
