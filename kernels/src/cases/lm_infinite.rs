//! LM-Infinite decode cases ([`LmInfiniteCase`]).

use super::*;

/// LM-Infinite decode: keys before RoPE, rotated in the kernel with distances capped.
pub struct LmInfiniteCase {
    pub dims: DecodeDims,
    pub args: LmInfiniteArgs,
    pub params: DecodeParams,
    pub q: HostTensor,
    pub k: HostTensor,
    pub v: HostTensor,
    pub rope: RopeTable,
    pub out: HostTensor,
    pub lse: HostTensor,
}

impl LmInfiniteCase {
    pub fn new(dims: DecodeDims, args: LmInfiniteArgs, params: DecodeParams, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let hq = dims.kv_heads * dims.group;
        let kv = [dims.batch, dims.kv_heads, dims.cap, dims.head_dim];
        LmInfiniteCase {
            dims,
            args,
            q: rand_bf16(&mut rng, &[dims.batch, hq, dims.head_dim], 1.0),
            k: rand_bf16(&mut rng, &kv, 1.0),
            v: rand_bf16(&mut rng, &kv, 1.0),
            rope: RopeTable::new(dims.head_dim, dims.cap, 500000.0, 1.0),
            out: HostTensor::full(DType::BF16, &[dims.batch, hq, dims.head_dim], 0.0),
            lse: HostTensor::full(DType::F32, &[dims.batch, hq], 0.0),
            params,
        }
    }
}

impl KernelCase for LmInfiniteCase {
    fn name(&self) -> String {
        let (d, a) = (self.dims, self.args);
        format!(
            "lm_infinite B{} Hkv{} G{} D{} N{} sink{} window{} cap{}",
            d.batch, d.kv_heads, d.group, d.head_dim, a.seq_len, a.sink, a.window, a.cap
        )
    }

    fn poison(&mut self) {
        poison(&mut self.out);
        poison(&mut self.lse);
    }

    fn run_cpu(&mut self) -> Result<(), KernelError> {
        self.poison();
        let op = LmInfiniteDecode::cpu(self.params.clone())?;
        let (c, s) = (&self.rope.cos, &self.rope.sin);
        op.run_cpu(&self.q, &self.k, &self.v, c, s, self.args, &mut self.out, Some(&mut self.lse))
    }

    fn run_gpu(&mut self, rt: &Runtime) -> Result<(), KernelError> {
        self.poison();
        let op = LmInfiniteDecode::new(rt, self.params.clone())?;
        let (q, k, v) = (up(rt, &self.q)?, up(rt, &self.k)?, up(rt, &self.v)?);
        let (cos, sin) = self.rope.upload(rt)?;
        let out = DeviceTensor::poisoned(rt.stream(), DType::BF16, &self.out.shape)?;
        let lse = DeviceTensor::poisoned(rt.stream(), DType::F32, &self.lse.shape)?;
        op.launch(rt, &q, &k, &v, &cos, &sin, self.args, &out, Some(&lse))?;
        rt.synchronize()?;
        self.out = out.download()?;
        self.lse = lse.download()?;
        Ok(())
    }

    fn check(&self) -> Result<f64, String> {
        let a = self.args;
        let (o, l) = r::lm_infinite(
            self.dims,
            &self.q.to_f64(),
            &self.k.to_f64(),
            &self.v.to_f64(),
            &self.rope.cos.to_f64(),
            &self.rope.sin.to_f64(),
            (a.seq_len, a.sink, a.window, a.cap),
            self.params.scale_log2 as f64,
        );
        let e = within("out", r::rel_err(&self.out.to_f64(), &o)?, BF16_TOL)?;
        check_lse(&self.lse, &l)?;
        Ok(e)
    }

    fn bytes_read(&self) -> u64 {
        let (d, a) = (self.dims, self.args);
        let keys = union_len(a.seq_len, a.sink, a.window);
        (2 * d.batch * d.kv_heads * keys * d.head_dim * 2 + keys * d.head_dim * 4 + self.q.numel() * 2) as u64
    }
}

/// LM-Infinite cases: the cap inside the window, and a long context with a short cap.
pub fn lm_infinite_gpu_cases(seed: u64) -> Vec<LmInfiniteCase> {
    let args = |seq_len, sink, window, cap| LmInfiniteArgs { seq_len, sink, window, cap };
    vec![
        LmInfiniteCase::new(dims(2, 8, 4, 9000, 128), args(8999, 64, 2048, 1024), lse_params(4, 128), seed),
        LmInfiniteCase::new(dims(1, 2, 3, 3001, 64), args(3001, 4, 1000, 300), lse_params(3, 64), seed + 1),
    ]
}
