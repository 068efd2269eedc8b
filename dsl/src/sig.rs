//! The kernel signature: tensors, runtime scalars and const-generic compile-time values.

use syn::{FnArg, GenericArgument, GenericParam, Ident, ItemFn, Pat, PathArguments, ReturnType, Type};

pub const DTYPES: [&str; 7] = ["f32", "f16", "bf16", "i32", "u32", "i64", "bool"];
pub const SCALARS: [&str; 5] = ["f32", "i32", "u32", "i64", "bool"];

pub enum ParamKind {
    Tensor { dtype: String, rank: usize, writable: bool },
    Scalar { dtype: String },
}

pub struct Param {
    pub name: Ident,
    pub kind: ParamKind,
}

pub struct Sig {
    pub comptime: Vec<Ident>,
    /// Element-type parameters (`<KV>`): a dtype chosen by the config (see
    /// `tessera_dsl_support::elem_code`), usable as a tensor element type and in casts.
    pub elem_types: Vec<Ident>,
    pub params: Vec<Param>,
}

const PARAM_HELP: &str = "expected `Tensor<dtype, RANK>` (read-only), `&mut Tensor<dtype, RANK>` (written), \
     or a runtime scalar (`f32`, `i32`, `u32`, `i64`, `bool`); compile-time values are const generics \
     (`const BLOCK: usize`)";

pub fn parse(f: &ItemFn) -> syn::Result<Sig> {
    let s = &f.sig;
    if let Some(a) = &s.asyncness {
        return Err(syn::Error::new_spanned(a, "kernels cannot be `async`"));
    }
    if let Some(u) = &s.unsafety {
        return Err(syn::Error::new_spanned(u, "kernels cannot be `unsafe`; memory accesses are bounds-masked"));
    }
    if let ReturnType::Type(_, t) = &s.output {
        return Err(syn::Error::new_spanned(
            t,
            "kernels return nothing; write results into a `&mut Tensor` parameter with `.store(...)`",
        ));
    }
    if let Some(w) = &s.generics.where_clause {
        return Err(syn::Error::new_spanned(w, "kernels take no `where` clause"));
    }
    let mut comptime = Vec::new();
    let mut elem_types = Vec::new();
    for g in &s.generics.params {
        match g {
            GenericParam::Type(t) => {
                if !t.bounds.is_empty() || t.default.is_some() {
                    return Err(syn::Error::new_spanned(
                        t,
                        "an element-type parameter is a bare name (`<KV>`): its dtype comes from the config \
                         (0 = bf16, 1 = f16, 2 = f32)",
                    ));
                }
                if DTYPES.contains(&t.ident.to_string().as_str()) {
                    return Err(syn::Error::new_spanned(
                        &t.ident,
                        "an element-type parameter cannot be named like a dtype",
                    ));
                }
                elem_types.push(t.ident.clone());
            }
            GenericParam::Const(c) => {
                let ok = matches!(&c.ty, Type::Path(p) if p.path.get_ident().is_some_and(|i| {
                    ["usize", "isize", "i32", "u32", "i64", "u64", "bool"].contains(&i.to_string().as_str())
                }));
                if !ok {
                    return Err(syn::Error::new_spanned(
                        &c.ty,
                        "compile-time parameters are integers or bools: write `const NAME: usize` (or i32, i64, u32, bool)",
                    ));
                }
                comptime.push(c.ident.clone());
            }
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "kernels take const generics (`const BLOCK: usize`) and element-type parameters \
                     (`<KV>`, then `Tensor<KV, 2>`) as generic parameters",
                ))
            }
        }
    }
    let mut params = Vec::new();
    for a in &s.inputs {
        let FnArg::Typed(pt) = a else {
            return Err(syn::Error::new_spanned(a, "kernels are free functions; remove `self`"));
        };
        let Pat::Ident(pi) = &*pt.pat else {
            return Err(syn::Error::new_spanned(&pt.pat, "kernel parameters must be plain names"));
        };
        if pi.mutability.is_some() || pi.by_ref.is_some() {
            return Err(syn::Error::new_spanned(
                &pt.pat,
                "write the parameter as a plain name; a written tensor is `name: &mut Tensor<dtype, RANK>`",
            ));
        }
        let names: Vec<String> = elem_types.iter().map(|i| i.to_string()).collect();
        let kind = param_kind(&pt.ty, &names)?;
        params.push(Param { name: pi.ident.clone(), kind });
    }
    Ok(Sig { comptime, elem_types, params })
}

fn param_kind(ty: &Type, elem_types: &[String]) -> syn::Result<ParamKind> {
    match ty {
        Type::Reference(r) => {
            if r.mutability.is_none() {
                return Err(syn::Error::new_spanned(
                    ty,
                    "a read-only tensor is passed by value: write `Tensor<dtype, RANK>`; `&mut Tensor<..>` marks a written one",
                ));
            }
            match tensor(&r.elem, elem_types)? {
                Some((dtype, rank)) => Ok(ParamKind::Tensor { dtype, rank, writable: true }),
                None => Err(syn::Error::new_spanned(ty, format!("unsupported parameter type: {PARAM_HELP}"))),
            }
        }
        Type::Path(p) => {
            if let Some(id) = p.path.get_ident() {
                let n = id.to_string();
                if SCALARS.contains(&n.as_str()) {
                    return Ok(ParamKind::Scalar { dtype: n });
                }
                if DTYPES.contains(&n.as_str()) {
                    return Err(syn::Error::new_spanned(
                        ty,
                        format!("`{n}` scalars cannot be kernel arguments; pass an f32 and `.cast::<{n}>()` it"),
                    ));
                }
            }
            match tensor(ty, elem_types)? {
                Some((dtype, rank)) => Ok(ParamKind::Tensor { dtype, rank, writable: false }),
                None => Err(syn::Error::new_spanned(ty, format!("unsupported parameter type: {PARAM_HELP}"))),
            }
        }
        _ => Err(syn::Error::new_spanned(ty, format!("unsupported parameter type: {PARAM_HELP}"))),
    }
}

/// `Tensor<dtype, RANK>` → (dtype, rank); `None` when the type is not a `Tensor`.
fn tensor(ty: &Type, elem_types: &[String]) -> syn::Result<Option<(String, usize)>> {
    let Type::Path(p) = ty else { return Ok(None) };
    let Some(last) = p.path.segments.last() else { return Ok(None) };
    if last.ident != "Tensor" {
        return Ok(None);
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return Err(syn::Error::new_spanned(ty, "write the element type and rank: `Tensor<f32, 2>`"));
    };
    let a: Vec<&GenericArgument> = args.args.iter().collect();
    if a.len() != 2 {
        return Err(syn::Error::new_spanned(args, "`Tensor` takes an element type and a rank: `Tensor<f32, 2>`"));
    }
    let dtype = match a[0] {
        GenericArgument::Type(Type::Path(tp)) if tp.path.get_ident().is_some() => {
            tp.path.get_ident().unwrap().to_string()
        }
        other => return Err(syn::Error::new_spanned(other, "expected an element type such as `f32` or `bf16`")),
    };
    if !DTYPES.contains(&dtype.as_str()) && !elem_types.contains(&dtype) {
        return Err(syn::Error::new_spanned(
            a[0],
            format!("unsupported element type `{dtype}`: use one of bf16, f16, f32, i32, u32, i64"),
        ));
    }
    if dtype == "bool" {
        return Err(syn::Error::new_spanned(a[0], "bool tensors are not supported; store an i32 tensor"));
    }
    let rank = match a[1] {
        GenericArgument::Const(syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Int(i), .. })) => i.base10_parse()?,
        GenericArgument::Type(Type::Path(tp)) if tp.path.get_ident().is_some() => {
            return Err(syn::Error::new_spanned(
                a[1],
                "the tensor rank must be an integer literal, e.g. `Tensor<f32, 2>`; compile-time parameters cannot set a rank",
            ))
        }
        other => {
            return Err(syn::Error::new_spanned(other, "the tensor rank must be an integer literal, e.g. `Tensor<f32, 2>`"))
        }
    };
    if rank == 0 || rank > 8 {
        return Err(syn::Error::new_spanned(a[1], "tensor ranks go from 1 to 8; pass a rank-0 value as a scalar"));
    }
    Ok(Some((dtype, rank)))
}
