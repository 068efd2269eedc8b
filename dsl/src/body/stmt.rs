//! Blocks and statements: `let`, assignments, `for` loops, `if`, `return`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, ToTokens};
use syn::{Block, Expr, Ident, Pat, Stmt};

use super::*;

impl Tr {
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

    pub(super) fn stmts(&mut self, stmts: &[Stmt]) -> R<TokenStream> {
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
    pub(super) fn stmt(&mut self, s: &Stmt) -> R<(TokenStream, bool)> {
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

    pub(super) fn expr_stmt(&mut self, e: &Expr, semi: bool) -> R<(TokenStream, bool)> {
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

    pub(super) fn assign_target(&mut self, lhs: &Expr) -> R<TokenStream> {
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
    pub(super) fn range(&mut self, e: &Expr) -> R<(TokenStream, TokenStream, TokenStream)> {
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

    pub(super) fn if_stmt(&mut self, i: &syn::ExprIf) -> R<TokenStream> {
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
}
