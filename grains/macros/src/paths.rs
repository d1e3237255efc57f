//! Where generated code finds the `silica-grains` crate from the user's crate.
//!
//! Users usually depend on the facade `silica` (which re-exports `silica_grains` as
//! `silica::grains`); crates inside this workspace depend on `silica-grains` directly.

use proc_macro2::TokenStream;
use quote::quote;

/// The path of the `silica-grains` crate as seen from the crate being compiled.
pub(crate) fn grains_crate() -> TokenStream {
    use proc_macro_crate::{FoundCrate, crate_name};
    if let Ok(found) = crate_name("silica-grains") {
        return match found {
            // `silica-grains` never uses its own macros; "itself" means its doctests and
            // integration tests, which see it as an external crate.
            FoundCrate::Itself => quote!(::silica_grains),
            FoundCrate::Name(name) => {
                let ident = proc_macro2::Ident::new(&name, proc_macro2::Span::call_site());
                quote!(::#ident)
            }
        };
    }
    match crate_name("silica") {
        Ok(FoundCrate::Name(name)) => {
            let ident = proc_macro2::Ident::new(&name, proc_macro2::Span::call_site());
            quote!(::#ident::grains)
        }
        _ => quote!(::silica::grains),
    }
}
