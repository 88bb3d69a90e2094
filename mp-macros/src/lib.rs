//! Procedural macros of [`mp`](https://docs.rs/mp). Use them through the `mp` crate:
//! `#[mp::main]` and `#[mp::worker]`. Each one only generates calls into `mp-runtime`; the logic
//! lives there.

use proc_macro::TokenStream;

mod attr;
mod expand;
mod fallback;
mod valid;

/// Marks a function as a worker that can run in another process, or an `impl mp::Run for T`
/// as a process body. See the `mp` crate's documentation.
#[proc_macro_attribute]
pub fn worker(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::worker(args.into(), item.into()).into()
}

/// Wraps `main` so that children re-enter their worker and `main`'s end joins the children.
/// See the `mp` crate's documentation.
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::main(args.into(), item.into()).into()
}
