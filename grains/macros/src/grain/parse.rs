//! Parses and checks `#[grain]` input into [`Interface`]. Every rejection is a `syn::Error`
//! spanning the offending tokens, so the compiler points at the right line.

use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{Error, FnArg, ItemTrait, Pat, ReturnType, TraitItem, TraitItemFn, Type};

use super::ir::{Arg, Interface, InterfaceOptions, Method, MethodKind, Receiver};

/// The most arguments a method may take (they travel as one serde tuple).
const MAX_ARGS: usize = 16;

pub(crate) fn interface(args: proc_macro2::TokenStream, item: ItemTrait) -> syn::Result<Interface> {
    let (options, wire_name) = interface_options(args)?;
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        return Err(Error::new(
            item.generics.span(),
            "grain interfaces can't be generic",
        ));
    }
    if let Some(unsafety) = item.unsafety {
        return Err(Error::new(
            unsafety.span(),
            "grain interfaces can't be unsafe traits",
        ));
    }
    if !item.supertraits.is_empty() {
        return Err(Error::new(
            item.supertraits.span(),
            "grain interfaces can't have supertraits",
        ));
    }
    let mut methods = Vec::new();
    for trait_item in item.items {
        match trait_item {
            TraitItem::Fn(function) => methods.push(method(function)?),
            other => {
                return Err(Error::new(
                    other.span(),
                    "a grain interface may only contain async methods",
                ));
            }
        }
    }
    let wire_name = wire_name.unwrap_or_else(|| item.ident.to_string());
    Ok(Interface {
        attrs: item.attrs,
        vis: item.vis,
        ident: item.ident,
        wire_name,
        options,
        methods,
    })
}

fn interface_options(
    args: proc_macro2::TokenStream,
) -> syn::Result<(InterfaceOptions, Option<String>)> {
    let mut options = InterfaceOptions::default();
    let mut name = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("reentrant") {
            options.reentrant = true;
        } else if meta.path.is_ident("stateless_worker") {
            options.stateless_worker = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("placement") {
            options.placement = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("idle_after_secs") {
            options.idle_after_secs = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("name") {
            name = Some(meta.value()?.parse::<syn::LitStr>()?.value());
        } else {
            return Err(meta.error(
                "unknown grain option; expected `reentrant`, `stateless_worker = N`, \
                 `placement = Strategy`, `idle_after_secs = N` or `name = \"...\"`",
            ));
        }
        Ok(())
    });
    syn::parse::Parser::parse2(parser, args)?;
    if let Some(n) = &options.stateless_worker
        && n.base10_parse::<usize>()? == 0
    {
        return Err(Error::new(
            n.span(),
            "a stateless worker needs at least one activation",
        ));
    }
    Ok((options, name))
}

fn method(function: TraitItemFn) -> syn::Result<Method> {
    let sig = &function.sig;
    if let Some(body) = &function.default {
        return Err(Error::new(
            body.span(),
            "grain interface methods can't have default bodies",
        ));
    }
    if sig.asyncness.is_none() {
        return Err(Error::new(
            sig.fn_token.span(),
            "grain methods must be `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(Error::new(
            sig.generics.span(),
            "grain methods can't be generic",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(Error::new(
            variadic.span(),
            "grain methods can't be variadic",
        ));
    }
    let (kind_attr, attrs) = method_attrs(function.attrs)?;
    let mut inputs = sig.inputs.iter();
    let receiver = match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.colon_token.is_none() => {
            if r.mutability.is_some() {
                Receiver::Mut
            } else {
                Receiver::Ref
            }
        }
        Some(FnArg::Receiver(r)) => {
            return Err(Error::new(
                r.span(),
                "grain methods take `&self` or `&mut self`; `self` by value would consume the grain",
            ));
        }
        _ => {
            return Err(Error::new(
                sig.ident.span(),
                "grain methods need a `&self` or `&mut self` receiver",
            ));
        }
    };
    let kind = match (kind_attr, receiver) {
        (None, Receiver::Mut) => MethodKind::Exclusive,
        (None, Receiver::Ref) => MethodKind::Shared,
        (Some((kind, _)), Receiver::Ref) => kind,
        (Some((_, span)), Receiver::Mut) => {
            return Err(Error::new(
                span,
                "read_only and always_interleave methods must take `&self`",
            ));
        }
    };
    let args = inputs.map(arg).collect::<syn::Result<Vec<_>>>()?;
    if args.len() > MAX_ARGS {
        return Err(Error::new(
            sig.inputs.span(),
            format!("grain methods take at most {MAX_ARGS} arguments"),
        ));
    }
    let args_span = match sig.inputs.iter().nth(1) {
        Some(FnArg::Typed(first)) => first.ty.span(),
        _ => sig.ident.span(),
    };
    let output_span = match &sig.output {
        ReturnType::Default => sig.ident.span(),
        ReturnType::Type(_, ty) => ty.span(),
    };
    let output = match &sig.output {
        ReturnType::Default => quote::quote!(()),
        ReturnType::Type(_, ty) => {
            reject_borrowed(ty, "return types must be owned")?;
            ty.to_token_stream()
        }
    };
    Ok(Method {
        attrs,
        ident: sig.ident.clone(),
        receiver,
        kind,
        args,
        output,
        args_span,
        output_span,
    })
}

type KindAttr = Option<(MethodKind, proc_macro2::Span)>;

/// Splits `#[grain(read_only)]` / `#[grain(always_interleave)]` off the other attributes.
fn method_attrs(attrs: Vec<syn::Attribute>) -> syn::Result<(KindAttr, Vec<syn::Attribute>)> {
    let mut kind = None;
    let mut rest = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("grain") {
            rest.push(attr);
            continue;
        }
        attr.parse_nested_meta(|meta| {
            let found = if meta.path.is_ident("read_only") {
                MethodKind::ReadOnly
            } else if meta.path.is_ident("always_interleave") {
                MethodKind::Always
            } else {
                return Err(meta
                    .error("unknown method option; expected `read_only` or `always_interleave`"));
            };
            if kind.is_some() {
                return Err(meta.error("a method takes one of `read_only` and `always_interleave`"));
            }
            kind = Some((found, meta.path.span()));
            Ok(())
        })?;
    }
    Ok((kind, rest))
}

fn arg(input: &FnArg) -> syn::Result<Arg> {
    let FnArg::Typed(typed) = input else {
        return Err(Error::new(input.span(), "unexpected receiver"));
    };
    let Pat::Ident(pat) = &*typed.pat else {
        return Err(Error::new(
            typed.pat.span(),
            "grain method arguments must be plain names",
        ));
    };
    if pat.by_ref.is_some() || pat.subpat.is_some() {
        return Err(Error::new(
            pat.span(),
            "grain method arguments must be plain names",
        ));
    }
    reject_borrowed(
        &typed.ty,
        "arguments must be owned: they are encoded and may cross the network",
    )?;
    Ok(Arg {
        ident: pat.ident.clone(),
        ty: (*typed.ty).clone(),
    })
}

fn reject_borrowed(ty: &Type, why: &str) -> syn::Result<()> {
    match ty {
        Type::Reference(r) => Err(Error::new(
            r.span(),
            format!("grain methods can't use references here: {why}"),
        )),
        Type::ImplTrait(t) => Err(Error::new(
            t.span(),
            "grain methods can't use `impl Trait` types",
        )),
        _ => Ok(()),
    }
}
