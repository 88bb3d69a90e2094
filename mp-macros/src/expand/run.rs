//! `#[mp::worker] impl mp::Run for T`: registers `T`'s `run` as a process body named
//! `module_path::T@line:column` and implements `RegisteredRun` so that `Process::from_run(value)` accepts it.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::attr::Args;

pub(crate) fn expand(args: &Args, item: syn::ItemImpl) -> TokenStream {
    let krate = &args.krate;
    let ty = &item.self_ty;
    let registered = super::worker::registered_name(ty);
    let check = quote_spanned! {ty.span()=> #krate::__private::assert_arg::<#ty>(); };
    quote! {
        #item

        const _: () = {
            fn __mp_entry(input: #krate::__private::Input<'_>) -> #krate::__private::Outcome {
                #krate::__private::call_plain(input, |(value,): (#ty,)| <#ty as #krate::Run>::run(value))
            }

            #[allow(dead_code)]
            fn __mp_type_checks() {
                #check
            }

            #krate::__private::inventory::submit! {
                #krate::__private::WorkerEntry::new(#registered, __mp_entry)
                .with_signature(::core::concat!(
                    "run(",
                    ::core::stringify!(#ty),
                    ") @ ",
                    ::core::env!("CARGO_PKG_NAME"),
                    " ",
                    ::core::env!("CARGO_PKG_VERSION"),
                ))
            }

            impl #krate::RegisteredRun for #ty {
                const NAME: &'static str = #registered;
            }
        };
    }
}
