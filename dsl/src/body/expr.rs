//! Expressions: values, compile-time numbers, operators, literals and paths.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{BinOp, Expr, Lit, UnOp};

use super::*;

impl Tr {
    /// An expression that must be a value (compile-time or runtime).
    pub(super) fn value(&mut self, e: &Expr) -> R<(TokenStream, Kind)> {
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
    pub(super) fn comptime(&mut self, e: &Expr, what: &str, hint: &str) -> R<TokenStream> {
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

    pub(super) fn expr(&mut self, e: &Expr) -> R<(TokenStream, Kind)> {
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

    pub(super) fn lit(&self, l: &Lit) -> R<TokenStream> {
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
    pub(super) fn const_path(&self, p: &syn::ExprPath) -> R<(TokenStream, Kind)> {
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
}
