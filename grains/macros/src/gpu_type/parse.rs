//! Validates the input struct and builds the IR; every error points at the offending item.

use super::ir::{GpuField, GpuStruct, Shape};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Error, Fields, Type};

pub(crate) fn parse(input: &DeriveInput) -> syn::Result<GpuStruct> {
    if !input.generics.params.is_empty() {
        return Err(Error::new(
            input.generics.span(),
            "GpuType: generic structs are not supported (CUDA and WGSL need one concrete layout)",
        ));
    }
    check_repr_c(input)?;
    let Data::Struct(data) = &input.data else {
        return Err(Error::new(
            input.ident.span(),
            "GpuType: only structs are supported",
        ));
    };
    let Fields::Named(named) = &data.fields else {
        return Err(Error::new(
            data.fields.span(),
            "GpuType: use a struct with named fields (CUDA and WGSL members need names)",
        ));
    };
    if named.named.is_empty() {
        return Err(Error::new(
            input.ident.span(),
            "GpuType: a struct needs at least one field",
        ));
    }
    let fields = named
        .named
        .iter()
        .map(|field| {
            let ident = field.ident.clone().expect("named field");
            Ok(GpuField {
                ident,
                shape: shape(&field.ty)?,
                span: field.ty.span(),
            })
        })
        .collect::<syn::Result<Vec<_>>>()?;
    Ok(GpuStruct {
        ident: input.ident.clone(),
        fields,
    })
}

fn check_repr_c(input: &DeriveInput) -> syn::Result<()> {
    let mut is_c = false;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("repr")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("C") {
                is_c = true;
                Ok(())
            } else {
                Err(meta.error("GpuType: only #[repr(C)] is supported (no packed, align or ints)"))
            }
        })?;
    }
    if is_c {
        Ok(())
    } else {
        Err(Error::new(
            input.ident.span(),
            "GpuType needs #[repr(C)] so that Rust, CUDA and WGSL agree on the layout",
        ))
    }
}

fn shape(ty: &Type) -> syn::Result<Shape> {
    match ty {
        Type::Array(array) => Ok(Shape::Array(
            Box::new(shape(&array.elem)?),
            array.len.clone(),
        )),
        Type::Paren(inner) => shape(&inner.elem),
        Type::Path(path) if path.qself.is_none() => {
            let last = path
                .path
                .segments
                .last()
                .map(|s| s.ident.to_string())
                .unwrap_or_default();
            match unsupported_scalar(&last) {
                Some(why) => Err(Error::new(ty.span(), format!("GpuType: `{last}` {why}"))),
                None => Ok(Shape::Base(ty.clone())),
            }
        }
        _ => Err(Error::new(
            ty.span(),
            "GpuType: unsupported field type; use u32, i32, f32, u64, i64, a GpuType struct or a \
             fixed-size array of these",
        )),
    }
}

fn unsupported_scalar(name: &str) -> Option<&'static str> {
    Some(match name {
        "bool" => "has no portable GPU layout; use u32 (0 or 1)",
        "f64" => "is not available in WGSL; use f32",
        "u8" | "i8" | "u16" | "i16" => "is not addressable in WGSL storage; pack into u32",
        "usize" | "isize" => "has a host-dependent size; use u32 or u64",
        "u128" | "i128" | "char" => "has no GPU counterpart",
        _ => return None,
    })
}
