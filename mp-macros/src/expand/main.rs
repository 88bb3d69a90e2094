//! `#[mp::main]`: the body runs inside `mp::__private::main`, which enters child mode when this
//! process is an `mp` child and joins children when `main` ends.

use proc_macro2::TokenStream;
use quote::quote;

use crate::attr::Args;

pub(crate) fn expand(args: &Args, f: syn::ItemFn) -> TokenStream {
    let krate = &args.krate;
    let syn::ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = f;
    quote! {
        #(#attrs)*
        #vis #sig {
            #krate::__private::main(move || #block)
        }
    }
}
