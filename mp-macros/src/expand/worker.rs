//! `#[mp::worker] fn f(..) -> R`: the function becomes a constant of type
//! `mp::WorkerFn<fn(..) -> R, (..), Output>` that dereferences to the function (so `f(x)` still
//! calls it), and its entry is registered under `module_path::f@line:column`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::attr::Args;

/// What both expansions need from the user's function.
struct Parts<'a> {
    krate: &'a syn::Path,
    name: &'a syn::Ident,
    vis: &'a syn::Visibility,
    docs: Vec<&'a syn::Attribute>,
    cfgs: Vec<&'a syn::Attribute>,
    /// The user's function under a private name, with its other attributes.
    inner: syn::ItemFn,
    fn_name: syn::Ident,
    tys: Vec<&'a syn::Type>,
    ret: syn::Type,
    ret_span: Span,
}

impl<'a> Parts<'a> {
    fn new(args: &'a Args, f: &'a syn::ItemFn) -> Parts<'a> {
        let (docs, other_attrs): (Vec<_>, Vec<_>) =
            f.attrs.iter().partition(|a| a.path().is_ident("doc"));
        let cfgs = other_attrs
            .iter()
            .copied()
            .filter(|a| a.path().is_ident("cfg"))
            .collect();
        let tys = f
            .sig
            .inputs
            .iter()
            .filter_map(|i| match i {
                syn::FnArg::Typed(t) => Some(&*t.ty),
                syn::FnArg::Receiver(_) => None,
            })
            .collect();
        let (ret, ret_span): (syn::Type, Span) = match &f.sig.output {
            syn::ReturnType::Default => (syn::parse_quote!(()), f.sig.ident.span()),
            syn::ReturnType::Type(_, ty) => ((**ty).clone(), ty.span()),
        };
        // The function itself gets a private name, so that its name inside its body (recursion,
        // or starting itself in a child) refers to the worker constant.
        let fn_name = format_ident!("__mp_worker_fn");
        let mut inner = f.clone();
        inner.sig.ident = fn_name.clone();
        inner.vis = syn::Visibility::Inherited;
        inner.attrs = other_attrs.into_iter().cloned().collect();
        Parts {
            krate: &args.krate,
            name: &f.sig.ident,
            vis: &f.vis,
            docs,
            cfgs,
            inner,
            fn_name,
            tys,
            ret,
            ret_span,
        }
    }
}

pub(crate) fn expand(args: &Args, f: syn::ItemFn) -> TokenStream {
    let p = Parts::new(args, &f);
    let Parts {
        krate,
        name,
        vis,
        docs,
        cfgs,
        inner,
        fn_name,
        tys,
        ret,
        ret_span,
    } = &p;
    let ret_span = *ret_span;
    let idents: Vec<_> = (0..tys.len())
        .map(|i| format_ident!("__mp_arg{}", i))
        .collect();

    // The user's types are written once each, in type aliases beside the constant; everything
    // else names the aliases. A misspelled type is then reported once: rustc merges identical
    // errors at one place, and an error in the constant's own type would read differently.
    let unique = unique_suffix(&f);
    let args_alias = format_ident!("__mp_{}_args_{}", name, unique);
    let ret_alias = format_ident!("__mp_{}_ret_{}", name, unique);
    let sig_alias = format_ident!("__mp_{}_fn_{}", name, unique);

    // Whether a returned `Err` fails the worker: as the attribute says, else as the return
    // type is spelled. A type the spelling calls plain is checked at compile time not to be a
    // `Result` under another name (an alias), which would silently turn `Err` into a value.
    let fallible = args.fallible.unwrap_or_else(|| is_result(ret));
    // A fallible worker's output names the return type itself, so that one that is not a
    // `Result` is reported at the type (an alias would move the error to the worker's name).
    let output = if fallible {
        quote_spanned!(ret_span=> <#ret as #krate::__private::Fallible>::Ok)
    } else {
        quote!(#ret_alias)
    };
    let closure = quote! { |(#(#idents,)*): #args_alias| #fn_name(#(#idents),*) };
    let entry_call = if fallible {
        let codec = quote_spanned! {ret_span=> {
            #[allow(unused_imports)]
            use #krate::__private::{ErrorAsText as _, ErrorAsValue as _};
            (&&#krate::__private::Probe::<<#ret as #krate::__private::Fallible>::Err>::new())
                .error_codec()
        }};
        quote! { .call_fallible(input, #closure, #codec) }
    } else {
        quote! { .call_plain(input, #closure) }
    };
    let plain_check = if args.fallible.is_none() && !fallible {
        quote_spanned! {ret_span=> {
            #[allow(unused_imports)]
            use #krate::__private::{ReturnsOther as _, ReturnsResult as _};
            #krate::__private::assert_plain_return(
                (&&#krate::__private::Probe::<#ret_alias>::new()).returns(),
            );
        }}
    } else {
        TokenStream::new()
    };

    // One check per type, spanned on it, each reporting at most one error (see the runtime's
    // `SendableChecked`). The result type's check applies to what travels: `T` of `Result<T, E>`.
    let arg_checks = tys.iter().map(|ty| sendable_check(krate, ty, quote!(#ty)));
    let output_check = sendable_check_at(krate, ret_span, &output);

    let registered = registered_name(name);

    quote! {
        #(#cfgs)*
        #[allow(non_camel_case_types)]
        type #args_alias = (#(#tys,)*);
        #(#cfgs)*
        #[allow(non_camel_case_types)]
        type #ret_alias = #ret;
        #(#cfgs)*
        #[allow(non_camel_case_types)]
        type #sig_alias = fn(#(#tys),*) -> #ret;

        #(#docs)*
        #(#cfgs)*
        #[allow(non_upper_case_globals, clippy::type_complexity)]
        #vis const #name: #krate::WorkerFn<#sig_alias, #args_alias, #output> = {
            // First, so that a type that cannot be sent is the first error reported.
            #[allow(dead_code)]
            fn __mp_type_checks() {
                #[allow(unused_imports)]
                use #krate::__private::{
                    SendableChecked as _, SendableFd as _, SendableHalf as _, SendableNot as _,
                };
                #(#arg_checks)*
                #output_check
                #plain_check
            }

            #inner

            // Through a probe, like the checks: a type that cannot be sent has already failed
            // its check, and the glue then compiles to a stub instead of failing again.
            fn __mp_entry(input: #krate::__private::Input<'_>) -> #krate::__private::Outcome {
                #[allow(unused_imports)]
                use #krate::__private::{EntryGlue as _, EntryUnsendable as _};
                (&&#krate::__private::Probe::<(#args_alias, #output)>::new())#entry_call
            }

            #krate::__private::inventory::submit! {
                #krate::__private::WorkerEntry::new(#registered, __mp_entry)
                .with_signature(::core::concat!(
                    ::core::stringify!(fn(#(#tys),*) -> #ret),
                    " @ ",
                    ::core::env!("CARGO_PKG_NAME"),
                    " ",
                    ::core::env!("CARGO_PKG_VERSION"),
                ))
            }

            #krate::WorkerFn::new(#registered, #fn_name as #sig_alias)
        };
    }
}

/// A worker whose signature borrows (`&str`, `&[u8]`, ...): the errors, and a constant of the
/// worker type it would have with owned types (`String`, `Vec<u8>`, ...), unregistered. The name
/// stays callable as a function and usable wherever a worker goes, so the borrow is the only
/// error reported; calls that pass the owned types already compile.
pub(crate) fn expand_borrowing(args: &Args, f: syn::ItemFn, error: syn::Error) -> TokenStream {
    let errors = error.to_compile_error();
    let p = Parts::new(args, &f);
    let Parts {
        krate,
        name,
        vis,
        docs,
        cfgs,
        inner,
        fn_name,
        tys,
        ret,
        ret_span,
    } = &p;
    let owned: Vec<syn::Type> = tys
        .iter()
        .map(|t| crate::valid::without_borrows(t))
        .collect();
    let owned_ret = crate::valid::without_borrows(ret);
    let fallible = args.fallible.unwrap_or_else(|| is_result(ret));
    let output = if fallible {
        quote_spanned!(*ret_span=> <#owned_ret as #krate::__private::Fallible>::Ok)
    } else {
        quote!(#owned_ret)
    };
    quote! {
        #errors

        #(#docs)*
        #(#cfgs)*
        #[allow(non_upper_case_globals, clippy::type_complexity)]
        #vis const #name: #krate::WorkerFn<fn(#(#tys),*) -> #ret, (#(#owned,)*), #output> = {
            #inner
            #krate::WorkerFn::new(::core::stringify!(#name), #fn_name as fn(#(#tys),*) -> #ret)
        };
    }
}

/// `(&&&&Probe::<T>::new()).assert_sendable();` spanned on the user's type.
fn sendable_check(krate: &syn::Path, ty: &syn::Type, tokens: TokenStream) -> TokenStream {
    sendable_check_at(krate, ty.span(), &tokens)
}

fn sendable_check_at(krate: &syn::Path, span: Span, ty: &TokenStream) -> TokenStream {
    quote_spanned! {span=>
        (&&&&#krate::__private::Probe::<#ty>::new()).assert_sendable();
    }
}

/// A suffix that tells apart the aliases of two workers of one name in one module (a mistake
/// rustc reports on the constants; the aliases must not add errors of their own): a hash of the
/// function's tokens, the same for every expansion in one build.
fn unique_suffix(f: &syn::ItemFn) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    quote::ToTokens::to_token_stream(f).to_string().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The name a worker is registered under: module path, name, and where the attribute stands
/// (`line:column`). The location tells apart workers of one name in different function bodies of
/// one module, which would otherwise share the registered name. Parent and child are the same
/// binary, so the location is the same in both.
pub(crate) fn registered_name(name: &dyn quote::ToTokens) -> TokenStream {
    quote! {
        ::core::concat!(
            ::core::module_path!(), "::", ::core::stringify!(#name),
            "@", ::core::line!(), ":", ::core::column!(),
        )
    }
}

/// Whether a return type is spelled as a `Result` (std's, `io::Result`, `mp::Result`, …): its
/// `Err` then becomes a failed process instead of a value.
fn is_result(ty: &syn::Type) -> bool {
    match ty {
        syn::Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
        _ => false,
    }
}
