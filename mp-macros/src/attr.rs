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
