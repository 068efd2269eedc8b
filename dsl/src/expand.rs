//! The generated items: the kernel struct, its builder, tune space and typed launcher.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::ItemFn;

use crate::attr;
use crate::body::{Sym, Tr};
use crate::sig::{self, ParamKind};

fn camel(s: &str) -> String {
    s.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next().map(|f| f.to_uppercase().chain(c).collect::<String>()).unwrap_or_default()
        })
        .collect()
}

pub fn expand(attr_ts: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let f: ItemFn =
        syn::parse2(item).map_err(|e| syn::Error::new(e.span(), format!("`#[kernel]` applies to a function: {e}")))?;
    let attr = attr::parse(attr_ts)?;
    let sig = sig::parse(&f)?;

    let fname = f.sig.ident.to_string();
    let vis = &f.vis;
    let doc: Vec<&syn::Attribute> = f.attrs.iter().filter(|a| a.path().is_ident("doc")).collect();
    if let Some(a) = f.attrs.iter().find(|a| !a.path().is_ident("doc")) {
        return Err(syn::Error::new_spanned(a, "only doc comments may be attached to a kernel function"));
    }
    let name = format_ident!("{}", camel(&fname));
    let kname = format_ident!("{}Kernel", camel(&fname));

    // Compile-time parameter names; WARPS (or num_warps) is reserved and defaults to 4.
    let mut comptime: Vec<String> = sig.comptime.iter().chain(&sig.elem_types).map(|i| i.to_string()).collect();
    let warps_name = if comptime.iter().any(|c| c == "num_warps") { "num_warps" } else { "WARPS" };
    if !comptime.iter().any(|c| c == warps_name) {
        comptime.push(warps_name.to_string());
    }
    for t in &attr.tune {
        if !comptime.contains(&t.name.to_string()) {
            return Err(syn::Error::new_spanned(
                &t.name,
                format!(
                    "`{}` is not a compile-time parameter of `{fname}`; declare it as `const {}: usize` or tune one of: {}",
                    t.name,
                    t.name,
                    comptime.join(", ")
                ),
            ));
        }
    }
    for x in &attr.example {
        let n = x.name.to_string();
        if !comptime.contains(&n) {
            return Err(syn::Error::new_spanned(
                &x.name,
                format!("`{n}` is not a compile-time parameter of `{fname}` (known: {})", comptime.join(", ")),
            ));
        }
        if attr.tune.iter().any(|t| t.name == x.name) {
            return Err(syn::Error::new_spanned(
                &x.name,
                format!("`{n}` is tuned; its example value is the first tuned value, so drop it from `example(..)`"),
            ));
        }
    }
    let examples: Vec<TokenStream> = attr
        .example
        .iter()
        .map(|x| {
            let (n, v) = (x.name.to_string(), x.value);
            quote! { (#n, #v) }
        })
        .collect();
    let constraint = match &attr.constraint {
        Some((lit, e)) => {
            let body = attr::constraint(lit, e, &comptime)?;
            let text = lit.value();
            quote! { ::core::option::Option::Some((#text, (|__c: &::tessera_dsl_support::KernelConfig| #body) as ::tessera_dsl_support::__ConstraintFn)) }
        }
        None => quote! { ::core::option::Option::None },
    };
    let tune_entries = attr.tune.iter().map(|t| {
        let n = t.name.to_string();
        let v = &t.values;
        quote! { (#n, ::std::vec![#(#v),*]) }
    });
    // Defaults: the first tuned value, else WARPS = 4.
    let mut defaults: Vec<TokenStream> = attr
        .tune
        .iter()
        .map(|t| {
            let n = t.name.to_string();
            let v = t.values[0];
            quote! { (#n, #v) }
        })
        .collect();
    if !attr.tune.iter().any(|t| t.name == warps_name) {
        defaults.push(quote! { (#warps_name, 4) });
    }

    // The builder body.
    let mut tr = Tr::new(sig.elem_types.iter().map(|i| i.to_string()).collect());
    // Element-type parameters resolve to dtypes before the body is recorded (bf16 when
    // the config does not name them).
    let elem_bindings: Vec<TokenStream> = sig
        .elem_types
        .iter()
        .map(|t| {
            let (n, v) = (t.to_string(), crate::body::elem_type_var(&t.to_string()));
            quote! { let #v = ::tessera_dsl_support::rt::elem_dtype(#fname, #n, __config.get(#n).unwrap_or(0))?; }
        })
        .collect();
    let elem_defaults: Vec<TokenStream> = sig
        .elem_types
        .iter()
        .map(|t| {
            let n = t.to_string();
            quote! { (#n, 0) }
        })
        .collect();
    let mut prologue = TokenStream::new();
    for c in &sig.comptime {
        tr.define(c, Sym::Comptime)?;
        let n = c.to_string();
        prologue.extend(quote! { let #c = ::tessera_dsl_support::rt::Val::int(__config.get(#n).unwrap_or(0)); });
    }
    for p in &sig.params {
        let id = &p.name;
        let n = id.to_string();
        match &p.kind {
            ParamKind::Tensor { dtype, rank, writable } => {
                tr.define(id, Sym::Tensor { rank: *rank, writable: *writable })?;
                let d = if sig.elem_types.iter().any(|t| t == dtype) {
                    let v = crate::body::elem_type_var(dtype);
                    quote! { #v }
                } else {
                    dtype_path(dtype)
                };
                prologue.extend(quote! { let #id = __cx.tensor(#n, #d, #rank, #writable); });
            }
            ParamKind::Scalar { dtype } => {
                tr.define(id, Sym::Tile { mutable: false })?;
                let d = dtype_path(dtype);
                prologue.extend(quote! { let #id = __cx.scalar(#n, #d); });
            }
        }
    }
    let body = tr.block(&f.block)?;

    // Launcher signatures.
    let mut gpu_params = Vec::new();
    let mut gpu_args = Vec::new();
    let mut cpu_params = Vec::new();
    let mut cpu_args = Vec::new();
    for p in &sig.params {
        let id = &p.name;
        match &p.kind {
            ParamKind::Tensor { writable, .. } => {
                gpu_params.push(quote! { #id: &::tessera_dsl_support::__runtime::DeviceTensor });
                gpu_args.push(quote! { ::tessera_dsl_support::__runtime::LaunchArg::Tensor(#id) });
                if *writable {
                    cpu_params.push(quote! { #id: &mut ::tessera_dsl_support::__codegen::host::HostTensor });
                    cpu_args.push(quote! { ::tessera_dsl_support::rt::arg_out(#id) });
                } else {
                    cpu_params.push(quote! { #id: &::tessera_dsl_support::__codegen::host::HostTensor });
                    cpu_args.push(quote! { ::tessera_dsl_support::rt::arg_in(#id) });
                }
            }
            ParamKind::Scalar { dtype } => {
                let t = format_ident!("{dtype}");
                gpu_params.push(quote! { #id: #t });
                gpu_args.push(quote! { ::tessera_dsl_support::__runtime::LaunchArg::Scalar(::tessera_dsl_support::rt::IntoScalar::scalar(#id)) });
                cpu_params.push(quote! { #id: #t });
                cpu_args.push(quote! { ::tessera_dsl_support::__codegen::interp::Arg::Scalar(::tessera_dsl_support::rt::IntoScalar::scalar(#id)) });
            }
        }
    }
    let comptime_names = &comptime;
    let summary = first_doc_line(&doc);
    let struct_doc = format!("The `{fname}` kernel (generated by `#[kernel]`): build it with [`{name}::build`], launch it through [`{name}::new`] / [`{name}::cpu`].");
    let kdoc = format!("A built `{fname}` kernel with typed launchers.");

    Ok(quote! {
        #(#doc)*
        #[doc = #struct_doc]
        #[derive(Clone, Copy, Debug, Default)]
        #vis struct #name;

        #[allow(dead_code)]
        impl #name {
            /// The kernel's name.
            pub const NAME: &'static str = #fname;
            /// Every compile-time parameter, including the warp count.
            pub const COMPTIME_PARAMS: &'static [&'static str] = &[#(#comptime_names),*];

            /// A uniform descriptor of this kernel, for registries (`tessera compile`).
            pub const ENTRY: ::tessera_dsl_support::KernelEntry = ::tessera_dsl_support::KernelEntry {
                name: #fname,
                summary: #summary,
                comptime_params: Self::COMPTIME_PARAMS,
                build: Self::build,
                tune_space: Self::tune_space,
                default_config: Self::default_config,
                example_config: Self::example_config,
            };

            /// The tune space declared in `#[kernel(tune(..), constraint = ..)]`.
            pub fn tune_space() -> ::tessera_dsl_support::TuneSpace {
                ::tessera_dsl_support::TuneSpace::new(#fname, ::std::vec![#(#tune_entries),*], #constraint)
            }

            /// The first value of every tuned parameter (and WARPS = 4 unless tuned).
            pub fn default_config() -> ::tessera_dsl_support::KernelConfig {
                ::tessera_dsl_support::KernelConfig::from_pairs(&[#(#defaults),*])
            }

            /// [`Self::default_config`] plus the `example(..)` values of the untuned
            /// parameters: a complete configuration when the kernel declares them all.
            pub fn example_config() -> ::tessera_dsl_support::KernelConfig {
                let __examples: &[(&str, i64)] = &[#(#examples),*];
                let mut __c = Self::default_config();
                for &(__n, __v) in __examples {
                    __c = __c.with(__n, __v);
                }
                __c
            }

            /// Builds the tile IR for `config` (every compile-time parameter needs a value;
            /// WARPS defaults to 4) and verifies it.
            #[allow(non_snake_case, unused_variables, unused_braces, clippy::all)]
            pub fn build(config: &::tessera_dsl_support::KernelConfig) -> ::core::result::Result<::tessera_dsl_support::__codegen::ir::Kernel, ::tessera_dsl_support::BuildError> {
                let __config = ::tessera_dsl_support::rt::resolve(#fname, config, Self::COMPTIME_PARAMS, &[(#warps_name, 4) #(, #elem_defaults)*])?;
                #(#elem_bindings)*
                ::tessera_dsl_support::rt::build(#fname, &__config, |__cx: &mut ::tessera_dsl_support::rt::Ctx<'_>| {
                    #prologue
                    #body
                })
            }

            /// Builds the kernel for the CPU interpreter only (`launch` then fails).
            pub fn cpu(config: &::tessera_dsl_support::KernelConfig) -> ::core::result::Result<#kname, ::tessera_dsl_support::DslError> {
                Ok(#kname { kernel: Self::build(config)?, config: config.clone(), loaded: None })
            }

            /// Builds, compiles (NVRTC, through the runtime's kernel cache) and loads the kernel.
            pub fn new(rt: &::tessera_dsl_support::__runtime::Runtime, config: &::tessera_dsl_support::KernelConfig) -> ::core::result::Result<#kname, ::tessera_dsl_support::DslError> {
                let kernel = Self::build(config)?;
                let loaded = ::tessera_dsl_support::rt::load(rt, &kernel)?;
                Ok(#kname { kernel, config: config.clone(), loaded: Some(loaded) })
            }
        }

        #[doc = #kdoc]
        #vis struct #kname {
            /// The built IR.
            pub kernel: ::tessera_dsl_support::__codegen::ir::Kernel,
            /// The config it was built with.
            pub config: ::tessera_dsl_support::KernelConfig,
            loaded: ::core::option::Option<::tessera_dsl_support::__runtime::LoadedKernel>,
        }

        #[allow(dead_code, clippy::too_many_arguments)]
        impl #kname {
            /// Launches on the GPU (asynchronously on `stream`); arguments in parameter order.
            /// Dtype, rank and writability mismatches come back as runtime errors.
            pub fn launch(&self, stream: &::tessera_dsl_support::__runtime::CudaStream, grid: [u32; 3], #(#gpu_params),*) -> ::core::result::Result<(), ::tessera_dsl_support::DslError> {
                ::tessera_dsl_support::rt::launch(&self.kernel, self.loaded.as_ref(), stream, grid, &[#(#gpu_args),*])
            }

            /// Runs on the CPU interpreter with the same arguments as [`Self::launch`].
            pub fn run_cpu(&self, grid: [u32; 3], #(#cpu_params),*) -> ::core::result::Result<(), ::tessera_dsl_support::DslError> {
                ::tessera_dsl_support::rt::run_cpu(&self.kernel, grid, &mut [#(#cpu_args),*])
            }
        }
    })
}

fn dtype_path(d: &str) -> TokenStream {
    let v = format_ident!(
        "{}",
        match d {
            "f32" => "F32",
            "f16" => "F16",
            "bf16" => "BF16",
            "i32" => "I32",
            "u32" => "U32",
            "i64" => "I64",
            _ => "Bool",
        }
    );
    quote! { ::tessera_dsl_support::rt::Dt::#v }
}

/// The kernel function's one-line summary for `tessera kernels`: the first sentence of its
/// doc comment's first paragraph (lines joined), or "" when it has none.
fn first_doc_line(doc: &[&syn::Attribute]) -> String {
    let lines: Vec<String> = doc
        .iter()
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Some(s.value().trim().to_string()),
                _ => None,
            },
            _ => None,
        })
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    let paragraph = lines.join(" ");
    match paragraph.find(". ") {
        Some(end) => paragraph[..=end].to_string(),
        None => paragraph,
    }
}
