//! Top-k block selection cases ([`TopkCase`]).

use super::*;

/// Landmarks from scratch + top-k block selection.
pub struct TopkCase {
    pub name: String,
    pub dims: DecodeDims,
    pub seq_len: usize,
    pub block_size: usize,
    pub k: usize,
    pub lm_tile: usize,
    pub sum_heads: bool,
    /// WARPS of [`TopkBlockSelect`] (4 from [`TopkCase::new`]).
    pub warps: usize,
    pub q: HostTensor,
    pub kc: HostTensor,
    /// `[B, Hkv, NB_cap, D]` output of the landmarks kernel ([`TopkCase::landmark_dtype`]).
    pub landmarks: HostTensor,
    /// f32 (from [`TopkCase::new`]) or bf16 ([`TopkCase::with_landmark_dtype`]).
    pub landmark_dtype: DType,
    pub block_idx: HostTensor,
    pub block_count: HostTensor,
}

impl TopkCase {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        dims: DecodeDims,
        seq_len: usize,
        block_size: usize,
        k: usize,
        lm_tile: usize,
        sum_heads: bool,
        seed: u64,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let DecodeDims { batch, kv_heads, group, cap, head_dim: d } = dims;
        let nb_cap = cap.div_ceil(block_size);
        TopkCase {
            name: name.to_string(),
            dims,
            seq_len,
            block_size,
            k,
            lm_tile,
            sum_heads,
            warps: 4,
            q: rand_bf16(&mut rng, &[batch, kv_heads * group, d], 2.0),
            kc: rand_bf16(&mut rng, &[batch, kv_heads, cap, d], 1.0),
            landmarks: HostTensor::full(DType::F32, &[batch, kv_heads, nb_cap, d], f64::NAN),
            landmark_dtype: DType::F32,
            block_idx: HostTensor::full(DType::I32, &[batch, kv_heads, k], 0.0),
            block_count: HostTensor::full(DType::I32, &[batch, kv_heads], 0.0),
        }
    }

    /// The same case with landmarks stored (and scored) as `dtype`.
    pub fn with_landmark_dtype(mut self, dtype: DType) -> Self {
        self.landmarks = HostTensor::full(dtype, &self.landmarks.shape, f64::NAN);
        self.landmark_dtype = dtype;
        self
    }

    fn ops(&self, rt: Option<&Runtime>) -> Result<(Landmarks, TopkBlockSelect), KernelError> {
        let d = self.dims;
        let lm = Landmarks::typed(rt, d.head_dim, self.block_size, self.landmark_dtype)?;
        let (k, t, sum, cand, w) = (self.k, self.lm_tile, self.sum_heads, self.max_cand(), self.warps);
        let sel = TopkBlockSelect::typed(rt, d.group, d.head_dim, k, t, sum, cand, w, self.landmark_dtype)?;
        Ok((lm, sel))
    }

    fn nb(&self) -> usize {
        self.seq_len.div_ceil(self.block_size)
    }

    fn max_cand(&self) -> usize {
        TopkBlockSelect::candidates(self.nb(), self.lm_tile, self.k).max(self.k).next_power_of_two()
    }
}

impl KernelCase for TopkCase {
    fn name(&self) -> String {
        let d = self.dims;
        format!(
            "{} B{} Hkv{} G{} D{} N{} bs{} k{} lm_tile{}{}{}",
            self.name,
            d.batch,
            d.kv_heads,
            d.group,
            d.head_dim,
            self.seq_len,
            self.block_size,
            self.k,
            self.lm_tile,
            if self.sum_heads { " sum" } else { " max" },
            if self.landmark_dtype == DType::BF16 { " bf16 landmarks" } else { "" }
        )
    }

    fn poison(&mut self) {
        poison(&mut self.landmarks);
        poison(&mut self.block_idx);
        poison(&mut self.block_count);
    }

    fn run_cpu(&mut self) -> Result<(), KernelError> {
        self.poison();
        let (landmarks, op) = self.ops(None)?;
        landmarks.run_cpu(&self.kc, &mut self.landmarks, self.seq_len)?;
        op.run_cpu(&self.q, &self.landmarks, self.nb(), &mut self.block_idx, &mut self.block_count)
    }

    fn run_gpu(&mut self, rt: &Runtime) -> Result<(), KernelError> {
        self.poison();
        let (q, kc) = (up(rt, &self.q)?, up(rt, &self.kc)?);
        let lm = DeviceTensor::poisoned(rt.stream(), self.landmark_dtype, &self.landmarks.shape)?;
        let bi = DeviceTensor::poisoned(rt.stream(), DType::I32, &self.block_idx.shape)?;
        let bc = DeviceTensor::poisoned(rt.stream(), DType::I32, &self.block_count.shape)?;
        let (landmarks, op) = self.ops(Some(rt))?;
        landmarks.launch(rt, &kc, &lm, self.seq_len)?;
        op.launch(rt, &q, &lm, self.nb(), &bi, &bc)?;
        rt.synchronize()?;
        self.landmarks = lm.download()?;
        self.block_idx = bi.download()?;
        self.block_count = bc.download()?;
        Ok(())
    }

    /// Landmarks within f32 tolerance (bf16: one rounding); the selection: `count = min(k, nb)`, indices
    /// distinct and in range, sorted by descending score, and their reference scores equal
    /// the reference top-k scores (up to 1e-4 relative: near-ties may swap blocks).
    fn check(&self) -> Result<f64, String> {
        let d = self.dims;
        let (nb, nb_cap) = (self.nb(), self.landmarks.shape[2]);
        let want_lm =
            r::landmarks(&self.kc.to_f64(), d.batch, d.kv_heads, d.cap, d.head_dim, self.seq_len, self.block_size);
        let got_all = self.landmarks.to_f64();
        let mut got_lm = Vec::with_capacity(want_lm.len());
        for bh in 0..d.batch * d.kv_heads {
            got_lm.extend_from_slice(&got_all[bh * nb_cap * d.head_dim..][..nb * d.head_dim]);
        }
        let bf16 = self.landmark_dtype == DType::BF16;
        let e = within("landmarks", r::rel_err(&got_lm, &want_lm)?, if bf16 { 4e-3 } else { 1e-5 })?;
        // Scores from the exact landmarks, or (bf16) from the rounded ones the kernel
        // scored: rounding moves scores by more than the near-tie tolerance below.
        let basis = if bf16 { &got_lm } else { &want_lm };
        let mut lm_cap = vec![0.0; got_all.len()];
        for bh in 0..d.batch * d.kv_heads {
            lm_cap[bh * nb_cap * d.head_dim..][..nb * d.head_dim]
                .copy_from_slice(&basis[bh * nb * d.head_dim..][..nb * d.head_dim]);
        }
        let scores = r::block_scores(&self.q.to_f64(), &lm_cap, d, nb_cap, nb, self.sum_heads);
        let (idx, cnt) = (self.block_idx.to_f64(), self.block_count.to_f64());
        let want_cnt = self.k.min(nb);
        for bh in 0..d.batch * d.kv_heads {
            let row = &scores[bh * nb..(bh + 1) * nb];
            if cnt[bh] as usize != want_cnt {
                return Err(format!("(b,h) {bh}: count {} want {want_cnt}", cnt[bh]));
            }
            let sel = &idx[bh * self.k..(bh + 1) * self.k];
            let mut seen = std::collections::BTreeSet::new();
            let mut sorted: Vec<f64> = row.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let mag = row.iter().fold(1e-30f64, |m, x| m.max(x.abs()));
            for (j, &x) in sel.iter().enumerate() {
                if j >= want_cnt {
                    if x != -1.0 {
                        return Err(format!("(b,h) {bh}: padding slot {j} = {x}, want -1"));
                    }
                    continue;
                }
                let b = x as i64;
                if b < 0 || b as usize >= nb || !seen.insert(b) {
                    return Err(format!("(b,h) {bh}: slot {j} = {x} out of range or repeated"));
                }
                if (row[b as usize] - sorted[j]).abs() > 1e-4 * mag {
                    return Err(format!(
                        "(b,h) {bh}: slot {j} block {b} scores {} but rank {j} is {}",
                        row[b as usize], sorted[j]
                    ));
                }
            }
        }
        Ok(e)
    }

    fn bytes_read(&self) -> u64 {
        let d = self.dims;
        let lm_bytes = self.landmark_dtype.size_bytes();
        (d.batch * d.kv_heads * self.nb() * d.head_dim * lm_bytes + self.q.numel() * 2) as u64
    }
}

pub fn topk_gpu_cases(seed: u64) -> Vec<TopkCase> {
    vec![
        TopkCase::new("topk_block_select", dims(2, 8, 4, 32768, 128), 32700, 64, 64, 128, false, seed),
        TopkCase::new("topk_block_select", dims(2, 8, 4, 32768, 128), 32700, 64, 64, 32, false, seed + 2),
        TopkCase::new("topk_block_select", dims(2, 2, 8, 5000, 64), 4999, 16, 16, 64, true, seed + 1),
        TopkCase::new("topk_block_select", dims(2, 8, 4, 32768, 128), 32700, 64, 64, 32, false, seed + 3)
            .with_landmark_dtype(DType::BF16),
        TopkCase::new("topk_block_select", dims(2, 2, 8, 5000, 64), 4999, 16, 16, 64, true, seed + 4)
            .with_landmark_dtype(DType::BF16),
    ]
}
