//! What a macro emits when the input is wrong: the errors, and the user's item unchanged, so
//! that the rest of the crate still type-checks and only the real mistake is reported.

use proc_macro2::TokenStream;
use quote::quote;

pub(crate) fn with_errors(item: TokenStream, error: syn::Error) -> TokenStream {
    let errors = error.to_compile_error();
    quote! {
        #errors
        #item
    }
}
