//! Token generation. Each entry point parses, validates, and on any error falls back to the
//! user's item plus the errors.

mod main;
mod managed;
mod run;
mod worker;

use proc_macro2::TokenStream;

use quote::ToTokens;

use crate::{ast, attr, fallback, valid};

pub(crate) fn worker(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = match attr::parse("mp::worker", args) {
        Ok(a) => a,
        Err(e) => return fallback::with_errors(item, e),
    };
    match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Fn(f)) => match valid::worker_fn(&f) {
            Ok(()) => worker::expand(&args, f),
            Err(valid::Refused::Borrows(e)) => worker::expand_borrowing(&args, f, e),
            Err(valid::Refused::Shape(e)) => fallback::with_errors(item, e),
        },
        Ok(syn::Item::Impl(i)) => match valid::run_impl(&i, &args) {
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

pub(crate) fn managed(args: TokenStream, item: TokenStream) -> TokenStream {
    let imp = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Impl(i)) => i,
        Ok(other) => {
            return fallback::with_errors(
                item,
                syn::Error::new_spanned(
                    other,
                    "`#[mp::managed]` goes on an `impl` block of the type to manage (`impl Counter { .. }`)",
                ),
            );
        }
        Err(e) => return fallback::with_errors(item, e),
    };
    // On error, the block is still emitted, without our `#[mp(...)]` attributes, which mean
    // nothing to rustc.
    let clean = ast::strip_helpers(&imp).into_token_stream();
    let args = attr::parse_managed(args);
    let checked = valid::managed_impl(&imp);
    match (args, checked) {
        (Ok(args), Ok(())) => managed::expand(&args, &ast::Managed::new(&imp)),
        (Err(e), Ok(())) | (Ok(_), Err(e)) => fallback::with_errors(clean, e),
        (Err(mut e), Err(more)) => {
            e.combine(more);
            fallback::with_errors(clean, e)
        }
    }
}
