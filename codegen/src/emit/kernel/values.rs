//! Tile values: element-wise ops, broadcasts, reductions, `dot` and top-k, in registers
//! where the layouts allow and through the shared-memory scratch arena otherwise.

use super::names::broadcast_index;
use super::*;

impl BodyWriter<'_> {
    /// `#pragma unroll` loop over the slots of this thread.
    pub(super) fn slots(&mut self, n: usize, body: &str) {
        self.line("#pragma unroll");
        self.line(format!("for (int i = 0; i < {n}; ++i) {body}"));
    }

    pub(super) fn elementwise(&mut self, name: &str, ty: &TileType, expr: impl Fn(&str) -> String) {
        let cty = ctype(ty.dtype);
        if ty.is_scalar() {
            self.line(format!("{cty} {name} = {};", expr("")));
        } else {
            let l = self.layout(ty);
            self.declare(name, ty);
            self.slots(l.slots, &format!("{name}[i] = {};", expr("i")));
        }
    }

    /// Makes `v` readable per slot of a tile of type `target`: a scalar as is, a tile of
    /// the same shape by slot, anything else broadcast through shared memory into a
    /// temporary first. Returns a function from the slot expression to the element.
    pub(super) fn operand(&mut self, v: ValueId, target: &TileType) -> impl Fn(&str) -> String {
        let t = self.ty(v);
        let name = self.name(v);
        // Recomputed broadcasts: `@F` stands for the element's flat index.
        let l = self.layout(target);
        let remat = if !t.is_scalar() && t.shape != target.shape {
            let coords = coords("@F", &target.shape);
            self.remat(v, &operand_coords_of(&t.shape, &coords))
        } else {
            None
        };
        let (name, by_slot) = if t.is_scalar() || remat.is_some() {
            (name, false)
        } else if t.shape == target.shape {
            (name, true)
        } else {
            (self.broadcast_tmp(v, &target.shape), true)
        };
        move |i: &str| match &remat {
            Some(e) => e.replace("@F", &l.flat(if i.is_empty() { "0" } else { i })),
            None if by_slot && !i.is_empty() => format!("{name}[{i}]"),
            None => name.clone(),
        }
    }

    /// Writes tile `v` to shared memory in row-major order; a fused `expand_dims` writes
    /// its source (same elements, same order).
    pub(super) fn stash_value(&mut self, v: ValueId, dst: &str) {
        let src = self.expand_alias.get(&v).copied().unwrap_or(v);
        let l = self.value_layout(&self.ty(src));
        self.line(format!("tsr::stash<{}>({dst}, {});", l.targs(), self.name(src)));
    }

    /// Broadcasts tile `v` to `shape` through shared memory; returns the temporary's name.
    pub(super) fn broadcast_tmp(&mut self, v: ValueId, shape: &[usize]) -> String {
        let src_ty = self.ty(v);
        let dst_ty = TileType::tile(src_ty.dtype, shape);
        let (sl, dl) = (self.layout(&src_ty), self.layout(&dst_ty));
        let tmp = format!("{}_as{}", self.name(v), shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x"));
        let tmp = format!("{tmp}_{}", self.fresh(""));
        let d = src_ty.dtype;
        let src_index = broadcast_index("f", &src_ty.shape, shape);
        // A fused expand_dims reads its source: same elements in the same order.
        let held = self.expand_alias.get(&v).copied().unwrap_or(v);
        if let Some(e) = self.row_broadcast(held, &src_ty.shape, dl) {
            self.declare(&tmp, &dst_ty);
            self.slots(dl.slots, &format!("{tmp}[i] = {e};"));
            return tmp;
        }
        if sl.replicated && self.layout(&self.ty(held)).replicated {
            // Every warp holds the source: read it from the lane that has the element.
            let src = self.name(held);
            self.declare(&tmp, &dst_ty);
            self.line("#pragma unroll");
            self.open(format!("for (int i = 0; i < {}; ++i)", dl.slots));
            self.line(format!("const int f = {};", dl.flat("i")));
            self.line(format!("{tmp}[i] = tsr::shfl({src}[0], f < {} ? {src_index} : 0);", dl.numel));
            self.close();
            return tmp;
        }
        self.pay_owed_barrier();
        self.use_smem(sl.numel * d.size_bytes());
        let s = Self::smem_ptr(d, 0);
        self.stash_value(v, &s);
        self.sync();
        self.declare(&tmp, &dst_ty);
        self.line("#pragma unroll");
        self.open(format!("for (int i = 0; i < {}; ++i)", dl.slots));
        self.line(format!("const int f = {};", dl.flat("i")));
        self.line(format!("if (f < {}) {tmp}[i] = {s}[{src_index}];", dl.numel));
        self.close();
        self.sync();
        tmp
    }

    /// The slot expression (of `i`) of a broadcast along the rows of a fragment: `held`
    /// holds the fragment's row vector (`[M]`, expanded to `src_shape` = `[M, 1]`) and the
    /// target is its `[M, N]` tile. Each thread already holds its rows. (A bare `[M]`
    /// broadcasts along the last axis, as a row of columns: not this case.)
    pub(super) fn row_broadcast(&self, held: ValueId, src_shape: &[usize], dst: Layout) -> Option<String> {
        let hl = self.value_layout(&self.ty(held));
        match (hl.fragment?, dst.fragment?) {
            (Fragment::Rows { m, wm }, f @ Fragment::Tile { m: m2, wm: wm2, .. })
                if m == m2 && wm == wm2 && src_shape == [m, 1] =>
            {
                Some(format!("{}[{}::row_slot(i)]", self.name(held), f.type_name()))
            }
            _ => None,
        }
    }

    /// Same elements, new shape: a copy when the layouts agree, else through shared memory.
    pub(super) fn relayout(&mut self, name: &str, v: ValueId, ty: &TileType) {
        let src_ty = self.ty(v);
        let src = self.name(v);
        if src_ty.is_scalar() && ty.numel() == 1 {
            self.declare(name, ty);
            let l = self.layout(ty);
            self.slots(l.slots, &format!("{name}[i] = {src};"));
            return;
        }
        let (sl, dl) = (self.layout(&src_ty), self.layout(ty));
        self.declare(name, ty);
        if sl == dl {
            self.slots(dl.slots, &format!("{name}[i] = {src}[i];"));
        } else {
            let d = ty.dtype;
            self.pay_owed_barrier();
            self.use_smem(sl.numel * d.size_bytes());
            let s = Self::smem_ptr(d, 0);
            self.line(format!("tsr::stash<{}>({s}, {src});", sl.targs()));
            self.sync();
            self.line(format!("tsr::unstash<{}>({name}, {s});", dl.targs()));
            self.sync();
        }
    }

    pub(super) fn reduce(&mut self, name: &str, ty: &TileType, op: ReduceOp, v: ValueId, axis: usize) {
        let src_ty = self.ty(v);
        let sl = self.layout(&src_ty);
        let simple = matches!(op, ReduceOp::Sum | ReduceOp::Max | ReduceOp::Min);
        if let (Some(f @ Fragment::Tile { m, n, wm }), true) = (sl.fragment, simple) {
            let o = match op {
                ReduceOp::Sum => "SumOp",
                ReduceOp::Max => "MaxOp",
                _ => "MinOp",
            };
            let d = src_ty.dtype;
            let rows_out = self.layout(ty).fragment == Some(Fragment::Rows { m, wm });
            if compute_type(d) == d && axis == 1 && rows_out {
                // Rows of a fragment: per thread, then the quad, then (WN > 1) the warps'
                // partials through scratch above anything still being read, so only the
                // barrier between their writes and reads is needed; the one that frees
                // them is owed to the next writer of that scratch.
                let wn = f.wn(self.threads);
                let red_off = self.free_scratch();
                let red_end = red_off + m * wn * d.size_bytes();
                if wn > 1 {
                    self.use_smem(red_end);
                }
                self.declare(name, ty);
                let red = Self::smem_ptr(d, red_off);
                self.line(format!("tsr::frag_row_reduce<tsr::{o}, {m}, {n}, {wm}>({name}, {}, {red});", self.name(v)));
                if wn > 1 {
                    self.barrier_passed();
                    self.owed_scratch = red_end;
                }
                return;
            }
            self.pay_owed_barrier();
            let red = Self::smem_ptr(d, 0);
            if compute_type(d) == d && axis == 0 {
                // Columns of a fragment (SnapKV's votes): per thread, the warp's row
                // groups by shuffles, then the row warps through shared memory.
                self.use_smem(wm * n * d.size_bytes());
                let lo = self.layout(ty).type_name();
                self.declare(name, ty);
                self.line(format!(
                    "tsr::frag_col_reduce<tsr::{o}, {m}, {n}, {wm}, {lo}>({name}, {}, {red});",
                    self.name(v)
                ));
                return;
            }
        }
        self.pay_owed_barrier();
        let shape = &src_ty.shape;
        let outer: usize = shape[..axis].iter().product();
        let len = shape[axis];
        let inner: usize = shape[axis + 1..].iter().product();
        let acc = compute_type(src_ty.dtype);
        let out_d = if op == ReduceOp::Argmax { DType::I32 } else { acc };
        let dst_off = align16(sl.numel * acc.size_bytes());
        self.use_smem(dst_off + outer * inner * out_d.size_bytes());
        let (s, dst) = (Self::smem_ptr(acc, 0), Self::smem_ptr(out_d, dst_off));
        self.line(format!("tsr::stash<{}>({s}, {});", sl.targs(), self.name(v)));
        self.sync();
        match op {
            ReduceOp::Argmax => self.line(format!("tsr::argmax_axis<{outer}, {len}, {inner}>({dst}, {s});")),
            _ => {
                let o = match op {
                    ReduceOp::Sum => "SumOp",
                    ReduceOp::Max => "MaxOp",
                    _ => "MinOp",
                };
                self.line(format!("tsr::reduce_axis<{outer}, {len}, {inner}, tsr::{o}>({dst}, {s});"));
            }
        }
        self.sync();
        self.read_back(name, ty, &dst);
    }

    /// Declares `name` and fills it from a flat row-major array in shared memory, then syncs.
    pub(super) fn read_back(&mut self, name: &str, ty: &TileType, src: &str) {
        let cty = ctype(ty.dtype);
        if ty.is_scalar() {
            self.line(format!("{cty} {name} = tsr::cvt<{cty}>({src}[0]);"));
        } else {
            let l = self.layout(ty);
            self.declare(name, ty);
            self.line(format!("tsr::unstash<{}>({name}, {src});", l.targs()));
        }
        self.sync();
    }

    pub(super) fn dot(&mut self, name: &str, ty: &TileType, a: ValueId, b: ValueId, trans_b: bool) {
        let (ta, tb) = (self.ty(a), self.ty(b));
        let (m, kk) = (ta.shape[0], ta.shape[1]);
        let n = ty.shape[1];
        let d = ta.dtype;
        let tensor_cores = tensor_core_dot(d, kk, n);
        // Few f32 rows against B^T rows: the vector CUDA-core product (`dot_simt_rows`).
        let simt_rows =
            !tensor_cores && trans_b && d == DType::F32 && tb.dtype == DType::F32 && m <= 8 && kk.is_multiple_of(4);
        let row_stride = |cols: usize| {
            if tensor_cores {
                cols + DOT_ROW_PAD
            } else if simt_rows {
                vector_row_stride(cols)
            } else {
                simt_row_stride(cols, d.size_bytes())
            }
        };
        let (b_rows, b_cols) = (tb.shape[0], tb.shape[1]);
        let frag = if tensor_cores { self.layout(ty).fragment } else { None };
        // A fragment-layout A operand with whole rows per warp feeds the tensor cores from
        // registers (the probabilities of attention).
        let a_in_registers = frag.is_some()
            && !self.plan.staged.contains_key(&a)
            && matches!(self.value_layout(&ta).fragment, Some(f @ Fragment::Tile { .. }) if f.wn(self.threads) == 1);
        // Operands come from their staged regions, or are stashed into the scratch arena
        // (above whatever other threads may still be reading).
        let scratch_base = self.free_scratch();
        let mut off = scratch_base;
        let mut reads_staged = false;
        // 0: nothing to wait for; 1: only pipelined copies (the newest group, the next
        // iteration's, may stay in flight); 2: a plain staged copy (wait for all).
        let mut waits = 0;
        let mut operand = |w: &mut Self, v: ValueId, rows: usize, cols: usize| -> (String, usize) {
            if let Some(st) = w.plan.staged.get(&v).copied() {
                let wait = if w.stage_of.contains_key(&v) || w.loop_covered.contains(&v) {
                    1
                } else if w.pending_copies.contains(&v) {
                    2
                } else {
                    0
                };
                waits = waits.max(wait);
                reads_staged = true;
                (w.name(v), st.ld)
            } else {
                let ld = row_stride(cols);
                let p = Self::smem_ptr(d, off);
                let l = w.layout(&w.ty(v));
                w.line(format!("tsr::stash_rows<{rows}, {cols}, {ld}, {}>({p}, {});", l.vargs(), w.name(v)));
                off = align16(off + rows * ld * d.size_bytes());
                (p, ld)
            }
        };
        let (sa, lda) = if a_in_registers { (self.name(a), 0) } else { operand(self, a, m, kk) };
        let (sb, ldb) = operand(self, b, b_rows, b_cols);
        match waits {
            1 => {
                let in_flight = self.k.pipeline_stages.clamp(2, 4) - 1;
                self.line(format!("tsr::cp_async_wait_pending<{in_flight}>();"));
            }
            2 => {
                self.line("tsr::cp_async_wait_all();");
                self.pending_copies.clear();
            }
            _ => {}
        }
        self.sync();
        if let Some(Fragment::Tile { wm, .. }) = frag {
            // Straight into this thread's accumulator fragments. The operands' shared
            // memory must outlive every warp's reads: that barrier is owed, paid by the
            // next writer of it (in a pipelined loop, at the end of the body).
            let stash_end = if off > scratch_base { off } else { 0 };
            self.use_smem(off);
            self.declare(name, ty);
            let t = ctype(d);
            if a_in_registers {
                self.line(format!(
                    "tsr::mma_frag_ra<{t}, {m}, {n}, {kk}, {ldb}, {trans_b}, {wm}>({name}, {sa}, {sb});"
                ));
            } else {
                self.line(format!(
                    "tsr::mma_frag<{t}, {m}, {n}, {kk}, {lda}, {ldb}, {trans_b}, {wm}>({name}, {sa}, {sb});"
                ));
            }
            self.owed_staged = reads_staged;
            self.owed_scratch = stash_end;
        } else if tensor_cores {
            self.use_smem(off + m * n * 4);
            let sc = Self::smem_ptr(DType::F32, off);
            self.line(format!(
                "tsr::mma_tile<{}, {m}, {n}, {kk}, {lda}, {ldb}, {trans_b}>({sc}, {sa}, {sb});",
                ctype(d)
            ));
            self.sync();
            self.read_back(name, ty, &sc);
        } else if simt_rows {
            let slices = simt_k_slices(n, kk, self.threads);
            let red = align16(off);
            self.use_smem(red + slices * m * n * 4);
            let l = self.layout(ty);
            self.declare(name, ty);
            let sr = Self::smem_ptr(DType::F32, red);
            self.line(format!(
                "tsr::dot_simt_rows<{m}, {n}, {kk}, {lda}, {ldb}, {slices}, {}>({name}, {sa}, {sb}, {sr});",
                l.vargs()
            ));
            self.sync();
        } else {
            self.use_smem(off);
            let l = self.layout(ty);
            self.declare(name, ty);
            self.line(format!(
                "tsr::dot_simt<{m}, {n}, {kk}, {lda}, {ldb}, {trans_b}, {}>({name}, {sa}, {sb});",
                l.vargs()
            ));
            self.sync();
        }
    }

    /// Inclusive prefix sum of a 1-D tile: through shared memory, where `tsr::scan_inplace`
    /// has each thread scan a contiguous run (the register layout deals elements round
    /// robin, so runs are not a thread's own slots).
    pub(super) fn cumsum(&mut self, name: &str, ty: &TileType, v: ValueId) {
        let n = ty.shape[0];
        let red_off = align16(n * ty.dtype.size_bytes());
        self.use_smem(red_off + 4 * 32);
        self.pay_owed_barrier();
        let (s, red) = (Self::smem_ptr(ty.dtype, 0), Self::smem_ptr(ty.dtype, red_off));
        let src_l = self.layout(&self.ty(v));
        self.line(format!("tsr::stash<{}>({s}, {});", src_l.targs(), self.name(v)));
        self.sync();
        self.line(format!("tsr::scan_inplace<{n}>({s}, {red});"));
        let l = self.layout(ty);
        self.declare(name, ty);
        self.line(format!("tsr::unstash<{}>({name}, {s});", l.targs()));
        self.sync();
    }

    pub(super) fn topk(&mut self, vals: &str, idx: &str, ty: &TileType, v: ValueId, k: usize, sorted: bool) {
        let src_ty = self.ty(v);
        let sl = self.layout(&src_ty);
        let len = *src_ty.shape.last().unwrap();
        let rows = sl.numel / len;
        let c = compute_type(src_ty.dtype);
        let vals_off = align16(sl.numel * c.size_bytes());
        let idx_off = vals_off + align16(rows * k * c.size_bytes());
        let taken_off = idx_off + align16(rows * k * 4);
        // The warp-per-row path marks taken elements (rows · len bytes); the block-wide
        // path sorts 8-byte words (k rounded up to a power of two) and keeps a 256-bin
        // histogram, two scan buffers of up to 32 warps and 2 ints (`topk_row_block`).
        self.use_smem(taken_off + (rows * len).max(8 * k.next_power_of_two() + 4 * (256 + 2 * 32 + 2)));
        self.pay_owed_barrier();
        let s = Self::smem_ptr(c, 0);
        let (sv, si) = (Self::smem_ptr(c, vals_off), Self::smem_ptr(DType::I32, idx_off));
        self.line(format!("tsr::stash<{}>({s}, {});", sl.targs(), self.name(v)));
        self.sync();
        self.line(format!("tsr::topk_rows<{rows}, {len}, {k}, {sorted}>({sv}, {si}, {s}, tsr_scratch + {taken_off});"));
        self.sync();
        let l = self.layout(ty);
        self.declare(vals, ty);
        self.line(format!("tsr::unstash<{}>({vals}, {sv});", l.targs()));
        self.declare(idx, &ty.with_dtype(DType::I32));
        self.line(format!("tsr::unstash<{}>({idx}, {si});", l.targs()));
        self.sync();
    }
}

/// Row stride (elements) of a CUDA-core `dot` operand in shared memory. `dot_simt` reads
/// B^T rows with the lanes of a warp walking down a column (`B[n * LDB + k]`, n = lane):
/// a stride of an odd number of 32-bit words puts the 32 lanes in 32 different banks
/// (128 floats, an even count, would make every read a 32-way conflict).
fn simt_row_stride(cols: usize, elem_bytes: usize) -> usize {
    if elem_bytes > 4 || 4 % elem_bytes != 0 {
        return cols + 1;
    }
    let per_word = 4 / elem_bytes;
    let words = cols.div_ceil(per_word);
    let odd = if words.is_multiple_of(2) { words + 1 } else { words };
    odd * per_word
}

/// Row stride (elements) of a `dot_simt_rows` f32 operand: a whole number of 16-byte
/// vectors, ≡ 4 words (mod 8), so the 8 lanes of a vector phase reading 8 consecutive rows
/// cover the 32 banks once.
fn vector_row_stride(cols: usize) -> usize {
    let ld = cols.div_ceil(4) * 4;
    if ld.is_multiple_of(8) {
        ld + 4
    } else {
        ld
    }
}

/// The K-slices `dot_simt_rows` splits a column over (its `KS`; the size of its
/// partial-sum buffer): the most, a power of two, that keep `n · KS` within the block's
/// threads and `k` a multiple of `4 · KS`.
fn simt_k_slices(n: usize, k: usize, threads: usize) -> usize {
    let mut ks = 1;
    while n * ks * 2 <= threads && k.is_multiple_of(4 * ks * 2) {
        ks <<= 1;
    }
    ks
}

#[cfg(test)]
mod stride_tests {
    use super::{simt_k_slices, simt_row_stride, vector_row_stride};

    #[test]
    fn vector_operand_rows_cover_the_banks_in_each_phase() {
        for cols in [4, 32, 64, 100, 128, 132] {
            let ld = vector_row_stride(cols);
            assert!(ld >= cols && ld.is_multiple_of(4), "{cols}: {ld}");
            // 8 consecutive rows: distinct 4-word bank groups.
            let mut groups: Vec<usize> = (0..8).map(|r| (r * ld % 32) / 4).collect();
            groups.sort();
            groups.dedup();
            assert_eq!(groups.len(), 8, "{cols}: stride {ld} conflicts");
        }
        assert_eq!(simt_k_slices(64, 128, 128), 2);
        assert_eq!(simt_k_slices(32, 128, 128), 4);
        assert_eq!(simt_k_slices(256, 128, 128), 1);
        assert_eq!(simt_k_slices(16, 12, 256), 1, "12 is not a multiple of 8");
    }

    #[test]
    pub(super) fn simt_operand_rows_start_in_staggered_banks() {
        for (cols, bytes) in [(128, 4), (129, 4), (32, 4), (128, 2), (98, 2), (7, 2), (64, 1)] {
            let ld = simt_row_stride(cols, bytes);
            assert!(ld >= cols, "{cols} x {bytes} B: {ld}");
            assert_eq!((ld * bytes) % 4, 0, "{cols} x {bytes} B: rows start on a word");
            assert_eq!((ld * bytes / 4) % 2, 1, "{cols} x {bytes} B: {ld} is an even number of words");
        }
    }
}
