//! Procedural macros of [`multiproc`](https://docs.rs/multiproc) (imported as `mp`). Use them
//! through that crate: `#[mp::main]`, `#[mp::worker]`, `#[derive(mp::Pod, mp::Zeroable)]`. Each one only generates
//! calls into `mp-runtime` (or trait impls); the logic lives there.

use proc_macro::TokenStream;

mod attr;
mod expand;
mod fallback;
mod pod;
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

/// Derives `mp::Pod` (bytemuck's `Pod`) for a `#[repr(C)]` or `#[repr(transparent)]` struct
/// whose fields are all `Pod` and which has no padding; it must also be `Copy` and derive
/// `mp::Zeroable`. Only `mp` needs to be a dependency. If `mp` is renamed or re-exported, say
/// where: `#[mp(crate = "path::to::mp")]`.
#[proc_macro_derive(Pod, attributes(mp))]
pub fn derive_pod(input: TokenStream) -> TokenStream {
    pod::derive(pod::Trait::Pod, input.into()).into()
}

/// Derives `mp::Zeroable` (bytemuck's `Zeroable`) for a struct whose fields are all
/// `Zeroable`. Only `mp` needs to be a dependency (see [`macro@Pod`] for a renamed crate).
#[proc_macro_derive(Zeroable, attributes(mp))]
pub fn derive_zeroable(input: TokenStream) -> TokenStream {
    pod::derive(pod::Trait::Zeroable, input.into()).into()
}
