//! The macros' arguments.

use proc_macro2::TokenStream;
use syn::parse::Parser;

/// Arguments of `#[mp::main]` and `#[mp::worker]`.
pub(crate) struct Args {
    /// Path of the `mp` crate in generated code (`crate = "..."`), for re-exports.
    pub(crate) krate: syn::Path,
    /// `#[mp::worker(fallible)]` / `fallible = false`: whether a returned `Err` fails the
    /// worker, said explicitly (otherwise the return type's spelling decides).
    pub(crate) fallible: Option<bool>,
}

/// Parses `crate = "path"` (both macros) and `fallible [= bool]` (`mp::worker` only); anything
/// else is an error naming the accepted arguments.
pub(crate) fn parse(macro_name: &str, tokens: TokenStream) -> syn::Result<Args> {
    let worker = macro_name == "mp::worker";
    let mut krate: syn::Path = syn::parse_quote!(::mp);
    let mut fallible = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            let lit: syn::LitStr = meta.value()?.parse()?;
            krate = lit.parse()?;
            Ok(())
        } else if worker && meta.path.is_ident("fallible") {
            fallible = Some(if meta.input.peek(syn::Token![=]) {
                meta.value()?.parse::<syn::LitBool>()?.value
            } else {
                true
            });
            Ok(())
        } else {
            let accepted = if worker {
                "the accepted arguments are `crate = \"path::to::mp\"` and `fallible` \
                 (or `fallible = false`)"
            } else {
                "the accepted argument is `crate = \"path::to::mp\"`"
            };
            Err(unknown(&meta, macro_name, "argument", accepted))
        }
    });
    parser.parse2(tokens)?;
    Ok(Args { krate, fallible })
}

/// The error for an argument `what` does not accept: "unknown `what` kind `name`; accepted"
/// (a path that is not a plain name is called by its `kind`).
fn unknown(
    meta: &syn::meta::ParseNestedMeta<'_>,
    what: &str,
    kind: &str,
    accepted: &str,
) -> syn::Error {
    let name = meta
        .path
        .get_ident()
        .map_or_else(|| kind.to_owned(), |i| i.to_string());
    meta.error(format!("unknown `{what}` {kind} `{name}`; {accepted}"))
}

/// Arguments of `#[mp::managed]`.
pub(crate) struct ManagedArgs {
    /// Path of the `mp` crate in generated code (`crate = "..."`).
    pub(crate) krate: syn::Path,
    /// The proxy's name (`proxy_name = "..."`); default: the type's name followed by `Proxy`.
    pub(crate) proxy_name: Option<syn::Ident>,
}

/// Parses `crate = "path"` and `proxy_name = "Name"`; anything else is an error naming the
/// accepted arguments.
pub(crate) fn parse_managed(tokens: TokenStream) -> syn::Result<ManagedArgs> {
    let mut krate: syn::Path = syn::parse_quote!(::mp);
    let mut proxy_name = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            let lit: syn::LitStr = meta.value()?.parse()?;
            krate = lit.parse()?;
            Ok(())
        } else if meta.path.is_ident("proxy_name") {
            let lit: syn::LitStr = meta.value()?.parse()?;
            proxy_name = Some(lit.parse::<syn::Ident>().map_err(|_| {
                syn::Error::new(
                    lit.span(),
                    "`proxy_name` must be an identifier, like `proxy_name = \"CounterHandle\"`",
                )
            })?);
            Ok(())
        } else {
            Err(unknown(
                &meta,
                "mp::managed",
                "argument",
                "the accepted arguments are `crate = \"path::to::mp\"` and `proxy_name = \"NameOfTheProxy\"`",
            ))
        }
    });
    parser.parse2(tokens)?;
    Ok(ManagedArgs { krate, proxy_name })
}

/// Options of one method of a managed type (`#[mp(...)]` on it).
#[derive(Default)]
pub(crate) struct MethodOptions {
    /// `#[mp(proxy)]`: the method returns another managed object, which stays in the server.
    pub(crate) proxy: Option<proc_macro2::Span>,
}

/// Whether `attr` is one of ours (`#[mp(...)]`), which `#[mp::managed]` removes from the
/// user's impl block.
pub(crate) fn is_helper(attr: &syn::Attribute) -> bool {
    attr.path().is_ident("mp")
}

/// Reads the `#[mp(...)]` attributes among `attrs`.
pub(crate) fn method_options(attrs: &[syn::Attribute]) -> syn::Result<MethodOptions> {
    let mut options = MethodOptions::default();
    let mut errors: Option<syn::Error> = None;
    for attr in attrs.iter().filter(|a| is_helper(a)) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("proxy") {
                options.proxy = Some(syn::spanned::Spanned::span(&meta.path));
                Ok(())
            } else {
                Err(unknown(
                    &meta,
                    "#[mp(...)]",
                    "option",
                    "the accepted option is `#[mp(proxy)]`, on a method that returns another managed type",
                ))
            }
        });
        if let Err(e) = result {
            match &mut errors {
                Some(acc) => acc.combine(e),
                None => errors = Some(e),
            }
        }
    }
    errors.map_or(Ok(options), Err)
}
