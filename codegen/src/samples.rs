//! Hand-built sample programs: the reference set for the interpreter, the emitter
//! snapshots, the GPU checks and `tessera compile`.
//!
//! Each sample is specialised by a small set of compile-time parameters ([`Config`]).

use std::collections::BTreeMap;

use crate::ir::{DType, Index, Kernel, KernelBuilder, ReduceOp, UnaryOp, VerifyError};

/// Compile-time parameter values, by name.
pub type Config = BTreeMap<String, i64>;

/// A named sample program with its default compile-time parameters.
pub struct Sample {
    pub name: &'static str,
    pub description: &'static str,
    /// Default values of every compile-time parameter the program reads.
    pub defaults: &'static [(&'static str, i64)],
    pub build: fn(&Config) -> Result<Kernel, VerifyError>,
}

impl Sample {
    /// The defaults, overridden by `overrides`. Unknown names are an error.
    pub fn config(&self, overrides: &[(String, i64)]) -> Result<Config, String> {
        let mut c: Config = self.defaults.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        for (k, v) in overrides {
            if !c.contains_key(k) {
                let known: Vec<&str> = self.defaults.iter().map(|(k, _)| *k).collect();
                return Err(format!("`{}` has no parameter `{k}` (known: {})", self.name, known.join(", ")));
            }
            c.insert(k.clone(), *v);
        }
        Ok(c)
    }

    /// Builds the program with its default parameters.
    pub fn build_default(&self) -> Kernel {
        (self.build)(&self.config(&[]).expect("defaults are valid")).expect("samples verify")
    }
}

/// Every sample program.
pub fn all() -> &'static [Sample] {
    &SAMPLES
}

/// Finds a sample by name.
pub fn find(name: &str) -> Option<&'static Sample> {
    SAMPLES.iter().find(|s| s.name == name)
}

static SAMPLES: [Sample; 8] = [
    Sample {
        name: "vector_add",
        description: "out[i] = x[i] + y[i] (f32), BLOCK elements per program",
        defaults: &[("BLOCK", 1024), ("WARPS", 4)],
        build: vector_add,
    },
    Sample {
        name: "row_softmax",
        description: "softmax of each row of an f16 matrix, one row per program",
        defaults: &[("BLOCK_C", 1024), ("WARPS", 4)],
        build: row_softmax,
    },
    Sample {
        name: "matmul",
        description: "C[M,N] (f32) = A[M,K] x B[K,N] (bf16) with tile dot",
        defaults: &[("BLOCK_M", 64), ("BLOCK_N", 64), ("BLOCK_K", 32), ("WARPS", 4)],
        build: matmul,
    },
    Sample {
        name: "gather_rows",
        description: "out[i, :] = 2 * table[idx[i], :] (bf16): a gather by a tile of indices",
        defaults: &[("BLOCK_M", 16), ("BLOCK_D", 128), ("WARPS", 4)],
        build: gather_rows,
    },
    Sample {
        name: "topk",
        description: "the K largest scores of each row and their positions (SORTED 0: the set, \
                      unsorted: above the K-th largest first, then equal to it, in index order)",
        defaults: &[("BLOCK_N", 256), ("K", 16), ("SORTED", 1), ("WARPS", 4)],
        build: topk,
    },
    Sample {
        name: "prefix_sum",
        description: "inclusive prefix sum (cumsum) of each row of an f32 matrix, one row per program",
        defaults: &[("BLOCK_N", 1024), ("WARPS", 4)],
        build: prefix_sum,
    },
    Sample {
        name: "flash_decode",
        description: "single-query attention over a split of the KV sequence (GQA group per program), \
                      online softmax; writes partial outputs and log2-sum-exp per split",
        defaults: &[("GROUP", 4), ("HEAD_DIM", 128), ("BLOCK_N", 64), ("WARPS", 4), ("MIN_BLOCKS", 0)],
        build: flash_decode,
    },
    Sample {
        name: "flash_decode_combine",
        description: "merges the per-split partial outputs of flash_decode by log-sum-exp",
        defaults: &[("HEAD_DIM", 128), ("MAX_SPLITS", 64), ("WARPS", 4)],
        build: flash_decode_combine,
    },
];

fn get(c: &Config, k: &str) -> usize {
    c[k] as usize
}

fn builder(name: &str, c: &Config) -> KernelBuilder {
    let mut b = KernelBuilder::new(name, c["WARPS"] as u32);
    for (k, v) in c {
        b.constant(k, *v);
    }
    b
}

/// `out = x + y`, one BLOCK-long slice per program.
pub fn vector_add(c: &Config) -> Result<Kernel, VerifyError> {
    let block = get(c, "BLOCK");
    let mut b = builder("vector_add", c);
    let x = b.tensor("x", DType::F32, 1);
    let y = b.tensor("y", DType::F32, 1);
    let out = b.tensor_mut("out", DType::F32, 1);
    let pid = b.program_id(0);
    let bs = b.const_i32(block as i32);
    let start = b.mul(pid, bs);
    b.name(start, "start");
    let xs = b.load(x, vec![Index::Range { start, len: block }], None, 0.0);
    let ys = b.load(y, vec![Index::Range { start, len: block }], None, 0.0);
    let sum = b.add(xs, ys);
    b.store(out, vec![Index::Range { start, len: block }], sum, None);
    b.finish()
}

/// Row softmax of an f16 matrix, computed in f32 with exp2.
pub fn row_softmax(c: &Config) -> Result<Kernel, VerifyError> {
    let bc = get(c, "BLOCK_C");
    let mut b = builder("row_softmax", c);
    let x = b.tensor("x", DType::F16, 2);
    let out = b.tensor_mut("out", DType::F16, 2);
    let row = b.program_id(0);
    let zero = b.const_i32(0);
    let idx = vec![Index::At(row), Index::Range { start: zero, len: bc }];
    let xs = b.load(x, idx.clone(), None, f64::NEG_INFINITY);
    let xf = b.cast(xs, DType::F32);
    let m = b.reduce(ReduceOp::Max, xf, 0);
    b.name(m, "row_max");
    let log2e = b.const_f32(std::f32::consts::LOG2_E);
    let shifted = b.sub(xf, m);
    let scaled = b.mul(shifted, log2e);
    let e = b.exp2(scaled);
    let s = b.reduce(ReduceOp::Sum, e, 0);
    b.name(s, "row_sum");
    let p = b.div(e, s);
    let ph = b.cast(p, DType::F16);
    b.store(out, idx, ph, None);
    b.finish()
}

/// Tiled matrix product with a K loop and f32 accumulation.
pub fn matmul(c: &Config) -> Result<Kernel, VerifyError> {
    let (bm, bn, bk) = (get(c, "BLOCK_M"), get(c, "BLOCK_N"), get(c, "BLOCK_K"));
    let mut b = builder("matmul", c);
    let a = b.tensor("a", DType::BF16, 2);
    let bt = b.tensor("b", DType::BF16, 2);
    let out = b.tensor_mut("c", DType::F32, 2);
    let pm = b.program_id(0);
    let pn = b.program_id(1);
    let bm_c = b.const_i32(bm as i32);
    let bn_c = b.const_i32(bn as i32);
    let row0 = b.mul(pm, bm_c);
    let col0 = b.mul(pn, bn_c);
    b.name(row0, "row0");
    b.name(col0, "col0");
    let zero = b.full(&[bm, bn], 0.0, DType::F32);
    let acc = b.var(zero, "acc");
    let k0 = b.const_i32(0);
    let kdim = b.dim(a, 1);
    b.for_range(k0, kdim, bk as i64, "k", |b, k| {
        let at = b.load(a, vec![Index::Range { start: row0, len: bm }, Index::Range { start: k, len: bk }], None, 0.0);
        let btile =
            b.load(bt, vec![Index::Range { start: k, len: bk }, Index::Range { start: col0, len: bn }], None, 0.0);
        let prod = b.dot(at, btile, false);
        let next = b.add(acc, prod);
        b.assign(acc, next);
    });
    b.store(out, vec![Index::Range { start: row0, len: bm }, Index::Range { start: col0, len: bn }], acc, None);
    b.finish()
}

/// `out[i, :] = 2 * table[idx[i], :]`; indices outside the table read zeros.
pub fn gather_rows(c: &Config) -> Result<Kernel, VerifyError> {
    let (bm, bd) = (get(c, "BLOCK_M"), get(c, "BLOCK_D"));
    let mut b = builder("gather_rows", c);
    let table = b.tensor("table", DType::BF16, 2);
    let idx = b.tensor("idx", DType::I32, 1);
    let out = b.tensor_mut("out", DType::BF16, 2);
    let pid = b.program_id(0);
    let bm_c = b.const_i32(bm as i32);
    let start = b.mul(pid, bm_c);
    let zero = b.const_i32(0);
    let ids = b.load(idx, vec![Index::Range { start, len: bm }], None, -1.0);
    b.name(ids, "row_ids");
    let rows = b.load(table, vec![Index::Gather(ids), Index::Range { start: zero, len: bd }], None, 0.0);
    let two = b.constant_of(2.0, DType::BF16);
    let doubled = b.mul(rows, two);
    b.store(out, vec![Index::Range { start, len: bm }, Index::Range { start: zero, len: bd }], doubled, None);
    b.finish()
}

/// Top-K of each row of an f32 score matrix; positions past the row end never win.
pub fn topk(c: &Config) -> Result<Kernel, VerifyError> {
    let (bn, k) = (get(c, "BLOCK_N"), get(c, "K"));
    let mut b = builder("topk", c);
    let scores = b.tensor("scores", DType::F32, 2);
    let values = b.tensor_mut("values", DType::F32, 2);
    let indices = b.tensor_mut("indices", DType::I32, 2);
    let row = b.program_id(0);
    let zero = b.const_i32(0);
    let s = b.load(scores, vec![Index::At(row), Index::Range { start: zero, len: bn }], None, f64::NEG_INFINITY);
    let (v, i) = b.topk_with(s, k, c["SORTED"] != 0);
    let out_idx = vec![Index::At(row), Index::Range { start: zero, len: k }];
    b.store(values, out_idx.clone(), v, None);
    b.store(indices, out_idx, i, None);
    b.finish()
}

/// Inclusive prefix sum of each row of an f32 `[rows, n]` matrix, `n <= BLOCK_N`: elements
/// past the row end load as 0 and are not stored. (The i32 scan runs on the GPU in the
/// centroid packing's checks.)
pub fn prefix_sum(c: &Config) -> Result<Kernel, VerifyError> {
    let bn = get(c, "BLOCK_N");
    let mut b = builder("prefix_sum", c);
    let x = b.tensor("x", DType::F32, 2);
    let out = b.tensor_mut("out", DType::F32, 2);
    let row = b.program_id(0);
    let zero = b.const_i32(0);
    let index = vec![Index::At(row), Index::Range { start: zero, len: bn }];
    let xs = b.load(x, index.clone(), None, 0.0);
    let sums = b.cumsum(xs, 0);
    b.store(out, index, sums, None);
    b.finish()
}

/// Flash-decoding, split phase. Grid: (splits, kv_heads, batch).
///
/// Each program reads one split of one KV head once and serves the GROUP query heads
/// that share it. Scores are kept in log2 units (`scale_log2 = softmax_scale * log2(e)`),
/// so the softmax uses exp2; `lse` is written in log2 units too.
pub fn flash_decode(c: &Config) -> Result<Kernel, VerifyError> {
    let (g, d, bn) = (get(c, "GROUP"), get(c, "HEAD_DIM"), get(c, "BLOCK_N"));
    let mut b = builder("flash_decode", c);
    b.min_blocks_per_sm(c["MIN_BLOCKS"] as u32);
    let q = b.tensor("q", DType::BF16, 3); // [B, Hq, D]
    let k = b.tensor("k", DType::BF16, 4); // [B, Hkv, N, D]
    let v = b.tensor("v", DType::BF16, 4); // [B, Hkv, N, D]
    let o_part = b.tensor_mut("o_part", DType::F32, 4); // [B, Hq, S, D]
    let lse_part = b.tensor_mut("lse_part", DType::F32, 3); // [B, Hq, S]
    let scale_log2 = b.scalar_arg("scale_log2", DType::F32);
    let split_len = b.scalar_arg("split_len", DType::I32);

    let split = b.program_id(0);
    let head = b.program_id(1);
    let batch = b.program_id(2);
    b.name(split, "split");
    b.name(head, "kv_head");
    b.name(batch, "batch");
    let n64 = b.dim(k, 2);
    let n = b.cast(n64, DType::I32);
    b.name(n, "seq_len");
    let start = b.mul(split, split_len);
    let stop_raw = b.add(start, split_len);
    let stop = b.min(stop_raw, n);
    b.name(start, "split_start");
    b.name(stop, "split_stop");
    let g_c = b.const_i32(g as i32);
    let q_head0 = b.mul(head, g_c);
    b.name(q_head0, "q_head0");
    let zero = b.const_i32(0);
    let out_index = vec![
        Index::At(batch),
        Index::Range { start: q_head0, len: g },
        Index::At(split),
        Index::Range { start: zero, len: d },
    ];
    let lse_index = vec![Index::At(batch), Index::Range { start: q_head0, len: g }, Index::At(split)];

    let empty = b.binary(crate::ir::BinaryOp::Ge, start, stop);
    b.if_then(empty, |b| {
        let zeros = b.full(&[g, d], 0.0, DType::F32);
        let ninf = b.full(&[g], f64::NEG_INFINITY, DType::F32);
        b.store(o_part, out_index.clone(), zeros, None);
        b.store(lse_part, lse_index.clone(), ninf, None);
        b.ret();
    });

    let qt = b.load(
        q,
        vec![Index::At(batch), Index::Range { start: q_head0, len: g }, Index::Range { start: zero, len: d }],
        None,
        0.0,
    );
    b.name(qt, "q_tile");
    let m0 = b.full(&[g], f64::NEG_INFINITY, DType::F32);
    let m = b.var(m0, "row_max");
    let l0 = b.full(&[g], 0.0, DType::F32);
    let l = b.var(l0, "row_sum");
    let a0 = b.full(&[g, d], 0.0, DType::F32);
    let acc = b.var(a0, "acc");
    b.for_range(start, stop, bn as i64, "kv_start", |b, t| {
        let offs = b.arange(0, bn);
        let pos = b.add(offs, t);
        let valid = b.lt(pos, stop);
        b.name(valid, "valid");
        let valid_rows = b.expand_dims(valid, 1);
        let kv_index = vec![
            Index::At(batch),
            Index::At(head),
            Index::Range { start: t, len: bn },
            Index::Range { start: zero, len: d },
        ];
        let kt = b.load(k, kv_index.clone(), Some(valid_rows), 0.0);
        b.name(kt, "k_tile");
        let vt = b.load(v, kv_index, Some(valid_rows), 0.0);
        b.name(vt, "v_tile");
        let s_raw = b.dot(qt, kt, true);
        let s_scaled = b.mul(s_raw, scale_log2);
        let ninf = b.const_f32(f32::NEG_INFINITY);
        let s = b.select(valid, s_scaled, ninf);
        b.name(s, "scores");
        let tile_max = b.reduce(ReduceOp::Max, s, 1);
        let m_new = b.max(m, tile_max);
        let dm = b.sub(m, m_new);
        let alpha = b.exp2(dm);
        b.name(alpha, "alpha");
        let m_col = b.expand_dims(m_new, 1);
        let centred = b.sub(s, m_col);
        let p = b.exp2(centred);
        b.name(p, "probs");
        let lsum = b.reduce(ReduceOp::Sum, p, 1);
        let l_scaled = b.mul(l, alpha);
        let l_new = b.add(l_scaled, lsum);
        b.assign(l, l_new);
        let p16 = b.cast(p, DType::BF16);
        let pv = b.dot(p16, vt, false);
        let alpha_col = b.expand_dims(alpha, 1);
        let acc_scaled = b.mul(acc, alpha_col);
        let acc_new = b.add(acc_scaled, pv);
        b.assign(acc, acc_new);
        b.assign(m, m_new);
    });
    let l_col = b.expand_dims(l, 1);
    let o = b.div(acc, l_col);
    let log_l = b.unary(UnaryOp::Log2, l);
    let lse = b.add(m, log_l);
    b.store(o_part, out_index, o, None);
    b.store(lse_part, lse_index, lse, None);
    b.finish()
}

/// Flash-decoding, combine phase. Grid: (q_heads, batch).
pub fn flash_decode_combine(c: &Config) -> Result<Kernel, VerifyError> {
    let (d, s_max) = (get(c, "HEAD_DIM"), get(c, "MAX_SPLITS"));
    let mut b = builder("flash_decode_combine", c);
    let o_part = b.tensor("o_part", DType::F32, 4); // [B, Hq, S, D]
    let lse_part = b.tensor("lse_part", DType::F32, 3); // [B, Hq, S]
    let out = b.tensor_mut("out", DType::BF16, 3); // [B, Hq, D]
    let head = b.program_id(0);
    let batch = b.program_id(1);
    let zero = b.const_i32(0);
    let lse = b.load(
        lse_part,
        vec![Index::At(batch), Index::At(head), Index::Range { start: zero, len: s_max }],
        None,
        f64::NEG_INFINITY,
    );
    let m = b.reduce(ReduceOp::Max, lse, 0);
    let centred = b.sub(lse, m);
    let w = b.exp2(centred);
    b.name(w, "split_weight");
    let denom = b.reduce(ReduceOp::Sum, w, 0);
    let parts = b.load(
        o_part,
        vec![
            Index::At(batch),
            Index::At(head),
            Index::Range { start: zero, len: s_max },
            Index::Range { start: zero, len: d },
        ],
        None,
        0.0,
    );
    let w_col = b.expand_dims(w, 1);
    let weighted = b.mul(parts, w_col);
    let summed = b.reduce(ReduceOp::Sum, weighted, 0);
    let o = b.div(summed, denom);
    let o16 = b.cast(o, DType::BF16);
    b.store(out, vec![Index::At(batch), Index::At(head), Index::Range { start: zero, len: d }], o16, None);
    b.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_sample_verifies_with_its_defaults() {
        for s in super::all() {
            let k = (s.build)(&s.config(&[]).unwrap());
            assert!(k.is_ok(), "{}: {:?}", s.name, k.err());
        }
    }

    #[test]
    fn unknown_parameters_are_refused() {
        let s = super::find("vector_add").unwrap();
        assert!(s.config(&[("NOPE".into(), 1)]).is_err());
    }
}
