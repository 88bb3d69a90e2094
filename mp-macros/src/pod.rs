//! `#[derive(mp::Pod)]` and `#[derive(mp::Zeroable)]`: bytemuck's traits, implemented through
//! `mp`'s own path, so that a crate whose only dependency is `mp` can derive them (bytemuck's
//! derives name `::bytemuck`). The checks are bytemuck's, for structs:
//!
//! - `Zeroable`: every field is `Zeroable`.
//! - `Pod`: `#[repr(C)]` or `#[repr(transparent)]`; every field is `Pod`; no padding (the
//!   size is the sum of the fields' sizes); generic parameters only with `repr(transparent)`,
//!   where padding cannot arise (for others the size check cannot be written). `Copy` and
//!   `'static` are the trait's supertraits, so the compiler checks them.
//!
//! Generic parameters get a `T: Trait` bound on the impl. Enums and unions are refused; derive
//! bytemuck's own macros for them.

use proc_macro2::TokenStream;
use quote::quote;
use syn::spanned::Spanned;

/// Which trait to derive.
#[derive(Clone, Copy)]
pub(crate) enum Trait {
    Pod,
    Zeroable,
}

impl Trait {
    fn name(self) -> &'static str {
        match self {
            Trait::Pod => "Pod",
            Trait::Zeroable => "Zeroable",
        }
    }
}

pub(crate) fn derive(which: Trait, input: TokenStream) -> TokenStream {
    match syn::parse2::<syn::DeriveInput>(input).and_then(|i| expand(which, &i)) {
        Ok(tokens) => tokens,
        Err(e) => e.to_compile_error(),
    }
}

fn expand(which: Trait, input: &syn::DeriveInput) -> syn::Result<TokenStream> {
    let krate = crate_path(input)?;
    let name = which.name();
    let trait_ident = syn::Ident::new(name, proc_macro2::Span::call_site());
    let trait_path: syn::Path = syn::parse_quote!(#krate::#trait_ident);
    let fields = match &input.data {
        syn::Data::Struct(s) => &s.fields,
        syn::Data::Enum(e) => {
            return Err(syn::Error::new(
                e.enum_token.span(),
                format!(
                    "`mp::{name}` derives structs; for an enum, derive bytemuck's `{name}` (with \
                     `bytemuck` as a dependency)"
                ),
            ));
        }
        syn::Data::Union(u) => {
            return Err(syn::Error::new(
                u.union_token.span(),
                format!(
                    "`mp::{name}` derives structs; for a union, derive bytemuck's `{name}` (with \
                     `bytemuck` as a dependency)"
                ),
            ));
        }
    };
    let ident = &input.ident;
    let field_types: Vec<&syn::Type> = fields.iter().map(|f| &f.ty).collect();
    let has_type_params = input.generics.type_params().next().is_some();

    let mut padding_check = TokenStream::new();
    if let Trait::Pod = which {
        let repr = Repr::of(input)?;
        if !repr.c && !repr.transparent {
            return Err(syn::Error::new_spanned(
                ident,
                "`mp::Pod` needs a defined layout: add `#[repr(C)]` (or `#[repr(transparent)]`)",
            ));
        }
        if !repr.transparent && !input.generics.params.is_empty() {
            return Err(syn::Error::new_spanned(
                &input.generics,
                "`mp::Pod` cannot check a generic `#[repr(C)]` struct for padding; make it \
                 non-generic, or `#[repr(transparent)]`",
            ));
        }
        if !repr.transparent {
            let message = format!("derive(mp::Pod) was applied to `{ident}`, which has padding");
            padding_check = quote! {
                ::core::assert!(
                    ::core::mem::size_of::<#ident>()
                        == 0 #(+ ::core::mem::size_of::<#field_types>())*,
                    #message,
                );
            };
        }
    }

    // The impl's generics: every type parameter bound by the trait, as bytemuck does.
    let mut generics = input.generics.clone();
    if has_type_params {
        let bounds: Vec<syn::WherePredicate> = generics
            .type_params()
            .map(|p| {
                let p = &p.ident;
                syn::parse_quote!(#p: #trait_path)
            })
            .collect();
        generics.make_where_clause().predicates.extend(bounds);
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();

    Ok(quote! {
        const _: () = {
            #[allow(dead_code)]
            fn __mp_assert_fields #impl_generics () #where_clause {
                fn __mp_is<__T: #trait_path>() {}
                #( __mp_is::<#field_types>(); )*
            }
            #padding_check
        };
        // SAFETY: checked above, as bytemuck's derive does: the fields all implement the trait
        // and, for `Pod`, the layout is defined and has no padding.
        unsafe impl #impl_generics #trait_path for #ident #ty_generics #where_clause {}
    })
}

/// The path of the `mp` crate: `::mp`, or `#[mp(crate = "path::to::mp")]`.
fn crate_path(input: &syn::DeriveInput) -> syn::Result<syn::Path> {
    let mut krate: syn::Path = syn::parse_quote!(::mp);
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("mp")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                let lit: syn::LitStr = meta.value()?.parse()?;
                krate = lit.parse()?;
                Ok(())
            } else {
                Err(meta.error(
                    "unknown `mp` attribute argument; the accepted argument is \
                     `crate = \"path::to::mp\"`",
                ))
            }
        })?;
    }
    Ok(krate)
}

/// What the `#[repr]` attributes say.
#[derive(Default)]
struct Repr {
    c: bool,
    transparent: bool,
}

impl Repr {
    fn of(input: &syn::DeriveInput) -> syn::Result<Repr> {
        let mut repr = Repr::default();
        for attr in input.attrs.iter().filter(|a| a.path().is_ident("repr")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("C") {
                    repr.c = true;
                } else if meta.path.is_ident("transparent") {
                    repr.transparent = true;
                } else if meta.input.peek(syn::token::Paren) {
                    // `packed(N)`, `align(N)`: the padding check covers what they change.
                    let content;
                    syn::parenthesized!(content in meta.input);
                    content.parse::<TokenStream>()?;
                }
                Ok(())
            })?;
        }
        Ok(repr)
    }
}
