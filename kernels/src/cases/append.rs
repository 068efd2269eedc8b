//! KV append cases ([`AppendCase`]): rows written and the touched blocks' landmarks recomputed.

use super::*;

/// KV append with the landmark update, starting from a cache whose first
/// `pos[b]` rows are filled and whose landmarks are exact for them.
pub struct AppendCase {
    pub name: String,
    pub dims: DecodeDims,
    pub block_size: usize,
    pub pos: HostTensor,
    pub k_new: HostTensor,
    pub v_new: HostTensor,
    pub k_cache: HostTensor,
    pub v_cache: HostTensor,
    pub landmarks: HostTensor,
    /// f32 (from [`AppendCase::new`]) or bf16 ([`AppendCase::with_landmark_dtype`]).
    pub landmark_dtype: DType,
    k0: HostTensor,
    v0: HostTensor,
    lm0: HostTensor,
}

impl AppendCase {
    pub fn new(name: &str, dims: DecodeDims, block_size: usize, pos: &[usize], t_new: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let DecodeDims { batch, kv_heads, cap, head_dim: d, .. } = dims;
        assert_eq!(pos.len(), batch);
        let k0 = rand_bf16(&mut rng, &[batch, kv_heads, cap, d], 1.0);
        let v0 = rand_bf16(&mut rng, &[batch, kv_heads, cap, d], 1.0);
        let nb_cap = cap.div_ceil(block_size);
        // Exact landmarks of each batch's first pos[b] rows; NaN past them (must not be read).
        let kf = k0.to_f64();
        let mut lm = vec![f64::NAN; batch * kv_heads * nb_cap * d];
        for (b, &p) in pos.iter().enumerate() {
            let one = &kf[b * kv_heads * cap * d..(b + 1) * kv_heads * cap * d];
            let l = r::landmarks(one, 1, kv_heads, cap, d, p, block_size);
            let nb = p.div_ceil(block_size);
            for h in 0..kv_heads {
                let dst = ((b * kv_heads + h) * nb_cap) * d;
                lm[dst..dst + nb * d].copy_from_slice(&l[h * nb * d..(h + 1) * nb * d]);
            }
        }
        let lm0 = HostTensor::from_f64(DType::F32, &[batch, kv_heads, nb_cap, d], &lm);
        let pos_t = HostTensor::from_f64(DType::I32, &[batch], &pos.iter().map(|&x| x as f64).collect::<Vec<_>>());
        AppendCase {
            name: name.to_string(),
            dims,
            block_size,
            pos: pos_t,
            k_new: rand_bf16(&mut rng, &[batch, kv_heads, t_new, d], 1.0),
            v_new: rand_bf16(&mut rng, &[batch, kv_heads, t_new, d], 1.0),
            k_cache: k0.clone(),
            v_cache: v0.clone(),
            landmarks: lm0.clone(),
            landmark_dtype: DType::F32,
            k0,
            v0,
            lm0,
        }
    }

    /// The same case with landmarks stored as `dtype` (the initial ones rounded to it).
    pub fn with_landmark_dtype(mut self, dtype: DType) -> Self {
        self.lm0 = HostTensor::from_f64(dtype, &self.lm0.shape, &self.lm0.to_f64());
        self.landmarks = self.lm0.clone();
        self.landmark_dtype = dtype;
        self
    }

    /// Landmark tolerance: f32 sums, or one bf16 rounding (2^-9 relative, with margin).
    fn landmark_tol(&self) -> f64 {
        if self.landmark_dtype == DType::BF16 {
            4e-3
        } else {
            1e-5
        }
    }

    fn op(&self, rt: Option<&Runtime>) -> Result<KvAppend, KernelError> {
        KvAppend::typed(rt, self.dims.head_dim, self.block_size, true, self.landmark_dtype)
    }

    fn reset(&mut self) {
        self.k_cache = self.k0.clone();
        self.v_cache = self.v0.clone();
        self.landmarks = self.lm0.clone();
    }
}

impl KernelCase for AppendCase {
    fn name(&self) -> String {
        let d = self.dims;
        format!(
            "{} B{} Hkv{} D{} N{} bs{} T{}{}",
            self.name,
            d.batch,
            d.kv_heads,
            d.head_dim,
            d.cap,
            self.block_size,
            self.k_new.shape[2],
            if self.landmark_dtype == DType::BF16 { " bf16 landmarks" } else { "" }
        )
    }

    /// The cache is in-place: poisoning means restoring the initial cache.
    fn poison(&mut self) {
        self.reset();
    }

    fn run_cpu(&mut self) -> Result<(), KernelError> {
        self.reset();
        let op = self.op(None)?;
        op.run_cpu(&self.k_new, &self.v_new, &self.pos, &mut self.k_cache, &mut self.v_cache, &mut self.landmarks)
    }

    fn run_gpu(&mut self, rt: &Runtime) -> Result<(), KernelError> {
        self.reset();
        let op = self.op(Some(rt))?;
        let (kn, vn, pos) = (up(rt, &self.k_new)?, up(rt, &self.v_new)?, up(rt, &self.pos)?);
        let (kc, vc, lm) = (up(rt, &self.k_cache)?, up(rt, &self.v_cache)?, up(rt, &self.landmarks)?);
        op.check_args(&self.k_new, &self.v_new, &self.pos, &self.k_cache, &self.v_cache, &self.landmarks)?;
        op.launch(rt, &kn, &vn, &pos, &kc, &vc, &lm)?;
        rt.synchronize()?;
        self.k_cache = kc.download()?;
        self.v_cache = vc.download()?;
        self.landmarks = lm.download()?;
        Ok(())
    }

    /// Caches: exact (new rows in place, every other row untouched); landmarks of every
    /// block below `ceil((pos + T) / bs)`: the from-scratch means within 1e-5 (f32) or one
    /// bf16 rounding.
    #[allow(clippy::needless_range_loop)]
    fn check(&self) -> Result<f64, String> {
        let DecodeDims { batch, kv_heads, cap, head_dim: d, .. } = self.dims;
        let t = self.k_new.shape[2];
        let pos = self.pos.to_f64();
        let nb_cap = self.landmarks.shape[2];
        let (mut wk, mut wv) = (self.k0.to_f64(), self.v0.to_f64());
        let (kn, vn) = (self.k_new.to_f64(), self.v_new.to_f64());
        for b in 0..batch {
            for h in 0..kv_heads {
                for i in 0..t {
                    let dst = ((b * kv_heads + h) * cap + pos[b] as usize + i) * d;
                    let src = ((b * kv_heads + h) * t + i) * d;
                    wk[dst..dst + d].copy_from_slice(&kn[src..src + d]);
                    wv[dst..dst + d].copy_from_slice(&vn[src..src + d]);
                }
            }
        }
        if self.k_cache.to_f64() != wk || self.v_cache.to_f64() != wv {
            return Err("cache rows differ from the expected append".into());
        }
        let got = self.landmarks.to_f64();
        let mut worst: f64 = 0.0;
        for b in 0..batch {
            let n = pos[b] as usize + t;
            let one = &wk[b * kv_heads * cap * d..(b + 1) * kv_heads * cap * d];
            let want = r::landmarks(one, 1, kv_heads, cap, d, n, self.block_size);
            let nb = n.div_ceil(self.block_size);
            for h in 0..kv_heads {
                let g = &got[((b * kv_heads + h) * nb_cap) * d..][..nb * d];
                let e = r::rel_err(g, &want[h * nb * d..(h + 1) * nb * d])?;
                worst = worst.max(within("landmarks", e, self.landmark_tol())?);
            }
        }
        Ok(worst)
    }

    fn bytes_read(&self) -> u64 {
        (self.k_new.numel() * 2 * 2) as u64
    }
}

pub fn append_gpu_cases(seed: u64) -> Vec<AppendCase> {
    vec![
        AppendCase::new("kv_append", dims(2, 8, 1, 4096, 128), 64, &[1000, 4000], 17, seed),
        AppendCase::new("kv_append", dims(3, 2, 1, 600, 64), 16, &[0, 15, 577], 1, seed + 1),
        AppendCase::new("kv_append", dims(2, 8, 1, 4096, 128), 64, &[1000, 4031], 33, seed + 2)
            .with_landmark_dtype(DType::BF16),
    ]
}
