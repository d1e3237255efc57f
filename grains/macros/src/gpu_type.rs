//! `#[derive(GpuType)]`: owned by the GPU ring-kernel work (issue 3). Placeholder.

use proc_macro2::TokenStream;

pub(crate) fn derive(input: TokenStream) -> TokenStream {
    let _ = crate::paths::grains_crate();
    syn::Error::new(proc_macro2::Span::call_site(), "GpuType is not implemented yet")
        .to_compile_error()
        .into_iter()
        .chain(std::iter::empty::<proc_macro2::TokenTree>())
        .chain(input.into_iter().take(0))
        .collect()
}
