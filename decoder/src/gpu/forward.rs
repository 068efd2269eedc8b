//! [`GpuModel`]: the Llama forward pass on one GPU for `batch` sequences of equal length.
//!
//! Per layer (rows = batch · tokens of the chunk):
//! `qkv = h·Wqkvᵀ` (cuBLAS) → RoPE on the Q/K views of `qkv` → `KvAppend` of the K/V views
//! → attention (`DenseDecode` for one token per sequence; for a chunk of up to 64,
//! `TreeVerify` with a causal chain mask over the cached prefix, Q and the output
//! transposed by [`super::kernels::Copy4`]) → `o = attn·Woᵀ` → `AddRmsNorm` (f32 residual
//! stream, ping-pong buffers) → `gu = h·Wguᵀ` → SwiGLU on its two halves → `down = act·Wdᵀ`
//! → `AddRmsNorm` with the next layer's attention norm (the final norm after the last).
//! Logits `[batch, vocab]` f32 come from the last position of each sequence.

use std::time::Duration;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::CudaEvent;
use tessera_codegen::host::{HostData, HostTensor};
use tessera_codegen::ir::DType;
use tessera_runtime::{DeviceTensor, Runtime};

use super::kv::GpuKvCache;
use super::ops::{i32_tensor, KernelChoices, Ops};
use super::plan::{chain_mask, chunk_rows, chunks};
use super::weights::GpuWeights;
use super::GpuError;
use crate::config::LlamaConfig;
use crate::DecodeError;

/// Activation buffers for up to `rows` rows (views of them are taken per chunk).
struct Buffers {
    rows: usize,
    resid: [DeviceTensor; 2],
    h: DeviceTensor,
    qkv: DeviceTensor,
    q_t: DeviceTensor,
    attn_t: DeviceTensor,
    attn: DeviceTensor,
    o: DeviceTensor,
    gu: DeviceTensor,
    act: DeviceTensor,
    logits: DeviceTensor,
    next: DeviceTensor,
}

impl Buffers {
    fn new(rt: &Runtime, c: &LlamaConfig, batch: usize, rows: usize) -> Result<Self, GpuError> {
        let s = rt.stream();
        let bf = |n: usize| DeviceTensor::zeros(s, DType::BF16, &[n]);
        let qkv = c.q_dim() + 2 * c.kv_dim();
        Ok(Buffers {
            rows,
            resid: [
                DeviceTensor::zeros(s, DType::F32, &[rows * c.hidden])?,
                DeviceTensor::zeros(s, DType::F32, &[rows * c.hidden])?,
            ],
            h: bf(rows * c.hidden)?,
            qkv: bf(rows * qkv)?,
            q_t: bf(rows * c.q_dim())?,
            attn_t: bf(rows * c.q_dim())?,
            attn: bf(rows * c.q_dim())?,
            o: bf(rows * c.hidden)?,
            gu: bf(rows * 2 * c.ffn_hidden)?,
            act: bf(rows * c.ffn_hidden)?,
            logits: DeviceTensor::zeros(s, DType::F32, &[batch * c.vocab])?,
            next: DeviceTensor::zeros(s, DType::I32, &[batch])?,
        })
    }
}

/// A contiguous row-major view `[shape]` of the start of `t`'s buffer.
fn view(t: &DeviceTensor, shape: &[usize]) -> Result<DeviceTensor, GpuError> {
    Ok(t.view(shape, &tessera_codegen::host::contiguous_strides(shape), 0)?)
}

/// GPU time of the attention launches, measured with CUDA events around each layer's
/// attention (kept for the caller to read after a synchronisation).
#[derive(Default)]
pub struct AttnTimer {
    events: Vec<(CudaEvent, CudaEvent)>,
    used: usize,
    /// Attention time summed over every [`AttnTimer::collect`].
    pub total: Duration,
}

impl AttnTimer {
    fn start(&mut self, rt: &Runtime) -> Result<(), GpuError> {
        if self.used == self.events.len() {
            let ev = || rt.context().new_event(Some(CUevent_flags::CU_EVENT_DEFAULT));
            self.events.push((ev()?, ev()?));
        }
        self.events[self.used].0.record(rt.stream())?;
        Ok(())
    }

    fn stop(&mut self, rt: &Runtime) -> Result<(), GpuError> {
        self.events[self.used].1.record(rt.stream())?;
        self.used += 1;
        Ok(())
    }

    /// Adds the time between the recorded pairs to `total` (synchronises on the events).
    pub fn collect(&mut self) -> Result<(), GpuError> {
        for (a, b) in &self.events[..self.used] {
            b.synchronize()?;
            self.total += Duration::from_secs_f64(a.elapsed_ms(b)? as f64 / 1e3);
        }
        self.used = 0;
        Ok(())
    }
}

/// A Llama model on the GPU with its KV cache, for `batch` sequences of equal length.
pub struct GpuModel {
    pub rt: Runtime,
    pub weights: GpuWeights,
    pub cache: GpuKvCache,
    ops: Ops,
    buf: Buffers,
    /// When set, attention launches are timed with events.
    pub attn_timer: Option<AttnTimer>,
    /// Tokens per sequence of the last chunk run (where the last positions' rows are).
    last_t: usize,
}

impl GpuModel {
    /// Builds the ops and buffers for `weights`, with a cache of `context` positions for
    /// `batch` sequences; attention configured by [`KernelChoices::heuristic`].
    pub fn new(rt: Runtime, weights: GpuWeights, batch: usize, context: usize) -> Result<Self, GpuError> {
        let choices = KernelChoices::heuristic(&weights.config, batch, rt.info().sm_count as usize);
        Self::with_choices(rt, weights, batch, context, choices)
    }

    /// [`Self::new`] with the attention ops configured by `choices` (e.g. the tuning
    /// database's winners; checked against the model's shapes).
    pub fn with_choices(
        rt: Runtime,
        weights: GpuWeights,
        batch: usize,
        context: usize,
        choices: KernelChoices,
    ) -> Result<Self, GpuError> {
        let c = weights.config.clone();
        let cache = GpuKvCache::new(&rt, &c, batch, context)?;
        let ops = Ops::with_choices(&rt, &c, batch, context, choices)?;
        let buf = Buffers::new(&rt, &c, batch, batch * ops.chunk)?;
        rt.synchronize()?;
        Ok(GpuModel { rt, weights, cache, ops, buf, attn_timer: None, last_t: 0 })
    }

    /// Uploads a real model (bf16) with a cache of `context` positions for `batch` sequences.
    pub fn from_weights(rt: Runtime, w: &crate::LlamaWeights, batch: usize, context: usize) -> Result<Self, GpuError> {
        let weights = GpuWeights::upload(&rt, w)?;
        Self::new(rt, weights, batch, context)
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.weights.config
    }

    /// The attention configurations the model runs.
    pub fn choices(&self) -> &KernelChoices {
        &self.ops.choices
    }

    /// The runtime and the weights back (the cache and buffers are freed), to build another
    /// model of the same weights with another batch or context.
    pub fn into_parts(self) -> (Runtime, GpuWeights) {
        (self.rt, self.weights)
    }

    pub fn batch(&self) -> usize {
        self.cache.batch
    }

    /// Forgets the cached context.
    pub fn reset(&mut self) {
        self.cache.len = 0;
    }

    /// Runs `t` tokens of every sequence (`tokens` is sequence-major, `batch · t` long)
    /// after the cached context, in chunks of at most 64 (see
    /// [`super::plan::prefill_chunk`]). The last positions' final hidden
    /// states are then ready for [`Self::logits`] / [`Self::argmax`].
    pub fn forward(&mut self, tokens: &[u32], t: usize) -> Result<(), DecodeError> {
        let b = self.batch();
        let c = self.weights.config.clone();
        if t == 0 || tokens.is_empty() {
            return Err(DecodeError::EmptyPrompt);
        }
        if tokens.len() != b * t {
            return Err(GpuError::Config(format!("{} tokens for {b} sequences of {t}", tokens.len())).into());
        }
        if let Some(&bad) = tokens.iter().find(|&&x| x as usize >= c.vocab) {
            return Err(DecodeError::TokenOutOfRange { token: bad, vocab: c.vocab });
        }
        if self.cache.len + t > self.cache.capacity {
            return Err(DecodeError::ContextFull { needed: self.cache.len + t, context: self.cache.capacity });
        }
        let mut last_t = 0;
        for r in chunks(t, self.ops.chunk) {
            last_t = r.len();
            let ids = chunk_rows(tokens, b, t, r);
            self.chunk(&ids, last_t)?;
        }
        self.last_t = last_t;
        Ok(())
    }

    /// One chunk: `t <= 64` tokens of every sequence (`ids` sequence-major).
    fn chunk(&mut self, ids: &[u32], t: usize) -> Result<(), GpuError> {
        let GpuModel { rt, weights, cache, ops, buf, attn_timer, .. } = self;
        let c = &weights.config;
        let b = cache.batch;
        let rows = b * t;
        debug_assert!(rows <= buf.rows);
        let pos0 = cache.len;
        let (h, qd, kvd, ff, d) = (c.hidden, c.q_dim(), c.kv_dim(), c.ffn_hidden, c.head_dim);
        let (nh, nkv) = (c.n_heads, c.n_kv_heads);
        let w = qd + 2 * kvd;
        let s = rt.stream();

        let ids_d = DeviceTensor::upload(s, &i32_tensor(ids.iter().map(|&x| x as i32).collect()))?;
        let positions: Vec<i32> = (0..b).flat_map(|_| (0..t).map(move |i| (pos0 + i) as i32)).collect();
        let positions = DeviceTensor::upload(s, &i32_tensor(positions))?;
        let pos_b = DeviceTensor::upload(s, &i32_tensor(vec![pos0 as i32; b]))?;

        let resid = [view(&buf.resid[0], &[rows, h])?, view(&buf.resid[1], &[rows, h])?];
        let hb = view(&buf.h, &[rows, h])?;
        let qkv = view(&buf.qkv, &[rows, w])?;
        let q = buf.qkv.view(&[rows, nh, d], &[w as i64, d as i64, 1], 0)?;
        let k = buf.qkv.view(&[rows, nkv, d], &[w as i64, d as i64, 1], qd)?;
        let kv_strides = [(t * w) as i64, d as i64, w as i64, 1];
        let k_new = buf.qkv.view(&[b, nkv, t, d], &kv_strides, qd)?;
        let v_new = buf.qkv.view(&[b, nkv, t, d], &kv_strides, qd + kvd)?;
        let attn = view(&buf.attn, &[rows, qd])?;
        let o = view(&buf.o, &[rows, h])?;
        let gu = view(&buf.gu, &[rows, 2 * ff])?;
        let gate = buf.gu.view(&[rows, ff], &[2 * ff as i64, 1], 0)?;
        let up = buf.gu.view(&[rows, ff], &[2 * ff as i64, 1], ff)?;
        let act = view(&buf.act, &[rows, ff])?;
        let anc = if t > 1 {
            let mask: Vec<i64> = (0..b).flat_map(|_| chain_mask(t)).collect();
            Some(DeviceTensor::upload(s, &HostTensor { shape: vec![b, t], data: HostData::I64(mask) })?)
        } else {
            None
        };

        ops.embedding.launch(rt, &ids_d, &weights.embedding, &resid[0])?;
        ops.rms_norm.launch(rt, &resid[0], &weights.layers[0].attn_norm, &hb)?;
        let mut cur = 0;
        for (li, l) in weights.layers.iter().enumerate() {
            let (kc, vc) = (&cache.k[li], &cache.v[li]);
            ops.blas.linear(&hb, &l.wqkv, &qkv)?;
            ops.rope.launch(rt, &q, &k, &positions, &ops.cos, &ops.sin)?;
            ops.append.launch(rt, &k_new, &v_new, &pos_b, kc, vc, &ops.landmarks)?;
            if let Some(anc) = &anc {
                let p = ops.prefill(rt)?;
                let q_src = buf.qkv.view(&[b, nh, t, d], &[(t * w) as i64, d as i64, w as i64, 1], 0)?;
                p.copy.launch(rt, &q_src, &view(&buf.q_t, &[b, nh, t, d])?)?;
                let q_t = view(&buf.q_t, &[b, nh * t, d])?;
                let out_t = view(&buf.attn_t, &[b, nh * t, d])?;
                p.tree.launch_with(rt, &p.scratch, &q_t, kc, vc, anc, pos0, &out_t, None)?;
                let dst = buf.attn.view(&[b, nh, t, d], &[(t * qd) as i64, d as i64, qd as i64, 1], 0)?;
                p.copy.launch(rt, &view(&buf.attn_t, &[b, nh, t, d])?, &dst)?;
            } else {
                let q3 = buf.qkv.view(&[b, nh, d], &[w as i64, d as i64, 1], 0)?;
                let out = view(&buf.attn, &[b, nh, d])?;
                if let Some(timer) = attn_timer.as_mut() {
                    timer.start(rt)?;
                }
                ops.dense.launch_with(rt, &ops.dense_scratch, &q3, kc, vc, pos0 + 1, &out, None)?;
                if let Some(timer) = attn_timer.as_mut() {
                    timer.stop(rt)?;
                }
            }
            ops.blas.linear(&attn, &l.wo, &o)?;
            ops.add_rms_norm.launch(rt, &o, &resid[cur], &l.ffn_norm, &resid[1 - cur], &hb)?;
            cur = 1 - cur;
            ops.blas.linear(&hb, &l.wgu, &gu)?;
            ops.swiglu.launch(rt, &gate, &up, &act)?;
            ops.blas.linear(&act, &l.wd, &o)?;
            let next_norm = weights.layers.get(li + 1).map_or(&weights.final_norm, |n| &n.attn_norm);
            ops.add_rms_norm.launch(rt, &o, &resid[cur], next_norm, &resid[1 - cur], &hb)?;
            cur = 1 - cur;
        }
        cache.len += t;
        Ok(())
    }

    /// The logits `[batch, vocab]` (f32, on the device) of the last position of every
    /// sequence after [`Self::forward`].
    pub fn logits(&mut self) -> Result<DeviceTensor, GpuError> {
        let c = &self.weights.config;
        let (b, h, t) = (self.batch(), c.hidden, self.last_t);
        if t == 0 {
            return Err(GpuError::Config("no forward pass has run yet".into()));
        }
        let last = self.buf.h.view(&[b, h], &[(t * h) as i64, 1], (t - 1) * h)?;
        let logits = view(&self.buf.logits, &[b, c.vocab])?;
        self.ops.blas.linear(&last, self.weights.lm_head(), &logits)?;
        Ok(logits)
    }

    /// The logits of every sequence's last position, on the host (`[batch · vocab]`).
    pub fn logits_host(&mut self) -> Result<Vec<f32>, GpuError> {
        let l = self.logits()?;
        match l.download()?.data {
            HostData::F32(v) => Ok(v),
            _ => Err(GpuError::Config("logits are not f32".into())),
        }
    }

    /// Greedy next tokens of every sequence (argmax on the device; one small download).
    pub fn argmax(&mut self) -> Result<Vec<u32>, GpuError> {
        let l = self.logits()?;
        let next = view(&self.buf.next, &[self.batch()])?;
        self.ops.argmax.launch(&self.rt, &l, &next)?;
        match next.download()?.data {
            HostData::I32(v) => Ok(v.into_iter().map(|x| x as u32).collect()),
            _ => Err(GpuError::Config("argmax ids are not i32".into())),
        }
    }
}
