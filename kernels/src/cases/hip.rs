//! HiP tree-pruned selection cases ([`HipCase`]).

use super::*;

/// HiP tree-search selection ([`crate::hip::HipSelect`]) vs [`crate::hip::reference_select`].
pub struct HipCase {
    pub name: String,
    pub dims: DecodeDims,
    pub seq_len: usize,
    pub window: usize,
    pub bk: usize,
    pub k_nodes: usize,
    pub child_tile: usize,
    pub q: HostTensor,
    pub k: HostTensor,
    pub block_idx: HostTensor,
    pub block_count: HostTensor,
}

impl HipCase {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        dims: DecodeDims,
        seq_len: usize,
        window: usize,
        bk: usize,
        k_nodes: usize,
        child_tile: usize,
        seed: u64,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let DecodeDims { batch, kv_heads, group, cap, head_dim: d } = dims;
        HipCase {
            name: name.to_string(),
            dims,
            seq_len,
            window,
            bk,
            k_nodes,
            child_tile,
            q: rand_bf16(&mut rng, &[batch, kv_heads * group, d], 2.0),
            k: rand_bf16(&mut rng, &[batch, kv_heads, cap, d], 1.0),
            block_idx: HostTensor::full(DType::I32, &[batch, kv_heads, k_nodes], 0.0),
            block_count: HostTensor::full(DType::I32, &[batch, kv_heads], 0.0),
        }
    }
}

impl KernelCase for HipCase {
    fn name(&self) -> String {
        let d = self.dims;
        format!(
            "{} B{} Hkv{} G{} D{} N{} w{} bk{} K{}",
            self.name, d.batch, d.kv_heads, d.group, d.head_dim, self.seq_len, self.window, self.bk, self.k_nodes
        )
    }

    fn poison(&mut self) {
        poison(&mut self.block_idx);
        poison(&mut self.block_count);
    }

    fn run_cpu(&mut self) -> Result<(), KernelError> {
        self.poison();
        let d = self.dims;
        let op = HipSelect::cpu(d.group, d.head_dim, self.bk, self.k_nodes, self.child_tile)?;
        op.run_cpu(&self.q, &self.k, self.seq_len, self.window, &mut self.block_idx, &mut self.block_count)?;
        Ok(())
    }

    fn run_gpu(&mut self, rt: &Runtime) -> Result<(), KernelError> {
        self.poison();
        let d = self.dims;
        let op = HipSelect::new(rt, d.group, d.head_dim, self.bk, self.k_nodes, self.child_tile)?;
        op.check_args(&self.q, &self.k, self.seq_len, self.window, &self.block_idx, &self.block_count)?;
        let (q, k) = (up(rt, &self.q)?, up(rt, &self.k)?);
        let bi = DeviceTensor::poisoned(rt.stream(), DType::I32, &self.block_idx.shape)?;
        let bc = DeviceTensor::poisoned(rt.stream(), DType::I32, &self.block_count.shape)?;
        op.launch(rt, &q, &k, self.seq_len, self.window, &bi, &bc)?;
        rt.synchronize()?;
        self.block_idx = bi.download()?;
        self.block_count = bc.download()?;
        Ok(())
    }

    /// The selection must equal the reference exactly (as in `tests/hip_select.rs`):
    /// ascending block ids, `min(K, nb)` of them, -1 padding.
    fn check(&self) -> Result<f64, String> {
        let d = self.dims;
        let (q, k) = (self.q.to_f64(), self.k.to_f64());
        let want = crate::hip::reference_select(d, &q, &k, self.seq_len, self.window, self.bk, self.k_nodes);
        let (idx, cnt) = (self.block_idx.to_f64(), self.block_count.to_f64());
        let kn = self.k_nodes;
        for (bh, w) in want.iter().enumerate() {
            if cnt[bh] != w.len() as f64 {
                return Err(format!("(b,h) {bh}: count {} want {}", cnt[bh], w.len()));
            }
            let row = &idx[bh * kn..(bh + 1) * kn];
            for (j, &x) in row.iter().enumerate() {
                let want_j = w.get(j).map_or(-1.0, |&b| b as f64);
                if x != want_j {
                    return Err(format!("(b,h) {bh}: slot {j} = {x}, want {want_j}"));
                }
            }
        }
        Ok(0.0)
    }

    fn bytes_read(&self) -> u64 {
        // Per step: 2K children × BK key rows; plus the queries.
        let d = self.dims;
        let nb = self.seq_len.saturating_sub(self.window).div_ceil(self.bk);
        let steps = crate::hip::refine_steps(nb, self.k_nodes) as u64;
        let rows = (2 * self.k_nodes * self.bk) as u64;
        steps * (d.batch * d.kv_heads) as u64 * rows * d.head_dim as u64 * 2 + self.q.numel() as u64 * 2
    }
}

pub fn hip_gpu_cases(seed: u64) -> Vec<HipCase> {
    vec![
        HipCase::new("hip_select", dims(2, 4, 4, 30011, 128), 30000, 1024, 16, 64, 64, seed),
        HipCase::new("hip_select", dims(1, 3, 3, 5003, 64), 4999, 100, 2, 128, 32, seed + 1),
    ]
}
