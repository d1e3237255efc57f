//! Silica's client side: the envelope calls travel in and the call chain it carries.
//!
//! Typed references and the grain factory are generated from and defined in `silica-grains`
//! (they are part of the programming model and a grain's context hands them out); this crate
//! holds what the runtime wraps around a call. The external cluster client and the wire
//! protocol join it with the multi-node work.
//!
//! # Layout
//! - [`envelope`] — `Envelope`, `CallChain`, the default timeout.
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

pub mod envelope;

pub use envelope::{CallChain, ChainLink, DEFAULT_CALL_TIMEOUT, Envelope};
/// The typed-reference machinery, defined with the programming model (a grain's context hands
/// out factories too) and re-exported here as the client's API.
pub use silica_grains::{
    CallOptions, GrainFactory, GrainReference, Invoker, Payload, PendingCall, RawGrainRef, Request,
};
