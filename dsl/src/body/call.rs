//! Calls: DSL functions, tile functions, index lists, tile and tensor methods.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, ToTokens};
use syn::{Expr, Ident, Lit};

use super::*;

impl Tr {
    pub(super) fn arity(&self, node: impl ToTokens, name: &str, args: usize, want: usize, usage: &str) -> R<()> {
        if args != want {
            return err(
                node,
                format!("`{name}` takes {want} argument{}, got {args}: `{usage}`", if want == 1 { "" } else { "s" }),
            );
        }
        Ok(())
    }

    /// An array of compile-time tile dimensions → tokens of `[Val; N]`.
    pub(super) fn shape(&mut self, e: &Expr) -> R<TokenStream> {
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

    pub(super) fn call(&mut self, c: &syn::ExprCall) -> R<(TokenStream, Kind)> {
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
            "topk" | "topk_unsorted" => {
                self.arity(c, &name, n, 2, &format!("{name}(x, K)"))?;
                let (v, _) = self.value(args[0])?;
                let k = self.comptime(args[1], "the k of `topk`", "write a literal or a const generic")?;
                let f = format_ident!("{name}");
                (quote! {{ let __v = #v; let __k = #k; __cx.#f(__v, __k) }}, Kind::Pair)
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
    pub(super) fn tile_fn_call(&mut self, c: &syn::ExprCall, fp: &syn::ExprPath) -> R<(TokenStream, Kind)> {
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
    pub(super) fn index_list(&mut self, e: &Expr, tensor: &Ident, rank: usize) -> R<TokenStream> {
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

    pub(super) fn method(&mut self, m: &syn::ExprMethodCall) -> R<(TokenStream, Kind)> {
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
            "cumsum" => {
                self.arity(&m.method, &name, n, 1, "x.cumsum(0)")?;
                let a = self.comptime(args[0], "the axis of `.cumsum(axis)`", "write `0`")?;
                (quote! {{ let __x = #x; let __a = #a; __cx.cumsum(__x, __a) }}, Kind::Runtime)
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

    pub(super) fn tensor_method(
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
