//! Tree verification cases ([`TreeCase`]) and random draft trees.

use super::*;

/// Random ancestor-or-self masks of `t`-node trees (node `i > 0` has a random parent
/// `< i`), one tree per batch.
pub fn random_trees(rng: &mut StdRng, batch: usize, t: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..batch {
        let mut m: Vec<u64> = Vec::with_capacity(t);
        for i in 0..t {
            let parent = if i == 0 { 0 } else { m[rng.random_range(0..i)] };
            m.push(parent | (1u64 << i));
        }
        out.extend(m);
    }
    out
}

/// Tree verification.
pub struct TreeCase {
    pub name: String,
    pub dims: DecodeDims,
    pub prefix: usize,
    pub t: usize,
    pub params: TreeParams,
    pub anc: HostTensor,
    pub q: HostTensor,
    pub k: HostTensor,
    pub v: HostTensor,
    pub out: HostTensor,
    pub lse: HostTensor,
}

impl TreeCase {
    pub fn new(name: &str, dims: DecodeDims, prefix: usize, t: usize, params: TreeParams, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let DecodeDims { batch, kv_heads, group, cap, head_dim: d } = dims;
        let rows = kv_heads * group * t;
        let anc = random_trees(&mut rng, batch, t);
        TreeCase {
            name: name.to_string(),
            dims,
            prefix,
            t,
            params,
            anc: HostTensor { shape: vec![batch, t], data: HostData::I64(anc.iter().map(|&x| x as i64).collect()) },
            q: rand_bf16(&mut rng, &[batch, rows, d], 2.0),
            k: rand_bf16(&mut rng, &[batch, kv_heads, cap, d], 1.0),
            v: rand_bf16(&mut rng, &[batch, kv_heads, cap, d], 1.0),
            out: HostTensor::full(DType::BF16, &[batch, rows, d], f64::NAN),
            lse: HostTensor::full(DType::F32, &[batch, rows], f64::NAN),
        }
    }

    fn anc_bits(&self) -> Vec<u64> {
        match &self.anc.data {
            HostData::I64(v) => v.iter().map(|&x| x as u64).collect(),
            _ => unreachable!("anc is i64"),
        }
    }
}

impl KernelCase for TreeCase {
    fn name(&self) -> String {
        let d = self.dims;
        format!(
            "{} B{} Hkv{} G{} D{} prefix{} T{}",
            self.name, d.batch, d.kv_heads, d.group, d.head_dim, self.prefix, self.t
        )
    }

    fn poison(&mut self) {
        poison(&mut self.out);
        poison(&mut self.lse);
    }

    fn run_cpu(&mut self) -> Result<(), KernelError> {
        self.poison();
        let lse = if self.params.write_lse { Some(&mut self.lse) } else { None };
        TreeVerify::cpu(self.params.clone())?.run_cpu(
            &self.q,
            &self.k,
            &self.v,
            &self.anc,
            self.prefix,
            &mut self.out,
            lse,
        )
    }

    fn run_gpu(&mut self, rt: &Runtime) -> Result<(), KernelError> {
        self.poison();
        let op = TreeVerify::new(rt, self.params.clone())?;
        let host_lse = self.params.write_lse.then_some(&self.lse as &dyn TensorMeta);
        op.check_args(&self.q, &self.k, &self.v, &self.anc, self.prefix, &self.out, host_lse)?;
        let (q, k, v, anc) = (up(rt, &self.q)?, up(rt, &self.k)?, up(rt, &self.v)?, up(rt, &self.anc)?);
        let out = DeviceTensor::poisoned(rt.stream(), DType::BF16, &self.out.shape)?;
        let lse_d = DeviceTensor::poisoned(rt.stream(), DType::F32, &self.lse.shape)?;
        let lse = if self.params.write_lse { Some(&lse_d) } else { None };
        op.launch(rt, &q, &k, &v, &anc, self.prefix, &out, lse)?;
        rt.synchronize()?;
        self.out = out.download()?;
        if self.params.write_lse {
            self.lse = lse_d.download()?;
        }
        Ok(())
    }

    fn check(&self) -> Result<f64, String> {
        let sc = self.params.scale_log2 as f64;
        let (q, k, v) = (self.q.to_f64(), self.k.to_f64(), self.v.to_f64());
        let (o, l) = r::tree_verify(self.dims, &q, &k, &v, &self.anc_bits(), self.prefix, self.t, sc);
        let e = within("out", r::rel_err(&self.out.to_f64(), &o)?, BF16_TOL)?;
        if self.params.write_lse {
            check_lse(&self.lse, &l)?;
        }
        Ok(e)
    }

    fn bytes_read(&self) -> u64 {
        let d = self.dims;
        (2 * d.batch * d.kv_heads * (self.prefix + self.t) * d.head_dim * 2 + self.q.numel() * 2) as u64
    }
}

pub fn tree_gpu_cases(seed: u64) -> Vec<TreeCase> {
    vec![
        TreeCase::new(
            "tree_verify",
            dims(1, 8, 4, 16400, 128),
            16000,
            16,
            TreeParams { write_lse: true, ..TreeParams::new(4, 128, 16) },
            seed,
        ),
        TreeCase::new("tree_verify", dims(2, 2, 3, 3000, 64), 2900, 64, TreeParams::new(3, 64, 64), seed + 1),
        TreeCase::new(
            "tree_verify",
            dims(2, 2, 8, 900, 64),
            777,
            1,
            TreeParams { write_lse: true, ..TreeParams::new(8, 64, 1) },
            seed + 2,
        ),
    ]
}
