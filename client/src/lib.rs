//! Silica's client side: the envelope calls travel in, the wire protocol, links, and the
//! external cluster client.
//!
//! Typed references and the grain factory are defined in `silica-grains` (they are part of the
//! programming model and a grain's context hands them out); this crate holds what carries a call
//! out of a process. The silo uses its links and wire types too (it depends on this crate, never
//! the other way round).
//!
//! # Layout
//! - [`envelope`] — `Envelope`, `CallChain`, the default timeout.
//! - [`wire`] — the protobuf protocol (`proto/silica.proto`), conversions with typed decode
//!   errors, the status-with-code type, the frame decoder and its size limit.
//! - [`link`] — links: the caller side ([`link::Link`]) and the acceptor side
//!   ([`link::LinkAcceptor`]), batched, bounded, reconnecting.
//! - [`client`] — [`Client`]: connects to gateways and hands out typed references.
//! - re-exports of the reference machinery from `silica-grains`: `GrainFactory`,
//!   `GrainReference`, `RawGrainRef`, `Invoker`, `PendingCall`, `Payload`.
//!
//! # Example
//! ```
//! use silica_client::{CallChain, ChainLink};
//! use silica_grains::{GrainId, GrainType, Interleave};
//!
//! let a = GrainId::new(GrainType::new("A"), "a");
//! let chain = CallChain::EMPTY.extended(ChainLink { grain: a.clone(), turn: Interleave::Exclusive });
//! assert!(chain.find(&a).is_some());
//! ```
#![forbid(unsafe_code)]

pub mod client;
pub mod envelope;
pub mod link;
pub mod wire;

pub use client::{Client, ClientError, ClientOptions};
pub use envelope::{CallChain, ChainLink, DEFAULT_CALL_TIMEOUT, Envelope};
/// The typed-reference machinery, defined with the programming model (a grain's context hands
/// out factories too) and re-exported here as the client's API.
pub use silica_grains::{
    CallOptions, GrainFactory, GrainReference, Invoker, Payload, PendingCall, RawGrainRef, Request,
};
