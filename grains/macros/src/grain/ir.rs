//! The checked description of a grain interface that codegen works from.

use proc_macro2::{Ident, TokenStream};
use syn::{Attribute, Type, Visibility};

/// A grain interface, validated.
pub(crate) struct Interface {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) ident: Ident,
    /// The interface's name on the wire.
    pub(crate) wire_name: String,
    pub(crate) options: InterfaceOptions,
    pub(crate) methods: Vec<Method>,
}

/// Options declared on the interface (`#[grain(...)]` on the trait).
#[derive(Default)]
pub(crate) struct InterfaceOptions {
    pub(crate) reentrant: bool,
    pub(crate) stateless_worker: Option<syn::LitInt>,
    pub(crate) placement: Option<Ident>,
    pub(crate) idle_after_secs: Option<syn::LitInt>,
}

/// How a method takes its receiver.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Receiver {
    Ref,
    Mut,
}

/// Interleaving declared on a method.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum MethodKind {
    Exclusive,
    Shared,
    ReadOnly,
    Always,
}

/// One interface method.
pub(crate) struct Method {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) ident: Ident,
    pub(crate) receiver: Receiver,
    pub(crate) kind: MethodKind,
    pub(crate) args: Vec<Arg>,
    /// The declared return type; `()` when omitted.
    pub(crate) output: TokenStream,
    /// Where the arguments are declared: errors about them point here.
    pub(crate) args_span: proc_macro2::Span,
    /// Where the return type is declared.
    pub(crate) output_span: proc_macro2::Span,
}

/// One method argument.
pub(crate) struct Arg {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
}
