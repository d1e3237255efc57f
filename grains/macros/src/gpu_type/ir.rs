//! The intermediate form of a `GpuType` struct: fields and their shapes.

use proc_macro2::Span;
use syn::{Expr, Ident, Type};

/// A struct that derives `GpuType`.
pub(crate) struct GpuStruct {
    pub(crate) ident: Ident,
    pub(crate) fields: Vec<GpuField>,
}

/// One named field.
pub(crate) struct GpuField {
    pub(crate) ident: Ident,
    pub(crate) shape: Shape,
    pub(crate) span: Span,
}

/// A field's type: a `GpuType` (scalar or struct) or a fixed-size array of a shape.
pub(crate) enum Shape {
    Base(Type),
    Array(Box<Shape>, Expr),
}

impl Shape {
    /// The innermost element type.
    pub(crate) fn base(&self) -> &Type {
        match self {
            Shape::Base(ty) => ty,
            Shape::Array(inner, _) => inner.base(),
        }
    }

    /// Array lengths, outermost first (empty for a base type).
    pub(crate) fn dims(&self) -> Vec<&Expr> {
        let mut dims = Vec::new();
        let mut shape = self;
        while let Shape::Array(inner, len) = shape {
            dims.push(len);
            shape = inner;
        }
        dims
    }
}
