//! [`CentroidTwoLevelCase`]: the two-level centroid lookup end to end — fine k-means
//! ([`KMeansCluster`]), the coarse level and re-permuted cache ([`TwoLevelLayout`],
//! [`CentroidPermute`]), the decode ([`CentroidTwoLevelDecode`]) — against the f64
//! selection ([`select_two_level`]) and attention over the kept rows.

use rand::rngs::StdRng;
use rand::SeedableRng;
use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_dsl_support::KernelConfig;
use tessera_runtime::{DeviceTensor, Runtime};

use super::{check_lse, kept_cluster_ids, lse_params, poison, r, rand_bf16, up, within, KernelCase, BF16_TOL};
use crate::centroid::{init_centroids, CentroidPermute, KMeansCluster};
use crate::centroid_two_level::{select_two_level, CentroidTwoLevelDecode, KeptRanges, TwoLevelInputs, TwoLevelLayout};
use crate::dense::DecodeParams;
use crate::error::KernelError;
use crate::reference::DecodeDims;
use crate::Scratch;

/// Lloyd iterations of both levels.
const ITERS: usize = 3;

/// One two-level lookup problem.
pub struct CentroidTwoLevelCase {
    pub dims: DecodeDims,
    pub fixed_len: usize,
    pub seq_len: usize,
    pub coarse: usize,
    pub keep_coarse: usize,
    pub keep: usize,
    pub pack_programs: usize,
    pub threshold: f32,
    pub params: DecodeParams,
    pub seed: u64,
    pub q: HostTensor,
    pub k: HostTensor,
    pub v: HostTensor,
    /// `[B, Hkv, C, D] f32`: the fine k-means seeds.
    pub init: HostTensor,
    pub layout: Option<TwoLevelLayout>,
    /// The cache re-permuted by the layout.
    pub k_perm: HostTensor,
    pub v_perm: HostTensor,
    pub keep_start: HostTensor,
    pub keep_len: HostTensor,
    pub keep_count: HostTensor,
    pub out: HostTensor,
    pub lse: HostTensor,
    /// Element type the decode reads the fine and coarse centroids in (rounded to it from
    /// the f32 layout; the selection reference scores the rounded values).
    pub centroid_dtype: DType,
}

impl CentroidTwoLevelCase {
    /// The same case with the decode reading bf16 (or f32) centroids.
    pub fn with_centroid_dtype(mut self, dtype: DType) -> Self {
        self.centroid_dtype = dtype;
        self
    }

    /// The layout with its centroids in [`Self::centroid_dtype`].
    fn typed(&self, mut layout: TwoLevelLayout) -> TwoLevelLayout {
        let dt = self.centroid_dtype;
        for t in [&mut layout.fine_centroids, &mut layout.coarse_centroids] {
            if t.dtype() != dt {
                *t = HostTensor::from_f64(dt, &t.shape, &t.to_f64());
            }
        }
        layout
    }

    /// The decode op for `rt` (interpreter when `None`) and [`Self::centroid_dtype`].
    fn decode_op(&self, rt: Option<&Runtime>, max_fine: usize) -> Result<CentroidTwoLevelDecode, KernelError> {
        let (p, kc, c, k, slots) = (self.params.clone(), self.keep_coarse, self.coarse, self.keep, self.pack_programs);
        let op = match rt {
            None => CentroidTwoLevelDecode::cpu(p, kc, c, k, max_fine, slots)?,
            Some(rt) => CentroidTwoLevelDecode::new(rt, p, kc, c, k, max_fine, slots)?,
        };
        if self.centroid_dtype == DType::F32 {
            return Ok(op);
        }
        op.with_centroid_dtype(rt, self.centroid_dtype)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dims: DecodeDims,
        fixed_len: usize,
        seq_len: usize,
        fine: usize,
        coarse: usize,
        keep_coarse: usize,
        keep: usize,
        pack_programs: usize,
        threshold: f32,
        seed: u64,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let DecodeDims { batch: b, kv_heads: h, group: g, cap, head_dim: d } = dims;
        let k = rand_bf16(&mut rng, &[b, h, cap, d], 1.0);
        let kf = k.to_f64();
        let mut init = Vec::with_capacity(b * h * fine * d);
        for bh in 0..b * h {
            let keys = &kf[bh * cap * d..(bh * cap + fixed_len) * d];
            init.extend(init_centroids(keys, fixed_len, d, fine, true, seed ^ bh as u64));
        }
        let keep_shape = [b, h, keep];
        CentroidTwoLevelCase {
            dims,
            fixed_len,
            seq_len,
            coarse,
            keep_coarse,
            keep,
            pack_programs,
            threshold,
            params: lse_params(g, d),
            seed,
            q: rand_bf16(&mut rng, &[b, h * g, d], 2.0),
            v: rand_bf16(&mut rng, &[b, h, cap, d], 1.0),
            k,
            init: HostTensor::from_f64(DType::F32, &[b, h, fine, d], &init),
            layout: None,
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

    fn fine(&self) -> usize {
        self.init.shape[2]
    }

    fn permute_config(&self) -> KernelConfig {
        KernelConfig::from_pairs(&[("HEAD_DIM", self.dims.head_dim as i64), ("ROWS", 64), ("WARPS", 4)])
    }

    fn permute_grid(&self) -> [u32; 3] {
        let d = self.dims;
        [self.seq_len.div_ceil(64) as u32, d.kv_heads as u32, d.batch as u32]
    }

    /// Kept fine ids per (b, h), checked against the f64 selection up to near-ties.
    fn check_selection(&self, layout: &TwoLevelLayout) -> Result<Vec<Vec<usize>>, String> {
        let DecodeDims { batch, kv_heads, group, head_dim: d, .. } = self.dims;
        let (c, cc) = (self.fine(), self.coarse);
        let (fcen, fcnt, fst) =
            (layout.fine_centroids.to_f64(), layout.fine_counts.to_f64(), layout.fine_starts.to_f64());
        let (ccen, ccnt, cst) =
            (layout.coarse_centroids.to_f64(), layout.coarse_counts.to_f64(), layout.coarse_starts.to_f64());
        let (ks, kl, kc) = (self.keep_start.to_f64(), self.keep_len.to_f64(), self.keep_count.to_f64());
        let q = self.q.to_f64();
        let us = |v: &[f64]| v.iter().map(|&x| x as usize).collect::<Vec<usize>>();
        let mut out = Vec::new();
        let tol = 1e-3;
        for bh in 0..batch * kv_heads {
            let counts = us(&fcnt[bh * c..(bh + 1) * c]);
            let starts = &fst[bh * (c + 1)..(bh + 1) * (c + 1)];
            let (want, scores) = select_two_level(
                &q[bh * group * d..(bh + 1) * group * d],
                &fcen[bh * c * d..(bh + 1) * c * d],
                &counts,
                &ccen[bh * cc * d..(bh + 1) * cc * d],
                &us(&ccnt[bh * cc..(bh + 1) * cc]),
                &us(&cst[bh * (cc + 1)..(bh + 1) * (cc + 1)]),
                d,
                self.keep_coarse,
                self.keep,
                self.threshold as f64,
                self.params.scale_log2 as f64,
            );
            let got = kept_cluster_ids(bh, (&ks, &kl, &kc), self.keep, starts)?;
            // Same scores up to near-ties (a tie at the coarse cut can swap whole coarse
            // clusters: then the fine scores differ, and this reports it).
            let sorted = |ids: &[usize]| {
                let mut s: Vec<f64> = ids.iter().map(|&f| scores[f]).collect();
                s.sort_by(|a, b| b.total_cmp(a));
                s
            };
            let (gs, ws) = (sorted(&got), sorted(&want));
            let far = |(x, y): (&f64, &f64)| (x - y).abs() > tol || (x - y).is_nan();
            if gs.len() != ws.len() || gs.iter().zip(&ws).any(far) {
                return Err(format!("(b,h) {bh}: kept scores {gs:?} vs reference {ws:?}"));
            }
            out.push(got);
        }
        Ok(out)
    }
}

impl KernelCase for CentroidTwoLevelCase {
    fn name(&self) -> String {
        let d = self.dims;
        let ct = if self.centroid_dtype == DType::F32 {
            String::new()
        } else {
            format!(" {:?}-centroids", self.centroid_dtype)
        };
        format!(
            "centroid2{ct} B{} Hkv{} G{} D{} Tf{} N{} C{}/{} keep {}/{} thr{}",
            d.batch,
            d.kv_heads,
            d.group,
            d.head_dim,
            self.fixed_len,
            self.seq_len,
            self.fine(),
            self.coarse,
            self.keep_coarse,
            self.keep,
            self.threshold
        )
    }

    fn poison(&mut self) {
        self.layout = None;
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
        let (mut kp, mut vp) = (self.k_perm.clone(), self.v_perm.clone());
        let co = KMeansCluster::cpu(d.head_dim, true, 64, 64)?.run_cpu(
            &self.k,
            &self.v,
            self.fixed_len,
            self.seq_len,
            &self.init,
            ITERS,
            &mut kp,
            &mut vp,
        )?;
        let layout = self.typed(TwoLevelLayout::build(
            &co.centroids,
            &co.counts,
            &co.perm,
            &co.starts,
            self.coarse,
            ITERS,
            self.seed,
        )?);
        CentroidPermute::cpu(&self.permute_config())?.run_cpu(
            self.permute_grid(),
            &self.k,
            &self.v,
            &layout.perm,
            &mut self.k_perm,
            &mut self.v_perm,
            self.fixed_len as i32,
            self.seq_len as i32,
        )?;
        let op = self.decode_op(None, layout.max_fine)?;
        let x = TwoLevelInputs {
            fine_centroids: &layout.fine_centroids,
            fine_counts: &layout.fine_counts,
            fine_starts: &layout.fine_starts,
            coarse_centroids: &layout.coarse_centroids,
            coarse_counts: &layout.coarse_counts,
            coarse_starts: &layout.coarse_starts,
        };
        op.run_cpu(
            &self.q,
            &self.k_perm,
            &self.v_perm,
            &x,
            self.fixed_len,
            self.seq_len,
            self.threshold,
            &mut self.keep_start,
            &mut self.keep_len,
            &mut self.keep_count,
            &mut self.out,
            Some(&mut self.lse),
        )?;
        self.layout = Some(layout);
        Ok(())
    }

    fn run_gpu(&mut self, rt: &Runtime) -> Result<(), KernelError> {
        self.poison();
        let d = self.dims;
        let st = rt.stream();
        let (k, v, init) = (up(rt, &self.k)?, up(rt, &self.v)?, up(rt, &self.init)?);
        let scratch_perm = DeviceTensor::poisoned(st, DType::BF16, &self.k_perm.shape)?;
        let scratch_perm_v = DeviceTensor::poisoned(st, DType::BF16, &self.v_perm.shape)?;
        let km = KMeansCluster::new(rt, d.head_dim, true, 64, 64)?;
        let dc = km.launch(rt, &k, &v, self.fixed_len, self.seq_len, &init, ITERS, &scratch_perm, &scratch_perm_v)?;
        let layout = self.typed(TwoLevelLayout::build(
            &dc.centroids.download()?,
            &dc.counts.download()?,
            &dc.perm,
            &dc.starts.download()?,
            self.coarse,
            ITERS,
            self.seed,
        )?);
        let kp = DeviceTensor::poisoned(st, DType::BF16, &self.k_perm.shape)?;
        let vp = DeviceTensor::poisoned(st, DType::BF16, &self.v_perm.shape)?;
        let perm = up(rt, &layout.perm)?;
        CentroidPermute::new(rt, &self.permute_config())?.launch(
            st,
            self.permute_grid(),
            &k,
            &v,
            &perm,
            &kp,
            &vp,
            self.fixed_len as i32,
            self.seq_len as i32,
        )?;
        let op = self.decode_op(Some(rt), layout.max_fine)?;
        let xs = [
            &layout.fine_centroids,
            &layout.fine_counts,
            &layout.fine_starts,
            &layout.coarse_centroids,
            &layout.coarse_counts,
            &layout.coarse_starts,
        ]
        .map(|t| up(rt, t));
        let [fc, fn_, fs, cc, cn, cs] = xs;
        let (fc, fn_, fs, cc, cn, cs) = (fc?, fn_?, fs?, cc?, cn?, cs?);
        let x = TwoLevelInputs {
            fine_centroids: &fc,
            fine_counts: &fn_,
            fine_starts: &fs,
            coarse_centroids: &cc,
            coarse_counts: &cn,
            coarse_starts: &cs,
        };
        let ks = DeviceTensor::poisoned(st, DType::I32, &self.keep_start.shape)?;
        let kl = DeviceTensor::poisoned(st, DType::I32, &self.keep_len.shape)?;
        let kc = DeviceTensor::poisoned(st, DType::I32, &self.keep_count.shape)?;
        let out = DeviceTensor::poisoned(st, DType::BF16, &self.out.shape)?;
        let lse = DeviceTensor::poisoned(st, DType::F32, &self.lse.shape)?;
        let q = up(rt, &self.q)?;
        let kept = KeptRanges { keep_start: &ks, keep_len: &kl, keep_count: &kc };
        let scratch = Scratch::new();
        op.launch_with(
            rt,
            &scratch,
            &q,
            &kp,
            &vp,
            &x,
            self.fixed_len,
            self.seq_len,
            self.threshold,
            &kept,
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
        self.layout = Some(layout);
        Ok(())
    }

    /// The re-permuted cache, the selection up to near-ties, then the output / LSE
    /// against the f64 decode over the kept fine clusters' rows + the recent rows.
    fn check(&self) -> Result<f64, String> {
        let layout = self.layout.as_ref().ok_or("not run")?;
        let DecodeDims { batch, kv_heads, cap, head_dim: d, .. } = self.dims;
        let (tf, n) = (self.fixed_len, self.seq_len);
        let (k, v) = (self.k.to_f64(), self.v.to_f64());
        let (kp, vp, perm) = (self.k_perm.to_f64(), self.v_perm.to_f64(), layout.perm.to_f64());
        for bh in 0..batch * kv_heads {
            for r in 0..n {
                let src = if r < tf { perm[bh * tf + r] as usize } else { r };
                let (a, b) = ((bh * cap + r) * d, (bh * cap + src) * d);
                if kp[a..a + d] != k[b..b + d] || vp[a..a + d] != v[b..b + d] {
                    return Err(format!("(b,h) {bh}: re-permuted row {r} is not row {src}"));
                }
            }
        }
        let kept = self.check_selection(layout)?;
        let c = self.fine();
        let st = layout.fine_starts.to_f64();
        let q = self.q.to_f64();
        let (o, l) = r::decode_with(self.dims, &q, &kp, &vp, self.params.scale_log2 as f64, |b, h| {
            let bh = b * kv_heads + h;
            let mut pos: Vec<usize> = Vec::new();
            for &f in &kept[bh] {
                pos.extend(st[bh * (c + 1) + f] as usize..st[bh * (c + 1) + f + 1] as usize);
            }
            pos.extend(tf..n);
            pos
        });
        let e = within("out", r::rel_err(&self.out.to_f64(), &o)?, BF16_TOL)?;
        check_lse(&self.lse, &l)?;
        Ok(e)
    }

    fn bytes_read(&self) -> u64 {
        // Decode only: coarse + scored fine centroids, kept rows, recent rows, q.
        let d = self.dims;
        let bh = (d.batch * d.kv_heads) as f64;
        let kept: f64 = self.keep_len.to_f64().iter().filter(|x| **x > 0.0).sum::<f64>();
        let rows = kept + bh * (self.seq_len - self.fixed_len) as f64;
        let max_fine = self.layout.as_ref().map_or(1, |l| l.max_fine);
        let elem = self.centroid_dtype.size_bytes();
        let cent = bh * ((self.coarse + self.keep_coarse * max_fine) * d.head_dim * elem) as f64;
        (rows * (2 * d.head_dim * 2) as f64 + cent) as u64 + self.q.numel() as u64 * 2
    }
}

/// GPU cases: 5 % fine clusters in coarse groups of ~16, a quarter of the coarse clusters
/// explored, 10 % of the fine clusters kept; a threshold variant.
pub fn centroid_two_level_gpu_cases(seed: u64) -> Vec<CentroidTwoLevelCase> {
    let dims = |b, h, g, cap, d| DecodeDims { batch: b, kv_heads: h, group: g, cap, head_dim: d };
    let inf = f32::NEG_INFINITY;
    vec![
        CentroidTwoLevelCase::new(dims(2, 4, 4, 12000, 128), 11000, 11517, 550, 34, 9, 56, 8, inf, seed),
        CentroidTwoLevelCase::new(dims(1, 3, 3, 5000, 64), 4500, 4999, 225, 14, 4, 30, 5, -12.0, seed + 1),
    ]
}
