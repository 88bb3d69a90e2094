//! Checks on the annotated items. Each collects every problem it finds into one error, so a
//! build reports them all at once.

use quote::ToTokens;
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

/// Why a worker function was refused.
pub(crate) enum Refused {
    /// Its shape: generic, `async`, `unsafe`, an ABI, a receiver, variadics, `impl Trait` (and
    /// perhaps borrows too). The function is emitted as it is, beside the errors.
    Shape(syn::Error),
    /// Only borrowed argument or result types: the rest is a worker the macro can still
    /// describe, with owned types in place of the borrows.
    Borrows(syn::Error),
}

/// A worker function must be plain: no generics, `async`, `unsafe`, ABI, receiver or variadics,
/// and it cannot borrow.
pub(crate) fn worker_fn(f: &syn::ItemFn) -> Result<(), Refused> {
    let mut acc = None;
    let mut shape = false;
    let sig = &f.sig;
    if let Some(a) = &sig.asyncness {
        shape = true;
        push(
            &mut acc,
            syn::Error::new(
                a.span(),
                "a worker cannot be `async`; make it a plain function and run an async runtime inside it if needed",
            ),
        );
    }
    if let Some(u) = &sig.unsafety {
        shape = true;
        push(
            &mut acc,
            syn::Error::new(
                u.span(),
                "a worker cannot be `unsafe`: it is called from another process with no one to uphold its contract",
            ),
        );
    }
    if let Some(abi) = &sig.abi {
        shape = true;
        push(
            &mut acc,
            syn::Error::new(
                abi.span(),
                "a worker cannot declare an ABI; remove `extern`",
            ),
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        shape = true;
        push(
            &mut acc,
            syn::Error::new(
                sig.generics.span(),
                "a worker cannot be generic: the child must know the concrete types to decode its arguments; write one worker per type",
            ),
        );
    }
    if let Some(v) = &sig.variadic {
        shape = true;
        push(
            &mut acc,
            syn::Error::new(v.span(), "a worker cannot be variadic"),
        );
    }
    for input in &sig.inputs {
        match input {
            syn::FnArg::Receiver(r) => {
                shape = true;
                push(
                    &mut acc,
                    syn::Error::new(
                        r.span(),
                        "a worker cannot take `self`; use a free function, or `impl mp::Run for YourType` for a method-style process body",
                    ),
                );
            }
            syn::FnArg::Typed(t) => {
                if let syn::Type::ImplTrait(_) = &*t.ty {
                    shape = true;
                    push(
                        &mut acc,
                        syn::Error::new(
                            t.ty.span(),
                            "a worker cannot take `impl Trait` arguments (that makes it generic); name a concrete type",
                        ),
                    );
                } else if let Some(r) = find_reference(&t.ty) {
                    push(
                        &mut acc,
                        syn::Error::new_spanned(
                            r,
                            format!(
                                "arguments are sent to another process, so a worker cannot borrow them: take {}",
                                owned_suggestion(r)
                            ),
                        ),
                    );
                }
            }
        }
    }
    if let syn::ReturnType::Type(_, ty) = &sig.output {
        if let syn::Type::ImplTrait(_) = &**ty {
            shape = true;
            push(
                &mut acc,
                syn::Error::new(
                    ty.span(),
                    "a worker cannot return `impl Trait`; name a concrete type",
                ),
            );
        } else if let Some(r) = find_reference(ty) {
            push(
                &mut acc,
                syn::Error::new_spanned(
                    r,
                    format!(
                        "a worker's result is sent back to another process, so it cannot be a borrow: return {}",
                        owned_suggestion(r)
                    ),
                ),
            );
        }
    }
    match acc {
        None => Ok(()),
        Some(e) if shape => Err(Refused::Shape(e)),
        Some(e) => Err(Refused::Borrows(e)),
    }
}

/// The first reference type in `ty` (itself, or inside a path's generic arguments, a tuple, an
/// array, a slice). A borrow cannot cross a process boundary: the value is decoded into memory
/// of the other process, which has nothing to borrow from.
fn find_reference(ty: &syn::Type) -> Option<&syn::TypeReference> {
    match ty {
        syn::Type::Reference(r) => Some(r),
        syn::Type::Paren(p) => find_reference(&p.elem),
        syn::Type::Group(g) => find_reference(&g.elem),
        syn::Type::Array(a) => find_reference(&a.elem),
        syn::Type::Slice(s) => find_reference(&s.elem),
        syn::Type::Tuple(t) => t.elems.iter().find_map(find_reference),
        syn::Type::Path(p) => p.path.segments.iter().find_map(|seg| match &seg.arguments {
            syn::PathArguments::AngleBracketed(a) => a.args.iter().find_map(|arg| match arg {
                syn::GenericArgument::Type(t) => find_reference(t),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    }
}

/// The owned type to use instead of a reference: `String` for `&str`, `Vec<T>` for `&[T]`,
/// `PathBuf` for `&Path`, `OsString` for `&OsStr`, `T` for `&T`; spanned on the reference.
fn owned_elem(r: &syn::TypeReference) -> syn::Type {
    let span = r.span();
    let elem = &*r.elem;
    match elem {
        syn::Type::Slice(s) => {
            let inner = without_borrows(&s.elem);
            syn::parse_quote_spanned!(span=> ::std::vec::Vec<#inner>)
        }
        syn::Type::Path(p) if p.path.is_ident("str") => {
            syn::parse_quote_spanned!(span=> ::std::string::String)
        }
        syn::Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Path") => {
            syn::parse_quote_spanned!(span=> ::std::path::PathBuf)
        }
        syn::Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "OsStr") => {
            syn::parse_quote_spanned!(span=> ::std::ffi::OsString)
        }
        other => without_borrows(other),
    }
}

/// `ty` with every reference [`find_reference`] looks at replaced by its owned counterpart:
/// the types a borrowing worker would have once fixed.
pub(crate) fn without_borrows(ty: &syn::Type) -> syn::Type {
    match ty {
        syn::Type::Reference(r) => owned_elem(r),
        syn::Type::Paren(p) => without_borrows(&p.elem),
        syn::Type::Group(g) => without_borrows(&g.elem),
        syn::Type::Array(a) => {
            let mut a = a.clone();
            *a.elem = without_borrows(&a.elem);
            syn::Type::Array(a)
        }
        syn::Type::Slice(s) => {
            let mut s = s.clone();
            *s.elem = without_borrows(&s.elem);
            syn::Type::Slice(s)
        }
        syn::Type::Tuple(t) => {
            let mut t = t.clone();
            for e in &mut t.elems {
                *e = without_borrows(e);
            }
            syn::Type::Tuple(t)
        }
        syn::Type::Path(p) => {
            let mut p = p.clone();
            for seg in &mut p.path.segments {
                if let syn::PathArguments::AngleBracketed(a) = &mut seg.arguments {
                    for arg in &mut a.args {
                        if let syn::GenericArgument::Type(t) = arg {
                            *t = without_borrows(t);
                        }
                    }
                }
            }
            syn::Type::Path(p)
        }
        other => other.clone(),
    }
}

/// "`String` instead of `&str`", for the error on a borrow (the types of [`owned_elem`], as a
/// user writes them).
fn owned_suggestion(r: &syn::TypeReference) -> String {
    let text = |t: &syn::Type| {
        t.to_token_stream()
            .to_string()
            .replace(" :: ", "::")
            .replace(" < ", "<")
            .replace("< ", "<")
            .replace(" >", ">")
            .replace(" ,", ",")
            .replace("& ", "&")
    };
    let owned = match &*r.elem {
        syn::Type::Slice(s) => format!("Vec<{}>", text(&s.elem)),
        syn::Type::Path(p) if p.path.is_ident("str") => "String".to_owned(),
        syn::Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Path") => {
            "std::path::PathBuf".to_owned()
        }
        syn::Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "OsStr") => {
            "std::ffi::OsString".to_owned()
        }
        other => text(other),
    };
    format!(
        "`{owned}` instead of `{}`",
        text(&syn::Type::Reference(r.clone()))
    )
}

/// `#[mp::worker]` on an impl accepts `impl mp::Run for Type` without generics.
pub(crate) fn run_impl(item: &syn::ItemImpl, args: &crate::attr::Args) -> syn::Result<()> {
    let mut acc = None;
    if args.fallible.is_some() {
        push(
            &mut acc,
            syn::Error::new(
                item.impl_token.span(),
                "`fallible` applies to worker functions; `Run::run` returns nothing",
            ),
        );
    }
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

/// `#[mp::managed]` goes on an inherent impl block of a concrete type, whose exposed (`pub`)
/// functions are plain constructors returning `Self` and methods taking `&self` or `&mut self`,
/// with owned argument and result types. Private functions are not looked at.
pub(crate) fn managed_impl(item: &syn::ItemImpl) -> syn::Result<()> {
    let mut acc = None;
    if let Some((_, path, _)) = &item.trait_ {
        push(
            &mut acc,
            syn::Error::new_spanned(
                path,
                "`#[mp::managed]` goes on an inherent `impl` block (`impl Counter { .. }`), not on a trait impl; put the methods to expose in one",
            ),
        );
    }
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        push(
            &mut acc,
            syn::Error::new_spanned(
                generics_tokens(&item.generics),
                "a managed type cannot be generic: the server must know the concrete type to build it; write a managed wrapper per type",
            ),
        );
    }
    match &*item.self_ty {
        syn::Type::Path(p)
            if p.qself.is_none() && p.path.segments.iter().all(|s| s.arguments.is_none()) => {}
        syn::Type::Path(p) if p.qself.is_none() => push(
            &mut acc,
            syn::Error::new_spanned(
                &item.self_ty,
                "a managed type cannot have generic arguments: the server builds it by name; write a managed wrapper around this instantiation",
            ),
        ),
        other => push(
            &mut acc,
            syn::Error::new_spanned(
                other,
                "`#[mp::managed]` expects the impl block of a struct or enum, named by its path",
            ),
        ),
    }
    let self_ty = &*item.self_ty;
    let mut exposed = Vec::new();
    for it in &item.items {
        let syn::ImplItem::Fn(f) = it else { continue };
        let options = match crate::attr::method_options(&f.attrs) {
            Ok(o) => o,
            Err(e) => {
                push(&mut acc, e);
                Default::default()
            }
        };
        if !crate::ast::is_exposed(f) {
            if let Some(span) = options.proxy {
                push(
                    &mut acc,
                    syn::Error::new(
                        span,
                        "`#[mp(proxy)]` is on a method the proxy does not expose; make it `pub`, or remove the attribute",
                    ),
                );
            }
            continue;
        }
        managed_fn(&mut acc, &f.sig, self_ty, options.proxy);
        exposed.push(&f.sig);
    }
    if exposed.is_empty() && item.trait_.is_none() {
        push(
            &mut acc,
            syn::Error::new_spanned(
                &item.self_ty,
                "this impl block exposes nothing: the proxy gets its `pub` methods and constructors; mark the ones to expose `pub`",
            ),
        );
    }
    // The proxy gets `name` and `name_timeout` for each method.
    for m in exposed.iter().filter(|s| s.receiver().is_some()) {
        let variant = format!("{}_timeout", m.ident);
        if let Some(clash) = exposed.iter().find(|s| s.ident == variant) {
            push(
                &mut acc,
                syn::Error::new(
                    clash.ident.span(),
                    format!(
                        "`{variant}` clashes with the proxy's timeout variant of `{}`; rename one of them",
                        m.ident
                    ),
                ),
            );
        }
    }
    finish(acc)
}

/// One exposed function of a managed impl.
fn managed_fn(
    acc: &mut Option<syn::Error>,
    sig: &syn::Signature,
    self_ty: &syn::Type,
    proxy: Option<proc_macro2::Span>,
) {
    if let Some(a) = &sig.asyncness {
        push(
            acc,
            syn::Error::new(
                a.span(),
                "a managed method cannot be `async`: the server runs it on the caller's connection thread; make it a plain method (or a private helper)",
            ),
        );
    }
    if let Some(u) = &sig.unsafety {
        push(
            acc,
            syn::Error::new(
                u.span(),
                "a managed method cannot be `unsafe`: it is called from other processes with no one to uphold its contract",
            ),
        );
    }
    if let Some(abi) = &sig.abi {
        push(
            acc,
            syn::Error::new(
                abi.span(),
                "a managed method cannot declare an ABI; remove `extern`",
            ),
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        push(
            acc,
            syn::Error::new_spanned(
                generics_tokens(&sig.generics),
                "a managed method cannot be generic: the server must know the concrete types to decode its arguments; write one method per type, or make it private",
            ),
        );
    }
    if let Some(v) = &sig.variadic {
        push(
            acc,
            syn::Error::new(v.span(), "a managed method cannot be variadic"),
        );
    }
    match sig.receiver() {
        None => {
            let returns_self = match &sig.output {
                syn::ReturnType::Type(_, ty) => is_self(ty, self_ty),
                syn::ReturnType::Default => false,
            };
            if !returns_self {
                let span = match &sig.output {
                    syn::ReturnType::Type(_, ty) => ty.to_token_stream(),
                    syn::ReturnType::Default => sig.ident.to_token_stream(),
                };
                push(
                    acc,
                    syn::Error::new_spanned(
                        span,
                        "a `pub` function without `self` is a constructor, and a constructor must return `Self`; return `Self`, or make the function private to keep it off the proxy",
                    ),
                );
            }
            if let Some(span) = proxy {
                push(
                    acc,
                    syn::Error::new(
                        span,
                        "`#[mp(proxy)]` goes on a method that returns another managed type, not on a constructor",
                    ),
                );
            }
        }
        Some(r) => {
            if r.reference.is_none() {
                let message = if r.colon_token.is_some() {
                    "a managed method takes `&self` or `&mut self`: the object stays in the server, behind its lock"
                } else {
                    "a managed method cannot take `self` by value: the object stays in the server; take `&self` or `&mut self`"
                };
                push(acc, syn::Error::new_spanned(r, message));
            } else if let Some((_, Some(lt))) = &r.reference {
                push(
                    acc,
                    syn::Error::new_spanned(
                        lt,
                        "a managed method takes `&self` or `&mut self` without a lifetime",
                    ),
                );
            }
            if proxy.is_some() && matches!(sig.output, syn::ReturnType::Default) {
                push(
                    acc,
                    syn::Error::new(
                        sig.ident.span(),
                        "a `#[mp(proxy)]` method must return the managed value whose proxy the caller receives",
                    ),
                );
            }
        }
    }
    for input in &sig.inputs {
        if let syn::FnArg::Typed(t) = input {
            owned_type(acc, &t.ty, "take");
        }
    }
    if let syn::ReturnType::Type(_, ty) = &sig.output {
        owned_type(acc, ty, "return");
    }
}

/// Whether `ty` is `Self` or the managed type spelled out.
fn is_self(ty: &syn::Type, self_ty: &syn::Type) -> bool {
    match ty {
        syn::Type::Path(p) if p.qself.is_none() && p.path.is_ident("Self") => true,
        _ => ty.to_token_stream().to_string() == self_ty.to_token_stream().to_string(),
    }
}

/// Arguments and results are copied between processes: no references, no `impl Trait`, no
/// lifetimes other than `'static`. (Whether they can be encoded is checked by rustc.)
fn owned_type(acc: &mut Option<syn::Error>, ty: &syn::Type, verb: &str) {
    match ty {
        syn::Type::Reference(r) => push(
            acc,
            syn::Error::new_spanned(
                r,
                format!(
                    "a managed method cannot {verb} references: values are copied between processes; use an owned type (`String` for `&str`, `Vec<T>` for `&[T]`)"
                ),
            ),
        ),
        syn::Type::ImplTrait(t) => push(
            acc,
            syn::Error::new_spanned(
                t,
                format!(
                    "a managed method cannot {verb} `impl Trait`: the other process must know the concrete type; name it"
                ),
            ),
        ),
        syn::Type::Array(a) => owned_type(acc, &a.elem, verb),
        syn::Type::Slice(s) => owned_type(acc, &s.elem, verb),
        syn::Type::Group(g) => owned_type(acc, &g.elem, verb),
        syn::Type::Paren(p) => owned_type(acc, &p.elem, verb),
        syn::Type::Ptr(p) => owned_type(acc, &p.elem, verb),
        syn::Type::Tuple(t) => t.elems.iter().for_each(|e| owned_type(acc, e, verb)),
        syn::Type::Path(p) => {
            if let Some(q) = &p.qself {
                owned_type(acc, &q.ty, verb);
            }
            for segment in &p.path.segments {
                let syn::PathArguments::AngleBracketed(args) = &segment.arguments else {
                    continue;
                };
                for arg in &args.args {
                    match arg {
                        syn::GenericArgument::Type(t) => owned_type(acc, t, verb),
                        syn::GenericArgument::Lifetime(l) if l.ident != "static" => push(
                            acc,
                            syn::Error::new_spanned(
                                l,
                                format!(
                                    "a managed method cannot {verb} borrowed types: values are copied between processes; use an owned type (`'static` or none)"
                                ),
                            ),
                        ),
                        _ => {}
                    }
                }
            }
        }
        _ => {}
    }
}

/// What to underline for generics: the parameters, or the `where` clause if there are none.
fn generics_tokens(g: &syn::Generics) -> proc_macro2::TokenStream {
    if g.params.is_empty() {
        g.where_clause.to_token_stream()
    } else {
        let (lt, params, gt) = (&g.lt_token, &g.params, &g.gt_token);
        quote::quote!(#lt #params #gt)
    }
}
