//! A typed view of the impl block under `#[mp::managed]`: its type, the constructors and
//! methods it exposes (its `pub` functions, in declaration order), and the user's block without
//! our `#[mp(...)]` attributes. Built after `valid.rs` accepted the block.

use proc_macro2::{Group, TokenStream, TokenTree};
use quote::ToTokens;

use crate::attr;

/// A managed impl block.
pub(crate) struct Managed {
    /// The user's block, minus our helper attributes: emitted unchanged otherwise.
    pub(crate) item: syn::ItemImpl,
    /// The type, as written after `impl`.
    pub(crate) self_ty: syn::Type,
    /// Its name (the last segment of its path).
    pub(crate) ident: syn::Ident,
    /// Exposed functions without a receiver, returning `Self`, by constructor index.
    pub(crate) ctors: Vec<Exposed>,
    /// Exposed methods, by method index.
    pub(crate) methods: Vec<Method>,
}

/// An exposed function: what both constructors and methods have.
pub(crate) struct Exposed {
    pub(crate) vis: syn::Visibility,
    pub(crate) name: syn::Ident,
    /// The user's doc comments, copied to the proxy.
    pub(crate) docs: Vec<syn::Attribute>,
    /// `#[cfg]`s, copied to everything generated for the function.
    pub(crate) cfgs: Vec<syn::Attribute>,
    /// Arguments (after the receiver), with `Self` spelled as the type.
    pub(crate) args: Vec<Arg>,
}

/// An argument: the name the proxy gives it, and its type.
pub(crate) struct Arg {
    pub(crate) name: syn::Ident,
    pub(crate) ty: syn::Type,
}

/// An exposed method.
pub(crate) struct Method {
    pub(crate) f: Exposed,
    /// `&mut self`: runs under the object's exclusive lock (else a shared one).
    pub(crate) exclusive: bool,
    /// The return type, with `Self` spelled as the type (`()` if none).
    pub(crate) ret: syn::Type,
    /// `#[mp(proxy)]`: the result becomes a new object, returned as its proxy.
    pub(crate) returns_proxy: bool,
}

/// Whether a function is exposed: any `pub`, `pub(crate)`, `pub(super)`, `pub(in ..)`.
pub(crate) fn is_exposed(f: &syn::ImplItemFn) -> bool {
    !matches!(f.vis, syn::Visibility::Inherited)
}

/// The user's block without our `#[mp(...)]` attributes on its functions.
pub(crate) fn strip_helpers(item: &syn::ItemImpl) -> syn::ItemImpl {
    let mut item = item.clone();
    for it in &mut item.items {
        if let syn::ImplItem::Fn(f) = it {
            f.attrs.retain(|a| !attr::is_helper(a));
        }
    }
    item
}

/// The last identifier of the type's path (`Counter` for `crate::a::Counter`).
pub(crate) fn type_ident(ty: &syn::Type) -> Option<&syn::Ident> {
    match ty {
        syn::Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| &s.ident),
        _ => None,
    }
}

impl Managed {
    /// The view of an accepted block (`valid::managed_impl` passed).
    pub(crate) fn new(item: &syn::ItemImpl) -> Managed {
        let self_ty = (*item.self_ty).clone();
        let ident = type_ident(&self_ty)
            .cloned()
            .unwrap_or_else(|| syn::Ident::new("Managed", proc_macro2::Span::call_site()));
        let mut ctors = Vec::new();
        let mut methods = Vec::new();
        for it in &item.items {
            let syn::ImplItem::Fn(f) = it else { continue };
            if !is_exposed(f) {
                continue;
            }
            let options = attr::method_options(&f.attrs).unwrap_or_default();
            let exposed = Exposed {
                vis: f.vis.clone(),
                name: f.sig.ident.clone(),
                docs: f
                    .attrs
                    .iter()
                    .filter(|a| a.path().is_ident("doc"))
                    .cloned()
                    .collect(),
                cfgs: f
                    .attrs
                    .iter()
                    .filter(|a| a.path().is_ident("cfg"))
                    .cloned()
                    .collect(),
                args: args(&f.sig, &self_ty),
            };
            match f.sig.receiver() {
                None => ctors.push(exposed),
                Some(r) => methods.push(Method {
                    exclusive: r.mutability.is_some(),
                    ret: match &f.sig.output {
                        syn::ReturnType::Default => syn::parse_quote!(()),
                        syn::ReturnType::Type(_, ty) => with_self(ty, &self_ty),
                    },
                    returns_proxy: options.proxy.is_some(),
                    f: exposed,
                }),
            }
        }
        Managed {
            item: strip_helpers(item),
            self_ty,
            ident,
            ctors,
            methods,
        }
    }
}

/// The arguments after the receiver: a simple pattern keeps its name (`k`, `mut k` → `k`),
/// others get `argN`.
fn args(sig: &syn::Signature, self_ty: &syn::Type) -> Vec<Arg> {
    let typed: Vec<&syn::PatType> = sig
        .inputs
        .iter()
        .filter_map(|i| match i {
            syn::FnArg::Typed(t) => Some(t),
            syn::FnArg::Receiver(_) => None,
        })
        .collect();
    let simple = |t: &syn::PatType| match &*t.pat {
        syn::Pat::Ident(p) if p.subpat.is_none() => Some(p.ident.clone()),
        _ => None,
    };
    let taken: Vec<syn::Ident> = typed.iter().filter_map(|t| simple(t)).collect();
    typed
        .iter()
        .enumerate()
        .map(|(i, t)| Arg {
            name: simple(t).unwrap_or_else(|| {
                let mut name = quote::format_ident!("arg{}", i);
                while taken.contains(&name) {
                    name = quote::format_ident!("{}_", name);
                }
                name
            }),
            ty: with_self(&t.ty, self_ty),
        })
        .collect()
}

/// `base`, or `base_` (and so on) if an argument already has that name.
pub(crate) fn free_name(base: &str, args: &[Arg]) -> syn::Ident {
    let mut name = quote::format_ident!("{}", base);
    while args.iter().any(|a| a.name == name) {
        name = quote::format_ident!("{}_", name);
    }
    name
}

/// `ty` with every `Self` replaced by the managed type, for code outside its impl block (the
/// proxy, whose `Self` is the proxy).
pub(crate) fn with_self(ty: &syn::Type, self_ty: &syn::Type) -> syn::Type {
    let replaced = replace_self(ty.to_token_stream(), &self_ty.to_token_stream());
    syn::parse2(replaced).unwrap_or_else(|_| ty.clone())
}

fn replace_self(tokens: TokenStream, self_ty: &TokenStream) -> TokenStream {
    tokens
        .into_iter()
        .flat_map(|tt| -> Vec<TokenTree> {
            match tt {
                TokenTree::Ident(i) if i == "Self" => self_ty
                    .clone()
                    .into_iter()
                    .map(|mut t| {
                        t.set_span(i.span());
                        t
                    })
                    .collect(),
                TokenTree::Group(g) => {
                    let mut ng = Group::new(g.delimiter(), replace_self(g.stream(), self_ty));
                    ng.set_span(g.span());
                    vec![TokenTree::Group(ng)]
                }
                other => vec![other],
            }
        })
        .collect()
}
