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
