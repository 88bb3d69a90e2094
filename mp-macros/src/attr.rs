//! The macros' arguments.

use proc_macro2::TokenStream;
use syn::parse::Parser;

/// Arguments shared by `#[mp::main]` and `#[mp::worker]`.
pub(crate) struct Args {
    /// Path of the `mp` crate in generated code (`crate = "..."`), for re-exports.
    pub(crate) krate: syn::Path,
}

/// Parses `crate = "path"`; anything else is an error naming the accepted arguments.
pub(crate) fn parse(macro_name: &str, tokens: TokenStream) -> syn::Result<Args> {
    let mut krate: syn::Path = syn::parse_quote!(::mp);
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            let lit: syn::LitStr = meta.value()?.parse()?;
            krate = lit.parse()?;
            Ok(())
        } else {
            let name = meta
                .path
                .get_ident()
                .map(|i| i.to_string())
                .unwrap_or_else(|| "argument".into());
            Err(meta.error(format!(
                "unknown `{macro_name}` argument `{name}`; the accepted argument is `crate = \"path::to::mp\"`"
            )))
        }
    });
    parser.parse2(tokens)?;
    Ok(Args { krate })
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
            let name = meta
                .path
                .get_ident()
                .map(|i| i.to_string())
                .unwrap_or_else(|| "argument".into());
            Err(meta.error(format!(
                "unknown `mp::managed` argument `{name}`; the accepted arguments are `crate = \"path::to::mp\"` and `proxy_name = \"NameOfTheProxy\"`"
            )))
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
                let name = meta
                    .path
                    .get_ident()
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "option".into());
                Err(meta.error(format!(
                    "unknown `#[mp(...)]` option `{name}`; the accepted option is `#[mp(proxy)]`, on a method that returns another managed type"
                )))
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
