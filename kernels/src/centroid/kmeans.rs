//! Offline clustering of a fixed context on the GPU: the k-means kernels (assign,
//! accumulate, finalize), the permuted cache, and the host op [`KMeansCluster`].

use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_dsl_support::prelude::*;
use tessera_runtime::DeviceTensor;

use super::reference::cluster_layout;
use crate::error::{expect, invalid, KernelError, TensorMeta};

/// Labels of `KEY_TILE` keys of `[0, num_keys)`: the nearest centroid (`x·c − |c|²/2`,
/// ties to the lower centroid), `x·c` on the tensor cores as bf16 hi/lo halves. Grid `[ceil(num_keys / KEY_TILE), Hkv, B]`.
#[kernel(tune(KEY_TILE = [64, 32, 128], C_TILE = [64, 32, 128], WARPS = [4, 8]), example(HEAD_DIM = 128, NORMALIZE = 0))]
pub fn kmeans_assign<
    const HEAD_DIM: usize,
    const NORMALIZE: usize,
    const KEY_TILE: usize,
    const C_TILE: usize,
    const WARPS: usize,
>(
    k: Tensor<bf16, 4>,          // [B, Hkv, N, D]
    centroids: Tensor<f32, 4>,   // [B, Hkv, C, D]
    labels: &mut Tensor<i32, 3>, // [B, Hkv, T_f]
    num_keys: i32,
) {
    let tile = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let nc = centroids.dim(2).cast::<i32>();
    let j0 = tile * KEY_TILE as i32;
    let inb = arange(0, KEY_TILE) + j0 < num_keys;
    let raw = k.load_masked([at(batch), at(kv_head), range(j0, KEY_TILE), range(0, HEAD_DIM)], inb.expand_dims(1), 0.0);
    let mut x = raw.cast::<f32>();
    if NORMALIZE == 1 {
        let n2 = (x * x).sum(1);
        x = x * where_(n2 > 0.0, n2, 1.0).rsqrt().expand_dims(1);
    }
    let xh = x.cast::<bf16>();
    let xl = (x - xh.cast::<f32>()).cast::<bf16>();
    let mut best = full([KEY_TILE], f32::NEG_INFINITY);
    let mut arg = arange(0, KEY_TILE) * 0;
    for cb in (0..nc).step_by(C_TILE) {
        let cv = arange(0, C_TILE) + cb < nc;
        let ct = centroids.load_masked(
            [at(batch), at(kv_head), range(cb, C_TILE), range(0, HEAD_DIM)],
            cv.expand_dims(1),
            0.0,
        );
        let half = (ct * ct).sum(1) * 0.5;
        // x·c on the tensor cores to ~f32 accuracy: c = c_hi + c_lo (bf16 each, exact
        // products, f32 accumulation); x is bf16 already unless normalized (then x_lo
        // too). The dropped x_lo·c_lo term is ~2^-16 of |x||c|.
        let ch = ct.cast::<bf16>();
        let cl = (ct - ch.cast::<f32>()).cast::<bf16>();
        let mut xc = dot_t(xh, ch) + dot_t(xh, cl);
        if NORMALIZE == 1 {
            xc = xc + dot_t(xl, ch);
        }
        let s = where_(cv, xc - half, f32::NEG_INFINITY);
        let m = s.max(1);
        let a = s.argmax(1) + cb;
        let better = m > best;
        arg = where_(better, a, arg);
        best = where_(better, m, best);
    }
    labels.store_masked([at(batch), at(kv_head), range(j0, KEY_TILE)], arg, inb);
}

/// Adds each key (normalized when `NORMALIZE`) to its cluster's sum and 1 to its count
/// (atomics). Grid `[ceil(num_keys / KEY_TILE), Hkv, B]`; `sums`/`counts` zeroed before.
#[kernel(tune(KEY_TILE = [64, 32, 128], WARPS = [4, 8]), example(HEAD_DIM = 128, NORMALIZE = 0))]
pub fn kmeans_accumulate<const HEAD_DIM: usize, const NORMALIZE: usize, const KEY_TILE: usize, const WARPS: usize>(
    k: Tensor<bf16, 4>,          // [B, Hkv, N, D]
    labels: Tensor<i32, 3>,      // [B, Hkv, T_f]
    sums: &mut Tensor<f32, 4>,   // [B, Hkv, C, D]
    counts: &mut Tensor<i32, 3>, // [B, Hkv, C]
    num_keys: i32,
) {
    let tile = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let j0 = tile * KEY_TILE as i32;
    let inb = arange(0, KEY_TILE) + j0 < num_keys;
    let lab = labels.load_masked([at(batch), at(kv_head), range(j0, KEY_TILE)], inb, 0);
    let raw = k.load_masked([at(batch), at(kv_head), range(j0, KEY_TILE), range(0, HEAD_DIM)], inb.expand_dims(1), 0.0);
    let mut x = raw.cast::<f32>();
    if NORMALIZE == 1 {
        let n2 = (x * x).sum(1);
        x = x * where_(n2 > 0.0, n2, 1.0).rsqrt().expand_dims(1);
    }
    // Out-of-range rows add zeros to cluster 0 (the DSL has no masked atomics).
    sums.atomic_add([at(batch), at(kv_head), gather(lab), range(0, HEAD_DIM)], x);
    counts.atomic_add([at(batch), at(kv_head), gather(lab)], inb.cast::<i32>());
}

/// `next = sums / counts` per cluster, `old` where the count is 0. Grid
/// `[ceil(C / C_TILE), Hkv, B]`.
#[kernel(tune(C_TILE = [32, 64, 16], WARPS = [4, 8]), example(HEAD_DIM = 128))]
pub fn kmeans_finalize<const HEAD_DIM: usize, const C_TILE: usize, const WARPS: usize>(
    sums: Tensor<f32, 4>,      // [B, Hkv, C, D]
    counts: Tensor<i32, 3>,    // [B, Hkv, C]
    old: Tensor<f32, 4>,       // [B, Hkv, C, D]
    next: &mut Tensor<f32, 4>, // [B, Hkv, C, D]
) {
    let tile = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let nc = old.dim(2).cast::<i32>();
    let cb = tile * C_TILE as i32;
    let cv = arange(0, C_TILE) + cb < nc;
    let rows = cv.expand_dims(1);
    let n = counts.load_masked([at(batch), at(kv_head), range(cb, C_TILE)], cv, 0);
    let s = sums.load_masked([at(batch), at(kv_head), range(cb, C_TILE), range(0, HEAD_DIM)], rows, 0.0);
    let o = old.load_masked([at(batch), at(kv_head), range(cb, C_TILE), range(0, HEAD_DIM)], rows, 0.0);
    let nonempty = n > 0;
    let mean = s / where_(nonempty, n.cast::<f32>(), 1.0).expand_dims(1);
    next.store_masked(
        [at(batch), at(kv_head), range(cb, C_TILE), range(0, HEAD_DIM)],
        where_(nonempty.expand_dims(1), mean, o),
        rows,
    );
}

/// The permuted cache: row `r < T_f` is row `perm[r]`, rows `[T_f, seq_len)` are copied.
/// Grid `[ceil(seq_len / ROWS), Hkv, B]`.
#[kernel(tune(ROWS = [64, 32, 128], WARPS = [4, 8]), example(HEAD_DIM = 128))]
pub fn centroid_permute<const HEAD_DIM: usize, const ROWS: usize, const WARPS: usize>(
    k: Tensor<bf16, 4>,          // [B, Hkv, N, D]
    v: Tensor<bf16, 4>,          // [B, Hkv, N, D]
    perm: Tensor<i32, 3>,        // [B, Hkv, T_f]
    k_out: &mut Tensor<bf16, 4>, // [B, Hkv, N, D]
    v_out: &mut Tensor<bf16, 4>, // [B, Hkv, N, D]
    fixed_len: i32,
    seq_len: i32,
) {
    let tile = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let r0 = tile * ROWS as i32;
    let r = arange(0, ROWS) + r0;
    let live = r < seq_len;
    let fixed = r < fixed_len;
    let p = perm.load_masked([at(batch), at(kv_head), range(r0, ROWS)], fixed, 0);
    let pos = where_(fixed, p, r);
    let ok = live.expand_dims(1);
    let kr = k.load_masked([at(batch), at(kv_head), gather(pos), range(0, HEAD_DIM)], ok, 0.0);
    let vr = v.load_masked([at(batch), at(kv_head), gather(pos), range(0, HEAD_DIM)], ok, 0.0);
    k_out.store_masked([at(batch), at(kv_head), range(r0, ROWS), range(0, HEAD_DIM)], kr, ok);
    v_out.store_masked([at(batch), at(kv_head), range(r0, ROWS), range(0, HEAD_DIM)], vr, ok);
}

// ---- host op ------------------------------------------------------------------------------

/// Per-(b, h) `(perm [B, Hkv, T_f], starts [B, Hkv, C + 1])` i32 from `labels [B, Hkv, T_f]`.
pub fn layout_tensors(labels: &HostTensor, clusters: usize) -> (HostTensor, HostTensor) {
    let s = &labels.shape;
    let (b, h, t) = (s[0], s[1], s[2]);
    let l = labels.to_f64();
    let (mut perm, mut starts) = (Vec::with_capacity(b * h * t), Vec::with_capacity(b * h * (clusters + 1)));
    for bh in 0..b * h {
        let lab: Vec<usize> = l[bh * t..(bh + 1) * t].iter().map(|&x| x as usize).collect();
        let (p, st) = cluster_layout(&lab, clusters);
        perm.extend(p.iter().map(|&x| x as f64));
        starts.extend(st.iter().map(|&x| x as f64));
    }
    (
        HostTensor::from_f64(DType::I32, &[b, h, t], &perm),
        HostTensor::from_f64(DType::I32, &[b, h, clusters + 1], &starts),
    )
}

/// The clustering of a whole cache on the host side (interpreter run).
#[derive(Clone, Debug)]
pub struct ClusterOut {
    /// `[B, Hkv, T_f] i32`.
    pub labels: HostTensor,
    /// `[B, Hkv, C, D] f32`: mean raw key per cluster (decode centroids).
    pub centroids: HostTensor,
    /// `[B, Hkv, C, D] f32`: the centroids of the last assignment.
    pub assign_centroids: HostTensor,
    /// `[B, Hkv, C] i32`.
    pub counts: HostTensor,
    /// `[B, Hkv, C + 1] i32`.
    pub starts: HostTensor,
    /// `[B, Hkv, T_f] i32`.
    pub perm: HostTensor,
}

/// The same on the GPU: device centroids / counts / starts for [`CentroidDecode`](super::CentroidDecode), host
/// labels and permutation.
pub struct DeviceClusters {
    pub centroids: DeviceTensor,
    pub assign_centroids: DeviceTensor,
    pub counts: DeviceTensor,
    pub starts: DeviceTensor,
    pub labels: HostTensor,
    pub perm: HostTensor,
}

struct KmKernels {
    assign: KmeansAssignKernel,
    accumulate: KmeansAccumulateKernel,
    accumulate_raw: KmeansAccumulateKernel,
    finalize: KmeansFinalizeKernel,
    permute: CentroidPermuteKernel,
}

/// Host op: k-means of the fixed context `[0, T_f)` per (batch, KV head) + the permuted
/// cache (see the module docs).
pub struct KMeansCluster {
    pub head_dim: usize,
    pub normalize: bool,
    pub key_tile: usize,
    pub c_tile: usize,
    kernels: KmKernels,
}

/// Shapes of one clustering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KMeansPlan {
    pub batch: usize,
    pub kv_heads: usize,
    pub clusters: usize,
    pub key_grid: [u32; 3],
    pub c_grid: [u32; 3],
    pub row_grid: [u32; 3],
}

impl KMeansCluster {
    const NAME: &'static str = "kmeans_cluster";

    fn configs(head_dim: usize, normalize: bool, key_tile: usize, c_tile: usize) -> [KernelConfig; 5] {
        let d = head_dim as i64;
        let assign = |n: bool| {
            KernelConfig::from_pairs(&[
                ("HEAD_DIM", d),
                ("NORMALIZE", n as i64),
                ("KEY_TILE", key_tile as i64),
                ("C_TILE", c_tile as i64),
                // 8 warps: at 4 the key tile, its hi/lo halves and three score tiles
                // spill (255 registers at KEY_TILE = C_TILE = 64, d = 128).
                ("WARPS", 8),
            ])
        };
        let acc = |n: bool| {
            KernelConfig::from_pairs(&[
                ("HEAD_DIM", d),
                ("NORMALIZE", n as i64),
                ("KEY_TILE", key_tile as i64),
                ("WARPS", 4),
            ])
        };
        [
            assign(normalize),
            acc(normalize),
            acc(false),
            KernelConfig::from_pairs(&[("HEAD_DIM", d), ("C_TILE", 32), ("WARPS", 4)]),
            KernelConfig::from_pairs(&[("HEAD_DIM", d), ("ROWS", 64), ("WARPS", 4)]),
        ]
    }

    fn make(
        head_dim: usize,
        normalize: bool,
        key_tile: usize,
        c_tile: usize,
        rt: Option<&Runtime>,
    ) -> Result<Self, KernelError> {
        if key_tile == 0 || c_tile == 0 {
            return Err(invalid(Self::NAME, "need key_tile, c_tile > 0"));
        }
        let [a, b, c, d, e] = Self::configs(head_dim, normalize, key_tile, c_tile);
        let kernels = match rt {
            None => KmKernels {
                assign: KmeansAssign::cpu(&a)?,
                accumulate: KmeansAccumulate::cpu(&b)?,
                accumulate_raw: KmeansAccumulate::cpu(&c)?,
                finalize: KmeansFinalize::cpu(&d)?,
                permute: CentroidPermute::cpu(&e)?,
            },
            Some(rt) => KmKernels {
                assign: KmeansAssign::new(rt, &a)?,
                accumulate: KmeansAccumulate::new(rt, &b)?,
                accumulate_raw: KmeansAccumulate::new(rt, &c)?,
                finalize: KmeansFinalize::new(rt, &d)?,
                permute: CentroidPermute::new(rt, &e)?,
            },
        };
        Ok(KMeansCluster { head_dim, normalize, key_tile, c_tile, kernels })
    }

    /// Interpreter op.
    pub fn cpu(head_dim: usize, normalize: bool, key_tile: usize, c_tile: usize) -> Result<Self, KernelError> {
        Self::make(head_dim, normalize, key_tile, c_tile, None)
    }

    /// GPU op.
    pub fn new(
        rt: &Runtime,
        head_dim: usize,
        normalize: bool,
        key_tile: usize,
        c_tile: usize,
    ) -> Result<Self, KernelError> {
        Self::make(head_dim, normalize, key_tile, c_tile, Some(rt))
    }

    /// Checks `k`/`v [B, Hkv, cap, D] bf16`, `init [B, Hkv, C, D] f32` with
    /// `1 <= C <= fixed_len <= seq_len <= cap`, `k_out`/`v_out` like `k`.
    #[allow(clippy::too_many_arguments)]
    pub fn check_args(
        &self,
        k: &dyn TensorMeta,
        v: &dyn TensorMeta,
        fixed_len: usize,
        seq_len: usize,
        init: &dyn TensorMeta,
        k_out: &dyn TensorMeta,
        v_out: &dyn TensorMeta,
    ) -> Result<KMeansPlan, KernelError> {
        let n = Self::NAME;
        let d = self.head_dim;
        expect(n, "k", k, DType::BF16, &[None, None, None, Some(d)])?;
        let s = k.shape();
        let (b, h, cap) = (s[0], s[1], s[2]);
        expect(n, "v", v, DType::BF16, &[Some(b), Some(h), Some(cap), Some(d)])?;
        expect(n, "k_out", k_out, DType::BF16, &[Some(b), Some(h), Some(cap), Some(d)])?;
        expect(n, "v_out", v_out, DType::BF16, &[Some(b), Some(h), Some(cap), Some(d)])?;
        expect(n, "init", init, DType::F32, &[Some(b), Some(h), None, Some(d)])?;
        let c = init.shape()[2];
        if c == 0 || c > fixed_len || fixed_len > seq_len || seq_len > cap || cap > i32::MAX as usize / 2 {
            return Err(invalid(
                n,
                format!("need 1 <= clusters {c} <= fixed_len {fixed_len} <= seq_len {seq_len} <= cache {cap}"),
            ));
        }
        let (bu, hu) = (b as u32, h as u32);
        Ok(KMeansPlan {
            batch: b,
            kv_heads: h,
            clusters: c,
            key_grid: [fixed_len.div_ceil(self.key_tile) as u32, hu, bu],
            c_grid: [c.div_ceil(32) as u32, hu, bu],
            row_grid: [seq_len.div_ceil(64) as u32, hu, bu],
        })
    }

    /// `iters` Lloyd iterations on the interpreter, the raw-key means, the host layout and
    /// the permuted cache (`k_out`/`v_out` rows `>= seq_len` are left as they were).
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu(
        &self,
        k: &HostTensor,
        v: &HostTensor,
        fixed_len: usize,
        seq_len: usize,
        init: &HostTensor,
        iters: usize,
        k_out: &mut HostTensor,
        v_out: &mut HostTensor,
    ) -> Result<ClusterOut, KernelError> {
        let p = self.check_args(k, v, fixed_len, seq_len, init, k_out, v_out)?;
        if iters == 0 {
            return Err(invalid(Self::NAME, "need at least one iteration"));
        }
        let kn = &self.kernels;
        let (b, h, c, d) = (p.batch, p.kv_heads, p.clusters, self.head_dim);
        let tf = fixed_len as i32;
        let mut labels = HostTensor::full(DType::I32, &[b, h, fixed_len], -5.0);
        let mut cent = init.clone();
        let mut assign = init.clone();
        let zs = || HostTensor::full(DType::F32, &[b, h, c, d], 0.0);
        let zc = || HostTensor::full(DType::I32, &[b, h, c], 0.0);
        let mut counts = zc();
        for _ in 0..iters {
            kn.assign.run_cpu(p.key_grid, k, &cent, &mut labels, tf)?;
            let (mut sums, mut cnt) = (zs(), zc());
            kn.accumulate.run_cpu(p.key_grid, k, &labels, &mut sums, &mut cnt, tf)?;
            let mut next = zs();
            kn.finalize.run_cpu(p.c_grid, &sums, &cnt, &cent, &mut next)?;
            assign = std::mem::replace(&mut cent, next);
            counts = cnt;
        }
        let centroids = if self.normalize {
            let (mut sums, mut cnt) = (zs(), zc());
            kn.accumulate_raw.run_cpu(p.key_grid, k, &labels, &mut sums, &mut cnt, tf)?;
            let mut next = zs();
            kn.finalize.run_cpu(p.c_grid, &sums, &cnt, &cent, &mut next)?;
            counts = cnt;
            next
        } else {
            cent
        };
        let (perm, starts) = layout_tensors(&labels, c);
        kn.permute.run_cpu(p.row_grid, k, v, &perm, k_out, v_out, tf, seq_len as i32)?;
        Ok(ClusterOut { labels, centroids, assign_centroids: assign, counts, starts, perm })
    }

    /// The same on the GPU. Synchronizes once, to download the labels for the host
    /// counting sort (no scan in the DSL), then uploads `perm`/`starts` and permutes.
    #[allow(clippy::too_many_arguments)]
    pub fn launch(
        &self,
        rt: &Runtime,
        k: &DeviceTensor,
        v: &DeviceTensor,
        fixed_len: usize,
        seq_len: usize,
        init: &DeviceTensor,
        iters: usize,
        k_out: &DeviceTensor,
        v_out: &DeviceTensor,
    ) -> Result<DeviceClusters, KernelError> {
        let p = self.check_args(k, v, fixed_len, seq_len, init, k_out, v_out)?;
        if iters == 0 {
            return Err(invalid(Self::NAME, "need at least one iteration"));
        }
        let kn = &self.kernels;
        let st = rt.stream();
        let (b, h, c, d) = (p.batch, p.kv_heads, p.clusters, self.head_dim);
        let tf = fixed_len as i32;
        let labels = DeviceTensor::zeros(st, DType::I32, &[b, h, fixed_len])?;
        let zs = || DeviceTensor::zeros(st, DType::F32, &[b, h, c, d]);
        let zc = || DeviceTensor::zeros(st, DType::I32, &[b, h, c]);
        // Ping-pong centroid buffers: `cent` is read, `next` written.
        let mut cent = zs()?;
        let mut next = zs()?;
        kn.finalize.launch(st, p.c_grid, &zs()?, &zc()?, init, &cent)?; // copy of init
        let mut assign = zs()?;
        let mut counts = zc()?;
        for _ in 0..iters {
            kn.assign.launch(st, p.key_grid, k, &cent, &labels, tf)?;
            let (sums, cnt) = (zs()?, zc()?);
            kn.accumulate.launch(st, p.key_grid, k, &labels, &sums, &cnt, tf)?;
            kn.finalize.launch(st, p.c_grid, &sums, &cnt, &cent, &next)?;
            std::mem::swap(&mut cent, &mut next);
            std::mem::swap(&mut assign, &mut next);
            counts = cnt;
        }
        let centroids = if self.normalize {
            let (sums, cnt) = (zs()?, zc()?);
            kn.accumulate_raw.launch(st, p.key_grid, k, &labels, &sums, &cnt, tf)?;
            let out = zs()?;
            kn.finalize.launch(st, p.c_grid, &sums, &cnt, &cent, &out)?;
            counts = cnt;
            out
        } else {
            cent
        };
        rt.synchronize()?;
        let labels_h = labels.download()?;
        let (perm, starts) = layout_tensors(&labels_h, c);
        let (perm_d, starts_d) = (DeviceTensor::upload(st, &perm)?, DeviceTensor::upload(st, &starts)?);
        kn.permute.launch(st, p.row_grid, k, v, &perm_d, k_out, v_out, tf, seq_len as i32)?;
        rt.synchronize()?;
        Ok(DeviceClusters { centroids, assign_centroids: assign, counts, starts: starts_d, labels: labels_h, perm })
    }
}
