//! The attribute arguments: `tune(NAME = [..], ..)`, `example(NAME = value, ..)` and
//! `constraint = "..."`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Expr, Ident, LitStr};

/// One tuned parameter and its candidate values.
pub struct Tuned {
    pub name: Ident,
    pub values: Vec<i64>,
}

/// One untuned parameter's value in the kernel's example configuration.
pub struct Example {
    pub name: Ident,
    pub value: i64,
}

/// Parsed attribute arguments.
#[derive(Default)]
pub struct Attr {
    pub tune: Vec<Tuned>,
    /// Values of untuned parameters (shapes such as GROUP, HEAD_DIM) that make a complete
    /// configuration with the tune defaults: `tessera compile <kernel>` builds it.
    pub example: Vec<Example>,
    pub constraint: Option<(LitStr, Expr)>,
}

pub fn parse(attr: TokenStream) -> syn::Result<Attr> {
    let mut out = Attr::default();
    if attr.is_empty() {
        return Ok(out);
    }
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("tune") {
            meta.parse_nested_meta(|m| {
                let name = m.path.get_ident().cloned().ok_or_else(|| {
                    m.error("expected a compile-time parameter name, e.g. `tune(BLOCK = [64, 128])`")
                })?;
                let list: Expr = m.value()?.parse()?;
                let Expr::Array(arr) = &list else {
                    return Err(syn::Error::new_spanned(
                        &list,
                        format!("the values of `{name}` must be a list of integer literals, e.g. `{name} = [64, 128]`"),
                    ));
                };
                if arr.elems.is_empty() {
                    return Err(syn::Error::new_spanned(
                        &list,
                        format!("`{name}` has an empty value list; give at least one value, e.g. `{name} = [64]`"),
                    ));
                }
                let mut values = Vec::new();
                for e in &arr.elems {
                    values.push(int_lit(e).ok_or_else(|| {
                        syn::Error::new_spanned(
                            e,
                            "tune values must be integer literals (or `true`/`false`); compute derived values in the kernel body",
                        )
                    })?);
                }
                if out.tune.iter().any(|t| t.name == name) {
                    return Err(syn::Error::new_spanned(&name, format!("`{name}` is tuned twice")));
                }
                out.tune.push(Tuned { name, values });
                Ok(())
            })
        } else if meta.path.is_ident("example") {
            meta.parse_nested_meta(|m| {
                let name =
                    m.path.get_ident().cloned().ok_or_else(|| {
                        m.error("expected a compile-time parameter name, e.g. `example(HEAD_DIM = 128)`")
                    })?;
                let e: Expr = m.value()?.parse()?;
                let value = int_lit(&e).ok_or_else(|| {
                    syn::Error::new_spanned(&e, format!("the example value of `{name}` must be an integer literal"))
                })?;
                if out.example.iter().any(|x| x.name == name) {
                    return Err(syn::Error::new_spanned(&name, format!("`{name}` has two example values")));
                }
                out.example.push(Example { name, value });
                Ok(())
            })
        } else if meta.path.is_ident("constraint") {
            let lit: LitStr = meta.value()?.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "the constraint must be a string literal, e.g. `constraint = \"BLOCK >= WARPS * 32\"`",
                )
            })?;
            let expr: Expr = lit.parse().map_err(|e| {
                syn::Error::new_spanned(&lit, format!("the constraint does not parse as a Rust expression: {e}"))
            })?;
            out.constraint = Some((lit, expr));
            Ok(())
        } else {
            Err(meta.error(
                "unknown `#[kernel]` argument; expected `tune(NAME = [..], ..)`, `example(NAME = value, ..)` or `constraint = \"..\"`",
            ))
        }
    });
    syn::parse::Parser::parse2(parser, attr)?;
    Ok(out)
}

fn int_lit(e: &Expr) -> Option<i64> {
    match e {
        Expr::Lit(l) => match &l.lit {
            syn::Lit::Int(i) => i.base10_parse().ok(),
            syn::Lit::Bool(b) => Some(b.value as i64),
            _ => None,
        },
        Expr::Unary(u) if matches!(u.op, syn::UnOp::Neg(_)) => int_lit(&u.expr).map(|v| -v),
        _ => None,
    }
}

/// Translates the constraint into a closure body over `__c: &KernelConfig` returning
/// `Option<bool>` (`None` when a parameter is missing). Arithmetic is on i64.
pub fn constraint(lit: &LitStr, e: &Expr, known: &[String]) -> syn::Result<TokenStream> {
    let body = cexpr(lit, e, known)?;
    Ok(quote! { (|| -> ::core::option::Option<bool> { ::core::option::Option::Some((#body) != 0) })() })
}

fn cerr(lit: &LitStr, msg: String) -> syn::Error {
    syn::Error::new_spanned(lit, msg)
}

/// A constraint sub-expression as an `i64` (bools as 0/1).
fn cexpr(lit: &LitStr, e: &Expr, known: &[String]) -> syn::Result<TokenStream> {
    Ok(match e {
        Expr::Paren(p) => cexpr(lit, &p.expr, known)?,
        Expr::Lit(l) => match &l.lit {
            syn::Lit::Int(i) => {
                let v: i64 = i.base10_parse()?;
                quote! { (#v as i64) }
            }
            syn::Lit::Bool(b) => {
                let v = b.value as i64;
                quote! { (#v as i64) }
            }
            _ => return Err(cerr(lit, "constraints use integer and bool literals only".into())),
        },
        Expr::Path(p) => {
            let Some(id) = p.path.get_ident() else {
                return Err(cerr(lit, "constraints may only name compile-time parameters".into()));
            };
            let name = id.to_string();
            if !known.contains(&name) {
                return Err(cerr(
                    lit,
                    format!(
                        "the constraint names `{name}`, which is not a compile-time parameter of this kernel (known: {})",
                        known.join(", ")
                    ),
                ));
            }
            quote! { __c.get(#name)? }
        }
        Expr::Unary(u) => {
            let x = cexpr(lit, &u.expr, known)?;
            match u.op {
                syn::UnOp::Neg(_) => quote! { (-(#x)) },
                syn::UnOp::Not(_) => quote! { (((#x) == 0) as i64) },
                _ => return Err(cerr(lit, "unsupported operator in the constraint".into())),
            }
        }
        Expr::Binary(b) => {
            use syn::BinOp::*;
            let (l, r) = (cexpr(lit, &b.left, known)?, cexpr(lit, &b.right, known)?);
            match b.op {
                Add(_) => quote! { ((#l).wrapping_add(#r)) },
                Sub(_) => quote! { ((#l).wrapping_sub(#r)) },
                Mul(_) => quote! { ((#l).wrapping_mul(#r)) },
                Div(_) => quote! { ((#l).checked_div(#r)?) },
                Rem(_) => quote! { ((#l).checked_rem(#r)?) },
                Lt(_) => quote! { (((#l) < (#r)) as i64) },
                Le(_) => quote! { (((#l) <= (#r)) as i64) },
                Gt(_) => quote! { (((#l) > (#r)) as i64) },
                Ge(_) => quote! { (((#l) >= (#r)) as i64) },
                Eq(_) => quote! { (((#l) == (#r)) as i64) },
                Ne(_) => quote! { (((#l) != (#r)) as i64) },
                And(_) => quote! { ((((#l) != 0) && ((#r) != 0)) as i64) },
                Or(_) => quote! { ((((#l) != 0) || ((#r) != 0)) as i64) },
                BitAnd(_) => quote! { ((#l) & (#r)) },
                BitOr(_) => quote! { ((#l) | (#r)) },
                _ => return Err(cerr(lit, "unsupported operator in the constraint".into())),
            }
        }
        _ => {
            return Err(cerr(
                lit,
                "constraints use compile-time parameter names, integer literals, arithmetic, comparisons, `&&`, `||` and `!`"
                    .into(),
            ))
        }
    })
}
