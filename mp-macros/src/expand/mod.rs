//! Token generation. Each entry point parses, validates, and on any error falls back to the
//! user's item plus the errors.

mod main;
mod run;
mod worker;

use proc_macro2::TokenStream;

use crate::{attr, fallback, valid};

pub(crate) fn worker(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = match attr::parse("mp::worker", args) {
        Ok(a) => a,
        Err(e) => return fallback::with_errors(item, e),
    };
    match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Fn(f)) => match valid::worker_fn(&f) {
            Ok(()) => worker::expand(&args, f),
            Err(e) => fallback::with_errors(item, e),
        },
        Ok(syn::Item::Impl(i)) => match valid::run_impl(&i) {
            Ok(()) => run::expand(&args, i),
            Err(e) => fallback::with_errors(item, e),
        },
        Ok(other) => fallback::with_errors(
            item,
            syn::Error::new_spanned(
                other,
                "`#[mp::worker]` goes on a function or on `impl mp::Run for YourType`",
            ),
        ),
        Err(e) => fallback::with_errors(item, e),
    }
}

pub(crate) fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = match attr::parse("mp::main", args) {
        Ok(a) => a,
        Err(e) => return fallback::with_errors(item, e),
    };
    match syn::parse2::<syn::ItemFn>(item.clone()) {
        Ok(f) => match valid::main_fn(&f) {
            Ok(()) => main::expand(&args, f),
            Err(e) => fallback::with_errors(item, e),
        },
        Err(e) => fallback::with_errors(item, e),
    }
}
