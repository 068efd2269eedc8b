//! Walks a verified kernel and writes its CUDA C++ body.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::layout::{compute_type, coords, ctype, literal, strides, Fragment, Layout};
use super::staging::{self, tensor_core_dot, Staged, StagingPlan, DOT_ROW_PAD};
use super::{fragments, fusion, remat};
use crate::ir::{
    AtomicOp, BinaryOp, DType, Index, Kernel, Op, ParamId, ParamKind, ReduceOp, Stmt, TileType, UnaryOp, ValueId,
};

/// Rounds a byte offset up to 16 (every shared-memory region starts 16-byte aligned).
pub(super) fn align16(x: usize) -> usize {
    x.div_ceil(16) * 16
}

pub(super) struct BodyWriter<'a> {
    pub k: &'a Kernel,
    pub threads: usize,
    pub out: String,
    depth: usize,
    /// Largest shared-memory footprint of any single op, in bytes.
    pub smem_bytes: usize,
    /// Counter for unique temporaries.
    tmp: usize,
    /// Loads that go straight to their own shared-memory region, and pipelined loops
    /// (see `staging`).
    plan: StagingPlan,
    /// Bytes of shared memory taken by staged tiles; the scratch arena follows them.
    pub staged_bytes: usize,
    /// For a pipelined load being emitted: the buffer selector expression (`0`, `1` or a
    /// stage variable) its copies go to; `None` while emitting the loop body proper.
    prefetch_buffer: Option<String>,
    /// Stage variable (`0`/`1`) of the pipelined loop each pipelined load belongs to.
    stage_of: HashMap<ValueId, String>,
    /// Plain (not pipelined) staged loads whose copies nothing has waited for yet.
    pending_copies: Vec<ValueId>,
    /// `expand_dims` results that are never materialised: their source is stashed instead.
    expand_alias: HashMap<ValueId, ValueId>,
    /// Defining op of each immutable value (for recomputing broadcasts, see `remat`).
    pub(super) defs: HashMap<ValueId, Op>,
    /// Shapes held in tensor-core fragment layouts (see `fragments`).
    frags: HashMap<Vec<usize>, Fragment>,
    /// The shape of the staged load being emitted: its copy loop deals 16-byte vectors
    /// round-robin whatever the register layout of that shape (the tile never lives in
    /// registers). Values read while it is emitted keep their own layouts
    /// ([`Self::value_layout`]).
    force_round_robin: Option<Vec<usize>>,
}

impl<'a> BodyWriter<'a> {
    pub fn new(k: &'a Kernel) -> Self {
        let plan = staging::plan(k);
        let staged_bytes = plan.bytes;
        BodyWriter {
            k,
            threads: k.num_threads() as usize,
            out: String::new(),
            depth: 1,
            smem_bytes: 0,
            tmp: 0,
            plan,
            staged_bytes,
            prefetch_buffer: None,
            stage_of: HashMap::new(),
            pending_copies: Vec::new(),
            expand_alias: fusion::fusable_expand_dims(k),
            defs: remat::definitions(k),
            frags: fragments::plan(k, k.num_threads() as usize),
            force_round_robin: None,
        }
    }

    // ---- small helpers ------------------------------------------------------------------

    fn line(&mut self, s: impl AsRef<str>) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
        self.out.push_str(s.as_ref());
        self.out.push('\n');
    }

    fn open(&mut self, s: impl AsRef<str>) {
        self.line(format!("{} {{", s.as_ref()));
        self.depth += 1;
    }

    fn close(&mut self) {
        self.depth -= 1;
        self.line("}");
    }

    fn fresh(&mut self, stem: &str) -> String {
        self.tmp += 1;
        format!("{stem}{}", self.tmp)
    }

    fn use_smem(&mut self, bytes: usize) {
        self.smem_bytes = self.smem_bytes.max(bytes);
    }

    fn sync(&mut self) {
        self.line("__syncthreads();");
    }

    /// `reinterpret_cast<T*>(tsr_scratch + off)`: a typed pointer into the scratch arena.
    fn smem_ptr(d: DType, off: usize) -> String {
        if off == 0 {
            format!("reinterpret_cast<{}*>(tsr_scratch)", ctype(d))
        } else {
            format!("reinterpret_cast<{}*>(tsr_scratch + {off})", ctype(d))
        }
    }

    /// The C++ name of a value: its DSL name (if any) plus the id, or `v<id>`.
    pub fn name(&self, v: ValueId) -> String {
        match &self.k.value(v).name {
            Some(n) => format!("{}_{}", sanitize(n), v.0),
            None => format!("v{}", v.0),
        }
    }

    fn ty(&self, v: ValueId) -> TileType {
        self.k.ty(v).clone()
    }

    /// The layout of the tile being written or accessed now (see `force_round_robin`).
    fn layout(&self, ty: &TileType) -> Layout {
        if self.force_round_robin.as_ref() == Some(&ty.shape) {
            return Layout::of(ty, self.threads);
        }
        self.value_layout(ty)
    }

    /// The register layout of a value of type `ty`.
    fn value_layout(&self, ty: &TileType) -> Layout {
        match self.frags.get(&ty.shape) {
            Some(f) => Layout::fragment(*f, self.threads),
            None => Layout::of(ty, self.threads),
        }
    }

    /// The layout of a tile of `shape` (any dtype: layouts depend on the shape only).
    fn shape_layout(&self, shape: &[usize]) -> Layout {
        self.layout(&TileType::tile(DType::I32, shape))
    }

    /// Declares a tile (or scalar) variable without initialising it.
    fn declare(&mut self, name: &str, ty: &TileType) {
        if ty.is_scalar() {
            self.line(format!("{} {name};", ctype(ty.dtype)));
        } else {
            let l = self.layout(ty);
            self.line(format!("alignas(16) {} {name}[{}];", ctype(ty.dtype), l.slots));
        }
    }

    fn describe(&self, v: ValueId) -> String {
        let t = self.k.ty(v);
        format!("{}{:?}", t.dtype, t.shape)
    }

    // ---- statements ---------------------------------------------------------------------

    pub fn block(&mut self, body: &[Stmt]) {
        for s in body {
            self.stmt(s);
        }
    }

    fn stmt(&mut self, s: &Stmt) {
        match s {
            Stmt::Let { results, op } => {
                let names: Vec<String> =
                    results.iter().map(|r| format!("{} {}", self.name(*r), self.describe(*r))).collect();
                self.line(format!("// {} = {}", names.join(", "), self.op_summary(op)));
                self.op(results, op);
            }
            Stmt::Assign { var, value } => {
                let (dst, src) = (self.name(*var), self.name(*value));
                let ty = self.ty(*var);
                if ty.is_scalar() {
                    self.line(format!("{dst} = {src};"));
                } else {
                    let n = self.layout(&ty).slots;
                    self.line(format!(
                        "#pragma unroll\n{}for (int i = 0; i < {n}; ++i) {dst}[i] = {src}[i];",
                        "  ".repeat(self.depth)
                    ));
                }
            }
            Stmt::Store { tensor, index, value, mask } => {
                self.line(format!("// store {} -> {}", self.name(*value), self.index_summary(*tensor, index)));
                self.store(*tensor, index, *value, *mask, None);
            }
            Stmt::Atomic { op, tensor, index, value, mask } => {
                self.line(format!("// atomic {op:?} {} -> {}", self.name(*value), self.index_summary(*tensor, index)));
                self.store(*tensor, index, *value, *mask, Some(*op));
            }
            Stmt::For { var, start, end, step, body } => {
                let (v, s, e) = (self.name(*var), self.name(*start), self.name(*end));
                let cmp = if *step > 0 { "<" } else { ">" };
                if let Some(p) = self.plan.pipelines.get(var).cloned() {
                    self.pipelined_loop(body, &p, (&v, &s, &e, cmp, *step));
                } else {
                    self.open(format!("for (int {v} = (int){s}; {v} {cmp} (int){e}; {v} += {step})"));
                    self.block(body);
                    self.close();
                }
            }
            Stmt::If { cond, then, otherwise } => {
                self.open(format!("if ({})", self.name(*cond)));
                self.block(then);
                if !otherwise.is_empty() {
                    self.depth -= 1;
                    self.line("} else {");
                    self.depth += 1;
                    self.block(otherwise);
                }
                self.close();
            }
            Stmt::Return => self.line("return;"),
        }
    }

    /// A loop whose staged loads are pipelined over `S = pipeline_stages` buffers: the
    /// prologue starts the copies of the first `S − 1` iterations (one commit group
    /// each), each iteration first starts the copies of iteration `+ S − 1` (re-evaluating
    /// the loads' pure operands with the loop variable advanced, in a nested scope that
    /// shadows it) into the buffer the previous iteration used, then waits until at most
    /// `S − 1` groups are in flight (its own tiles have landed) and works on them.
    fn pipelined_loop(
        &mut self,
        body: &[Stmt],
        p: &staging::Pipeline,
        (v, s, e, cmp, step): (&str, &str, &str, &str, i64),
    ) {
        let stages = self.k.pipeline_stages.clamp(2, 4) as i64;
        let stage = format!("{v}_stage");
        for &i in &p.loads {
            if let Stmt::Let { results, .. } = &body[i] {
                self.stage_of.insert(results[0], stage.clone());
            }
        }
        if !self.pending_copies.is_empty() {
            // Earlier copies complete here, so waits inside the loop need only skip the
            // newest groups (the next iterations' prefetches).
            self.line("tsr::cp_async_wait_all();");
            self.sync();
            self.pending_copies.clear();
        }
        let ahead = if stages == 2 {
            "the first iteration's tiles are".to_string()
        } else {
            format!("the first {} iterations' tiles are", stages - 1)
        };
        self.line(format!("// Pipelined loop ({stages} buffers): {ahead} loaded ahead."));
        for i in 0..stages - 1 {
            self.open("");
            let offset = if i == 0 { String::new() } else { format!(" + {}", i * step) };
            self.line(format!("const int {v} = (int){s}{offset};"));
            self.open(format!("if ({v} {cmp} (int){e})"));
            self.prefetch(body, p, &i.to_string());
            self.close();
            self.close();
            self.line("tsr::cp_async_commit();");
        }
        let advance = if stages == 2 {
            format!("{stage} ^= 1")
        } else {
            format!("{stage} = {stage} == {} ? 0 : {stage} + 1", stages - 1)
        };
        self.open(format!("for (int {v} = (int){s}, {stage} = 0; {v} {cmp} (int){e}; {v} += {step}, {advance})"));
        self.line(format!("// Start the copies of iteration +{} before working on this one.", stages - 1));
        self.open("");
        self.line(format!("const int {v}_next = {v} + {};", (stages - 1) * step));
        self.open(format!("if ({v}_next {cmp} (int){e})"));
        self.line(format!("const int {v} = {v}_next;"));
        let buffer = if stages == 2 {
            format!("({stage} ^ 1)")
        } else {
            format!("({stage} == 0 ? {} : {stage} - 1)", stages - 1)
        };
        self.prefetch(body, p, &buffer);
        self.close();
        self.close();
        self.line("tsr::cp_async_commit();");
        self.block(body);
        self.close();
    }

    /// Emits the slice and the pipelined loads of a loop body into buffer `buffer`.
    fn prefetch(&mut self, body: &[Stmt], p: &staging::Pipeline, buffer: &str) {
        let mut idx: Vec<usize> = p.slice.iter().chain(&p.loads).copied().collect();
        idx.sort_unstable();
        self.prefetch_buffer = Some(buffer.to_string());
        for i in idx {
            self.stmt(&body[i]);
        }
        self.prefetch_buffer = None;
    }

    fn op_summary(&self, op: &Op) -> String {
        let args: Vec<String> = op.operands().iter().map(|v| self.name(*v)).collect();
        match op {
            Op::Const { value, .. } => format!("const {value}"),
            Op::Arg(p) => format!("arg {}", self.k.param(*p).name),
            Op::ProgramId(a) => format!("program_id({a})"),
            Op::NumPrograms(a) => format!("num_programs({a})"),
            Op::Dim { tensor, axis } => format!("{}.size({axis})", self.k.param(*tensor).name),
            Op::Arange { start, len } => format!("arange({start}, {})", start + *len as i64),
            Op::Load { tensor, index, mask, .. } => {
                let m = mask.map(|m| format!(" if {}", self.name(m))).unwrap_or_default();
                format!("load {}{m}", self.index_summary(*tensor, index))
            }
            Op::Reduce { op, axis, .. } => format!("{}({}, axis {axis})", op.name(), args.join(", ")),
            Op::Dot { trans_b, .. } => format!("dot({}{})", args.join(", "), if *trans_b { "^T" } else { "" }),
            Op::TopK { k, .. } => format!("topk({}, k {k})", args.join(", ")),
            Op::Cast { dtype, .. } => format!("cast({}, {dtype})", args.join(", ")),
            other => format!("{}({})", other.name(), args.join(", ")),
        }
    }

    fn index_summary(&self, tensor: ParamId, index: &[Index]) -> String {
        let parts: Vec<String> = index
            .iter()
            .map(|i| match i {
                Index::At(v) => self.name(*v),
                Index::Range { start, len } => format!("{}+[0,{len})", self.name(*start)),
                Index::Gather(v) => format!("[{}]", self.name(*v)),
            })
            .collect();
        format!("{}[{}]", self.k.param(tensor).name, parts.join(", "))
    }

    // ---- ops ------------------------------------------------------------------------------

    fn op(&mut self, results: &[ValueId], op: &Op) {
        let r = results[0];
        let name = self.name(r);
        let ty = self.ty(r);
        let cty = ctype(ty.dtype);
        match op {
            Op::Const { value, dtype } => self.line(format!("{cty} {name} = {};", literal(*value, *dtype))),
            Op::Arg(p) => self.line(format!("{cty} {name} = {};", param_name(&self.k.param(*p).name))),
            Op::ProgramId(a) => self.line(format!("int {name} = (int)blockIdx.{};", axis_letter(*a))),
            Op::NumPrograms(a) => self.line(format!("int {name} = (int)gridDim.{};", axis_letter(*a))),
            Op::Dim { tensor, axis } => {
                self.line(format!("long long {name} = {}_size{axis};", param_name(&self.k.param(*tensor).name)))
            }
            Op::Arange { start, .. } => {
                let l = self.layout(&ty);
                self.declare(&name, &ty);
                self.slots(l.slots, &format!("{name}[i] = {start} + {};", l.flat("i")));
            }
            Op::Splat { value, .. } => {
                let l = self.layout(&ty);
                let v = self.name(*value);
                self.declare(&name, &ty);
                self.slots(l.slots, &format!("{name}[i] = {v};"));
            }
            Op::Copy(v) => {
                let src = self.name(*v);
                if ty.is_scalar() {
                    self.line(format!("{cty} {name} = {src};"));
                } else {
                    let l = self.layout(&ty);
                    self.declare(&name, &ty);
                    self.slots(l.slots, &format!("{name}[i] = {src}[i];"));
                }
            }
            Op::Broadcast { value, .. } => {
                let src = self.operand(*value, &ty);
                self.declare(&name, &ty);
                let l = self.layout(&ty);
                let e = src("i");
                self.slots(l.slots, &format!("{name}[i] = {e};"));
            }
            Op::ExpandDims { value, .. } => {
                if self.expand_alias.contains_key(&r) {
                    self.line(format!("// (not materialised: uses stash {} in its place)", self.name(*value)));
                } else {
                    self.relayout(&name, *value, &ty)
                }
            }
            Op::Unary { op, value } => {
                let a = self.operand(*value, &ty);
                let d = self.k.ty(*value).dtype;
                self.elementwise(&name, &ty, |i| unary_expr(*op, d, &a(i)));
            }
            Op::Binary { op, lhs, rhs } => {
                let a = self.operand(*lhs, &ty);
                let b = self.operand(*rhs, &ty);
                let d = self.k.ty(*lhs).dtype;
                self.elementwise(&name, &ty, |i| binary_expr(*op, d, &a(i), &b(i)));
            }
            Op::Select { cond, on_true, on_false } => {
                let c = self.operand(*cond, &ty);
                let a = self.operand(*on_true, &ty);
                let b = self.operand(*on_false, &ty);
                self.elementwise(&name, &ty, |i| format!("{} ? {} : {}", c(i), a(i), b(i)));
            }
            Op::Cast { value, dtype } => {
                let a = self.operand(*value, &ty);
                let t = ctype(*dtype);
                self.elementwise(&name, &ty, |i| format!("tsr::cvt<{t}>({})", a(i)));
            }
            Op::Reduce { op, value, axis } => self.reduce(&name, &ty, *op, *value, *axis),
            Op::Dot { a, b, trans_b } => self.dot(&name, &ty, *a, *b, *trans_b),
            Op::TopK { value, k } => {
                let idx = self.name(results[1]);
                self.topk(&name, &idx, &ty, *value, *k)
            }
            Op::Load { tensor, index, mask, other } => self.load(r, &ty, *tensor, index, *mask, *other),
        }
    }

    /// `#pragma unroll` loop over the slots of this thread.
    fn slots(&mut self, n: usize, body: &str) {
        self.line("#pragma unroll");
        self.line(format!("for (int i = 0; i < {n}; ++i) {body}"));
    }

    fn elementwise(&mut self, name: &str, ty: &TileType, expr: impl Fn(&str) -> String) {
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
    fn operand(&mut self, v: ValueId, target: &TileType) -> impl Fn(&str) -> String {
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
    fn stash_value(&mut self, v: ValueId, dst: &str) {
        let src = self.expand_alias.get(&v).copied().unwrap_or(v);
        let l = self.value_layout(&self.ty(src));
        self.line(format!("tsr::stash<{}>({dst}, {});", l.targs(), self.name(src)));
    }

    /// Broadcasts tile `v` to `shape` through shared memory; returns the temporary's name.
    fn broadcast_tmp(&mut self, v: ValueId, shape: &[usize]) -> String {
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
    fn row_broadcast(&self, held: ValueId, src_shape: &[usize], dst: Layout) -> Option<String> {
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
    fn relayout(&mut self, name: &str, v: ValueId, ty: &TileType) {
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
            self.use_smem(sl.numel * d.size_bytes());
            let s = Self::smem_ptr(d, 0);
            self.line(format!("tsr::stash<{}>({s}, {src});", sl.targs()));
            self.sync();
            self.line(format!("tsr::unstash<{}>({name}, {s});", dl.targs()));
            self.sync();
        }
    }

    fn reduce(&mut self, name: &str, ty: &TileType, op: ReduceOp, v: ValueId, axis: usize) {
        let src_ty = self.ty(v);
        let sl = self.layout(&src_ty);
        if let (Some(f @ Fragment::Tile { m, n, wm }), 1, ReduceOp::Sum | ReduceOp::Max | ReduceOp::Min) =
            (sl.fragment, axis, op)
        {
            if compute_type(src_ty.dtype) == src_ty.dtype && self.layout(ty).fragment == Some(Fragment::Rows { m, wm })
            {
                // Rows of a fragment: per thread, then the quad, then (WN > 1) the warps.
                let o = match op {
                    ReduceOp::Sum => "SumOp",
                    ReduceOp::Max => "MaxOp",
                    _ => "MinOp",
                };
                let red = Self::smem_ptr(src_ty.dtype, 0);
                if f.wn(self.threads) > 1 {
                    self.use_smem(m * f.wn(self.threads) * src_ty.dtype.size_bytes());
                }
                self.declare(name, ty);
                self.line(format!("tsr::frag_row_reduce<tsr::{o}, {m}, {n}, {wm}>({name}, {}, {red});", self.name(v)));
                return;
            }
        }
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
    fn read_back(&mut self, name: &str, ty: &TileType, src: &str) {
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

    fn dot(&mut self, name: &str, ty: &TileType, a: ValueId, b: ValueId, trans_b: bool) {
        let (ta, tb) = (self.ty(a), self.ty(b));
        let (m, kk) = (ta.shape[0], ta.shape[1]);
        let n = ty.shape[1];
        let d = ta.dtype;
        let tensor_cores = tensor_core_dot(d, kk, n);
        let row_stride =
            |cols: usize| if tensor_cores { cols + DOT_ROW_PAD } else { simt_row_stride(cols, d.size_bytes()) };
        let (b_rows, b_cols) = (tb.shape[0], tb.shape[1]);
        let frag = if tensor_cores { self.layout(ty).fragment } else { None };
        // A fragment-layout A operand with whole rows per warp feeds the tensor cores from
        // registers (the probabilities of attention).
        let a_in_registers = frag.is_some()
            && !self.plan.staged.contains_key(&a)
            && matches!(self.value_layout(&ta).fragment, Some(f @ Fragment::Tile { .. }) if f.wn(self.threads) == 1);
        // Operands come from their staged regions, or are stashed into the scratch arena.
        let mut off = 0;
        // 0: nothing to wait for; 1: only pipelined copies (the newest group, the next
        // iteration's, may stay in flight); 2: a plain staged copy (wait for all).
        let mut waits = 0;
        let mut operand = |w: &mut Self, v: ValueId, rows: usize, cols: usize| -> (String, usize) {
            if let Some(st) = w.plan.staged.get(&v).copied() {
                let wait = if w.stage_of.contains_key(&v) {
                    1
                } else if w.pending_copies.contains(&v) {
                    2
                } else {
                    0
                };
                waits = waits.max(wait);
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
            // Straight into this thread's accumulator fragments; the barrier after keeps
            // the operands' shared memory until every warp has read it.
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
            self.sync();
        } else if tensor_cores {
            self.use_smem(off + m * n * 4);
            let sc = Self::smem_ptr(DType::F32, off);
            self.line(format!(
                "tsr::mma_tile<{}, {m}, {n}, {kk}, {lda}, {ldb}, {trans_b}>({sc}, {sa}, {sb});",
                ctype(d)
            ));
            self.sync();
            self.read_back(name, ty, &sc);
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

    fn topk(&mut self, vals: &str, idx: &str, ty: &TileType, v: ValueId, k: usize) {
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
        let s = Self::smem_ptr(c, 0);
        let (sv, si) = (Self::smem_ptr(c, vals_off), Self::smem_ptr(DType::I32, idx_off));
        self.line(format!("tsr::stash<{}>({s}, {});", sl.targs(), self.name(v)));
        self.sync();
        self.line(format!("tsr::topk_rows<{rows}, {len}, {k}>({sv}, {si}, {s}, tsr_scratch + {taken_off});"));
        self.sync();
        let l = self.layout(ty);
        self.declare(vals, ty);
        self.line(format!("tsr::unstash<{}>({vals}, {sv});", l.targs()));
        self.declare(idx, &ty.with_dtype(DType::I32));
        self.line(format!("tsr::unstash<{}>({idx}, {si});", l.targs()));
        self.sync();
    }

    // ---- global memory ------------------------------------------------------------------------

    fn load(&mut self, r: ValueId, ty: &TileType, tensor: ParamId, index: &[Index], mask: Option<ValueId>, other: f64) {
        let name = &self.name(r);
        let other = literal(other, ty.dtype);
        if let (Some(stage), None) = (self.stage_of.get(&r).cloned(), &self.prefetch_buffer) {
            // Issued one iteration ahead (see `pipelined_loop`): bind the current buffer.
            let st = self.plan.staged[&r];
            let cty = ctype(ty.dtype);
            self.line(format!(
                "{cty}* {name} = reinterpret_cast<{cty}*>(tsr_smem + {} + {stage} * {});  // prefetched, row stride {}",
                st.offset, st.size, st.ld
            ));
            return;
        }
        if let Some(st) = self.plan.staged.get(&r).copied() {
            self.force_round_robin = Some(ty.shape.clone());
            let access = self.prepare_access(tensor, index, mask, ty);
            self.staged_load(r, ty, &access, st, &other);
            self.force_round_robin = None;
            access.finish(self);
            return;
        }
        let access = self.prepare_access(tensor, index, mask, ty);
        if ty.is_scalar() {
            self.line(format!("{} {name} = {other};", ctype(ty.dtype)));
            self.open("");
            access.scalar_prologue(self);
            self.line(format!("if (ok) {name} = {}[off];", access.ptr));
            self.close();
            return;
        }
        self.declare(name, ty);
        let general = |w: &mut Self| {
            w.access_loop(&access, ty, |w, a, e| {
                let vec_copy = format!("tsr::copy_chunks<{}, {}>(&{name}[i], {}_ptr);", a.chunk, a.chunk_count, a.ptr);
                w.vector_or_scalar(a, &vec_copy, &format!("{name}[i + {e}] = ok_e ? {}[off_e] : {other};", a.ptr));
            })
        };
        if self.affine(&access) {
            let (chunk, count, vec) = (access.chunk, access.chunk_count, self.layout(ty).vec);
            let mask = access.mask.clone();
            self.affine_or_general(
                &access,
                ty,
                |w, p, uniform| {
                    if uniform {
                        w.line(format!("if (on) tsr::copy_chunks<{chunk}, {count}>(&{name}[i], {p});"));
                        w.open("else");
                        w.line("#pragma unroll");
                        w.line(format!("for (int E = 0; E < {vec}; ++E) {name}[i + E] = {other};"));
                        w.close();
                    } else {
                        let m = mask.unwrap().replace("@E", "E");
                        w.line("#pragma unroll");
                        w.line(format!(
                            "for (int E = 0; E < {vec}; ++E) {name}[i + E] = on && {m} ? {p}[E] : {other};"
                        ));
                    }
                },
                general,
            );
        } else {
            general(self);
        }
        access.finish(self);
    }

    /// A load into the value's own shared-memory region: `cp.async` for whole in-bounds
    /// (or wholly masked, zero-filled) vectors, plain shared stores otherwise. The
    /// consuming `dot` waits for the copies.
    fn staged_load(&mut self, r: ValueId, ty: &TileType, a: &Access, st: Staged, other: &str) {
        let name = &self.name(r);
        let cty = ctype(ty.dtype);
        let ld = st.ld;
        let base = match &self.prefetch_buffer {
            Some(b) if st.buffers > 1 => match b.parse::<usize>() {
                Ok(i) => (st.offset + i * st.size).to_string(),
                Err(_) => format!("{} + {b} * {}", st.offset, st.size),
            },
            _ => st.offset.to_string(),
        };
        self.line(format!(
            "{cty}* {name} = reinterpret_cast<{cty}*>(tsr_smem + {base});  // staged tile, row stride {ld}"
        ));
        if self.affine(a) {
            let (chunk, count, vec) = (a.chunk, a.chunk_count, self.layout(ty).vec);
            let (ptr, mask) = (a.ptr.clone(), a.mask.clone());
            self.affine_or_general(
                a,
                ty,
                |w, p, uniform| {
                    w.line(format!("{cty}* dst = {name} + c0 * {ld} + c1;"));
                    if uniform {
                        w.line(format!("tsr::cp_async_chunks<{chunk}, {count}>(dst, on ? {p} : {ptr}, on);"));
                    } else {
                        let m = mask.unwrap().replace("@E", "E");
                        w.line("#pragma unroll");
                        w.line(format!("for (int E = 0; E < {vec}; ++E) dst[E] = on && {m} ? {p}[E] : {other};"));
                    }
                },
                |w| w.staged_general(name, ty, a, ld, other),
            );
        } else {
            self.staged_general(name, ty, a, ld, other);
        }
        // A prefetch commits all of its copies as one group (see `pipelined_loop`).
        if self.prefetch_buffer.is_none() {
            self.line("tsr::cp_async_commit();");
            self.pending_copies.push(r);
        }
    }

    /// The general (per-vector checked) loop of a staged load.
    fn staged_general(&mut self, name: &str, ty: &TileType, a: &Access, ld: usize, other: &str) {
        let cty = ctype(ty.dtype);
        self.access_loop(a, ty, |w, a, _| {
            let l = w.shape_layout(&a.shape);
            let (vd, _) = a.vector_dim.unwrap();
            w.line(format!("{cty}* dst = {name} + c0 * {ld} + c1;"));
            w.line(format!("const long long pv = {};", a.position(vd, |k| format!("c{k}"))));
            w.line(format!("const {cty}* src = {} + base + pv;", a.ptr));
            let whole = if a.chunk == 0 {
                "false".to_string()
            } else {
                format!(
                    "f < {} && pv >= 0 && pv + {} <= {p}_size{vd} && {p}_stride{vd} == 1 && tsr::aligned(src, {})",
                    l.numel,
                    l.vec,
                    a.chunk,
                    p = a.ptr
                )
            };
            w.open(format!("if ({whole})"));
            let mut on = vec!["ok".to_string()];
            if let Some(m) = &a.mask {
                on.extend((0..a.mask_checks(l.vec)).map(|e| m.replace("@E", &e.to_string())));
            }
            w.line(format!("const bool on = {};", on.join(" && ")));
            w.line(format!("tsr::cp_async_chunks<{}, {}>(dst, on ? src : {}, on);", a.chunk, a.chunk_count, a.ptr));
            w.depth -= 1;
            w.line(format!("}} else if (f < {}) {{", l.numel));
            w.depth += 1;
            // The rare slow path stays a rolled loop: it writes shared memory, so nothing
            // forces it to unroll, and unrolled it costs ~50 registers in flash-decode.
            let rolled = a.mask.as_ref().is_none_or(|m| !m.contains("[i + @E]"));
            w.per_element_with(a, &format!("dst[E] = ok_e ? {}[off_e] : {other};", a.ptr), !rolled);
            w.close();
        });
    }

    fn store(
        &mut self,
        tensor: ParamId,
        index: &[Index],
        value: ValueId,
        mask: Option<ValueId>,
        atomic: Option<AtomicOp>,
    ) {
        let pdt = match self.k.param(tensor).kind {
            ParamKind::Tensor { dtype, .. } => dtype,
            ParamKind::Scalar { .. } => unreachable!("verified"),
        };
        let shape = index_shape(index, self.k);
        let ty = TileType::tile(pdt, &shape);
        let val = self.operand(value, &ty);
        let mut access = self.prepare_access(tensor, index, mask, &ty);
        access.writer = self.layout(&ty).writer();
        let write = |ptr: &str, off: &str, v: &str| match atomic {
            None => format!("{ptr}[{off}] = {v};"),
            Some(AtomicOp::Add) => format!("atomicAdd(&{ptr}[{off}], {v});"),
            Some(AtomicOp::Max) => format!("atomicMax(&{ptr}[{off}], {v});"),
        };
        if ty.is_scalar() {
            self.open("");
            access.scalar_prologue(self);
            self.line(format!("if (ok && threadIdx.x == 0) {}", write(&access.ptr, "off", &val(""))));
            self.close();
            return;
        }
        let value_is_tile = !self.k.ty(value).is_scalar();
        let general = |w: &mut Self| {
            w.access_loop(&access, &ty, |w, a, e| {
                let scalar = format!("if (ok_e) {}", write(&a.ptr, "off_e", &val(&format!("i + {e}"))));
                if atomic.is_none() && value_is_tile {
                    let v0 = val("i");
                    let vec_copy = format!("tsr::copy_chunks<{}, {}>({}_ptr, &{v0});", a.chunk, a.chunk_count, a.ptr);
                    w.vector_or_scalar(a, &vec_copy, &scalar);
                } else {
                    w.per_element(a, &scalar);
                }
            })
        };
        if atomic.is_none() && value_is_tile && self.affine(&access) {
            let (chunk, count, vec) = (access.chunk, access.chunk_count, self.layout(&ty).vec);
            let (v0, ve) = (val("i"), val("i + E"));
            let mask = access.mask.clone();
            self.affine_or_general(
                &access,
                &ty,
                |w, p, uniform| {
                    if uniform {
                        w.line(format!("if (on) tsr::copy_chunks<{chunk}, {count}>({p}, &{v0});"));
                    } else {
                        let m = mask.unwrap().replace("@E", "E");
                        w.line("#pragma unroll");
                        w.line(format!("for (int E = 0; E < {vec}; ++E) if (on && {m}) {p}[E] = {ve};"));
                    }
                },
                general,
            );
        } else {
            general(self);
        }
        access.finish(self);
    }

    /// Materialises what an access needs before its loop: gather indices in shared
    /// memory and the mask broadcast to the tile's shape.
    fn prepare_access(&mut self, tensor: ParamId, index: &[Index], mask: Option<ValueId>, ty: &TileType) -> Access {
        let p = self.k.param(tensor);
        let (pdt, rank) = match p.kind {
            ParamKind::Tensor { dtype, rank, .. } => (dtype, rank),
            ParamKind::Scalar { .. } => unreachable!("verified"),
        };
        let pname = param_name(&p.name);
        // Gather index tiles, and masks of another shape, go to shared memory so any
        // thread can read any element; `@E` in the mask expression is the element's
        // offset inside its vector.
        let mut off = 0;
        let mut staged = false;
        let mask_uniform_inner = mask.is_some_and(|m| {
            let ms = &self.k.ty(m).shape;
            ms.len() < ty.rank() && ty.rank() > 0 && ms.is_empty() || ms.last() == Some(&1) && ms.len() == ty.rank()
        });
        let mask = mask.map(|m| {
            let mt = self.ty(m);
            let name = self.name(m);
            if mt.is_scalar() {
                name
            } else if mt.shape == ty.shape && self.value_layout(&mt) == self.layout(ty) {
                format!("{name}[i + @E]")
            } else if let Some(e) = {
                // Tile coordinates of the access loops, the innermost moved by `@E`.
                let r = ty.rank();
                let tile_coords: Vec<String> =
                    (0..r).map(|a| if a + 1 == r { format!("(c{a} + @E)") } else { format!("c{a}") }).collect();
                self.remat(m, &operand_coords_of(&mt.shape, &tile_coords))
            } {
                e
            } else {
                let s = Self::smem_ptr(DType::Bool, 0);
                self.stash_value(m, &s);
                off = align16(mt.numel());
                staged = true;
                format!("{s}[{}]", broadcast_index("(f + @E)", &mt.shape, &ty.shape))
            }
        });
        let mut gathers = Vec::new();
        for i in index {
            if let Index::Gather(g) = i {
                let gt = self.ty(*g);
                let gl = self.value_layout(&gt);
                let s = Self::smem_ptr(gt.dtype, off);
                self.line(format!("tsr::stash<{}>({s}, {});", gl.targs(), self.name(*g)));
                gathers.push(s);
                off = align16(off + gl.numel * gt.dtype.size_bytes());
            }
        }
        self.use_smem(off);
        let staged = staged || !gathers.is_empty();
        if staged {
            self.sync();
        }
        // Position expressions per tensor dim, with `c<axis>` the tile coordinates.
        let mut positions = Vec::new();
        let mut axis = 0;
        let mut gi = 0;
        let mut vector_dim = None;
        for (d, i) in index.iter().enumerate() {
            match i {
                Index::At(v) => positions.push(format!("(long long){}", self.name(*v))),
                Index::Range { start, .. } => {
                    positions.push(format!("(long long){} + @C{axis}@", self.name(*start)));
                    vector_dim = Some((d, false));
                    axis += 1;
                }
                Index::Gather(g) => {
                    // Slots past the end of the tile have coordinates past the index tile:
                    // clamp so they never read outside its shared-memory copy.
                    let len = self.k.ty(*g).shape[0];
                    positions.push(format!("(long long){}[tsr::clamp_index(@C{axis}@, {len})]", gathers[gi]));
                    gi += 1;
                    vector_dim = Some((d, true));
                    axis += 1;
                }
            }
        }
        let l = self.layout(ty);
        let bytes = l.vec * pdt.size_bytes();
        let chunk = [16, 8, 4].into_iter().find(|c| bytes.is_multiple_of(*c)).unwrap_or(0);
        let mut tile_axis = Vec::new();
        let mut next_axis = 0;
        for i in index {
            if matches!(i, Index::At(_)) {
                tile_axis.push(None);
            } else {
                tile_axis.push(Some(next_axis));
                next_axis += 1;
            }
        }
        Access {
            tile_axis,
            has_gather: index.iter().any(|i| matches!(i, Index::Gather(_))),
            writer: None,
            elem_bytes: pdt.size_bytes(),
            ptr: pname,
            rank,
            positions,
            vector_dim,
            mask,
            staged,
            mask_uniform_inner,
            chunk,
            chunk_count: bytes.checked_div(chunk).unwrap_or(0),
            shape: ty.shape.clone(),
        }
    }

    /// Opens the unrolled loop over this thread's vectors of a tile of `shape`, with the
    /// flat index `f` and tile coordinates `c0, c1, ...` of the vector's first element.
    fn open_vector_loop(&mut self, l: Layout, shape: &[usize]) {
        self.line("#pragma unroll");
        self.open(format!("for (int i = 0; i < {}; i += {})", l.slots, l.vec));
        self.line(format!("const int f = {};", l.flat("i")));
        let decl: Vec<String> = coords("f", shape).iter().enumerate().map(|(d, c)| format!("c{d} = {c}")).collect();
        self.line(format!("const int {};", decl.join(", ")));
    }

    /// The loop over this thread's vectors of a tile access. `body` emits the per-vector
    /// code with `ok` (all but the innermost tile axis in bounds), `base` (offset without
    /// the innermost position) and `pv` (innermost tensor position of element 0) in scope.
    fn access_loop(&mut self, a: &Access, ty: &TileType, body: impl FnOnce(&mut Self, &Access, &str)) {
        let l = self.layout(ty);
        let (vd, _) = a.vector_dim.expect("tile access has a tile axis");
        self.open_vector_loop(l, &ty.shape);
        let mut ok = vec![format!("f < {}", l.numel)];
        if let Some(w) = &a.writer {
            ok.push(w.clone());
        }
        let mut base = Vec::new();
        for d in 0..a.rank {
            if d == vd {
                continue;
            }
            let p = &a.position(d, |k| format!("c{k}"));
            self.line(format!("const long long p{d} = {p};"));
            ok.push(format!("p{d} >= 0 && p{d} < {}_size{d}", a.ptr));
            base.push(format!("p{d} * {}_stride{d}", a.ptr));
        }
        self.line(format!("const bool ok = {};", ok.join(" && ")));
        let base = if base.is_empty() { "0".to_string() } else { base.join(" + ") };
        self.line(format!("const long long base = {base};"));
        body(self, a, "E");
        self.close();
    }

    /// Whether an access can take the affine fast path: every tile axis is a range, the
    /// innermost one moves in whole vectors of at least 4 bytes.
    fn affine(&self, a: &Access) -> bool {
        let l = self.shape_layout(&a.shape);
        matches!(a.vector_dim, Some((_, false))) && !a.has_gather && a.chunk > 0 && l.vec > 1
    }

    /// The common case of a tile access, checked once per access instead of once per
    /// vector: rows along the innermost dim are contiguous (stride 1), the tile's column
    /// range is in bounds, fixed positions are in bounds and every row starts aligned.
    /// Then each vector needs only its row bounds, its mask and one address. `action`
    /// emits the per-vector work given the vector's address and its `on` condition
    /// (`on_e` per element too when the mask varies inside a vector); `slow` emits the
    /// general loop used otherwise.
    fn affine_or_general(
        &mut self,
        a: &Access,
        ty: &TileType,
        action: impl FnOnce(&mut Self, &str, bool),
        slow: impl FnOnce(&mut Self),
    ) {
        let l = self.layout(ty);
        let (vd, _) = a.vector_dim.unwrap();
        let ptr = &a.ptr;
        let origin = |d: usize| a.position(d, |_| "0".to_string());
        self.open("");
        let mut fast = vec![format!("{ptr}_stride{vd} == 1")];
        let mut offset = Vec::new();
        for d in 0..a.rank {
            self.line(format!("const long long o{d} = {};", origin(d)));
            offset.push(format!("o{d} * {ptr}_stride{d}"));
            match a.tile_axis[d] {
                None => fast.push(format!("o{d} >= 0 && o{d} < {ptr}_size{d}")),
                Some(_) if d == vd => {
                    fast.push(format!("o{d} >= 0 && o{d} + {} <= {ptr}_size{d}", a.shape[a.shape.len() - 1]))
                }
                Some(_) => fast.push(format!("({ptr}_stride{d} * {}) % {} == 0", a.elem_bytes, a.chunk)),
            }
        }
        self.line(format!("auto* origin = {ptr} + {};", offset.join(" + ")));
        fast.push(format!("tsr::aligned(origin, {})", a.chunk));
        self.open(format!("if ({})", fast.join(" && ")));
        self.open_vector_loop(l, &ty.shape);
        let mut on = vec![format!("f < {}", l.numel)];
        if let Some(w) = &a.writer {
            on.push(w.clone());
        }
        let mut addr = Vec::new();
        for d in 0..a.rank {
            if let Some(axis) = a.tile_axis[d] {
                if d == vd {
                    addr.push(format!("c{axis}"));
                } else {
                    on.push(format!("o{d} + c{axis} >= 0 && o{d} + c{axis} < {ptr}_size{d}"));
                    addr.push(format!("(long long)c{axis} * {ptr}_stride{d}"));
                }
            }
        }
        self.line(format!("const bool row_ok = {};", on.join(" && ")));
        self.line(format!("auto* p = origin + {};", addr.join(" + ")));
        let uniform = a.mask.is_none() || a.mask_checks(l.vec) == 1;
        match &a.mask {
            Some(m) if uniform => self.line(format!("const bool on = row_ok && {};", m.replace("@E", "0"))),
            _ => self.line("const bool on = row_ok;"),
        }
        action(self, "p", uniform);
        self.close();
        self.depth -= 1;
        self.line("} else {");
        self.depth += 1;
        slow(self);
        self.close();
        self.close();
    }

    /// Vector fast path when the whole vector is contiguous, aligned, in bounds and
    /// unmasked; element by element otherwise.
    fn vector_or_scalar(&mut self, a: &Access, vector: &str, scalar: &str) {
        let (vd, gather) = a.vector_dim.unwrap();
        let l = self.shape_layout(&a.shape);
        if gather || a.chunk == 0 || l.vec == 1 {
            self.per_element(a, scalar);
            return;
        }
        let p = a.position(vd, |k| format!("c{k}"));
        self.line(format!("const long long pv = {p};"));
        self.line(format!("auto* {}_ptr = {} + base + pv;", a.ptr, a.ptr));
        let mut fast = vec![
            "ok".to_string(),
            "pv >= 0".to_string(),
            format!("pv + {} <= {}_size{vd}", l.vec, a.ptr),
            format!("{}_stride{vd} == 1", a.ptr),
            format!("tsr::aligned({}_ptr, {})", a.ptr, a.chunk),
        ];
        if let Some(m) = &a.mask {
            for e in 0..a.mask_checks(l.vec) {
                fast.push(m.replace("@E", &e.to_string()));
            }
        }
        self.open(format!("if ({})", fast.join(" && ")));
        self.line(vector);
        self.depth -= 1;
        self.line("} else {");
        self.depth += 1;
        self.per_element(a, scalar);
        self.close();
    }

    fn per_element(&mut self, a: &Access, scalar: &str) {
        self.per_element_with(a, scalar, true)
    }

    /// Element by element over one vector; `unroll` must hold when the body indexes a
    /// register array by `E` (a rolled loop would move the array to local memory).
    fn per_element_with(&mut self, a: &Access, scalar: &str, unroll: bool) {
        let (vd, _) = a.vector_dim.unwrap();
        let l = self.shape_layout(&a.shape);
        let inner = a.shape.len() - 1;
        let pe = a.position(vd, |k| if k == inner { format!("(c{k} + E)") } else { format!("c{k}") });
        let mut ok = vec!["ok".to_string(), "pe >= 0".to_string(), format!("pe < {}_size{vd}", a.ptr)];
        if let Some(m) = &a.mask {
            ok.push(m.replace("@E", "E"));
        }
        self.line(if unroll { "#pragma unroll" } else { "#pragma unroll 1" });
        self.open(format!("for (int E = 0; E < {}; ++E)", l.vec));
        self.line(format!("const long long pe = {pe};"));
        self.line(format!("const bool ok_e = {};", ok.join(" && ")));
        self.line(format!("const long long off_e = base + pe * {}_stride{vd};", a.ptr));
        self.line(scalar);
        self.close();
    }
}

/// Everything one load/store needs to address the tensor.
struct Access {
    ptr: String,
    rank: usize,
    /// Position of each tensor dim as a C++ expression of the tile coordinates `c<axis>`.
    /// Tile coordinate `k` appears as the placeholder `@C<k>@` (see [`Access::position`]),
    /// so substituting it can never touch a value's name.
    positions: Vec<String>,
    /// The tensor dim the innermost tile axis runs along, and whether it is a gather.
    vector_dim: Option<(usize, bool)>,
    /// Mask element expression; `@E` stands for the element's offset in its vector.
    mask: Option<String>,
    /// Whether gather indices or a mask were staged in shared memory.
    staged: bool,
    /// For each tensor dim, the tile axis it runs along (`None` for a fixed position).
    tile_axis: Vec<Option<usize>>,
    /// Whether any dim is addressed by a gather.
    has_gather: bool,
    /// A store of a tile several threads hold the same elements of (replicated, rows of
    /// fragments): the C++ condition for the threads that write.
    writer: Option<String>,
    /// Bytes per element.
    elem_bytes: usize,
    /// Whether the mask is constant along the innermost tile axis (one check per vector).
    mask_uniform_inner: bool,
    chunk: usize,
    chunk_count: usize,
    shape: Vec<usize>,
}

impl Access {
    /// Position along tensor dim `d` with each tile coordinate `k` spelled by `coord(k)`.
    fn position(&self, d: usize, coord: impl Fn(usize) -> String) -> String {
        let mut p = self.positions[d].clone();
        for k in 0..self.shape.len() {
            p = p.replace(&format!("@C{k}@"), &coord(k));
        }
        p
    }

    /// How many elements of a vector need their own mask check.
    fn mask_checks(&self, vec: usize) -> usize {
        if self.mask_uniform_inner {
            1
        } else {
            vec
        }
    }

    /// For rank-0 accesses: declares `ok` and `off`.
    fn scalar_prologue(&self, w: &mut BodyWriter) {
        let mut ok = Vec::new();
        let mut off = Vec::new();
        for (d, p) in self.positions.iter().enumerate() {
            w.line(format!("const long long p{d} = {p};"));
            ok.push(format!("p{d} >= 0 && p{d} < {}_size{d}", self.ptr));
            off.push(format!("p{d} * {}_stride{d}", self.ptr));
        }
        if let Some(m) = &self.mask {
            ok.push(m.clone());
        }
        w.line(format!("const bool ok = {};", if ok.is_empty() { "true".into() } else { ok.join(" && ") }));
        w.line(format!("const long long off = {};", if off.is_empty() { "0".into() } else { off.join(" + ") }));
    }

    /// Staged indices and masks live in shared memory until every thread is done.
    fn finish(&self, w: &mut BodyWriter) {
        if self.staged {
            w.sync();
        }
    }
}

/// Shape of the tile addressed by an index list.
pub(super) fn index_shape(index: &[Index], k: &Kernel) -> Vec<usize> {
    index
        .iter()
        .filter_map(|i| match i {
            Index::At(_) => None,
            Index::Range { len, .. } => Some(*len),
            Index::Gather(g) => Some(k.ty(*g).shape[0]),
        })
        .collect()
}

/// Coordinates in a tile of shape `src` of the element read when it is broadcast to
/// the shape whose coordinates are `coords` (aligned from the right; unit dims read 0).
pub(super) fn operand_coords_of(src: &[usize], coords: &[String]) -> Vec<String> {
    let off = coords.len() - src.len();
    src.iter().enumerate().map(|(d, &n)| if n == 1 { "0".to_string() } else { coords[d + off].clone() }).collect()
}

/// The flat source index, for broadcasting `src` to `dst`, of destination element `f`.
fn broadcast_index(f: &str, src: &[usize], dst: &[usize]) -> String {
    let cs = coords(f, dst);
    let ss = strides(src);
    let offset = dst.len() - src.len();
    let terms: Vec<String> = (0..src.len())
        .filter(|&d| src[d] != 1)
        .map(|d| if ss[d] == 1 { format!("({})", cs[d + offset]) } else { format!("({}) * {}", cs[d + offset], ss[d]) })
        .collect();
    if terms.is_empty() {
        "0".into()
    } else {
        terms.join(" + ")
    }
}

pub(super) fn unary_expr(op: UnaryOp, d: DType, a: &str) -> String {
    let t = ctype(d);
    let f = |e: String| if d == DType::F32 { e } else { format!("tsr::cvt<{t}>({e})") };
    let x = if d == DType::F32 { a.to_string() } else { format!("tsr::to_f32({a})") };
    match op {
        UnaryOp::Neg if d.is_float() => f(format!("-{x}")),
        UnaryOp::Neg => format!("-{a}"),
        UnaryOp::Not if d == DType::Bool => format!("!{a}"),
        UnaryOp::Not => format!("~{a}"),
        UnaryOp::Abs if d.is_float() => f(format!("fabsf({x})")),
        UnaryOp::Abs => format!("({a} < 0 ? -{a} : {a})"),
        UnaryOp::Exp2 => f(format!("exp2f({x})")),
        UnaryOp::Log2 => f(format!("log2f({x})")),
        UnaryOp::Exp => f(format!("expf({x})")),
        UnaryOp::Sqrt => f(format!("sqrtf({x})")),
        UnaryOp::Rsqrt => f(format!("(1.0f / sqrtf({x}))")),
    }
}

pub(super) fn binary_expr(op: BinaryOp, d: DType, a: &str, b: &str) -> String {
    use BinaryOp::*;
    let t = ctype(d);
    let float16 = matches!(d, DType::F16 | DType::BF16);
    let (x, y) =
        if float16 { (format!("tsr::to_f32({a})"), format!("tsr::to_f32({b})")) } else { (a.into(), b.into()) };
    let sym = |s: &str| format!("{x} {s} {y}");
    let e = match op {
        Add => sym("+"),
        Sub => sym("-"),
        Mul => sym("*"),
        Div => sym("/"),
        Rem => sym("%"),
        // Shift amounts are taken modulo the width (the interpreter's rule); PTX would
        // clamp them instead.
        Shl | Shr => {
            let bits = if d == DType::I64 { 63 } else { 31 };
            format!("{x} {} ({y} & {bits})", if op == Shl { "<<" } else { ">>" })
        }
        And if d == DType::Bool => sym("&&"),
        Or if d == DType::Bool => sym("||"),
        And => sym("&"),
        Or => sym("|"),
        Max => format!("tsr::vmax({x}, {y})"),
        Min => format!("tsr::vmin({x}, {y})"),
        Lt => return sym("<"),
        Le => return sym("<="),
        Gt => return sym(">"),
        Ge => return sym(">="),
        Eq => return sym("=="),
        Ne => return sym("!="),
    };
    if float16 {
        format!("tsr::cvt<{t}>({e})")
    } else {
        e
    }
}

fn axis_letter(a: u8) -> char {
    ['x', 'y', 'z'][a as usize]
}

/// A parameter name as a C++ identifier.
pub(super) fn param_name(n: &str) -> String {
    sanitize(n)
}

/// C++ keywords (and CUDA built-ins) a parameter name must not shadow.
const RESERVED: &[&str] = &[
    "alignas",
    "alignof",
    "and",
    "asm",
    "auto",
    "bool",
    "break",
    "case",
    "catch",
    "char",
    "class",
    "const",
    "constexpr",
    "continue",
    "default",
    "delete",
    "do",
    "double",
    "else",
    "enum",
    "explicit",
    "export",
    "extern",
    "false",
    "float",
    "for",
    "friend",
    "goto",
    "if",
    "inline",
    "int",
    "long",
    "mutable",
    "namespace",
    "new",
    "noexcept",
    "not",
    "nullptr",
    "operator",
    "or",
    "private",
    "protected",
    "public",
    "register",
    "return",
    "short",
    "signed",
    "sizeof",
    "static",
    "struct",
    "switch",
    "template",
    "this",
    "throw",
    "true",
    "try",
    "typedef",
    "typename",
    "union",
    "unsigned",
    "using",
    "virtual",
    "void",
    "volatile",
    "while",
    "xor",
    "blockIdx",
    "threadIdx",
    "blockDim",
    "gridDim",
    "warpSize",
    "tsr",
    "base",
    "origin",
    "ok",
    "on",
    "row_ok",
    "f",
    "i",
    "p",
    "pv",
    "pe",
    "dst",
    "src",
    "off",
    "off_e",
    "ok_e",
];

/// `c0`, `o1`, `p2`, ...: the tile coordinates, origins and positions of access loops.
fn is_loop_local(s: &str) -> bool {
    s.len() > 1 && s.starts_with(['c', 'o', 'p']) && s[1..].bytes().all(|b| b.is_ascii_digit())
}

/// A C++ identifier for a name: other characters become `_`, a leading digit gets a `_`,
/// and keywords or names the emitted code uses itself get a trailing `_`.
fn sanitize(n: &str) -> String {
    let s: String = n.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{s}")
    } else if RESERVED.contains(&s.as_str()) || is_loop_local(&s) {
        format!("{s}_")
    } else {
        s
    }
}

impl BodyWriter<'_> {
    /// Writes the parameter list of the kernel per the ABI in `emit/mod.rs`.
    pub fn signature(&self) -> String {
        let mut ps = Vec::new();
        for p in &self.k.params {
            let n = param_name(&p.name);
            match &p.kind {
                ParamKind::Tensor { dtype, rank, writable } => {
                    let t = ctype(*dtype);
                    if *writable {
                        ps.push(format!("{t}* {n}"));
                    } else {
                        ps.push(format!("const {t}* __restrict__ {n}"));
                    }
                    let sizes: Vec<String> = (0..*rank).map(|d| format!("long long {n}_size{d}")).collect();
                    let strides: Vec<String> = (0..*rank).map(|d| format!("long long {n}_stride{d}")).collect();
                    ps.push(sizes.join(", "));
                    ps.push(strides.join(", "));
                }
                ParamKind::Scalar { dtype } => {
                    let t = if *dtype == DType::Bool { "int" } else { ctype(*dtype) };
                    ps.push(format!("{t} {n}"));
                }
            }
        }
        let mut s = String::new();
        for (i, p) in ps.iter().enumerate() {
            let _ = write!(s, "\n    {p}{}", if i + 1 < ps.len() { "," } else { "" });
        }
        s
    }
}

#[cfg(test)]
mod sanitize_tests {
    #[test]
    fn names_never_collide_with_the_emitted_code() {
        assert_eq!(super::sanitize("new"), "new_");
        assert_eq!(super::sanitize("c0"), "c0_");
        assert_eq!(super::sanitize("p12"), "p12_");
        assert_eq!(super::sanitize("k_tile"), "k_tile");
        assert_eq!(super::sanitize("2x"), "_2x");
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

#[cfg(test)]
mod stride_tests {
    use super::simt_row_stride;

    #[test]
    fn simt_operand_rows_start_in_staggered_banks() {
        for (cols, bytes) in [(128, 4), (129, 4), (32, 4), (128, 2), (98, 2), (7, 2), (64, 1)] {
            let ld = simt_row_stride(cols, bytes);
            assert!(ld >= cols, "{cols} x {bytes} B: {ld}");
            assert_eq!((ld * bytes) % 4, 0, "{cols} x {bytes} B: rows start on a word");
            assert_eq!((ld * bytes / 4) % 2, 1, "{cols} x {bytes} B: {ld} is an even number of words");
        }
    }
}
