//! Dense, sink + window and block-sparse decode cases ([`DecodeCase`]).

use super::*;

/// Which split decoder a [`DecodeCase`] runs.
#[derive(Clone, Debug)]
pub enum DecodeKind {
    Dense,
    SinkWindow {
        sink: usize,
        window: usize,
    },
    /// `idx [B, Hkv, max_blocks] i32`, `count [B, Hkv] i32`.
    BlockSparse {
        block_size: usize,
        sink: usize,
        window: usize,
        idx: HostTensor,
        count: HostTensor,
    },
}

/// A random block selection: `count[b, h]` uniform in `[0, max_blocks]` (or `max_blocks`
/// when `full`), distinct indices of `[0, nb)` unless `dups` (then drawn with repetition).
pub fn random_selection(
    rng: &mut StdRng,
    batch: usize,
    kv_heads: usize,
    nb: usize,
    max_blocks: usize,
    dups: bool,
    full: bool,
) -> (HostTensor, HostTensor) {
    let mut idx = vec![-1.0; batch * kv_heads * max_blocks];
    let mut cnt = Vec::new();
    for bh in 0..batch * kv_heads {
        let hi = if dups { max_blocks } else { max_blocks.min(nb) };
        let c = if full { hi } else { rng.random_range(0..=hi) };
        let mut all: Vec<usize> = (0..nb).collect();
        all.shuffle(rng);
        for j in 0..c {
            idx[bh * max_blocks + j] = if dups { rng.random_range(0..nb) as f64 } else { all[j] as f64 };
        }
        cnt.push(c as f64);
    }
    (
        HostTensor::from_f64(DType::I32, &[batch, kv_heads, max_blocks], &idx),
        HostTensor::from_f64(DType::I32, &[batch, kv_heads], &cnt),
    )
}

/// Dense / sink+window / block-sparse decode.
pub struct DecodeCase {
    pub name: String,
    pub kind: DecodeKind,
    pub dims: DecodeDims,
    pub seq_len: usize,
    pub params: DecodeParams,
    pub q: HostTensor,
    pub k: HostTensor,
    pub v: HostTensor,
    pub out: HostTensor,
    /// `[B, Hq]`, written when `params.write_lse`.
    pub lse: HostTensor,
}

impl DecodeCase {
    pub fn new(
        name: &str,
        kind: DecodeKind,
        dims: DecodeDims,
        seq_len: usize,
        params: DecodeParams,
        seed: u64,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let DecodeDims { batch, kv_heads, group, cap, head_dim: d } = dims;
        let hq = kv_heads * group;
        DecodeCase {
            name: name.to_string(),
            kind,
            dims,
            seq_len,
            params,
            q: rand_bf16(&mut rng, &[batch, hq, d], 2.0),
            k: rand_bf16(&mut rng, &[batch, kv_heads, cap, d], 1.0),
            v: rand_bf16(&mut rng, &[batch, kv_heads, cap, d], 1.0),
            out: HostTensor::full(DType::BF16, &[batch, hq, d], f64::NAN),
            lse: HostTensor::full(DType::F32, &[batch, hq], f64::NAN),
        }
    }

    /// The same case with q, k, v and out in `dtype` (f16 or bf16; the values are the
    /// bf16-rounded ones, which f16 holds exactly at these magnitudes).
    pub fn in_dtype(mut self, dtype: DType) -> Self {
        let conv = |t: &HostTensor| HostTensor::from_f64(dtype, &t.shape, &t.to_f64());
        self.q = conv(&self.q);
        self.k = conv(&self.k);
        self.v = conv(&self.v);
        self.out = HostTensor::full(dtype, &self.out.shape.clone(), f64::NAN);
        self.params.dtype = dtype;
        self.name = format!("{} {dtype:?}", self.name);
        self
    }

    /// A block-sparse case with a random selection (`max_blocks` slots per (b, h)).
    #[allow(clippy::too_many_arguments)]
    pub fn block_sparse(
        name: &str,
        dims: DecodeDims,
        seq_len: usize,
        params: DecodeParams,
        block_size: usize,
        max_blocks: usize,
        sink: usize,
        window: usize,
        dups: bool,
        seed: u64,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        let nb = seq_len.div_ceil(block_size);
        let (idx, count) = random_selection(&mut rng, dims.batch, dims.kv_heads, nb, max_blocks, dups, false);
        let kind = DecodeKind::BlockSparse { block_size, sink, window, idx, count };
        DecodeCase::new(name, kind, dims, seq_len, params, seed)
    }

    /// The reference `(out, lse)`.
    pub fn reference(&self) -> (Vec<f64>, Vec<f64>) {
        let (q, k, v) = (self.q.to_f64(), self.k.to_f64(), self.v.to_f64());
        let n = self.seq_len;
        let sc = self.params.scale_log2 as f64;
        match &self.kind {
            DecodeKind::Dense => r::decode_with(self.dims, &q, &k, &v, sc, |_, _| (0..n).collect()),
            DecodeKind::SinkWindow { sink, window } => {
                let pos = r::sink_window_positions(n, *sink, *window);
                r::decode_with(self.dims, &q, &k, &v, sc, |_, _| pos.clone())
            }
            DecodeKind::BlockSparse { block_size, sink, window, idx, count } => {
                let (idx, count) = (idx.to_f64(), count.to_f64());
                let mb = idx.len() / count.len().max(1);
                let hkv = self.dims.kv_heads;
                r::decode_with(self.dims, &q, &k, &v, sc, |b, h| {
                    let bh = b * hkv + h;
                    let blocks: Vec<i64> =
                        idx[bh * mb..bh * mb + count[bh] as usize].iter().map(|&x| x as i64).collect();
                    r::block_sparse_positions(n, *sink, *window, &blocks, *block_size)
                })
            }
        }
    }
}

impl KernelCase for DecodeCase {
    fn name(&self) -> String {
        let d = self.dims;
        format!("{} B{} Hkv{} G{} D{} N{}/{}", self.name, d.batch, d.kv_heads, d.group, d.head_dim, self.seq_len, d.cap)
    }

    fn poison(&mut self) {
        poison(&mut self.out);
        poison(&mut self.lse);
    }

    fn run_cpu(&mut self) -> Result<(), KernelError> {
        self.poison();
        let p = self.params.clone();
        let lse = if p.write_lse { Some(&mut self.lse) } else { None };
        let (q, k, v, n) = (&self.q, &self.k, &self.v, self.seq_len);
        match &self.kind {
            DecodeKind::Dense => DenseDecode::cpu(p)?.run_cpu(q, k, v, n, &mut self.out, lse),
            DecodeKind::SinkWindow { sink, window } => {
                SinkWindowDecode::cpu(p)?.run_cpu(q, k, v, n, *sink, *window, &mut self.out, lse)
            }
            DecodeKind::BlockSparse { block_size, sink, window, idx, count } => BlockSparseDecode::cpu(p, *block_size)?
                .run_cpu(q, k, v, idx, count, n, *sink, *window, &mut self.out, lse),
        }
    }

    fn run_gpu(&mut self, rt: &Runtime) -> Result<(), KernelError> {
        self.poison();
        let p = self.params.clone();
        let (q, k, v) = (up(rt, &self.q)?, up(rt, &self.k)?, up(rt, &self.v)?);
        let out = DeviceTensor::poisoned(rt.stream(), self.params.dtype, &self.out.shape)?;
        let lse_d = DeviceTensor::poisoned(rt.stream(), DType::F32, &self.lse.shape)?;
        let lse = if p.write_lse { Some(&lse_d) } else { None };
        let n = self.seq_len;
        match &self.kind {
            DecodeKind::Dense => DenseDecode::new(rt, p)?.launch(rt, &q, &k, &v, n, &out, lse)?,
            DecodeKind::SinkWindow { sink, window } => {
                SinkWindowDecode::new(rt, p)?.launch(rt, &q, &k, &v, n, *sink, *window, &out, lse)?
            }
            DecodeKind::BlockSparse { block_size, sink, window, idx, count } => {
                let op = BlockSparseDecode::new(rt, p, *block_size)?;
                // Index ranges are checked on the host copies before anything is uploaded.
                let host_lse = self.params.write_lse.then_some(&self.lse as &dyn TensorMeta);
                op.check_args(&self.q, &self.k, &self.v, idx, count, n, *sink, *window, &self.out, host_lse)?;
                let (idx, count) = (up(rt, idx)?, up(rt, count)?);
                op.launch(rt, &q, &k, &v, &idx, &count, n, *sink, *window, &out, lse)?
            }
        }
        rt.synchronize()?;
        self.out = out.download()?;
        if self.params.write_lse {
            self.lse = lse_d.download()?;
        }
        Ok(())
    }

    fn check(&self) -> Result<f64, String> {
        let (o, l) = self.reference();
        let tol = if self.params.dtype == DType::F16 { F16_TOL } else { BF16_TOL };
        let e = within("out", r::rel_err(&self.out.to_f64(), &o)?, tol)?;
        if self.params.write_lse {
            check_lse(&self.lse, &l)?;
        }
        Ok(e)
    }

    fn bytes_read(&self) -> u64 {
        let d = self.dims;
        let keys = match &self.kind {
            DecodeKind::Dense => self.seq_len,
            DecodeKind::SinkWindow { sink, window } => union_len(self.seq_len, *sink, *window),
            DecodeKind::BlockSparse { block_size, sink, window, count, .. } => {
                let per: f64 = count.to_f64().iter().sum::<f64>() / count.numel().max(1) as f64;
                union_len(self.seq_len, *sink, *window) + (per * *block_size as f64) as usize
            }
        };
        (2 * d.batch * d.kv_heads * keys * d.head_dim * 2 + self.q.numel() * 2) as u64
    }
}

pub fn dense_gpu_cases(seed: u64) -> Vec<DecodeCase> {
    vec![
        DecodeCase::new("dense", DecodeKind::Dense, dims(2, 8, 4, 8191, 128), 8191, lse_params(4, 128), seed),
        DecodeCase::new("dense", DecodeKind::Dense, dims(3, 2, 8, 5000, 64), 4097, lse_params(8, 64), seed + 1),
        DecodeCase::new("dense", DecodeKind::Dense, dims(1, 3, 1, 777, 128), 777, DecodeParams::new(1, 128), seed + 2),
        DecodeCase::new("dense", DecodeKind::Dense, dims(2, 2, 3, 1000, 64), 999, lse_params(3, 64), seed + 3),
        DecodeCase::new("dense STAGES=3", DecodeKind::Dense, dims(2, 4, 4, 6001, 128), 6000, staged3(4, 128), seed + 4),
        DecodeCase::new("dense", DecodeKind::Dense, dims(2, 8, 4, 5000, 128), 4999, lse_params(4, 128), seed + 5)
            .in_dtype(DType::F16),
    ]
}

pub fn sink_window_gpu_cases(seed: u64) -> Vec<DecodeCase> {
    let sw = |s, w| DecodeKind::SinkWindow { sink: s, window: w };
    vec![
        DecodeCase::new("sink_window", sw(64, 4096), dims(2, 8, 4, 20001, 128), 20001, lse_params(4, 128), seed),
        DecodeCase::new("sink_window", sw(4, 10000), dims(2, 2, 8, 3001, 64), 3001, lse_params(8, 64), seed + 1),
        DecodeCase::new("sink_window", sw(300, 300), dims(1, 2, 3, 555, 64), 555, lse_params(3, 64), seed + 2),
        DecodeCase::new(
            "sink_window STAGES=3",
            sw(17, 3000),
            dims(2, 4, 4, 9000, 128),
            8999,
            staged3(4, 128),
            seed + 3,
        ),
        DecodeCase::new("sink_window", sw(32, 1000), dims(1, 2, 8, 4000, 64), 3999, lse_params(8, 64), seed + 4)
            .in_dtype(DType::F16),
    ]
}

/// Head dims 96 and 256 (issue 4, "if the design allows"): dense, sink + window and
/// block-sparse with contiguous (128) and gathered (8-row) blocks, odd lengths.
pub fn head_dim_gpu_cases(seed: u64) -> Vec<DecodeCase> {
    let mut v = Vec::new();
    for (i, d) in [96usize, 256].into_iter().enumerate() {
        let s = seed + 10 * i as u64;
        v.push(DecodeCase::new("dense", DecodeKind::Dense, dims(2, 4, 4, 6001, d), 5999, lse_params(4, d), s));
        let sw = DecodeKind::SinkWindow { sink: 16, window: 2000 };
        v.push(DecodeCase::new("sink_window", sw, dims(2, 2, 8, 5003, d), 5003, lse_params(8, d), s + 1));
        for (j, bs) in [128usize, 8].into_iter().enumerate() {
            let (dm, p) = (dims(2, 2, 3, 9001, d), lse_params(3, d));
            v.push(DecodeCase::block_sparse("block_sparse", dm, 9000, p, bs, 24, 8, 256, false, s + 2 + j as u64));
        }
    }
    v
}

pub fn block_sparse_gpu_cases(seed: u64) -> Vec<DecodeCase> {
    vec![
        DecodeCase::block_sparse(
            "block_sparse",
            dims(2, 8, 4, 30000, 128),
            30000,
            lse_params(4, 128),
            128,
            64,
            64,
            1024,
            false,
            seed,
        ),
        DecodeCase::block_sparse(
            "block_sparse STAGES=3",
            dims(2, 4, 4, 20000, 128),
            19999,
            staged3(4, 128),
            128,
            40,
            16,
            512,
            false,
            seed + 7,
        ),
        DecodeCase::block_sparse(
            "block_sparse",
            dims(2, 2, 8, 5001, 64),
            5001,
            lse_params(8, 64),
            64,
            20,
            0,
            0,
            false,
            seed + 1,
        ),
        DecodeCase::block_sparse(
            "block_sparse",
            dims(1, 3, 3, 2000, 64),
            1999,
            lse_params(3, 64),
            16,
            40,
            16,
            100,
            true,
            seed + 2,
        ),
        DecodeCase::block_sparse(
            "block_sparse",
            dims(2, 2, 4, 9000, 128),
            9000,
            lse_params(4, 128),
            64,
            24,
            8,
            256,
            false,
            seed + 8,
        )
        .in_dtype(DType::F16),
    ]
}
