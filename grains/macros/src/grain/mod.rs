//! `#[grain]` on an interface trait: parse -> ir -> codegen.

mod codegen;
mod ir;
mod parse;

use proc_macro2::TokenStream;

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let result = syn::parse2::<syn::ItemTrait>(item)
        .and_then(|item| parse::interface(args, item))
        .map(|iface| codegen::expand(&iface, &crate::paths::grains_crate()));
    result.unwrap_or_else(syn::Error::into_compile_error)
}
