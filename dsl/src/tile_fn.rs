//! `#[tile_fn]`: device functions for kernels. A tile function's body is tile code, as a
//! kernel body is; it is recorded into the calling kernel at each call (inlined), so a
//! kernel that calls it builds exactly the IR it would build with the body written out.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{FnArg, GenericParam, ItemFn, Pat, ReturnType, Stmt, Type};

use crate::body::{elem_type_var, Sym, Tr};

type R<T> = syn::Result<T>;

fn err<T>(node: impl quote::ToTokens, msg: impl std::fmt::Display) -> R<T> {
    Err(syn::Error::new_spanned(node, msg))
}

fn is_tile(t: &Type) -> bool {
    matches!(t, Type::Path(p) if p.qself.is_none() && p.path.is_ident("Tile"))
}

/// The number of tiles the function returns (`-> Tile`: 1; `-> (Tile, Tile)`: 2).
fn returned_tiles(name: &syn::Ident, r: &ReturnType) -> R<usize> {
    let hint = "a tile function returns `Tile` or a tuple of tiles, e.g. `-> (Tile, Tile, Tile)`";
    match r {
        ReturnType::Default => err(name, format!("{hint}; it has no other way to hand results back")),
        ReturnType::Type(_, t) => match &**t {
            t if is_tile(t) => Ok(1),
            Type::Tuple(tt) if tt.elems.len() >= 2 && tt.elems.iter().all(is_tile) => Ok(tt.elems.len()),
            other => err(other, hint),
        },
    }
}

pub fn expand(attr: TokenStream, item: TokenStream) -> R<TokenStream> {
    if !attr.is_empty() {
        return err(attr, "`#[tile_fn]` takes no arguments");
    }
    let f: ItemFn =
        syn::parse2(item).map_err(|e| syn::Error::new(e.span(), format!("`#[tile_fn]` applies to a function: {e}")))?;
    let s = &f.sig;
    if let Some(t) = s.constness.as_ref().map(|c| quote!(#c)).or(s.asyncness.as_ref().map(|a| quote!(#a))) {
        return err(t, "a tile function is a plain `fn`");
    }
    if let Some(u) = &s.unsafety {
        return err(u, "a tile function is a plain `fn`");
    }
    if let Some(w) = &s.generics.where_clause {
        return err(w, "`where` clauses are not supported: element types take no bounds");
    }
    let mut elems = Vec::new();
    for g in &s.generics.params {
        match g {
            GenericParam::Type(t) if t.bounds.is_empty() && t.default.is_none() => elems.push(t.ident.clone()),
            other => {
                return err(
                    other,
                    "a tile function's generic parameters are element types without bounds (`fn f<KV>(..)`, called \
                     as `f::<KV>(..)`); pass compile-time values as arguments",
                )
            }
        }
    }
    let mut params = Vec::new();
    for a in &s.inputs {
        let FnArg::Typed(pt) = a else {
            return err(a, "a tile function takes tiles, not `self`");
        };
        match (&*pt.pat, is_tile(&pt.ty)) {
            (Pat::Ident(pi), true) if pi.by_ref.is_none() && pi.mutability.is_none() && pi.subpat.is_none() => {
                params.push(pi.ident.clone())
            }
            (Pat::Ident(_), true) => return err(&pt.pat, "bind a plain name: `x: Tile` (tiles are values)"),
            _ => return err(&pt.ty, "every parameter of a tile function is a `Tile`: `x: Tile`"),
        }
    }
    let arity = returned_tiles(&s.ident, &s.output)?;
    let Some((Stmt::Expr(tail, None), body)) = f.block.stmts.split_last() else {
        return err(&f.block, "end the tile function with the value it returns (no `;`), e.g. `(m, l, acc)`");
    };
    let mut tr = Tr::new(elems.iter().map(|e| e.to_string()).collect());
    for p in &params {
        tr.define(p, Sym::Tile { mutable: false })?;
    }
    let (body, tail, n) = tr.body_with_tail(body, tail)?;
    if n != arity {
        return err(tail_expr(&f), format!("this returns {n} tile(s) but the signature promises {arity}"));
    }

    let rt = quote! { ::tessera_dsl_support::rt };
    let name = &s.ident;
    let vis = &f.vis;
    let docs = f.attrs.iter().filter(|a| a.path().is_ident("doc"));
    if let Some(a) = f.attrs.iter().find(|a| !a.path().is_ident("doc")) {
        return err(a, "only doc comments may be attached to a tile function");
    }
    let dts: Vec<_> = elems.iter().map(|e| elem_type_var(&e.to_string())).collect();
    let ret = if arity == 1 {
        quote! { #rt::Val }
    } else {
        let v = (0..arity).map(|_| quote! { #rt::Val });
        quote! { (#(#v),*) }
    };
    let note = format!(
        "Tile function (`#[tile_fn]`): records its body into the calling kernel. Call it from a `#[kernel]` as `{name}{}(...)`.",
        if elems.is_empty() {
            String::new()
        } else {
            format!("::<{}>", elems.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "))
        }
    );
    Ok(quote! {
        #(#docs)*
        #[doc = ""]
        #[doc = #note]
        #[allow(clippy::too_many_arguments, non_snake_case, unused_variables, unused_braces)]
        #vis fn #name(__cx: &mut #rt::Ctx<'_>, #(#dts: #rt::Dt,)* #(#params: #rt::Val),*) -> #ret {
            #body
            #tail
        }
    })
}

fn tail_expr(f: &ItemFn) -> &syn::Expr {
    match f.block.stmts.last() {
        Some(Stmt::Expr(e, None)) => e,
        _ => unreachable!("checked by expand"),
    }
}
