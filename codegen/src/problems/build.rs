//! One constructor per sample: random inputs, poisoned outputs, config, grid and the
//! minimum traffic, for explicit sizes.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{poisoned, tensor_bytes, Launch, LaunchArg, Problem, ProblemTensor, Reference, Role};
use crate::host::{HostTensor, ScalarValue};
use crate::ir::DType;
use crate::samples::{self, Config};

fn config(sample: &str, overrides: &[(&str, i64)]) -> Config {
    let o: Vec<(String, i64)> = overrides.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    samples::find(sample).expect("sample exists").config(&o).unwrap_or_else(|e| panic!("{e}"))
}

fn cdiv(a: usize, b: usize) -> u32 {
    a.div_ceil(b) as u32
}

/// Collects a problem's tensors and the argument list of its launches.
struct Tensors(Vec<ProblemTensor>);

impl Tensors {
    fn add(&mut self, name: &'static str, tensor: HostTensor, role: Role) -> usize {
        self.0.push(ProblemTensor { name, tensor, role });
        self.0.len() - 1
    }
    fn input(&mut self, name: &'static str, t: HostTensor) -> LaunchArg {
        LaunchArg::Tensor { tensor: self.add(name, t, Role::Input), writes: false }
    }
    fn output(&mut self, name: &'static str, dtype: DType, shape: &[usize]) -> LaunchArg {
        LaunchArg::Tensor { tensor: self.add(name, poisoned(dtype, shape), Role::Output), writes: true }
    }
    /// Default traffic: inputs and outputs once, intermediates twice.
    fn bytes(&self) -> u64 {
        self.0.iter().map(|t| tensor_bytes(&t.tensor) * if t.role == Role::Scratch { 2 } else { 1 }).sum()
    }
}

fn single(
    sample: &'static str,
    name: String,
    config: Config,
    grid: [u32; 3],
    t: Tensors,
    args: Vec<LaunchArg>,
    reference: Reference,
) -> Problem {
    let bytes_moved = t.bytes();
    Problem {
        sample,
        name,
        tensors: t.0,
        launches: vec![Launch { sample, config, grid, args }],
        reference,
        bytes_moved,
    }
}

/// `vector_add` over `n` elements; `overrides` may set BLOCK and WARPS.
pub fn vector_add(n: usize, overrides: &[(&str, i64)], seed: u64) -> Problem {
    let mut rng = StdRng::seed_from_u64(seed);
    let c = config("vector_add", overrides);
    let grid = [cdiv(n, c["BLOCK"] as usize), 1, 1];
    let mut t = Tensors(Vec::new());
    let args = vec![
        t.input("x", HostTensor::random(DType::F32, &[n], -1.0, 1.0, &mut rng)),
        t.input("y", HostTensor::random(DType::F32, &[n], -1.0, 1.0, &mut rng)),
        t.output("out", DType::F32, &[n]),
    ];
    single("vector_add", format!("vector_add N={n}"), c, grid, t, args, Reference::VectorAdd)
}

/// `row_softmax` of an f16 `[rows, cols]` matrix; needs `cols <= BLOCK_C`.
pub fn row_softmax(rows: usize, cols: usize, overrides: &[(&str, i64)], seed: u64) -> Problem {
    let mut rng = StdRng::seed_from_u64(seed);
    let c = config("row_softmax", overrides);
    assert!(cols <= c["BLOCK_C"] as usize, "row_softmax: cols {cols} > BLOCK_C {}", c["BLOCK_C"]);
    let mut t = Tensors(Vec::new());
    let args = vec![
        t.input("x", HostTensor::random(DType::F16, &[rows, cols], -4.0, 4.0, &mut rng)),
        t.output("out", DType::F16, &[rows, cols]),
    ];
    let name = format!("row_softmax rows={rows} cols={cols}");
    single("row_softmax", name, c, [rows as u32, 1, 1], t, args, Reference::RowSoftmax { rows, cols })
}

/// `matmul` of bf16 `[m, k] x [k, n]` into f32.
pub fn matmul(m: usize, n: usize, k: usize, overrides: &[(&str, i64)], seed: u64) -> Problem {
    let mut rng = StdRng::seed_from_u64(seed);
    let c = config("matmul", overrides);
    let grid = [cdiv(m, c["BLOCK_M"] as usize), cdiv(n, c["BLOCK_N"] as usize), 1];
    let mut t = Tensors(Vec::new());
    let args = vec![
        t.input("a", HostTensor::random(DType::BF16, &[m, k], -1.0, 1.0, &mut rng)),
        t.input("b", HostTensor::random(DType::BF16, &[k, n], -1.0, 1.0, &mut rng)),
        t.output("c", DType::F32, &[m, n]),
    ];
    single("matmul", format!("matmul M={m} N={n} K={k}"), c, grid, t, args, Reference::Matmul { m, n, k })
}

/// `gather_rows`: `m` indices into a bf16 `[rows, d]` table (`d <= BLOCK_D`). About one
/// index in eight is out of range (negative or past the end); with `m > rows` indices
/// repeat.
pub fn gather_rows(m: usize, rows: usize, d: usize, overrides: &[(&str, i64)], seed: u64) -> Problem {
    let mut rng = StdRng::seed_from_u64(seed);
    let c = config("gather_rows", overrides);
    assert!(d <= c["BLOCK_D"] as usize, "gather_rows: d {d} > BLOCK_D {}", c["BLOCK_D"]);
    let ids: Vec<f64> = (0..m)
        .map(|i| match (i % 8, rng.random_range(0..rows as i64)) {
            (3, r) => -1 - r,
            (6, r) => rows as i64 + r,
            (_, r) => r,
        } as f64)
        .collect();
    let valid = ids.iter().filter(|&&i| i >= 0.0 && i < rows as f64).count();
    let grid = [cdiv(m, c["BLOCK_M"] as usize), 1, 1];
    let mut t = Tensors(Vec::new());
    let args = vec![
        t.input("table", HostTensor::random(DType::BF16, &[rows, d], -1.0, 1.0, &mut rng)),
        t.input("idx", HostTensor::from_f64(DType::I32, &[m], &ids)),
        t.output("out", DType::BF16, &[m, d]),
    ];
    let mut p = single(
        "gather_rows",
        format!("gather_rows M={m} rows={rows} D={d}"),
        c,
        grid,
        t,
        args,
        Reference::GatherRows { rows, d },
    );
    p.bytes_moved = (m * 4 + valid * d * 2 + m * d * 2) as u64;
    p
}

/// `topk` of each row of an f32 `[rows, n]` score matrix (`k <= n <= BLOCK_N`). Scores are
/// small integers, so ties are frequent.
pub fn topk(rows: usize, n: usize, k: usize, overrides: &[(&str, i64)], seed: u64) -> Problem {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut o = overrides.to_vec();
    o.push(("K", k as i64));
    let c = config("topk", &o);
    assert!(k <= n && n <= c["BLOCK_N"] as usize, "topk: need K {k} <= N {n} <= BLOCK_N {}", c["BLOCK_N"]);
    let hi = (n / 4).max(2) as i64;
    let scores: Vec<f64> = (0..rows * n).map(|_| rng.random_range(-hi..hi) as f64).collect();
    let mut t = Tensors(Vec::new());
    let args = vec![
        t.input("scores", HostTensor::from_f64(DType::F32, &[rows, n], &scores)),
        t.output("values", DType::F32, &[rows, k]),
        t.output("indices", DType::I32, &[rows, k]),
    ];
    let sorted = c["SORTED"] != 0;
    let name = format!("topk rows={rows} N={n} K={k}{}", if sorted { "" } else { " unsorted" });
    single("topk", name, c, [rows as u32, 1, 1], t, args, Reference::TopK { rows, n, k, sorted })
}

/// `prefix_sum` of each row of a `[rows, n]` matrix (`n <= BLOCK_N`) of small integers,
/// negative too, so f32 sums are exact.
pub fn prefix_sum(rows: usize, n: usize, overrides: &[(&str, i64)], seed: u64) -> Problem {
    let mut rng = StdRng::seed_from_u64(seed);
    let c = config("prefix_sum", overrides);
    assert!(n <= c["BLOCK_N"] as usize, "prefix_sum: N {n} > BLOCK_N {}", c["BLOCK_N"]);
    let x: Vec<f64> = (0..rows * n).map(|_| rng.random_range(-50..100) as f64).collect();
    let mut t = Tensors(Vec::new());
    let args =
        vec![t.input("x", HostTensor::from_f64(DType::F32, &[rows, n], &x)), t.output("out", DType::F32, &[rows, n])];
    let name = format!("prefix_sum rows={rows} N={n}");
    single("prefix_sum", name, c, [rows as u32, 1, 1], t, args, Reference::PrefixSum { rows, n })
}

/// Sizes of a flash-decode problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashDecodeSize {
    pub batch: usize,
    pub kv_heads: usize,
    /// Query heads per KV head (GQA group); query heads = `kv_heads * group`.
    pub group: usize,
    pub seq_len: usize,
    pub head_dim: usize,
    /// Keys per loop iteration of the split kernel.
    pub block_n: usize,
    /// Keys per split.
    pub split_len: usize,
    /// Splits launched; those past `ceil(seq_len / split_len)` are empty.
    pub num_splits: usize,
}

/// Flash-decoding as two launches: `flash_decode` (grid `[splits, kv_heads, batch]`)
/// writes `o_part`/`lse_part`, then `flash_decode_combine` (grid `[q_heads, batch]`) merges
/// them into the bf16 `out`, checked against f64 attention. `overrides` apply to the split
/// kernel (WARPS; BLOCK_N/GROUP/HEAD_DIM come from `size`).
pub fn flash_decode(size: FlashDecodeSize, overrides: &[(&str, i64)], seed: u64) -> Problem {
    let s = size;
    let mut rng = StdRng::seed_from_u64(seed);
    let hq = s.kv_heads * s.group;
    let max_splits = s.num_splits.next_power_of_two().max(16);
    let mut o = vec![("GROUP", s.group as i64), ("HEAD_DIM", s.head_dim as i64), ("BLOCK_N", s.block_n as i64)];
    o.extend_from_slice(overrides);
    let c1 = config("flash_decode", &o);
    let c2 = config("flash_decode_combine", &[("HEAD_DIM", s.head_dim as i64), ("MAX_SPLITS", max_splits as i64)]);
    let mut t = Tensors(Vec::new());
    let (b, hkv, n, d, ns) = (s.batch, s.kv_heads, s.seq_len, s.head_dim, s.num_splits);
    let q = t.input("q", HostTensor::random(DType::BF16, &[b, hq, d], -1.0, 1.0, &mut rng));
    let k = t.input("k", HostTensor::random(DType::BF16, &[b, hkv, n, d], -1.0, 1.0, &mut rng));
    let v = t.input("v", HostTensor::random(DType::BF16, &[b, hkv, n, d], -1.0, 1.0, &mut rng));
    let o_part = t.add("o_part", poisoned(DType::F32, &[b, hq, ns, d]), Role::Scratch);
    let lse_part = t.add("lse_part", poisoned(DType::F32, &[b, hq, ns]), Role::Scratch);
    let out = t.output("out", DType::BF16, &[b, hq, d]);
    let scale_log2 = (1.0 / (d as f64).sqrt() * std::f64::consts::LOG2_E) as f32;
    let w = |tensor| LaunchArg::Tensor { tensor, writes: true };
    let r = |tensor| LaunchArg::Tensor { tensor, writes: false };
    let split = Launch {
        sample: "flash_decode",
        config: c1,
        grid: [ns as u32, hkv as u32, b as u32],
        args: vec![
            q,
            k,
            v,
            w(o_part),
            w(lse_part),
            LaunchArg::Scalar(ScalarValue::F32(scale_log2)),
            LaunchArg::Scalar(ScalarValue::I32(s.split_len as i32)),
        ],
    };
    let combine = Launch {
        sample: "flash_decode_combine",
        config: c2,
        grid: [hq as u32, b as u32, 1],
        args: vec![r(o_part), r(lse_part), out],
    };
    let bytes_moved = t.bytes();
    Problem {
        sample: "flash_decode",
        name: format!(
            "flash_decode B={b} Hkv={hkv} G={} N={n} D={d} BLOCK_N={} split={} splits={ns}",
            s.group, s.block_n, s.split_len
        ),
        tensors: t.0,
        launches: vec![split, combine],
        reference: Reference::FlashDecode { size },
        bytes_moved,
    }
}
