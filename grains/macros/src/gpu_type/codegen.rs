//! Emits the `GpuType` impl and the compile-time layout checks.

use super::ir::{GpuStruct, Shape};
use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};

pub(crate) fn expand(ty: &GpuStruct, grains: &TokenStream) -> TokenStream {
    let ident = &ty.ident;
    let name = ident.to_string();
    let trait_path = quote!(#grains::gpu::GpuType);
    let aligns: Vec<_> = ty
        .fields
        .iter()
        .map(|f| align(&f.shape, &trait_path))
        .collect();
    let sizes: Vec<_> = ty
        .fields
        .iter()
        .map(|f| size(&f.shape, &trait_path, grains))
        .collect();
    let count = ty.fields.len();
    let idx: Vec<_> = (0..count).collect();
    let names: Vec<_> = ty.fields.iter().map(|f| &f.ident).collect();
    let bases: Vec<_> = ty
        .fields
        .iter()
        .map(|f| {
            let base = f.shape.base();
            quote_spanned!(f.span=> <#base as #trait_path>::declare(decls);)
        })
        .collect();
    let cuda_fields: Vec<_> = ty
        .fields
        .iter()
        .map(|f| cuda_field(f, &trait_path))
        .collect();
    let wgsl_fields: Vec<_> = ty
        .fields
        .iter()
        .map(|f| wgsl_field(f, &trait_path))
        .collect();
    let field_strs: Vec<_> = names.iter().map(|n| n.to_string()).collect();
    let offset_msgs: Vec<_> = field_strs
        .iter()
        .map(|f| format!("GpuType {name}: field `{f}` has a different offset in WGSL; add explicit padding fields"))
        .collect();
    let size_msg =
        format!("GpuType {name}: size differs from WGSL's; add explicit padding at the end");
    let align_msg = format!("GpuType {name}: alignment differs from WGSL's");
    let pad_msg = format!("GpuType {name}: has implicit padding; add explicit padding fields");
    quote! {
        impl #trait_path for #ident {
            const CUDA_NAME: &'static str = #name;
            const WGSL_NAME: &'static str = #name;
            const WGSL_ALIGN: usize = {
                let a = 1usize;
                #( let a = #grains::gpu::max_usize(a, #aligns); )*
                a
            };
            const WGSL_SIZE: usize = {
                let off = 0usize;
                #( let off = #grains::gpu::round_up(off, #aligns) + #sizes; )*
                #grains::gpu::round_up(off, <Self as #trait_path>::WGSL_ALIGN)
            };
            fn declare(decls: &mut #grains::gpu::TypeDecls) {
                #( #bases )*
                if decls.begin(#name) {
                    let mut cuda = ::std::format!("struct {} {{\n", #name);
                    let mut wgsl = ::std::format!("struct {} {{\n", #name);
                    #( cuda.push_str(&#cuda_fields); wgsl.push_str(&#wgsl_fields); )*
                    cuda.push_str("};\n");
                    wgsl.push_str("}\n");
                    cuda.push_str(&::std::format!(
                        "static_assert(sizeof({0}) == {1}, \"{0}: CUDA size differs from Rust\");\n",
                        #name, ::core::mem::size_of::<Self>()));
                    cuda.push_str(&::std::format!(
                        "static_assert(alignof({0}) == {1}, \"{0}: CUDA alignment differs from Rust\");\n",
                        #name, ::core::mem::align_of::<Self>()));
                    decls.push(&cuda, &wgsl);
                }
            }
        }

        const _: () = {
            const OFFSETS: [usize; #count] = {
                let mut out = [0usize; #count];
                let off = 0usize;
                #( let off = #grains::gpu::round_up(off, #aligns); out[#idx] = off; let off = off + #sizes; )*
                let _ = off;
                out
            };
            #( ::core::assert!(::core::mem::offset_of!(#ident, #names) == OFFSETS[#idx], #offset_msgs); )*
            ::core::assert!(::core::mem::size_of::<#ident>() == <#ident as #trait_path>::WGSL_SIZE, #size_msg);
            ::core::assert!(::core::mem::align_of::<#ident>() == <#ident as #trait_path>::WGSL_ALIGN, #align_msg);
            ::core::assert!(::core::mem::size_of::<#ident>() == 0 #( + #sizes )*, #pad_msg);
        };
    }
}

fn align(shape: &Shape, trait_path: &TokenStream) -> TokenStream {
    let base = shape.base();
    quote!(<#base as #trait_path>::WGSL_ALIGN)
}

fn size(shape: &Shape, trait_path: &TokenStream, grains: &TokenStream) -> TokenStream {
    match shape {
        Shape::Base(ty) => quote!(<#ty as #trait_path>::WGSL_SIZE),
        Shape::Array(inner, len) => {
            let inner_size = size(inner, trait_path, grains);
            let inner_align = align(inner, trait_path);
            quote!(((#len) * #grains::gpu::round_up(#inner_size, #inner_align)))
        }
    }
}

fn cuda_field(field: &super::ir::GpuField, trait_path: &TokenStream) -> TokenStream {
    let base = field.shape.base();
    let name = field.ident.to_string();
    let dims = field.shape.dims();
    let fmt = format!("  {{}} {{}}{};\n", "[{}]".repeat(dims.len()));
    quote_spanned!(field.span=> ::std::format!(#fmt, <#base as #trait_path>::CUDA_NAME, #name #(, #dims)*))
}

fn wgsl_field(field: &super::ir::GpuField, trait_path: &TokenStream) -> TokenStream {
    let base = field.shape.base();
    let name = field.ident.to_string();
    let dims = field.shape.dims();
    let open = "array<".repeat(dims.len());
    let close: String = dims.iter().map(|_| ", {}>").collect();
    let fmt = format!("  {{}}: {open}{{}}{close},\n");
    let rev: Vec<_> = dims.iter().rev().collect();
    quote_spanned!(field.span=> ::std::format!(#fmt, #name, <#base as #trait_path>::WGSL_NAME #(, #rev)*))
}
