//! Translation of the kernel body into IR-recording code: [`Tr`] and its scopes here,
//! statements in `stmt.rs`, expressions in `expr.rs`, calls and methods in `call.rs`.

use std::collections::HashMap;

use proc_macro2::TokenStream;
use quote::{format_ident, quote, ToTokens};
use syn::{BinOp, Expr, Ident};

use crate::sig::DTYPES;

mod call;
mod expr;
mod stmt;

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
