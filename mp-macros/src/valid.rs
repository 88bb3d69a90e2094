//! Checks on the annotated items. Each collects every problem it finds into one error, so a
//! build reports them all at once.

use syn::spanned::Spanned;

fn push(acc: &mut Option<syn::Error>, e: syn::Error) {
    match acc {
        Some(a) => a.combine(e),
        None => *acc = Some(e),
    }
}

fn finish(acc: Option<syn::Error>) -> syn::Result<()> {
    acc.map_or(Ok(()), Err)
}

/// A worker function must be plain: no generics, `async`, `unsafe`, ABI, receiver or variadics.
pub(crate) fn worker_fn(f: &syn::ItemFn) -> syn::Result<()> {
    let mut acc = None;
    let sig = &f.sig;
    if let Some(a) = &sig.asyncness {
        push(
            &mut acc,
            syn::Error::new(
                a.span(),
                "a worker cannot be `async`; make it a plain function and run an async runtime inside it if needed",
            ),
        );
    }
    if let Some(u) = &sig.unsafety {
        push(
            &mut acc,
            syn::Error::new(
                u.span(),
                "a worker cannot be `unsafe`: it is called from another process with no one to uphold its contract",
            ),
        );
    }
    if let Some(abi) = &sig.abi {
        push(
            &mut acc,
            syn::Error::new(
                abi.span(),
                "a worker cannot declare an ABI; remove `extern`",
            ),
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        push(
            &mut acc,
            syn::Error::new(
                sig.generics.span(),
                "a worker cannot be generic: the child must know the concrete types to decode its arguments; write one worker per type",
            ),
        );
    }
    if let Some(v) = &sig.variadic {
        push(
            &mut acc,
            syn::Error::new(v.span(), "a worker cannot be variadic"),
        );
    }
    for input in &sig.inputs {
        match input {
            syn::FnArg::Receiver(r) => push(
                &mut acc,
                syn::Error::new(
                    r.span(),
                    "a worker cannot take `self`; use a free function, or `impl mp::Run for YourType` for a method-style process body",
                ),
            ),
            syn::FnArg::Typed(t) => {
                if let syn::Type::ImplTrait(_) = &*t.ty {
                    push(
                        &mut acc,
                        syn::Error::new(
                            t.ty.span(),
                            "a worker cannot take `impl Trait` arguments (that makes it generic); name a concrete type",
                        ),
                    );
                }
            }
        }
    }
    if let syn::ReturnType::Type(_, ty) = &sig.output
        && let syn::Type::ImplTrait(_) = &**ty
    {
        push(
            &mut acc,
            syn::Error::new(
                ty.span(),
                "a worker cannot return `impl Trait`; name a concrete type",
            ),
        );
    }
    finish(acc)
}

/// `#[mp::worker]` on an impl accepts `impl mp::Run for Type` without generics.
pub(crate) fn run_impl(item: &syn::ItemImpl) -> syn::Result<()> {
    let mut acc = None;
    match &item.trait_ {
        Some((_, path, _)) if path.segments.last().is_some_and(|s| s.ident == "Run") => {}
        _ => push(
            &mut acc,
            syn::Error::new(
                item.self_ty.span(),
                "`#[mp::worker]` on an impl block expects `impl mp::Run for YourType`",
            ),
        ),
    }
    if !item.generics.params.is_empty() {
        push(
            &mut acc,
            syn::Error::new(
                item.generics.span(),
                "a process body cannot be generic: the child must know the concrete type to decode it",
            ),
        );
    }
    if !matches!(&*item.self_ty, syn::Type::Path(_)) {
        push(
            &mut acc,
            syn::Error::new(
                item.self_ty.span(),
                "`impl mp::Run` must name a struct or enum type",
            ),
        );
    }
    finish(acc)
}

/// `#[mp::main]` goes on `fn main()` without arguments, generics or `async`.
pub(crate) fn main_fn(f: &syn::ItemFn) -> syn::Result<()> {
    let mut acc = None;
    let sig = &f.sig;
    if sig.ident != "main" {
        push(
            &mut acc,
            syn::Error::new(
                sig.ident.span(),
                format!(
                    "`#[mp::main]` goes on the program's `fn main`, not on `{}`; mark functions that run in children with `#[mp::worker]`",
                    sig.ident
                ),
            ),
        );
    }
    if !sig.inputs.is_empty() {
        push(
            &mut acc,
            syn::Error::new(
                sig.inputs.span(),
                "`main` cannot take arguments; read them with `std::env::args()`",
            ),
        );
    }
    if let Some(a) = &sig.asyncness {
        push(
            &mut acc,
            syn::Error::new(
                a.span(),
                "`#[mp::main]` does not support `async fn main`; put `#[mp::main]` on a plain `main` that starts your async runtime",
            ),
        );
    }
    if !sig.generics.params.is_empty() {
        push(
            &mut acc,
            syn::Error::new(sig.generics.span(), "`main` cannot be generic"),
        );
    }
    finish(acc)
}
