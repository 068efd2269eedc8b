//! `#[kernel]`: Tessera tile programs written as Rust functions.
//!
//! The macro reads the function at compile time and generates code that records the tile
//! IR through `tessera_dsl_support::rt` for one set of compile-time values. Every construct
//! outside the DSL grammar is a `compile_error!` at the user's span saying what to write
//! instead. See `docs/dsl.md` for the language reference.

mod attr;
mod body;
mod expand;
mod sig;
mod tile_fn;

use proc_macro::TokenStream;

/// Turns a tile-program function into a kernel: a unit struct named after the function in
/// CamelCase with `build`, `tune_space`, `default_config`, `cpu` and `new`, plus a typed
/// launcher `<Name>Kernel` with `run_cpu` and `launch`.
///
/// Attribute arguments (all optional): `tune(NAME = [v, ...], ...)` and
/// `constraint = "<Rust boolean expression over compile-time parameters>"`.
#[proc_macro_attribute]
pub fn kernel(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand::expand(attr.into(), item.into()) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Turns a function of tiles into a device function kernels can call: its body is tile
/// code (the kernel grammar), its parameters are `Tile`s, its generic parameters element
/// types, and it ends with the tile or tuple of tiles it returns. A call records the body
/// into the calling kernel (inlined), so the kernel's IR is the same as with the body
/// written out.
///
/// ```ignore
/// #[tile_fn]
/// fn softplus(x: Tile) -> Tile {
///     log2(1.0 + exp2(x))
/// }
/// ```
#[proc_macro_attribute]
pub fn tile_fn(attr: TokenStream, item: TokenStream) -> TokenStream {
    match tile_fn::expand(attr.into(), item.into()) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}
