//! Hybrid logical clocks (HLC) and vector clocks for Silica.
//!
//! Every envelope in Silica carries an [`HlcTimestamp`]; every receiver, silo or GPU ring,
//! merges it with [`HybridClock::update`], which rejects a timestamp too far ahead of local
//! physical time instead of adopting it. When causal tracking is on, a [`VectorClock`]
//! travels with the call chain.
//!
//! This crate does no I/O: physical time (milliseconds since the Unix epoch) is an
//! argument, so state machines and simulations control it. [`wall_clock_ms`] reads the
//! system clock for callers that want real time.
//!
//! # Layout
//!
//! - `node`: [`NodeId`], the identity both clock kinds key on.
//! - `timestamp`: [`HlcTimestamp`], 16 bytes, `#[repr(C)]`, shared with GPU kernels.
//! - `hlc`: [`HybridClock`] (lock-free, one `AtomicU64`), [`ClockConfig`], [`wall_clock_ms`].
//! - `vector`: [`VectorClock`] and [`CausalOrder`], with a compact varint encoding.
//! - `error`: [`ClockError`].
//!
//! # Feature flags
//!
//! None.
//!
//! # Example
//!
//! ```
//! use silica_clocks::{CausalOrder, ClockConfig, ClockError, HybridClock, NodeId, VectorClock};
//!
//! let a = HybridClock::new(NodeId(1), ClockConfig::default());
//! let b = HybridClock::new(NodeId(2), ClockConfig::default());
//!
//! // `a` sends at its wall time; `b`'s wall clock lags by 100 ms.
//! let sent = a.now(1_700_000_000_100);
//! let received = b.update(sent, 1_700_000_000_000)?;
//! assert!(received > sent);
//!
//! // A timestamp from far in the future is rejected, not adopted.
//! let bogus = silica_clocks::HlcTimestamp::new(1_800_000_000_000, 0, NodeId(3));
//! assert!(matches!(b.update(bogus, 1_700_000_000_000), Err(ClockError::TooFarAhead { .. })));
//! assert_eq!(b.last(), received);
//!
//! // Vector clocks order causally related events and spot concurrent ones.
//! let mut x = VectorClock::new();
//! x.increment(NodeId(1));
//! let mut y = x.clone();
//! y.increment(NodeId(2));
//! assert_eq!(x.compare(&y), CausalOrder::Before);
//! x.increment(NodeId(1));
//! assert_eq!(x.compare(&y), CausalOrder::Concurrent);
//! assert_eq!(VectorClock::decode(&x.merged(&y).encode())?, x.merged(&y));
//! # Ok::<(), ClockError>(())
//! ```

#![forbid(unsafe_code)]

mod error;
mod hlc;
mod node;
mod timestamp;
mod varint;
mod vector;

pub use error::ClockError;
pub use hlc::{ClockConfig, HybridClock, wall_clock_ms};
pub use node::NodeId;
pub use timestamp::{HlcTimestamp, LOGICAL_BITS};
pub use vector::{CausalOrder, VectorClock};
