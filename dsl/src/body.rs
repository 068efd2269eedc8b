//! Translation of the kernel body into IR-recording code.

use std::collections::HashMap;

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{BinOp, Block, Expr, Ident, Lit, Pat, Stmt, UnOp};

use crate::sig::DTYPES;

/// What an expression evaluates to, as far as the macro can tell.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// A compile-time number (literals, const generics, arithmetic on them).
    Comptime,
    /// An IR value.
    Runtime,
    /// A statement-like call (`store`, ...) with no value.
    Unit,
    /// The `(values, indices)` pair of `topk`.
    Pair,
    /// The result of a tile function (`#[tile_fn]`): a tile or a tuple of tiles (rustc
    /// checks which against the function's signature).
    Call,
}

#[derive(Clone)]
pub enum Sym {
    Comptime,
    Tile { mutable: bool },
    Tensor { rank: usize, writable: bool },
}

pub struct Tr {
    scopes: Vec<HashMap<String, Sym>>,
    /// Element-type parameters (`<KV>`): dtype names resolved from the config when built.
    elem_types: Vec<String>,
}

type R<T> = syn::Result<T>;

fn err<T>(node: impl ToTokens, msg: impl std::fmt::Display) -> R<T> {
    Err(syn::Error::new_spanned(node, msg))
}

fn rt() -> TokenStream {
    quote! { ::tessera_dsl_support::rt }
}

const FREE_FNS: &str = "program_id, num_programs, arange, full, zeros, splat, broadcast, expand_dims, \
    exp2, log2, exp, sqrt, rsqrt, abs, max, min, where_, cast, dot, dot_t, topk";
const TILE_METHODS: &str = "sum, max, min, argmax, exp2, log2, exp, sqrt, rsqrt, abs, maximum, minimum, \
    cast::<T>, expand_dims, broadcast";
const TENSOR_METHODS: &str = "load, load_or, load_masked, store, store_masked, atomic_add, atomic_max, dim";

/// The variable the builder binds an element-type parameter's dtype to.
pub fn elem_type_var(name: &str) -> Ident {
    format_ident!("__dt_{}", name)
}

fn dtype_tokens(name: &str) -> TokenStream {
    let v = format_ident!(
        "{}",
        match name {
            "f32" => "F32",
            "f16" => "F16",
            "bf16" => "BF16",
            "i32" => "I32",
            "u32" => "U32",
            "i64" => "I64",
            _ => "Bool",
        }
    );
    let rt = rt();
    quote! { #rt::Dt::#v }
}

impl Tr {
    pub fn new(elem_types: Vec<String>) -> Self {
        Tr { scopes: vec![HashMap::new()], elem_types }
    }

    /// `name` as a dtype: a fixed one (`bf16`, ...) or an element-type parameter.
    fn dtype_name(&self, name: String) -> Option<String> {
        (DTYPES.contains(&name.as_str()) || self.elem_types.contains(&name)).then_some(name)
    }

    fn dtype_of_expr(&self, e: &Expr) -> Option<String> {
        if let Expr::Path(p) = e {
            return self.dtype_name(p.path.get_ident()?.to_string());
        }
        None
    }

    fn dtype_of_type(&self, t: &syn::Type) -> Option<String> {
        if let syn::Type::Path(p) = t {
            return self.dtype_name(p.path.get_ident()?.to_string());
        }
        None
    }

    /// Tokens of the dtype `name`: a constant, or the builder's variable for an
    /// element-type parameter.
    fn dtype_ts(&self, name: &str) -> TokenStream {
        if self.elem_types.iter().any(|e| e == name) {
            let v = elem_type_var(name);
            quote! { #v }
        } else {
            dtype_tokens(name)
        }
    }

    pub fn define(&mut self, name: &Ident, sym: Sym) -> R<()> {
        let n = name.to_string();
        if n.starts_with("__") {
            return err(name, "names starting with `__` are reserved for generated code; rename the binding");
        }
        self.scopes.last_mut().unwrap().insert(n, sym);
        Ok(())
    }

    fn lookup(&self, name: &Ident) -> Option<&Sym> {
        let n = name.to_string();
        self.scopes.iter().rev().find_map(|s| s.get(&n))
    }

    fn resolve(&self, name: &Ident) -> R<&Sym> {
        let n = name.to_string();
        if DTYPES.contains(&n.as_str()) || self.elem_types.contains(&n) {
            return err(name, format!("the dtype `{n}` is not a value; use it in `.cast::<{n}>()` or `cast(x, {n})`"));
        }
        self.lookup(name).ok_or_else(|| {
            syn::Error::new_spanned(
                name,
                format!(
                    "cannot find `{n}` in this kernel: a kernel sees only its parameters, its const generics and \
                     its own `let` bindings; pass outer values in as parameters or const generics"
                ),
            )
        })
    }

    // ---- blocks and statements ----------------------------------------------------------

    /// A tile function's body: its statements, then the returned tile or tuple of tiles,
    /// in one scope. Returns both translations and how many tiles the tail holds.
    pub fn body_with_tail(&mut self, stmts: &[Stmt], tail: &Expr) -> R<(TokenStream, TokenStream, usize)> {
        self.scopes.push(HashMap::new());
        let r = (|| {
            let body = self.stmts(stmts)?;
            let parts: Vec<&Expr> = match tail {
                Expr::Tuple(t) => t.elems.iter().collect(),
                other => vec![other],
            };
            let mut vals = Vec::new();
            for (i, e) in parts.iter().enumerate() {
                let (v, _) = self.value(e)?;
                let var = format_ident!("__ret{i}");
                vals.push((var, v));
            }
            let binds = vals.iter().map(|(n, v)| quote! { let #n = #v; });
            let names: Vec<&Ident> = vals.iter().map(|(n, _)| n).collect();
            let tail = if names.len() == 1 {
                quote! {{ #(#binds)* #(#names)* }}
            } else {
                quote! {{ #(#binds)* (#(#names),*) }}
            };
            Ok((body, tail, parts.len()))
        })();
        self.scopes.pop();
        r
    }

    /// Translates a block in a fresh scope.
    pub fn block(&mut self, b: &Block) -> R<TokenStream> {
        self.scopes.push(HashMap::new());
        let r = self.stmts(&b.stmts);
        self.scopes.pop();
        r
    }

    fn stmts(&mut self, stmts: &[Stmt]) -> R<TokenStream> {
        let mut out = TokenStream::new();
        let mut returned: Option<&Stmt> = None;
        for s in stmts {
            if let Some(r) = returned {
                let _ = r;
                return err(
                    s,
                    "unreachable code after `return`; put the code before the `return` or in an `else` branch",
                );
            }
            let (ts, ret) = self.stmt(s)?;
            out.extend(ts);
            if ret {
                returned = Some(s);
            }
        }
        Ok(out)
    }

    /// One statement; the flag tells whether it ends the block (`return`).
    fn stmt(&mut self, s: &Stmt) -> R<(TokenStream, bool)> {
        let rt = rt();
        match s {
            Stmt::Local(l) => {
                if let Some(el) = &l.init.as_ref().and_then(|i| i.diverge.as_ref()) {
                    return err(&el.1, "`let ... else` is not supported in kernels");
                }
                let Some(init) = &l.init else {
                    return err(l, "declare every binding with a value: `let x = ...;` (or `let mut x = ...;` to reassign it)");
                };
                let init = &*init.expr;
                match &l.pat {
                    Pat::Ident(pi) => {
                        if pi.by_ref.is_some() || pi.subpat.is_some() {
                            return err(&l.pat, "bind a plain name: `let x = ...;`");
                        }
                        let (e, k) = self.expr(init)?;
                        let name = &pi.ident;
                        let ns = name.to_string();
                        match k {
                            Kind::Unit => return err(init, "this call has no value to bind; call it as a statement"),
                            Kind::Pair => {
                                return err(&l.pat, "`topk` returns a pair: bind it with `let (values, indices) = topk(x, K);`")
                            }
                            _ => {}
                        }
                        let ts = if pi.mutability.is_some() {
                            self.define(name, Sym::Tile { mutable: true })?;
                            quote! { let #name: #rt::Val = { let __v = #e; __cx.var(__v, #ns) }; }
                        } else if k == Kind::Comptime {
                            self.define(name, Sym::Comptime)?;
                            quote! { let #name: #rt::Val = #e; }
                        } else {
                            self.define(name, Sym::Tile { mutable: false })?;
                            if matches!(init, Expr::Path(_)) {
                                quote! { let #name: #rt::Val = #e; }
                            } else {
                                quote! { let #name: #rt::Val = { let __v = #e; __cx.name(__v, #ns) }; }
                            }
                        };
                        Ok((ts, false))
                    }
                    Pat::Tuple(t) if matches!(self.expr(init), Ok((_, Kind::Call))) => {
                        // The tiles of a tile function (rustc checks the count).
                        let (e, _) = self.expr(init)?;
                        let mut names = Vec::new();
                        for p in &t.elems {
                            match p {
                                Pat::Ident(pi) if pi.mutability.is_none() && pi.subpat.is_none() => {
                                    names.push(pi.ident.clone())
                                }
                                Pat::Wild(_) => names.push(format_ident!("_")),
                                other => return err(other, "bind plain names: `let (a, b) = f(x, y);`"),
                            }
                        }
                        for n in &names {
                            if n != "_" {
                                self.define(n, Sym::Tile { mutable: false })?;
                            }
                        }
                        let tys = names.iter().map(|_| quote! { #rt::Val });
                        Ok((quote! { let (#(#names),*): (#(#tys),*) = #e; }, false))
                    }
                    Pat::Tuple(t) => {
                        let (e, k) = self.expr(init)?;
                        if k != Kind::Pair || t.elems.len() != 2 {
                            return err(
                                &l.pat,
                                "tuple patterns bind the result of `topk` (`let (values, indices) = topk(x, K);`) or of a \
                                 tile function (`let (a, b) = f(x);`)",
                            );
                        }
                        let mut names = Vec::new();
                        for p in &t.elems {
                            match p {
                                Pat::Ident(pi) if pi.mutability.is_none() && pi.subpat.is_none() => {
                                    names.push(pi.ident.clone())
                                }
                                Pat::Wild(_) => names.push(format_ident!("_")),
                                other => return err(other, "bind plain names: `let (values, indices) = topk(x, K);`"),
                            }
                        }
                        for n in &names {
                            if n != "_" {
                                self.define(n, Sym::Tile { mutable: false })?;
                            }
                        }
                        let (a, b) = (&names[0], &names[1]);
                        Ok((quote! { let (#a, #b): (#rt::Val, #rt::Val) = #e; }, false))
                    }
                    Pat::Type(pt) => err(
                        &pt.ty,
                        "type annotations on `let` are not supported: dtypes come from the values; convert with `.cast::<T>()`",
                    ),
                    other => err(other, "`let` binds a name (`let x = ...`) or the pair of `topk` (`let (v, i) = topk(x, K)`)"),
                }
            }
            Stmt::Item(i) => err(
                i,
                "items (fn, struct, use, const, ...) are not allowed inside a kernel; declare compile-time values as const generics",
            ),
            Stmt::Macro(m) => err(
                &m.mac,
                format!(
                    "macros (`{}!`) are not supported inside kernels; write tile operations directly",
                    m.mac.path.to_token_stream()
                ),
            ),
            Stmt::Expr(e, semi) => self.expr_stmt(e, semi.is_some()),
        }
    }

    fn expr_stmt(&mut self, e: &Expr, semi: bool) -> R<(TokenStream, bool)> {
        let rt = rt();
        match e {
            Expr::Assign(a) => {
                let target = self.assign_target(&a.left)?;
                let (v, k) = self.value(&a.right)?;
                let _ = k;
                Ok((quote! { { let __v = #v; __cx.assign(#target, __v); } }, false))
            }
            Expr::Binary(b) if compound(&b.op).is_some() => {
                let op = compound(&b.op).unwrap();
                let target = self.assign_target(&b.left)?;
                let (v, _) = self.value(&b.right)?;
                Ok((
                    quote! { { let __v = #v; let __n = __cx.binary(#rt::Bin::#op, #target, __v); __cx.assign(#target, __n); } },
                    false,
                ))
            }
            Expr::ForLoop(f) => {
                if let Some(l) = &f.label {
                    return err(l, "loop labels are not supported (there is no `break`/`continue` in kernels)");
                }
                let (var, vname) = match &*f.pat {
                    Pat::Ident(pi) if pi.mutability.is_none() && pi.subpat.is_none() => {
                        (pi.ident.clone(), pi.ident.to_string())
                    }
                    Pat::Wild(_) => (format_ident!("_"), "i".to_string()),
                    other => return err(other, "the loop variable must be a plain name: `for i in a..b`"),
                };
                let (start, end, step) = self.range(&f.expr)?;
                self.scopes.push(HashMap::new());
                if var != "_" {
                    self.define(&var, Sym::Tile { mutable: false })?;
                }
                let body = self.block(&f.body);
                self.scopes.pop();
                let body = body?;
                Ok((
                    quote! {{
                        let __s = #start; let __e = #end; let __st = #step;
                        __cx.for_range(__s, __e, __st, #vname, |__cx: &mut #rt::Ctx<'_>, #var: #rt::Val| { #body });
                    }},
                    false,
                ))
            }
            Expr::If(i) => Ok((self.if_stmt(i)?, false)),
            Expr::Return(r) => {
                if let Some(v) = &r.expr {
                    return err(
                        v,
                        "kernels return nothing; store results with `out.store([...], value)` and write `return;`",
                    );
                }
                Ok((quote! { __cx.ret(); }, true))
            }
            Expr::Block(b) => {
                if let Some(l) = &b.label {
                    return err(l, "block labels are not supported");
                }
                let inner = self.block(&b.block)?;
                Ok((quote! { { #inner } }, false))
            }
            Expr::Break(b) => {
                err(b, "`break` is not supported; bound the loop with its range or guard the body with `if`")
            }
            Expr::Continue(c) => err(c, "`continue` is not supported; guard the rest of the body with `if`"),
            _ => {
                let (v, k) = self.expr(e)?;
                if !semi && k != Kind::Unit {
                    return err(
                        e,
                        "kernels return nothing; end the statement with `;` or store the value with `.store(...)`",
                    );
                }
                Ok((quote! { let _ = #v; }, false))
            }
        }
    }

    fn assign_target(&mut self, lhs: &Expr) -> R<TokenStream> {
        let Expr::Path(p) = lhs else {
            return err(
                lhs,
                "only local variables can be assigned (`x = ...`); write tensors with `.store([...], value)`",
            );
        };
        let Some(id) = p.path.get_ident() else {
            return err(lhs, "only local variables can be assigned");
        };
        match self.resolve(id)? {
            Sym::Tile { mutable: true } => Ok(quote! { #id }),
            Sym::Tensor { .. } => err(id, format!("`{id}` is a tensor; write it with `{id}.store([...], value)`")),
            _ => err(id, format!("cannot assign twice to `{id}`: declare it with `let mut {id} = ...;`")),
        }
    }

    /// `a..b` or `(a..b).step_by(S)` → (start, end, step) tokens.
    fn range(&mut self, e: &Expr) -> R<(TokenStream, TokenStream, TokenStream)> {
        let (r, step) = match e {
            Expr::MethodCall(m) if m.method == "step_by" => {
                if m.args.len() != 1 {
                    return err(&m.args, "`step_by` takes one compile-time step");
                }
                let s = self.comptime(
                    &m.args[0],
                    "the step of a `for` loop",
                    "write a literal or a const generic, e.g. `.step_by(BLOCK_N)`",
                )?;
                let mut inner = &*m.receiver;
                while let Expr::Paren(p) = inner {
                    inner = &p.expr;
                }
                (inner, s)
            }
            _ => (e, quote! { ::tessera_dsl_support::rt::Val::int(1) }),
        };
        let Expr::Range(r) = r else {
            return err(e, "a kernel `for` loop runs over `a..b` or `(a..b).step_by(STEP)`");
        };
        if matches!(r.limits, syn::RangeLimits::Closed(_)) {
            return err(r, "inclusive ranges are not supported; write `a..b + 1`");
        }
        let (Some(a), Some(b)) = (&r.start, &r.end) else {
            return err(r, "a loop range needs both bounds: `a..b`");
        };
        let (a, _) = self.value(a)?;
        let (b, _) = self.value(b)?;
        Ok((a, b, step))
    }

    fn if_stmt(&mut self, i: &syn::ExprIf) -> R<TokenStream> {
        let rt = rt();
        let (c, k) = self.value(&i.cond)?;
        let then = self.block(&i.then_branch)?;
        let otherwise = match &i.else_branch {
            None => TokenStream::new(),
            Some((_, e)) => match &**e {
                Expr::If(inner) => self.if_stmt(inner)?,
                Expr::Block(b) => self.block(&b.block)?,
                other => return err(other, "expected a block after `else`"),
            },
        };
        Ok(if k == Kind::Comptime {
            // A compile-time condition selects a branch while building (a static `if`).
            quote! { if #rt::Val::truthy(#c) { #then } else { #otherwise } }
        } else {
            quote! {{
                let __c = #c;
                __cx.if_else(__c, |__cx: &mut #rt::Ctx<'_>| { #then }, |__cx: &mut #rt::Ctx<'_>| { #otherwise });
            }}
        })
    }

    // ---- expressions -----------------------------------------------------------------------

    /// An expression that must be a value (compile-time or runtime).
    fn value(&mut self, e: &Expr) -> R<(TokenStream, Kind)> {
        let (ts, k) = self.expr(e)?;
        match k {
            Kind::Unit => err(e, "this call has no value; use it as a statement"),
            Kind::Pair => err(e, "`topk` returns a pair: bind it with `let (values, indices) = topk(x, K);` first"),
            // Used as a value, a tile function's result is one tile (rustc checks).
            Kind::Call => Ok((ts, Kind::Runtime)),
            _ => Ok((ts, k)),
        }
    }

    /// An expression that must be known at compile time.
    fn comptime(&mut self, e: &Expr, what: &str, hint: &str) -> R<TokenStream> {
        let (ts, k) = self.value(e)?;
        if k != Kind::Comptime {
            return err(
                e,
                format!(
                    "{what} must be a compile-time value, but `{}` is only known at run time; {hint}",
                    e.to_token_stream()
                ),
            );
        }
        Ok(ts)
    }

    fn expr(&mut self, e: &Expr) -> R<(TokenStream, Kind)> {
        let rt = rt();
        match e {
            Expr::Lit(l) => Ok((self.lit(&l.lit)?, Kind::Comptime)),
            Expr::Paren(p) => self.expr(&p.expr),
            Expr::Group(g) => self.expr(&g.expr),
            Expr::Path(p) => {
                if let Some(id) = p.path.get_ident() {
                    return match self.resolve(id)? {
                        Sym::Comptime => Ok((quote! { #id }, Kind::Comptime)),
                        Sym::Tile { .. } => Ok((quote! { #id }, Kind::Runtime)),
                        Sym::Tensor { .. } => err(
                            id,
                            format!(
                                "`{id}` is a tensor parameter, not a tile: load a tile first with `{id}.load([...])`"
                            ),
                        ),
                    };
                }
                self.const_path(p)
            }
            Expr::Binary(b) => {
                if compound(&b.op).is_some() {
                    return err(e, "compound assignment is a statement: write `x += y;`");
                }
                let op = match b.op {
                    BinOp::Add(_) => "Add",
                    BinOp::Sub(_) => "Sub",
                    BinOp::Mul(_) => "Mul",
                    BinOp::Div(_) => "Div",
                    BinOp::Rem(_) => "Rem",
                    BinOp::And(_) | BinOp::BitAnd(_) => "And",
                    BinOp::Or(_) | BinOp::BitOr(_) => "Or",
                    BinOp::Shl(_) => "Shl",
                    BinOp::Shr(_) => "Shr",
                    BinOp::Lt(_) => "Lt",
                    BinOp::Le(_) => "Le",
                    BinOp::Gt(_) => "Gt",
                    BinOp::Ge(_) => "Ge",
                    BinOp::Eq(_) => "Eq",
                    BinOp::Ne(_) => "Ne",
                    _ => return err(b.op, "this operator is not supported on tiles"),
                };
                let op = format_ident!("{op}");
                let (l, kl) = self.value(&b.left)?;
                let (r, kr) = self.value(&b.right)?;
                let k = if kl == Kind::Comptime && kr == Kind::Comptime { Kind::Comptime } else { Kind::Runtime };
                Ok((quote! {{ let __l = #l; let __r = #r; __cx.binary(#rt::Bin::#op, __l, __r) }}, k))
            }
            Expr::Unary(u) => {
                let op = match u.op {
                    UnOp::Neg(_) => quote! { Neg },
                    UnOp::Not(_) => quote! { Not },
                    _ => return err(u, "dereferencing is not supported; tiles are values"),
                };
                let (x, k) = self.value(&u.expr)?;
                Ok((quote! {{ let __x = #x; __cx.unary(#rt::Un::#op, __x) }}, k))
            }
            Expr::Cast(c) => {
                let (x, k) = self.value(&c.expr)?;
                if let Some(d) = self.dtype_of_type(&c.ty) {
                    let d = self.dtype_ts(&d);
                    return Ok((quote! {{ let __x = #x; __cx.cast(__x, #d) }}, k));
                }
                let is_index =
                    matches!(&*c.ty, syn::Type::Path(p) if p.path.is_ident("usize") || p.path.is_ident("isize"));
                if is_index {
                    if k != Kind::Comptime {
                        return err(c, "`as usize` only applies to compile-time values; cast tiles to i32, i64 or u32");
                    }
                    return Ok((quote! { #rt::Val::int(__cx.i64(#x, "an index value")) }, k));
                }
                err(&c.ty, "cast to a tile dtype: bf16, f16, f32, i32, u32, i64 or bool")
            }
            Expr::Call(c) => self.call(c),
            Expr::MethodCall(m) => self.method(m),
            Expr::Closure(c) => err(c, "closures are not supported in kernels; write the computation inline"),
            Expr::If(i) => {
                err(i, "`if` is a statement in kernels, not a value; select element-wise with `where_(cond, a, b)`")
            }
            Expr::While(w) => err(
                w,
                "`while` loops are not supported; use `for i in (a..b).step_by(S)` with a bound, and `if` inside",
            ),
            Expr::Loop(l) => err(l, "`loop` is not supported; use `for i in (a..b).step_by(S)`"),
            Expr::Match(m) => err(m, "`match` is not supported; use `if`/`else` or `where_(cond, a, b)`"),
            Expr::Macro(m) => err(
                &m.mac,
                format!(
                    "macros (`{}!`) are not supported inside kernels; write tile operations directly",
                    m.mac.path.to_token_stream()
                ),
            ),
            Expr::Index(i) => {
                err(i, "indexing with `[]` is not supported; read tensors with `t.load([at(i), range(j, N)])`")
            }
            Expr::Field(f) => err(f, "fields are not supported; read tensor sizes with `t.dim(axis)`"),
            Expr::Reference(r) => err(r, "references are not supported; tiles are passed by value"),
            Expr::Tuple(t) => err(t, "tuples are not values in kernels (only `let (v, i) = topk(x, K)`)"),
            Expr::Array(a) => {
                err(a, "arrays are only allowed as index lists (`t.load([...])`) and shapes (`full([M, N], 0.0)`)")
            }
            Expr::Block(b) => err(b, "block expressions are not values; bind with `let` instead"),
            Expr::Assign(a) => err(a, "assignment is a statement: `x = value;`"),
            Expr::Return(r) => err(r, "`return` is a statement: write `return;`"),
            Expr::Range(r) => {
                err(r, "ranges are only allowed in `for` loops; address tensors with `range(start, LEN)`")
            }
            Expr::Try(t) => err(t, "`?` is not supported in kernels"),
            other => err(other, "this expression is not supported in kernels"),
        }
    }

    fn lit(&self, l: &Lit) -> R<TokenStream> {
        let rt = rt();
        Ok(match l {
            Lit::Int(i) => {
                let v: i64 = i.base10_parse()?;
                match i.suffix() {
                    "" | "usize" | "isize" => quote! { #rt::Val::int(#v) },
                    s @ ("i32" | "i64" | "u32") => {
                        let d = dtype_tokens(s);
                        quote! { #rt::Val::typed(#v as f64, #d) }
                    }
                    s => {
                        return err(
                            i,
                            format!("`{s}` literals are not supported; use i32, i64, u32 or an untyped literal"),
                        )
                    }
                }
            }
            Lit::Float(f) => {
                let v: f64 = f.base10_parse()?;
                match f.suffix() {
                    "" => quote! { #rt::Val::float(#v) },
                    "f32" => quote! { #rt::Val::typed(#v, #rt::Dt::F32) },
                    s => {
                        return err(
                            f,
                            format!(
                                "`{s}` literals are not supported; tiles are f32/f16/bf16: write `1.0f32` or `1.0`"
                            ),
                        )
                    }
                }
            }
            Lit::Bool(b) => {
                let v = b.value as i64 as f64;
                quote! { #rt::Val::typed(#v, #rt::Dt::Bool) }
            }
            other => return err(other, "only number and bool literals are supported in kernels"),
        })
    }

    /// `f32::NEG_INFINITY`, `std::f32::consts::LOG2_E`, `i32::MAX`, ...
    fn const_path(&self, p: &syn::ExprPath) -> R<(TokenStream, Kind)> {
        let rt = rt();
        let segs: Vec<String> = p.path.segments.iter().map(|s| s.ident.to_string()).collect();
        let segs: Vec<&str> = segs.iter().map(|s| s.as_str()).skip_while(|s| *s == "std" || *s == "core").collect();
        let ok = match segs.as_slice() {
            ["f32", "INFINITY" | "NEG_INFINITY" | "MAX" | "MIN" | "MIN_POSITIVE" | "EPSILON" | "NAN"] => Some("F32"),
            ["f32", "consts", _] => Some("F32"),
            ["i32", "MAX" | "MIN"] => Some("I32"),
            ["i64", "MAX" | "MIN"] => Some("I64"),
            ["u32", "MAX" | "MIN"] => Some("U32"),
            _ => None,
        };
        let Some(d) = ok else {
            return err(
                p,
                "unknown path: kernels may name `f32::NEG_INFINITY`-style constants, `f32::consts::*` and their own bindings",
            );
        };
        let d = format_ident!("{d}");
        let path = &p.path;
        let path = if segs[0] == "f32" && segs.len() == 3 {
            let c = format_ident!("{}", segs[2]);
            quote_spanned! { p.span() => ::core::f32::consts::#c }
        } else {
            quote! { #path }
        };
        Ok((quote! { #rt::Val::typed((#path) as f64, #rt::Dt::#d) }, Kind::Comptime))
    }

    fn arity(&self, node: impl ToTokens, name: &str, args: usize, want: usize, usage: &str) -> R<()> {
        if args != want {
            return err(
                node,
                format!("`{name}` takes {want} argument{}, got {args}: `{usage}`", if want == 1 { "" } else { "s" }),
            );
        }
        Ok(())
    }

    /// An array of compile-time tile dimensions → tokens of `[Val; N]`.
    fn shape(&mut self, e: &Expr) -> R<TokenStream> {
        let Expr::Array(a) = e else {
            return err(e, "a tile shape is an array of compile-time values, e.g. `[BLOCK_M, BLOCK_N]`");
        };
        let mut items = Vec::new();
        for x in &a.elems {
            items.push(self.comptime(
                x,
                "a tile dimension",
                "tile shapes are fixed when the kernel is built; use a const generic",
            )?);
        }
        Ok(quote! { [#(#items),*] })
    }

    fn call(&mut self, c: &syn::ExprCall) -> R<(TokenStream, Kind)> {
        let rt = rt();
        let Expr::Path(fp) = &*c.func else {
            return err(&c.func, "only tile operations can be called, e.g. `exp2(x)`");
        };
        if fp.qself.is_none() && fp.path.segments.len() == 1 && !fp.path.segments[0].arguments.is_none() {
            return self.tile_fn_call(c, fp);
        }
        let Some(f) = fp.path.get_ident() else {
            return err(&c.func, format!("unknown tile op `{}`; available: {FREE_FNS}", fp.path.to_token_stream()));
        };
        let name = f.to_string();
        let args: Vec<&Expr> = c.args.iter().collect();
        let n = args.len();
        let un = |op: &str| format_ident!("{op}");
        Ok(match name.as_str() {
            "program_id" | "num_programs" => {
                self.arity(c, &name, n, 1, &format!("{name}(0)"))?;
                let a = self.comptime(args[0], "the grid axis", "write 0, 1 or 2")?;
                let m = format_ident!("{name}");
                (quote! {{ let __a = #a; __cx.#m(__a) }}, Kind::Runtime)
            }
            "arange" => {
                self.arity(c, &name, n, 2, "arange(0, BLOCK)")?;
                let hint = "`arange` has a fixed start and length; add a runtime offset afterwards: `arange(0, BLOCK) + start`";
                let s = self.comptime(args[0], "the start of `arange`", hint)?;
                let l = self.comptime(args[1], "the length of `arange`", hint)?;
                (quote! {{ let __s = #s; let __l = #l; __cx.arange(__s, __l) }}, Kind::Runtime)
            }
            "full" | "splat" => {
                self.arity(c, &name, n, 2, &format!("{name}([M, N], value)"))?;
                let (shape_e, val_e) = if name == "full" { (args[0], args[1]) } else { (args[1], args[0]) };
                let shape = self.shape(shape_e)?;
                let (v, _) = self.value(val_e)?;
                (quote! {{ let __s = #shape; let __v = #v; __cx.full(&__s, __v) }}, Kind::Runtime)
            }
            "zeros" => {
                self.arity(c, &name, n, 1, "zeros([M, N])")?;
                let shape = self.shape(args[0])?;
                (quote! {{ let __s = #shape; __cx.full(&__s, #rt::Val::typed(0.0, #rt::Dt::F32)) }}, Kind::Runtime)
            }
            "broadcast" => {
                self.arity(c, &name, n, 2, "broadcast(x, [M, N])")?;
                let (v, _) = self.value(args[0])?;
                let shape = self.shape(args[1])?;
                (quote! {{ let __v = #v; let __s = #shape; __cx.broadcast(__v, &__s) }}, Kind::Runtime)
            }
            "expand_dims" => {
                self.arity(c, &name, n, 2, "expand_dims(x, axis)")?;
                let (v, _) = self.value(args[0])?;
                let a = self.comptime(args[1], "the axis of `expand_dims`", "write a literal axis")?;
                (quote! {{ let __v = #v; let __a = #a; __cx.expand_dims(__v, __a) }}, Kind::Runtime)
            }
            "exp2" | "log2" | "exp" | "sqrt" | "rsqrt" | "abs" => {
                self.arity(c, &name, n, 1, &format!("{name}(x)"))?;
                let (v, k) = self.value(args[0])?;
                let op = un(&capitalise(&name));
                (quote! {{ let __v = #v; __cx.unary(#rt::Un::#op, __v) }}, k)
            }
            "max" | "min" => {
                self.arity(c, &name, n, 2, &format!("{name}(a, b)"))?;
                let (a, ka) = self.value(args[0])?;
                let (b, kb) = self.value(args[1])?;
                let op = un(&capitalise(&name));
                let k = if ka == Kind::Comptime && kb == Kind::Comptime { Kind::Comptime } else { Kind::Runtime };
                (quote! {{ let __a = #a; let __b = #b; __cx.binary(#rt::Bin::#op, __a, __b) }}, k)
            }
            "where_" => {
                self.arity(c, &name, n, 3, "where_(cond, a, b)")?;
                let (cnd, _) = self.value(args[0])?;
                let (a, _) = self.value(args[1])?;
                let (b, _) = self.value(args[2])?;
                (quote! {{ let __c = #cnd; let __a = #a; let __b = #b; __cx.select(__c, __a, __b) }}, Kind::Runtime)
            }
            "cast" => {
                self.arity(c, &name, n, 2, "cast(x, bf16)")?;
                let (v, k) = self.value(args[0])?;
                let Some(d) = self.dtype_of_expr(args[1]) else {
                    return err(
                        args[1],
                        "the second argument of `cast` is a dtype: bf16, f16, f32, i32, u32, i64 or bool",
                    );
                };
                let d = self.dtype_ts(&d);
                (quote! {{ let __v = #v; __cx.cast(__v, #d) }}, k)
            }
            "dot" | "dot_t" => {
                self.arity(c, &name, n, 2, &format!("{name}(a, b)"))?;
                let (a, _) = self.value(args[0])?;
                let (b, _) = self.value(args[1])?;
                let t = name == "dot_t";
                (quote! {{ let __a = #a; let __b = #b; __cx.dot(__a, __b, #t) }}, Kind::Runtime)
            }
            "topk" => {
                self.arity(c, &name, n, 2, "topk(x, K)")?;
                let (v, _) = self.value(args[0])?;
                let k = self.comptime(args[1], "the k of `topk`", "write a literal or a const generic")?;
                (quote! {{ let __v = #v; let __k = #k; __cx.topk(__v, __k) }}, Kind::Pair)
            }
            "range" | "at" | "gather" => {
                return err(
                    c,
                    format!(
                    "`{name}(..)` only appears inside the index list of a load or store: `t.load([{name}(..), ..])`"
                ),
                )
            }
            _ => {
                if self.lookup(f).is_some() {
                    return err(f, format!("`{f}` is a value, not a function"));
                }
                return self.tile_fn_call(c, fp);
            }
        })
    }

    /// A call of a tile function (`#[tile_fn]`, or rustc reports the unknown name):
    /// `f::<T, ..>(a, b, ..)` → `f(__cx, <dtype of T>, .., a, b, ..)`, the arguments bound
    /// first (they record into the same context).
    fn tile_fn_call(&mut self, c: &syn::ExprCall, fp: &syn::ExprPath) -> R<(TokenStream, Kind)> {
        let seg = &fp.path.segments[0];
        let f = &seg.ident;
        let mut dts = Vec::new();
        if let syn::PathArguments::AngleBracketed(g) = &seg.arguments {
            for a in &g.args {
                let dt = match a {
                    syn::GenericArgument::Type(t) => self.dtype_of_type(t),
                    _ => None,
                };
                match dt {
                    Some(d) => dts.push(self.dtype_ts(&d)),
                    None => return err(
                        a,
                        "a tile function's generic arguments are element types: bf16, f16, f32 or the kernel's own \
                             (`f::<KV>(..)`)",
                    ),
                }
            }
        } else if !seg.arguments.is_none() {
            return err(&seg.arguments, "call a tile function as `f(x, ..)` or `f::<T>(x, ..)`");
        }
        let mut binds = Vec::new();
        let mut names = Vec::new();
        for (i, a) in c.args.iter().enumerate() {
            let (v, _) = self.value(a)?;
            let n = format_ident!("__a{i}");
            binds.push(quote! { let #n = #v; });
            names.push(n);
        }
        let call = quote::quote_spanned! { f.span()=> #f(__cx, #(#dts,)* #(#names),*) };
        Ok((quote! {{ #(#binds)* #call }}, Kind::Call))
    }

    /// The index list of a load/store, checked against the tensor's rank.
    fn index_list(&mut self, e: &Expr, tensor: &Ident, rank: usize) -> R<TokenStream> {
        let rt = rt();
        let Expr::Array(a) = e else {
            return err(
                e,
                "a tensor is addressed by an index list, one entry per dimension: `[at(row), range(start, BLOCK)]`",
            );
        };
        if a.elems.len() != rank {
            return err(
                e,
                format!(
                    "`{tensor}` has rank {rank} but the index list has {} entr{}; give one `at(i)`, `range(start, LEN)` or `gather(idx)` per dimension",
                    a.elems.len(),
                    if a.elems.len() == 1 { "y" } else { "ies" }
                ),
            );
        }
        let mut items = Vec::new();
        for (i, x) in a.elems.iter().enumerate() {
            let v = format_ident!("__i{i}");
            let ts = match x {
                Expr::Call(c) if matches!(&*c.func, Expr::Path(p) if p.path.is_ident("range")) => {
                    self.arity(c, "range", c.args.len(), 2, "range(start, LEN)")?;
                    let (s, _) = self.value(&c.args[0])?;
                    let l = self.comptime(
                        &c.args[1],
                        "the length of `range`",
                        "tile lengths are fixed when the kernel is built: use a const generic such as `BLOCK` and let the bounds mask the tail",
                    )?;
                    quote! { let #v = { let __s = #s; #rt::Ix::Range(__s, #l) }; }
                }
                Expr::Call(c) if matches!(&*c.func, Expr::Path(p) if p.path.is_ident("at") || p.path.is_ident("gather")) =>
                {
                    let is_at = matches!(&*c.func, Expr::Path(p) if p.path.is_ident("at"));
                    let fname = if is_at { "at" } else { "gather" };
                    self.arity(c, fname, c.args.len(), 1, &format!("{fname}(i)"))?;
                    let (s, _) = self.value(&c.args[0])?;
                    let var = if is_at {
                        quote! { At }
                    } else {
                        quote! { Gather }
                    };
                    quote! { let #v = #rt::Ix::#var(#s); }
                }
                other => {
                    let (s, _) = self.value(other)?;
                    quote! { let #v = #rt::Ix::At(#s); }
                }
            };
            items.push((v, ts));
        }
        let lets = items.iter().map(|(_, t)| t);
        let names = items.iter().map(|(v, _)| v);
        Ok(quote! {{ #(#lets)* [#(#names),*] }})
    }

    fn method(&mut self, m: &syn::ExprMethodCall) -> R<(TokenStream, Kind)> {
        let rt = rt();
        let name = m.method.to_string();
        let args: Vec<&Expr> = m.args.iter().collect();
        let n = args.len();
        // Tensor methods.
        if let Expr::Path(p) = &*m.receiver {
            if let Some(id) = p.path.get_ident() {
                if let Some(Sym::Tensor { rank, writable }) = self.lookup(id).cloned() {
                    return self.tensor_method(m, id, rank, writable);
                }
            }
        }
        if ["load", "load_or", "load_masked", "store", "store_masked", "atomic_add", "atomic_max", "dim"]
            .contains(&name.as_str())
        {
            return err(&m.receiver, format!("`{name}` is a method of tensor parameters, and this is a tile value"));
        }
        if m.turbofish.is_some() && name != "cast" {
            return err(&m.turbofish, "only `.cast::<T>()` takes a type argument");
        }
        let (x, kx) = self.value(&m.receiver)?;
        let un = |op: &str| format_ident!("{op}");
        Ok(match name.as_str() {
            "sum" | "argmax" | "max" | "min" if n == 1 => {
                let (a, ka) = self.value(args[0])?;
                if ka == Kind::Comptime {
                    let op = un(&capitalise(&name));
                    (quote! {{ let __x = #x; let __a = #a; __cx.reduce(#rt::Red::#op, __x, __a) }}, Kind::Runtime)
                } else if name == "max" || name == "min" {
                    let op = un(&capitalise(&name));
                    (quote! {{ let __x = #x; let __a = #a; __cx.binary(#rt::Bin::#op, __x, __a) }}, Kind::Runtime)
                } else {
                    return err(
                        args[0],
                        format!("the axis of `.{name}(axis)` must be a compile-time value such as `0` or `1`"),
                    );
                }
            }
            "maximum" | "minimum" => {
                self.arity(&m.method, &name, n, 1, &format!("a.{name}(b)"))?;
                let (a, ka) = self.value(args[0])?;
                let op = un(if name == "maximum" { "Max" } else { "Min" });
                let k = if kx == Kind::Comptime && ka == Kind::Comptime { Kind::Comptime } else { Kind::Runtime };
                (quote! {{ let __x = #x; let __a = #a; __cx.binary(#rt::Bin::#op, __x, __a) }}, k)
            }
            "sum" | "argmax" | "max" | "min" => {
                return err(
                    &m.method,
                    format!("`.{name}(axis)` takes the axis to reduce; element-wise use `{name}(a, b)`"),
                )
            }
            "exp2" | "log2" | "exp" | "sqrt" | "rsqrt" | "abs" => {
                self.arity(&m.method, &name, n, 0, &format!("x.{name}()"))?;
                let op = un(&capitalise(&name));
                (quote! {{ let __x = #x; __cx.unary(#rt::Un::#op, __x) }}, kx)
            }
            "cast" => {
                let d = m
                    .turbofish
                    .as_ref()
                    .and_then(|t| match t.args.first() {
                        Some(syn::GenericArgument::Type(ty)) if t.args.len() == 1 => self.dtype_of_type(ty),
                        _ => None,
                    })
                    .ok_or_else(|| syn::Error::new_spanned(m, "write the target dtype: `x.cast::<bf16>()`"))?;
                self.arity(&m.method, "cast", n, 0, "x.cast::<bf16>()")?;
                let d = self.dtype_ts(&d);
                (quote! {{ let __x = #x; __cx.cast(__x, #d) }}, kx)
            }
            "expand_dims" => {
                self.arity(&m.method, &name, n, 1, "x.expand_dims(axis)")?;
                let a = self.comptime(args[0], "the axis of `expand_dims`", "write a literal axis")?;
                (quote! {{ let __x = #x; let __a = #a; __cx.expand_dims(__x, __a) }}, Kind::Runtime)
            }
            "broadcast" => {
                self.arity(&m.method, &name, n, 1, "x.broadcast([M, N])")?;
                let s = self.shape(args[0])?;
                (quote! {{ let __x = #x; let __s = #s; __cx.broadcast(__x, &__s) }}, Kind::Runtime)
            }
            _ => return err(&m.method, format!("unknown tile method `.{name}()`; available: {TILE_METHODS}")),
        })
    }

    fn tensor_method(
        &mut self,
        m: &syn::ExprMethodCall,
        t: &Ident,
        rank: usize,
        writable: bool,
    ) -> R<(TokenStream, Kind)> {
        let rt = rt();
        let name = m.method.to_string();
        let args: Vec<&Expr> = m.args.iter().collect();
        let n = args.len();
        let need_write = |what: &str| -> R<()> {
            if !writable {
                return err(
                    &m.method,
                    format!("`{t}` is read-only; declare the parameter as `{t}: &mut Tensor<..>` to {what} it"),
                );
            }
            Ok(())
        };
        Ok(match name.as_str() {
            "load" => {
                self.arity(&m.method, &name, n, 1, "t.load([at(i), range(start, BLOCK)])")?;
                let ix = self.index_list(args[0], t, rank)?;
                (quote! {{ let __ix = #ix; __cx.load(#t, &__ix, None, #rt::Val::float(0.0)) }}, Kind::Runtime)
            }
            "load_or" => {
                self.arity(&m.method, &name, n, 2, "t.load_or([...], other)")?;
                let ix = self.index_list(args[0], t, rank)?;
                let other = self.comptime(
                    args[1],
                    "the `other` value of `load_or`",
                    "write a literal such as `0.0` or `f32::NEG_INFINITY`",
                )?;
                (quote! {{ let __ix = #ix; let __o = #other; __cx.load(#t, &__ix, None, __o) }}, Kind::Runtime)
            }
            "load_masked" => {
                self.arity(&m.method, &name, n, 3, "t.load_masked([...], mask, other)")?;
                let ix = self.index_list(args[0], t, rank)?;
                let (mask, _) = self.value(args[1])?;
                let other = self.comptime(
                    args[2],
                    "the `other` value of `load_masked`",
                    "write a literal such as `0.0` or `f32::NEG_INFINITY`",
                )?;
                (
                    quote! {{ let __ix = #ix; let __m = #mask; let __o = #other; __cx.load(#t, &__ix, Some(__m), __o) }},
                    Kind::Runtime,
                )
            }
            "store" => {
                need_write("store into")?;
                self.arity(&m.method, &name, n, 2, "t.store([...], value)")?;
                let ix = self.index_list(args[0], t, rank)?;
                let (v, _) = self.value(args[1])?;
                (quote! {{ let __ix = #ix; let __v = #v; __cx.store(#t, &__ix, __v, None) }}, Kind::Unit)
            }
            "store_masked" => {
                need_write("store into")?;
                self.arity(&m.method, &name, n, 3, "t.store_masked([...], value, mask)")?;
                let ix = self.index_list(args[0], t, rank)?;
                let (v, _) = self.value(args[1])?;
                let (mask, _) = self.value(args[2])?;
                (
                    quote! {{ let __ix = #ix; let __v = #v; let __m = #mask; __cx.store(#t, &__ix, __v, Some(__m)) }},
                    Kind::Unit,
                )
            }
            "atomic_add" | "atomic_max" => {
                need_write("update")?;
                self.arity(&m.method, &name, n, 2, &format!("t.{name}([...], value)"))?;
                let ix = self.index_list(args[0], t, rank)?;
                let (v, _) = self.value(args[1])?;
                let op = format_ident!("{}", if name == "atomic_add" { "Add" } else { "Max" });
                (
                    quote! {{ let __ix = #ix; let __v = #v; __cx.atomic(#rt::Atomic::#op, #t, &__ix, __v, None) }},
                    Kind::Unit,
                )
            }
            "dim" => {
                self.arity(&m.method, &name, n, 1, "t.dim(axis)")?;
                if let Expr::Lit(syn::ExprLit { lit: Lit::Int(i), .. }) = args[0] {
                    let a: usize = i.base10_parse()?;
                    if a >= rank {
                        return err(args[0], format!("`{t}` has rank {rank}: axis {a} is out of range (0..{rank})"));
                    }
                }
                let a = self.comptime(args[0], "the axis of `dim`", "write a literal axis")?;
                (quote! {{ let __a = #a; __cx.dim(#t, __a) }}, Kind::Runtime)
            }
            _ => return err(&m.method, format!("unknown tensor method `.{name}()`; available: {TENSOR_METHODS}")),
        })
    }
}

fn compound(op: &BinOp) -> Option<Ident> {
    Some(format_ident!(
        "{}",
        match op {
            BinOp::AddAssign(_) => "Add",
            BinOp::SubAssign(_) => "Sub",
            BinOp::MulAssign(_) => "Mul",
            BinOp::DivAssign(_) => "Div",
            BinOp::RemAssign(_) => "Rem",
            _ => return None,
        }
    ))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
