//! SnapKV selection + compression cases ([`SnapKvCase`]).

use super::*;

/// SnapKV selection + compression ([`crate::snapkv::SnapKvCompress`]) vs
/// [`crate::snapkv::reference`].
pub struct SnapKvCase {
    pub name: String,
    pub dims: DecodeDims,
    pub window: usize,
    pub t: usize,
    pub capacity: usize,
    pub kernel_size: usize,
    pub pool: Pool,
    pub pool_tile: usize,
    pub q_obs: HostTensor,
    pub k: HostTensor,
    pub v: HostTensor,
    pub votes: HostTensor,
    pub keep_idx: HostTensor,
    pub keep_count: HostTensor,
    pub k_out: HostTensor,
    pub v_out: HostTensor,
}

impl SnapKvCase {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        dims: DecodeDims,
        window: usize,
        t: usize,
        capacity: usize,
        kernel_size: usize,
        pool: Pool,
        pool_tile: usize,
        seed: u64,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let DecodeDims { batch: b, kv_heads: h, group: g, cap, head_dim: d } = dims;
        let keep = capacity - window;
        SnapKvCase {
            name: name.to_string(),
            dims,
            window,
            t,
            capacity,
            kernel_size,
            pool,
            pool_tile,
            q_obs: rand_bf16(&mut rng, &[b, h, g * window, d], 1.0),
            k: rand_bf16(&mut rng, &[b, h, cap, d], 1.0),
            v: rand_bf16(&mut rng, &[b, h, cap, d], 1.0),
            votes: HostTensor::full(DType::F32, &[b, h, cap], f64::NAN),
            keep_idx: HostTensor::full(DType::I32, &[b, h, keep], 0.0),
            keep_count: HostTensor::full(DType::I32, &[b, h], 0.0),
            k_out: HostTensor::full(DType::BF16, &[b, h, capacity, d], f64::NAN),
            v_out: HostTensor::full(DType::BF16, &[b, h, capacity, d], f64::NAN),
        }
    }

    fn max_cand(&self) -> usize {
        (self.t - self.window).div_ceil(self.pool_tile) * (self.capacity - self.window)
    }

    fn scale_log2(&self) -> f64 {
        crate::default_scale_log2(self.dims.head_dim) as f64
    }
}

impl KernelCase for SnapKvCase {
    fn name(&self) -> String {
        let d = self.dims;
        format!(
            "{} B{} Hkv{} G{} D{} t{} w{} C{} k{} {:?}",
            self.name,
            d.batch,
            d.kv_heads,
            d.group,
            d.head_dim,
            self.t,
            self.window,
            self.capacity,
            self.kernel_size,
            self.pool
        )
    }

    fn poison(&mut self) {
        for t in [&mut self.votes, &mut self.keep_idx, &mut self.keep_count, &mut self.k_out, &mut self.v_out] {
            poison(t);
        }
    }

    fn run_cpu(&mut self) -> Result<(), KernelError> {
        self.poison();
        let d = self.dims;
        let op = SnapKvCompress::cpu(
            d.group,
            self.window,
            d.head_dim,
            self.capacity,
            self.kernel_size,
            self.pool,
            self.pool_tile,
            self.max_cand(),
        )?;
        op.run_cpu(
            &self.q_obs,
            &self.k,
            &self.v,
            self.t,
            &mut self.votes,
            &mut self.keep_idx,
            &mut self.keep_count,
            &mut self.k_out,
            &mut self.v_out,
        )?;
        Ok(())
    }

    fn run_gpu(&mut self, rt: &Runtime) -> Result<(), KernelError> {
        self.poison();
        let d = self.dims;
        let op = SnapKvCompress::new(
            rt,
            d.group,
            self.window,
            d.head_dim,
            self.capacity,
            self.kernel_size,
            self.pool,
            self.pool_tile,
            self.max_cand(),
        )?;
        op.check_args(
            &self.q_obs,
            &self.k,
            &self.v,
            self.t,
            &self.keep_idx,
            &self.keep_count,
            &self.k_out,
            &self.v_out,
        )?;
        let (q, k, v) = (up(rt, &self.q_obs)?, up(rt, &self.k)?, up(rt, &self.v)?);
        let st = rt.stream();
        let votes = DeviceTensor::poisoned(st, DType::F32, &self.votes.shape)?;
        let ki = DeviceTensor::poisoned(st, DType::I32, &self.keep_idx.shape)?;
        let kc = DeviceTensor::poisoned(st, DType::I32, &self.keep_count.shape)?;
        let ko = DeviceTensor::poisoned(st, DType::BF16, &self.k_out.shape)?;
        let vo = DeviceTensor::poisoned(st, DType::BF16, &self.v_out.shape)?;
        op.launch(rt, &q, &k, &v, self.t, &votes, &ki, &kc, &ko, &vo)?;
        rt.synchronize()?;
        self.votes = votes.download()?;
        self.keep_idx = ki.download()?;
        self.keep_count = kc.download()?;
        self.k_out = ko.download()?;
        self.v_out = vo.download()?;
        Ok(())
    }

    /// As `tests/snapkv_select.rs`: the pooled kernel votes within 1e-4 (of the largest
    /// pooled vote) of the reference, the selection ascending and equal to the reference
    /// up to near-ties (the kept reference scores match the top scores within 1e-4), the
    /// compressed rows bit-exact. Returns the worst pooled-vote error.
    fn check(&self) -> Result<f64, String> {
        let d = self.dims;
        let (w, t, c, dd) = (self.window, self.t, self.capacity, d.head_dim);
        let cap = d.cap;
        let keep = c - w;
        let (kf, vf) = (self.k.to_f64(), self.v.to_f64());
        let want = crate::snapkv::reference(
            d,
            w,
            &self.q_obs.to_f64(),
            &kf,
            t,
            c,
            self.kernel_size,
            self.pool,
            self.scale_log2(),
        );
        let (vt, it, ct) = (self.votes.to_f64(), self.keep_idx.to_f64(), self.keep_count.to_f64());
        let (kof, vof) = (self.k_out.to_f64(), self.v_out.to_f64());
        let prefix = t - w;
        let mut worst: f64 = 0.0;
        for (bh, (pooled, kept)) in want.iter().enumerate() {
            let got: Vec<f32> = vt[bh * cap..][..prefix].iter().map(|&x| x as f32).collect();
            let gp = crate::snapkv::pool(&got, self.kernel_size, self.pool);
            let mag = pooled.iter().fold(1e-30f64, |m, x| m.max(x.abs()));
            for (j, (a, r)) in gp.iter().zip(pooled).enumerate() {
                let e = (*a as f64 - r).abs() / mag;
                if e.is_nan() || e > 1e-4 {
                    return Err(format!("(b,h) {bh} pooled vote {j}: {a} vs {r}"));
                }
                worst = worst.max(e);
            }
            if ct[bh] as usize != kept.len() {
                return Err(format!("(b,h) {bh}: keep_count {} want {}", ct[bh], kept.len()));
            }
            let sel: Vec<usize> = it[bh * keep..][..kept.len()].iter().map(|&x| x as usize).collect();
            if !sel.windows(2).all(|p| p[0] < p[1]) || sel.iter().any(|&j| j >= prefix) {
                return Err(format!("(b,h) {bh}: selection not ascending or out of the prefix"));
            }
            let mut sorted = pooled.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let mut got_scores: Vec<f64> = sel.iter().map(|&j| pooled[j]).collect();
            got_scores.sort_by(|a, b| b.total_cmp(a));
            for (x, y) in got_scores.iter().zip(&sorted) {
                if (x - y).abs() > 1e-4 * mag {
                    return Err(format!("(b,h) {bh}: kept score {x} vs top {y}"));
                }
            }
            let rows: Vec<usize> = sel.iter().copied().chain(t - w..t).collect();
            for (r, &pos) in rows.iter().enumerate() {
                let (src, dst) = ((bh * cap + pos) * dd, (bh * c + r) * dd);
                if kof[dst..dst + dd] != kf[src..src + dd] || vof[dst..dst + dd] != vf[src..src + dd] {
                    return Err(format!("(b,h) {bh}: compressed row {r} is not position {pos}"));
                }
            }
        }
        Ok(worst)
    }

    fn bytes_read(&self) -> u64 {
        // Two passes over the t keys (stats, votes), then the C kept rows of K and V.
        let d = self.dims;
        let bh = (d.batch * d.kv_heads) as u64;
        bh * (2 * self.t + 2 * self.capacity) as u64 * d.head_dim as u64 * 2 + self.q_obs.numel() as u64 * 2
    }
}

pub fn snapkv_gpu_cases(seed: u64) -> Vec<SnapKvCase> {
    vec![
        SnapKvCase::new("snapkv_compress", dims(1, 4, 4, 16007, 128), 32, 16000, 1024, 7, Pool::Max, 2048, seed),
        SnapKvCase::new("snapkv_compress", dims(2, 2, 3, 4100, 64), 16, 4099, 257, 4, Pool::Avg, 1024, seed + 1),
    ]
}
