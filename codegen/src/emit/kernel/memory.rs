//! Global memory: loads (plain, staged with `cp.async`, pipelined) and stores, with
//! bounds checks, gathers and masks, and 16-byte vectors on affine accesses.

use super::names::broadcast_index;
use super::*;

impl BodyWriter<'_> {
    pub(super) fn load(
        &mut self,
        r: ValueId,
        ty: &TileType,
        tensor: ParamId,
        index: &[Index],
        mask: Option<ValueId>,
        other: f64,
    ) {
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
        let rounds = if self.affine(a) { self.copy_rounds(a, ty) } else { None };
        if let Some(rows_per_round) = rounds {
            self.staged_rounds(name, ty, a, ld, rows_per_round, |w| w.staged_general(name, ty, a, ld, other, false));
        } else if self.affine(a) {
            let l = self.layout(ty);
            let (chunk, count, vec) = (a.chunk, a.chunk_count, l.vec);
            let (ptr, mask) = (a.ptr.clone(), a.mask.clone());
            // A masked-off copy still zero-fills its destination, so a slot past the end
            // of the tile (the last round of a tile that does not fill every thread's
            // vectors) or one another thread writes must not copy at all: its `dst` lies
            // past the tile, in the next tile or past the shared-memory allocation.
            let mut exists = Vec::new();
            if l.slots * self.threads != l.numel {
                exists.push(format!("f < {}", l.numel));
            }
            exists.extend(a.writer.clone());
            let guard = if exists.is_empty() { String::new() } else { format!("if ({}) ", exists.join(" && ")) };
            self.affine_or_general(
                a,
                ty,
                |w, p, uniform| {
                    w.line(format!("{cty}* dst = {name} + c0 * {ld} + c1;"));
                    if uniform {
                        w.line(format!("{guard}tsr::cp_async_chunks<{chunk}, {count}>(dst, on ? {p} : {ptr}, on);"));
                    } else {
                        let m = mask.unwrap().replace("@E", "E");
                        w.line("#pragma unroll");
                        w.line(format!(
                            "for (int E = 0; E < {vec}; ++E) {guard}dst[E] = on && {m} ? {p}[E] : {other};"
                        ));
                    }
                },
                |w| w.staged_general(name, ty, a, ld, other, false),
            );
        } else {
            self.staged_general(name, ty, a, ld, other, true);
        }
        // A prefetch commits all of its copies as one group (see `pipelined_loop`).
        if self.prefetch_buffer.is_none() {
            self.line("tsr::cp_async_commit();");
            self.pending_copies.push(r);
        }
    }

    /// Rows per round when a staged copy can run as rounds of whole rows: a 2-D
    /// round-robin tile, every vector a whole `cp.async` chunk, uniformly masked, no
    /// gather, no writer condition, and one round (`threads × vec` elements) a whole
    /// number of rows. Then each thread copies the same columns of rows `r0 + k · rows`.
    fn copy_rounds(&self, a: &Access, ty: &TileType) -> Option<usize> {
        let l = self.layout(ty);
        let (vd, gather) = a.vector_dim?;
        let plain = l.fragment.is_none() && !l.replicated && a.writer.is_none();
        let uniform = a.mask.is_none() || a.mask_checks(l.vec) == 1;
        let n = *ty.shape.last()?;
        let per_round = self.threads * l.vec;
        let two_d = ty.shape.len() == 2 && a.tile_axis[vd] == Some(1);
        let row_dim = (0..a.rank).find(|&d| a.tile_axis[d] == Some(0));
        (plain
            && uniform
            && two_d
            && !gather
            && !a.gather_dims.iter().any(|&g| g)
            && row_dim.is_some()
            && a.chunk * a.chunk_count == l.vec * a.elem_bytes
            && n.is_multiple_of(l.vec)
            && per_round.is_multiple_of(n))
        .then_some(per_round / n)
    }

    /// The affine fast path of a staged copy as rounds of whole rows ([`Self::copy_rounds`]):
    /// this thread's first row, column, global pointer and shared address are computed
    /// once; round `k` adds `k · rows` rows — a 32-bit compare for its row bound and mask,
    /// one 64-bit pointer add, a shared address with an immediate offset. Masked-off
    /// vectors zero-fill without reading (source size 0), so their pointer is not
    /// replaced. `slow` emits the general loop for accesses the fast check refuses.
    fn staged_rounds(
        &mut self,
        name: &str,
        ty: &TileType,
        a: &Access,
        ld: usize,
        rows_per_round: usize,
        slow: impl FnOnce(&mut Self),
    ) {
        let l = self.layout(ty);
        let (m, n) = (ty.shape[0], ty.shape[1]);
        let rounds = l.slots / l.vec;
        let row_dim = (0..a.rank).find(|&d| a.tile_axis[d] == Some(0)).expect("checked by copy_rounds");
        self.open("");
        let fast = self.affine_prelude(a);
        self.open(format!("if ({})", fast.join(" && ")));
        self.line(format!("const int f0 = (int)threadIdx.x * {};", l.vec));
        self.line(format!("const int r0 = f0 / {n}, c1 = f0 % {n};"));
        self.line(format!("const int span = hi{row_dim} - lo{row_dim};"));
        self.line(format!("auto* g = origin + r0 * st{row_dim} + c1;"));
        self.line(format!("const long long step = (long long){rows_per_round} * st{row_dim};"));
        self.line(format!("const unsigned s = tsr::smem_addr({name} + r0 * {ld} + c1);"));
        self.line("#pragma unroll");
        self.open(format!("for (int k = 0; k < {rounds}; ++k, g += step)"));
        self.line(format!("const int i = k * {}, f = f0 + k * {};", l.vec, self.threads * l.vec));
        self.line(format!("const int c0 = r0 + k * {rows_per_round};"));
        let mut on = vec![format!("(unsigned)(c0 - lo{row_dim}) < (unsigned)span")];
        if let Some(mk) = &a.mask {
            on.push(mk.replace("@E", "0"));
        }
        // Rounds past the tile's last row (a tile smaller than the last round) skip the
        // copy: a zero-fill there would land past the tile.
        let exists = if rounds * rows_per_round > m { format!("if (c0 < {m}) ") } else { String::new() };
        let bytes = rows_per_round * ld * a.elem_bytes;
        self.line(format!(
            "{exists}tsr::cp_async_to<{}, {}>(s + k * {bytes}u, g, {});",
            a.chunk,
            a.chunk_count,
            on.join(" && ")
        ));
        self.close_fast_path(slow);
    }

    /// Ends a fast path's vector loop, then its `if` with `else` + the general loop
    /// (`slow`), then the access scope.
    fn close_fast_path(&mut self, slow: impl FnOnce(&mut Self)) {
        self.close();
        self.depth -= 1;
        self.line("} else {");
        self.depth += 1;
        slow(self);
        self.close();
        self.close();
    }

    /// The general (per-vector checked) loop of a staged load. As the rare fallback of an
    /// affine fast path (`hot` false) it stays a rolled loop when its mask reads no
    /// register tile (it writes shared memory only): unrolled beside the fast path, NVRTC
    /// merges the two per vector and every copy of the fast path pays the general path's
    /// 64-bit address arithmetic and branches (~1400 instructions per 64-row K/V tile in
    /// the decode kernels). As the only path (gathers) it is unrolled.
    fn staged_general(&mut self, name: &str, ty: &TileType, a: &Access, ld: usize, other: &str, hot: bool) {
        let cty = ctype(ty.dtype);
        let unroll = hot || a.mask.as_ref().is_some_and(|m| m.contains("[i + @E]"));
        self.access_loop_with(a, ty, unroll, |w, a, _| {
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

    pub(super) fn store(
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
        let mut stashes = Vec::new();
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
                stashes.push((self.expand_alias.get(&m).copied().unwrap_or(m), s.clone()));
                off = align16(mt.numel());
                format!("{s}[{}]", broadcast_index("(f + @E)", &mt.shape, &ty.shape))
            }
        });
        // Gather positions: recomputed per element when the index tile is arange
        // arithmetic (`t / BLOCK_SIZE`), else staged in scratch (slots past the end of the
        // tile have coordinates past the index tile: clamped so they never read outside
        // its copy; a recomputed index is bounds-checked by the access like any position).
        let mut gathers = Vec::new();
        let mut gather_axis = 0;
        for i in index {
            match i {
                Index::At(_) => {}
                Index::Range { .. } => gather_axis += 1,
                Index::Gather(g) => {
                    if let Some(e) = self.remat(*g, &[format!("@C{gather_axis}@")]) {
                        gathers.push(e);
                    } else {
                        let gt = self.ty(*g);
                        let gl = self.value_layout(&gt);
                        let s = Self::smem_ptr(gt.dtype, off);
                        stashes.push((*g, s.clone()));
                        gathers.push(format!("{s}[tsr::clamp_index(@C{gather_axis}@, {})]", gt.shape[0]));
                        off = align16(off + gl.numel * gt.dtype.size_bytes());
                    }
                    gather_axis += 1;
                }
            }
        }
        self.use_smem(off);
        let staged = !stashes.is_empty();
        if staged {
            // The previous access may have left exactly these values in scratch (the K and
            // V tiles of one gathered row set): read them again, no stash, no barriers.
            if self.held_stash.as_ref() != Some(&stashes) {
                self.pay_owed_barrier();
                for (v, dst) in &stashes {
                    self.stash_value(*v, dst);
                }
                self.sync();
            }
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
                Index::Gather(_) => {
                    positions.push(format!("(long long){}", gathers[gi]));
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
            stashes,
            stash_bytes: off,
            tile_axis,
            gather_dims: index.iter().map(|i| matches!(i, Index::Gather(_))).collect(),
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
        self.open_vector_loop_with(l, shape, true)
    }

    /// [`Self::open_vector_loop`], unrolled or not (`#pragma unroll 1`).
    fn open_vector_loop_with(&mut self, l: Layout, shape: &[usize], unroll: bool) {
        self.line(if unroll { "#pragma unroll" } else { "#pragma unroll 1" });
        self.open(format!("for (int i = 0; i < {}; i += {})", l.slots, l.vec));
        self.line(format!("const int f = {};", l.flat("i")));
        let decl: Vec<String> = coords("f", shape).iter().enumerate().map(|(d, c)| format!("c{d} = {c}")).collect();
        self.line(format!("const int {};", decl.join(", ")));
    }

    /// The loop over this thread's vectors of a tile access. `body` emits the per-vector
    /// code with `ok` (all but the innermost tile axis in bounds), `base` (offset without
    /// the innermost position) and `pv` (innermost tensor position of element 0) in scope.
    fn access_loop(&mut self, a: &Access, ty: &TileType, body: impl FnOnce(&mut Self, &Access, &str)) {
        self.access_loop_with(a, ty, true, body)
    }

    /// [`Self::access_loop`], unrolled or not.
    fn access_loop_with(
        &mut self,
        a: &Access,
        ty: &TileType,
        unroll: bool,
        body: impl FnOnce(&mut Self, &Access, &str),
    ) {
        let l = self.layout(ty);
        let (vd, _) = a.vector_dim.expect("tile access has a tile axis");
        self.open_vector_loop_with(l, &ty.shape, unroll);
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
        // Gathers are fine on the outer axes (a gathered row is still a contiguous vector).
        matches!(a.vector_dim, Some((_, false))) && a.chunk > 0 && l.vec > 1
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
        self.open("");
        let fast = self.affine_prelude(a);
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
                } else if a.gather_dims[d] {
                    // An out-of-range row is masked off and addressed as row 0, so the
                    // 32-bit product never overflows.
                    let g = a.position(d, |k| format!("c{k}"));
                    self.line(format!("const long long g{d} = {g};"));
                    self.line(format!("const bool g{d}_ok = g{d} >= 0 && g{d} < {ptr}_size{d};"));
                    on.push(format!("g{d}_ok"));
                    addr.push(format!("(g{d}_ok ? (int)g{d} : 0) * st{d}"));
                } else {
                    on.push(format!("c{axis} >= lo{d} && c{axis} < hi{d}"));
                    addr.push(format!("c{axis} * st{d}"));
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
        self.close_fast_path(slow);
    }

    /// The checks and per-access values of an affine fast path: declares `o<d>` (the
    /// tile origin's position), `origin` (its address), and for each non-innermost tile
    /// axis `lo<d>`/`hi<d>` (its in-bounds range of tile coordinates) and `st<d>` (its
    /// 32-bit stride); returns the conditions under which the fast path is valid.
    fn affine_prelude(&mut self, a: &Access) -> Vec<String> {
        let (vd, _) = a.vector_dim.unwrap();
        let ptr = &a.ptr;
        let origin = |d: usize| a.position(d, |_| "0".to_string());
        let mut fast = vec![format!("{ptr}_stride{vd} == 1")];
        let mut offset = Vec::new();
        for d in 0..a.rank {
            if a.gather_dims[d] {
                // A gathered axis: each vector reads its row index and checks it (below);
                // its offsets fit 32 bits when every in-bounds row's does.
                fast.push(format!("({ptr}_stride{d} * {}) % {} == 0", a.elem_bytes, a.chunk));
                fast.push(format!("tsr::tile_offset32({ptr}_stride{d}, {ptr}_size{d})"));
                self.line(format!("const int st{d} = (int){ptr}_stride{d};"));
                continue;
            }
            self.line(format!("const long long o{d} = {};", origin(d)));
            offset.push(format!("o{d} * {ptr}_stride{d}"));
            match a.tile_axis[d] {
                None => fast.push(format!("o{d} >= 0 && o{d} < {ptr}_size{d}")),
                Some(_) if d == vd => {
                    fast.push(format!("o{d} >= 0 && o{d} + {} <= {ptr}_size{d}", a.shape[a.shape.len() - 1]))
                }
                Some(axis) => {
                    // The offsets of this axis fit 32 bits (`tile_offset32`), so each vector
                    // costs one 32-bit multiply-add and two 32-bit compares, not 64-bit ones.
                    fast.push(format!("({ptr}_stride{d} * {}) % {} == 0", a.elem_bytes, a.chunk));
                    fast.push(format!("tsr::tile_offset32({ptr}_stride{d}, {})", a.shape[axis]));
                }
            }
        }
        self.line(format!("auto* origin = {ptr} + {};", offset.join(" + ")));
        fast.push(format!("tsr::aligned(origin, {})", a.chunk));
        // Rows of each non-innermost tile axis in bounds, as a 32-bit range of tile
        // coordinates (computed once per access instead of per vector).
        for d in 0..a.rank {
            if let (Some(axis), false) = (a.tile_axis[d], a.gather_dims[d]) {
                if d != vd {
                    let n = a.shape[axis] as i64;
                    self.line(format!(
                        "const int lo{d} = (int)tsr::vmin(tsr::vmax(-o{d}, 0ll), {n}ll), \
                         hi{d} = (int)tsr::vmin(tsr::vmax({ptr}_size{d} - o{d}, 0ll), {n}ll);"
                    ));
                    self.line(format!("const int st{d} = (int){ptr}_stride{d};"));
                }
            }
        }
        fast
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
    /// The values staged and where (see [`BodyWriter::held_stash`]).
    stashes: Vec<(ValueId, String)>,
    /// Scratch bytes the stashes take (from offset 0).
    stash_bytes: usize,
    /// For each tensor dim, the tile axis it runs along (`None` for a fixed position).
    tile_axis: Vec<Option<usize>>,
    /// For each tensor dim, whether a gather addresses it.
    gather_dims: Vec<bool>,
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

    /// Staged indices and masks live in shared memory until every thread is done: the
    /// barrier is deferred to the next statement that may write scratch (see
    /// [`BodyWriter::held_stash`]), so an access staging the same values reuses them.
    fn finish(&self, w: &mut BodyWriter) {
        if self.staged {
            w.held_stash = Some(self.stashes.clone());
            w.owed_scratch = w.owed_scratch.max(self.stash_bytes);
        }
    }
}
