//! `#[mp::worker] fn f(..) -> R`: the function becomes a constant of type
//! `mp::WorkerFn<fn(..) -> R, (..), Output>` that dereferences to the function (so `f(x)` still
//! calls it), and its entry is registered under `module_path::f@line:column`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::attr::Args;

pub(crate) fn expand(args: &Args, f: syn::ItemFn) -> TokenStream {
    let krate = &args.krate;
    let name = &f.sig.ident;
    let vis = &f.vis;
    let (docs, other_attrs): (Vec<_>, Vec<_>) =
        f.attrs.iter().partition(|a| a.path().is_ident("doc"));
    let cfgs: Vec<_> = other_attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .collect();

    let tys: Vec<&syn::Type> = f
        .sig
        .inputs
        .iter()
        .filter_map(|i| match i {
            syn::FnArg::Typed(t) => Some(&*t.ty),
            syn::FnArg::Receiver(_) => None,
        })
        .collect();
    let idents: Vec<_> = (0..tys.len())
        .map(|i| format_ident!("__mp_arg{}", i))
        .collect();

    let (ret, ret_span): (syn::Type, Span) = match &f.sig.output {
        syn::ReturnType::Default => (syn::parse_quote!(()), f.sig.ident.span()),
        syn::ReturnType::Type(_, ty) => ((**ty).clone(), ty.span()),
    };
    // Whether a returned `Err` fails the worker: as the attribute says, else as the return
    // type is spelled. A type the spelling calls plain is checked at compile time not to be a
    // `Result` under another name (an alias), which would silently turn `Err` into a value.
    let fallible = args.fallible.unwrap_or_else(|| is_result(&ret));
    let (output, call, codec) = if fallible {
        (
            quote_spanned!(ret_span=> <#ret as #krate::__private::Fallible>::Ok),
            quote!(call_fallible),
            quote_spanned! {ret_span=> , {
                #[allow(unused_imports)]
                use #krate::__private::{ErrorAsText as _, ErrorAsValue as _};
                (&&#krate::__private::Probe::<<#ret as #krate::__private::Fallible>::Err>::new())
                    .error_codec()
            }},
        )
    } else {
        (quote!(#ret), quote!(call_plain), TokenStream::new())
    };
    let plain_check = if args.fallible.is_none() && !fallible {
        quote_spanned! {ret_span=> {
            #[allow(unused_imports)]
            use #krate::__private::{ReturnsOther as _, ReturnsResult as _};
            #krate::__private::assert_plain_return(
                (&&#krate::__private::Probe::<#ret>::new()).returns(),
            );
        }}
    } else {
        TokenStream::new()
    };

    // Bound errors of the decode glue point at the arguments (or the return type), not at the
    // attribute.
    let entry_span = if tys.is_empty() {
        ret_span
    } else {
        f.sig.inputs.span()
    };
    let fn_name = format_ident!("__mp_worker_fn");
    let entry_call = quote_spanned! {entry_span=>
        #krate::__private::#call(input, |(#(#idents,)*): (#(#tys,)*)| #fn_name(#(#idents),*) #codec)
    };

    let arg_checks = tys.iter().map(|ty| {
        quote_spanned! {ty.span()=> #krate::__private::assert_arg::<#ty>(); }
    });
    let output_check = quote_spanned! {ret_span=> #krate::__private::assert_output::<#output>(); };

    let registered = registered_name(name);

    // The function itself gets a private name, so that `name` inside its body (recursion, or
    // starting itself in a child) refers to the worker constant.
    let mut inner = f.clone();
    inner.sig.ident = fn_name.clone();
    inner.vis = syn::Visibility::Inherited;
    inner.attrs = other_attrs.iter().map(|a| (*a).clone()).collect();

    quote! {
        #(#docs)*
        #(#cfgs)*
        #[allow(non_upper_case_globals, clippy::type_complexity)]
        #vis const #name: #krate::WorkerFn<fn(#(#tys),*) -> #ret, (#(#tys,)*), #output> = {
            #inner

            fn __mp_entry(input: #krate::__private::Input<'_>) -> #krate::__private::Outcome {
                #entry_call
            }

            #[allow(dead_code)]
            fn __mp_type_checks() {
                #(#arg_checks)*
                #output_check
                #plain_check
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

            #krate::WorkerFn::new(#registered, #fn_name as fn(#(#tys),*) -> #ret)
        };
    }
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
