//! Centroid lookup cases ([`CentroidCase`]): k-means, permuted cache, decode.

use super::*;

/// Centroid lookup end to end: k-means of the fixed context ([`KMeansCluster`], `iters`
/// iterations from [`crate::centroid::init_centroids`]), the permuted cache, then the
/// decode ([`CentroidDecode`]: scores, select, packed kept rows + recent rows attended, combine).
pub struct CentroidCase {
    pub name: String,
    pub dims: DecodeDims,
    pub fixed_len: usize,
    pub seq_len: usize,
    pub iters: usize,
    pub normalize: bool,
    pub keep: usize,
    pub pack_programs: usize,
    pub threshold: f32,
    pub params: DecodeParams,
    pub q: HostTensor,
    pub k: HostTensor,
    pub v: HostTensor,
    /// `[B, Hkv, C, D] f32`.
    pub init: HostTensor,
    pub clusters: Option<ClusterOut>,
    pub k_perm: HostTensor,
    pub v_perm: HostTensor,
    pub keep_start: HostTensor,
    pub keep_len: HostTensor,
    pub keep_count: HostTensor,
    pub out: HostTensor,
    pub lse: HostTensor,
    /// Element type the decode reads the centroids in (the k-means keeps f32; bf16 rounds
    /// them first, and the selection reference scores the rounded values).
    pub centroid_dtype: DType,
}

impl CentroidCase {
    /// The same case with the decode reading bf16 (or f32) centroids.
    pub fn with_centroid_dtype(mut self, dtype: DType) -> Self {
        if dtype != self.centroid_dtype {
            self.name = format!("{} {dtype:?}-centroids", self.name);
        }
        self.centroid_dtype = dtype;
        self
    }

    /// The k-means centroids as the decode reads them.
    fn decode_centroids(&self, centroids: &HostTensor) -> HostTensor {
        if centroids.dtype() == self.centroid_dtype {
            return centroids.clone();
        }
        HostTensor::from_f64(self.centroid_dtype, &centroids.shape, &centroids.to_f64())
    }

    /// The decode op for `rt` (interpreter when `None`) and [`Self::centroid_dtype`].
    fn decode_op(&self, rt: Option<&Runtime>) -> Result<CentroidDecode, KernelError> {
        let (p, keep, c, slots) = (self.params.clone(), self.keep, self.num_clusters(), self.pack_programs);
        let op = match rt {
            None => CentroidDecode::cpu(p, keep, c, slots)?,
            Some(rt) => CentroidDecode::new(rt, p, keep, c, slots)?,
        };
        if self.centroid_dtype == DType::F32 {
            return Ok(op);
        }
        op.with_centroid_dtype(rt, self.centroid_dtype)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        dims: DecodeDims,
        fixed_len: usize,
        seq_len: usize,
        clusters: usize,
        iters: usize,
        keep: usize,
        pack_programs: usize,
        threshold: f32,
        seed: u64,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let DecodeDims { batch: b, kv_heads: h, group: g, cap, head_dim: d } = dims;
        let k = rand_bf16(&mut rng, &[b, h, cap, d], 1.0);
        let kf = k.to_f64();
        let mut init = Vec::with_capacity(b * h * clusters * d);
        for bh in 0..b * h {
            let keys = &kf[bh * cap * d..(bh * cap + fixed_len) * d];
            init.extend(crate::centroid::init_centroids(keys, fixed_len, d, clusters, true, seed ^ bh as u64));
        }
        let keep_shape = [b, h, keep];
        CentroidCase {
            name: name.to_string(),
            dims,
            fixed_len,
            seq_len,
            iters,
            normalize: true,
            keep,
            pack_programs,
            threshold,
            params: lse_params(g, d),
            q: rand_bf16(&mut rng, &[b, h * g, d], 2.0),
            v: rand_bf16(&mut rng, &[b, h, cap, d], 1.0),
            k,
            init: HostTensor::from_f64(DType::F32, &[b, h, clusters, d], &init),
            clusters: None,
            k_perm: HostTensor::full(DType::BF16, &[b, h, cap, d], 0.0),
            v_perm: HostTensor::full(DType::BF16, &[b, h, cap, d], 0.0),
            keep_start: HostTensor::full(DType::I32, &keep_shape, 0.0),
            keep_len: HostTensor::full(DType::I32, &keep_shape, 0.0),
            keep_count: HostTensor::full(DType::I32, &[b, h], 0.0),
            out: HostTensor::full(DType::BF16, &[b, h * g, d], f64::NAN),
            lse: HostTensor::full(DType::F32, &[b, h * g], f64::NAN),
            centroid_dtype: DType::F32,
        }
    }

    fn num_clusters(&self) -> usize {
        self.init.shape[2]
    }

    /// Checks the clustering outputs: every label is the nearest of the last assignment's
    /// centroids up to 1e-4, counts / starts / perm are the stable counting sort of the
    /// labels, centroids are the raw-key means within 1e-4 (of the largest |key|), the
    /// permuted caches are exact. Returns the worst centroid error.
    #[allow(clippy::needless_range_loop)]
    fn check_clusters(&self) -> Result<f64, String> {
        let co = self.clusters.as_ref().ok_or("not run")?;
        let DecodeDims { batch, kv_heads, cap, head_dim: d, .. } = self.dims;
        let (c, tf) = (self.num_clusters(), self.fixed_len);
        let (kf, vf) = (self.k.to_f64(), self.v.to_f64());
        let (lab, cen, acen) = (co.labels.to_f64(), co.centroids.to_f64(), co.assign_centroids.to_f64());
        let (cnt, st, perm) = (co.counts.to_f64(), co.starts.to_f64(), co.perm.to_f64());
        let (kp, vp) = (self.k_perm.to_f64(), self.v_perm.to_f64());
        let kmax = kf.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let mut worst: f64 = 0.0;
        for bh in 0..batch * kv_heads {
            let keys = &kf[bh * cap * d..(bh * cap + tf) * d];
            let labels: Vec<usize> = lab[bh * tf..(bh + 1) * tf].iter().map(|&x| x as usize).collect();
            if labels.iter().any(|&l| l >= c) {
                return Err(format!("(b,h) {bh}: label out of range"));
            }
            if self.iters > 0 {
                let ac = &acen[bh * c * d..(bh + 1) * c * d];
                for (j, &l) in labels.iter().enumerate() {
                    let row = &keys[j * d..(j + 1) * d];
                    let n: f64 = row.iter().map(|x| x * x).sum::<f64>().sqrt();
                    let x: Vec<f64> = row.iter().map(|v| if self.normalize && n > 0.0 { v / n } else { *v }).collect();
                    let s = |ci: usize| {
                        let cc = &ac[ci * d..(ci + 1) * d];
                        x.iter().zip(cc).map(|(a, b)| a * b).sum::<f64>() - 0.5 * cc.iter().map(|v| v * v).sum::<f64>()
                    };
                    let best = (0..c).map(s).fold(f64::NEG_INFINITY, f64::max);
                    if s(l) < best - 1e-4 * (1.0 + best.abs()) {
                        return Err(format!("(b,h) {bh} key {j}: label {l} scores {} < best {best}", s(l)));
                    }
                }
            }
            let (wp, ws) = crate::centroid::cluster_layout(&labels, c);
            let got_st: Vec<usize> = st[bh * (c + 1)..(bh + 1) * (c + 1)].iter().map(|&x| x as usize).collect();
            let got_p: Vec<usize> = perm[bh * tf..(bh + 1) * tf].iter().map(|&x| x as usize).collect();
            if got_st != ws || got_p != wp {
                return Err(format!("(b,h) {bh}: starts/perm are not the counting sort of the labels"));
            }
            for ci in 0..c {
                let n = ws[ci + 1] - ws[ci];
                if cnt[bh * c + ci] as usize != n {
                    return Err(format!("(b,h) {bh}: count of cluster {ci} {} want {n}", cnt[bh * c + ci]));
                }
                if n == 0 {
                    continue;
                }
                for e in 0..d {
                    let mean = wp[ws[ci]..ws[ci + 1]].iter().map(|&j| keys[j * d + e]).sum::<f64>() / n as f64;
                    let err = (cen[(bh * c + ci) * d + e] - mean).abs() / kmax.max(1e-30);
                    if err.is_nan() || err > 1e-4 {
                        return Err(format!(
                            "(b,h) {bh}: centroid {ci}[{e}] {} vs mean {mean}",
                            cen[(bh * c + ci) * d + e]
                        ));
                    }
                    worst = worst.max(err);
                }
            }
            for r in 0..self.seq_len {
                let src = if r < tf { wp[r] } else { r };
                let (a, b) = ((bh * cap + r) * d, (bh * cap + src) * d);
                if kp[a..a + d] != kf[b..b + d] || vp[a..a + d] != vf[b..b + d] {
                    return Err(format!("(b,h) {bh}: permuted row {r} is not row {src}"));
                }
            }
        }
        Ok(worst)
    }

    /// Kept clusters (ids) of each (b, h) from `keep_start`/`keep_len`/`keep_count`,
    /// checked against the f64 scores up to near-ties (1e-3 in log2 units).
    fn check_selection(&self) -> Result<Vec<Vec<usize>>, String> {
        let co = self.clusters.as_ref().ok_or("not run")?;
        let DecodeDims { batch, kv_heads, group, head_dim: d, .. } = self.dims;
        let c = self.num_clusters();
        let cen = self.decode_centroids(&co.centroids).to_f64();
        let (cnt, st) = (co.counts.to_f64(), co.starts.to_f64());
        let (ks, kl, kc) = (self.keep_start.to_f64(), self.keep_len.to_f64(), self.keep_count.to_f64());
        let q = self.q.to_f64();
        let mut out = Vec::new();
        let tol = 1e-3;
        for bh in 0..batch * kv_heads {
            let counts: Vec<usize> = cnt[bh * c..(bh + 1) * c].iter().map(|&x| x as usize).collect();
            let starts = &st[bh * (c + 1)..(bh + 1) * (c + 1)];
            let qs = &q[bh * group * d..(bh + 1) * group * d];
            let scores = crate::centroid::score_clusters(
                qs,
                &cen[bh * c * d..(bh + 1) * c * d],
                &counts,
                d,
                self.params.scale_log2 as f64,
            );
            let want = crate::centroid::select_clusters(&scores, self.keep, self.threshold as f64);
            let got = kept_cluster_ids(bh, (&ks, &kl, &kc), self.keep, starts)?;
            let mut gs: Vec<f64> = got.iter().map(|&i| scores[i]).collect();
            let mut ws: Vec<f64> = want.iter().map(|&i| scores[i]).collect();
            gs.sort_by(|a, b| b.total_cmp(a));
            ws.sort_by(|a, b| b.total_cmp(a));
            for (x, y) in gs.iter().zip(&ws) {
                if (x - y).abs() > tol {
                    return Err(format!("(b,h) {bh}: kept score {x} vs reference {y}"));
                }
            }
            let thr = self.threshold as f64;
            let extra = if gs.len() > ws.len() { &gs[ws.len()..] } else { &ws[gs.len()..] };
            if extra.iter().any(|x| (x - thr).abs() > tol) {
                return Err(format!("(b,h) {bh}: kept {} clusters, reference {}", gs.len(), ws.len()));
            }
            out.push(got);
        }
        Ok(out)
    }
}

impl KernelCase for CentroidCase {
    fn name(&self) -> String {
        let d = self.dims;
        format!(
            "{} B{} Hkv{} G{} D{} Tf{} N{} C{} I{} keep{} thr{}",
            self.name,
            d.batch,
            d.kv_heads,
            d.group,
            d.head_dim,
            self.fixed_len,
            self.seq_len,
            self.num_clusters(),
            self.iters,
            self.keep,
            self.threshold
        )
    }

    fn poison(&mut self) {
        self.clusters = None;
        for t in [
            &mut self.k_perm,
            &mut self.v_perm,
            &mut self.keep_start,
            &mut self.keep_len,
            &mut self.keep_count,
            &mut self.out,
            &mut self.lse,
        ] {
            poison(t);
        }
    }

    fn run_cpu(&mut self) -> Result<(), KernelError> {
        self.poison();
        let d = self.dims;
        let km = KMeansCluster::cpu(d.head_dim, self.normalize, 64, 64)?;
        let co = km.run_cpu(
            &self.k,
            &self.v,
            self.fixed_len,
            self.seq_len,
            &self.init,
            self.iters,
            &mut self.k_perm,
            &mut self.v_perm,
        )?;
        let op = self.decode_op(None)?;
        op.run_cpu(
            &self.q,
            &self.k_perm,
            &self.v_perm,
            &self.decode_centroids(&co.centroids),
            &co.counts,
            &co.starts,
            self.fixed_len,
            self.seq_len,
            self.threshold,
            &mut self.keep_start,
            &mut self.keep_len,
            &mut self.keep_count,
            &mut self.out,
            Some(&mut self.lse),
        )?;
        self.clusters = Some(co);
        Ok(())
    }

    fn run_gpu(&mut self, rt: &Runtime) -> Result<(), KernelError> {
        self.poison();
        let d = self.dims;
        let st = rt.stream();
        let km = KMeansCluster::new(rt, d.head_dim, self.normalize, 64, 64)?;
        km.check_args(&self.k, &self.v, self.fixed_len, self.seq_len, &self.init, &self.k_perm, &self.v_perm)?;
        let (k, v, init) = (up(rt, &self.k)?, up(rt, &self.v)?, up(rt, &self.init)?);
        let kp = DeviceTensor::poisoned(st, DType::BF16, &self.k_perm.shape)?;
        let vp = DeviceTensor::poisoned(st, DType::BF16, &self.v_perm.shape)?;
        let dc = km.launch(rt, &k, &v, self.fixed_len, self.seq_len, &init, self.iters, &kp, &vp)?;
        let op = self.decode_op(Some(rt))?;
        let centroids = if self.centroid_dtype == DType::F32 {
            None
        } else {
            Some(up(rt, &self.decode_centroids(&dc.centroids.download()?))?)
        };
        let q = up(rt, &self.q)?;
        let ks = DeviceTensor::poisoned(st, DType::I32, &self.keep_start.shape)?;
        let kl = DeviceTensor::poisoned(st, DType::I32, &self.keep_len.shape)?;
        let kc = DeviceTensor::poisoned(st, DType::I32, &self.keep_count.shape)?;
        let out = DeviceTensor::poisoned(st, DType::BF16, &self.out.shape)?;
        let lse = DeviceTensor::poisoned(st, DType::F32, &self.lse.shape)?;
        // `starts` was built on the host from the labels: check it before the launch.
        let (_, starts_h) = crate::centroid::layout_tensors(&dc.labels, self.num_clusters());
        op.check_args(
            &self.q,
            &self.k_perm,
            &self.v_perm,
            &HostTensor::full(self.centroid_dtype, &self.init.shape, 0.0),
            &HostTensor::full(DType::I32, &[d.batch, d.kv_heads, self.num_clusters()], 0.0),
            &starts_h,
            self.fixed_len,
            self.seq_len,
            &self.keep_start,
            &self.keep_len,
            &self.keep_count,
            &self.out,
            Some(&self.lse),
        )?;
        op.launch(
            rt,
            &q,
            &kp,
            &vp,
            centroids.as_ref().unwrap_or(&dc.centroids),
            &dc.counts,
            &dc.starts,
            self.fixed_len,
            self.seq_len,
            self.threshold,
            &ks,
            &kl,
            &kc,
            &out,
            Some(&lse),
        )?;
        rt.synchronize()?;
        self.k_perm = kp.download()?;
        self.v_perm = vp.download()?;
        self.keep_start = ks.download()?;
        self.keep_len = kl.download()?;
        self.keep_count = kc.download()?;
        self.out = out.download()?;
        self.lse = lse.download()?;
        self.clusters = Some(ClusterOut {
            labels: dc.labels,
            centroids: dc.centroids.download()?,
            assign_centroids: dc.assign_centroids.download()?,
            counts: dc.counts.download()?,
            starts: dc.starts.download()?,
            perm: dc.perm,
        });
        Ok(())
    }

    /// Clustering consistency, selection up to near-ties, then the output / LSE against
    /// the f64 decode over the kept clusters' rows + the recent rows.
    fn check(&self) -> Result<f64, String> {
        self.check_clusters()?;
        let kept = self.check_selection()?;
        let co = self.clusters.as_ref().ok_or("not run")?;
        let c = self.num_clusters();
        let st = co.starts.to_f64();
        let hkv = self.dims.kv_heads;
        let (q, k, v) = (self.q.to_f64(), self.k_perm.to_f64(), self.v_perm.to_f64());
        let (tf, n) = (self.fixed_len, self.seq_len);
        let (o, l) = r::decode_with(self.dims, &q, &k, &v, self.params.scale_log2 as f64, |b, h| {
            let bh = b * hkv + h;
            let mut pos: Vec<usize> = Vec::new();
            for &ci in &kept[bh] {
                pos.extend(st[bh * (c + 1) + ci] as usize..st[bh * (c + 1) + ci + 1] as usize);
            }
            pos.extend(tf..n);
            pos
        });
        let e = within("out", r::rel_err(&self.out.to_f64(), &o)?, BF16_TOL)?;
        check_lse(&self.lse, &l)?;
        Ok(e)
    }

    fn bytes_read(&self) -> u64 {
        // Decode only: centroids + kept rows (mean per (b, h)) + recent rows + q.
        let d = self.dims;
        let kept: f64 = self.keep_len.to_f64().iter().filter(|x| **x > 0.0).sum::<f64>();
        let bh = (d.batch * d.kv_heads) as f64;
        let rows = kept + bh * (self.seq_len - self.fixed_len) as f64;
        let cent = bh * (self.num_clusters() * d.head_dim * self.centroid_dtype.size_bytes()) as f64;
        (rows * (2 * d.head_dim * 2) as f64 + cent) as u64 + self.q.numel() as u64 * 2
    }
}

pub fn centroid_gpu_cases(seed: u64) -> Vec<CentroidCase> {
    vec![
        // 5% clusters, top 10% of them, GQA 4, D 128.
        CentroidCase::new("centroid", dims(2, 4, 4, 12000, 128), 11000, 11517, 550, 4, 56, 8, f32::NEG_INFINITY, seed),
        // Threshold variant (keep clusters whose estimated per-key probability beats the
        // uniform 1/T_f ≈ 2^-12.1), GQA 3, D 64.
        CentroidCase::new("centroid", dims(1, 3, 3, 5000, 64), 4500, 4999, 225, 3, 40, 5, -12.0, seed + 1),
    ]
}
