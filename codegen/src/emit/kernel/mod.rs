//! Walks a verified kernel and writes its CUDA C++ body.

use std::collections::HashMap;
use std::fmt::Write as _;

mod memory;
mod names;
mod values;

use names::{axis_letter, sanitize};
pub(super) use names::{binary_expr, index_shape, operand_coords_of, param_name, unary_expr};

use super::layout::{compute_type, coords, ctype, literal, Fragment, Layout};
use super::staging::{self, tensor_core_dot, Staged, StagingPlan, DOT_ROW_PAD};
use super::{fragments, fusion, remat};
use crate::ir::{AtomicOp, DType, Index, Kernel, Op, ParamId, ParamKind, ReduceOp, Stmt, TileType, ValueId};

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
    /// Plain staged loads issued before the pipelined loop being emitted: its waits
    /// (`wait_pending<S − 1>`) complete them too, their groups being older.
    loop_covered: Vec<ValueId>,
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
    /// Values a finished memory access staged in scratch (value, location), still being
    /// read by other threads: the barrier that frees scratch is owed. It is paid before
    /// the next statement that may write scratch ([`Self::pay_owed_barrier`]), unless that
    /// statement is an access staging exactly these values, which reads them in place
    /// (a gathered V tile after its K tile: one stash and two barriers per tile saved).
    held_stash: Option<Vec<(ValueId, String)>>,
    /// Scratch bytes `[0, owed_scratch)` other threads may still be reading since the last
    /// barrier. Ops that can place their scratch anywhere (`dot` operand stashes, the
    /// cross-warp row reductions) go above it and owe nothing; every other scratch writer
    /// pays the barrier first. One barrier per reduction instead of two, none after a `dot`.
    owed_scratch: usize,
    /// Staged tiles a `dot` read since the last barrier: paid before any staged load or
    /// loop writes staged buffers again (in a pipelined loop, at the end of the body).
    owed_staged: bool,
    /// Register loads of a pipelined loop's slice (block or row indices) read one
    /// iteration earlier (see [`Self::pipelined_loop`]): while the prefetch is emitted,
    /// such a load takes the value held in `<name>_ahead` instead of reading memory.
    ahead_subst: Vec<ValueId>,
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
            loop_covered: Vec::new(),
            expand_alias: fusion::fusable_expand_dims(k),
            defs: remat::definitions(k),
            frags: fragments::plan(k, k.num_threads() as usize),
            force_round_robin: None,
            held_stash: None,
            owed_scratch: 0,
            owed_staged: false,
            ahead_subst: Vec::new(),
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
        self.barrier_passed();
    }

    /// Every thread passed a barrier (emitted here or inside a header function): nothing
    /// read before it can still be being read.
    fn barrier_passed(&mut self) {
        self.held_stash = None;
        self.owed_scratch = 0;
        self.owed_staged = false;
    }

    /// The first scratch offset no other thread may still be reading.
    fn free_scratch(&self) -> usize {
        align16(self.owed_scratch)
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

    /// `dst = src` for a scalar or a tile (slot by slot, both in `ty`'s layout).
    fn copy_value(&mut self, dst: &str, src: &str, ty: &TileType) {
        if ty.is_scalar() {
            self.line(format!("{dst} = {src};"));
        } else {
            let n = self.layout(ty).slots;
            self.line(format!(
                "#pragma unroll\n{}for (int i = 0; i < {n}; ++i) {dst}[i] = {src}[i];",
                "  ".repeat(self.depth)
            ));
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
        self.pay_owed_barrier();
    }

    /// Pays the barrier owed for shared memory other threads may still be reading (see
    /// [`Self::held_stash`], [`Self::owed_scratch`], [`Self::owed_staged`]).
    fn pay_owed_barrier(&mut self) {
        if self.owes_barrier() {
            self.line("__syncthreads();  // shared memory read above is free again");
            self.barrier_passed();
        }
    }

    /// Whether any shared memory read since the last barrier may still be being read.
    fn owes_barrier(&self) -> bool {
        self.held_stash.is_some() || self.owed_scratch > 0 || self.owed_staged
    }

    /// Whether the barrier owed must be paid before `s`. Ops that write scratch pay
    /// themselves where they write it (products and row reductions place theirs above
    /// what is owed; broadcasts, relayouts, other reductions, top-k and staged gather
    /// indices pay first); a load pays when it writes a staged buffer while staged tiles
    /// are owed. Loops and branches start clean: their bodies end clean, and a loop that
    /// runs no iteration or a branch not taken must leave the same state.
    fn must_pay_before(&self, s: &Stmt) -> bool {
        match s {
            Stmt::Let { results, op: Op::Load { .. } } => {
                self.owed_staged && self.plan.staged.contains_key(&results[0])
            }
            Stmt::Let { .. } | Stmt::Assign { .. } | Stmt::Store { .. } | Stmt::Atomic { .. } | Stmt::Return => false,
            Stmt::For { .. } | Stmt::If { .. } => true,
        }
    }

    fn stmt(&mut self, s: &Stmt) {
        if self.owes_barrier() && self.must_pay_before(s) {
            self.pay_owed_barrier();
        }
        match s {
            Stmt::Let { results, .. } if self.ahead_subst.contains(&results[0]) => {
                let (name, ty) = (self.name(results[0]), self.ty(results[0]));
                self.line(format!("// {name} {}: read one iteration earlier", self.describe(results[0])));
                self.declare(&name, &ty);
                self.copy_value(&name, &format!("{name}_ahead"), &ty);
            }
            Stmt::Let { results, op } => {
                let names: Vec<String> =
                    results.iter().map(|r| format!("{} {}", self.name(*r), self.describe(*r))).collect();
                self.line(format!("// {} = {}", names.join(", "), self.op_summary(op)));
                self.op(results, op);
            }
            Stmt::Assign { var, value } => {
                let (dst, src) = (self.name(*var), self.name(*value));
                self.copy_value(&dst, &src, &self.ty(*var));
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
    /// `S − 1` groups are in flight (its own tiles have landed) and works on them. The
    /// register loads among those operands (block indices) are read one iteration before
    /// the prefetch that uses them ([`Self::read_ahead`]); copies issued before the loop
    /// complete under its first wait.
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
        // Copies started before the loop (the query tile) are older than the loop's
        // groups, so its first wait completes them: no wait here, and their latency
        // overlaps the prologue's copies instead of coming before them.
        let older = std::mem::take(&mut self.pending_copies);
        self.loop_covered.extend(&older);
        let loaded = if stages == 2 {
            "the first iteration's tiles are".to_string()
        } else {
            format!("the first {} iterations' tiles are", stages - 1)
        };
        self.line(format!("// Pipelined loop ({stages} buffers): {loaded} loaded ahead."));
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
        // Loads the copies' addresses depend on (block or row indices) are read one
        // iteration before the prefetch that needs them: read there, the load's latency
        // would stall every iteration before its copies could start.
        let ahead = self.ahead_loads(body, p);
        if !ahead.is_empty() {
            for &r in &ahead {
                let (name, ty) = (self.name(r), self.ty(r));
                self.declare(&format!("{name}_ahead"), &ty);
            }
            // The first iteration's prefetch starts iteration `S − 1`.
            self.read_ahead(body, p, &ahead, (v, &format!("(int){s}"), e, cmp), (stages - 1) * step);
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
        self.ahead_subst = ahead.clone();
        self.prefetch(body, p, &buffer);
        self.ahead_subst.clear();
        self.close();
        self.close();
        if !ahead.is_empty() {
            // The next iteration's prefetch starts iteration `+ S`.
            self.read_ahead(body, p, &ahead, (v, v, e, cmp), stages * step);
        }
        self.line("tsr::cp_async_commit();");
        self.block(body);
        self.close();
        if !older.is_empty() {
            // A loop that ran no iteration waited for nothing: complete the older copies
            // here (done already otherwise); code after the loop still syncs before
            // reading them.
            self.line("tsr::cp_async_wait_all();");
            self.loop_covered.retain(|v| !older.contains(v));
            self.pending_copies.extend(older);
        }
    }

    /// The register loads among a pipeline's slice statements (indices the copies'
    /// addresses depend on) whose values the prefetch can take from registers read one
    /// iteration earlier.
    fn ahead_loads(&self, body: &[Stmt], p: &staging::Pipeline) -> Vec<ValueId> {
        p.slice
            .iter()
            .filter_map(|&i| match &body[i] {
                Stmt::Let { results, op: Op::Load { .. } }
                    if results.len() == 1 && !self.plan.staged.contains_key(&results[0]) =>
                {
                    Some(results[0])
                }
                _ => None,
            })
            .collect()
    }

    /// Reads the `ahead` loads of iteration `from + offset` into their `_ahead` registers
    /// (the slice re-evaluated with the loop variable shadowed), when that iteration runs.
    fn read_ahead(
        &mut self,
        body: &[Stmt],
        p: &staging::Pipeline,
        ahead: &[ValueId],
        (v, from, e, cmp): (&str, &str, &str, &str),
        offset: i64,
    ) {
        let names: Vec<String> = ahead.iter().map(|&r| self.name(r)).collect();
        self.line(format!("// Read {} for the copies of a later iteration (`_ahead`).", names.join(", ")));
        self.open("");
        self.line(format!("const int {v}_ahead_it = {from} + {offset};"));
        self.open(format!("if ({v}_ahead_it {cmp} (int){e})"));
        self.line(format!("const int {v} = {v}_ahead_it;"));
        let mut idx = p.slice.clone();
        idx.sort_unstable();
        for i in idx {
            self.stmt(&body[i]);
        }
        for &r in ahead {
            let name = self.name(r);
            self.copy_value(&format!("{name}_ahead"), &name, &self.ty(r));
        }
        self.close();
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
        self.pay_owed_barrier();
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
            Op::TopK { k, sorted, .. } => {
                format!("topk({}, k {k}{})", args.join(", "), if *sorted { "" } else { ", unsorted" })
            }
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
            Op::CumSum { value, .. } => self.cumsum(&name, &ty, *value),
            Op::Dot { a, b, trans_b } => self.dot(&name, &ty, *a, *b, *trans_b),
            Op::TopK { value, k, sorted } => {
                let idx = self.name(results[1]);
                self.topk(&name, &idx, &ty, *value, *k, *sorted)
            }
            Op::Load { tensor, index, mask, other } => self.load(r, &ty, *tensor, index, *mask, *other),
        }
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
