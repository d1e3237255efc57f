//! The wire protocol: the generated protobuf types, their conversions to and from the runtime's
//! types, and the frame decoder.
//!
//! Every conversion from the wire is fallible with a typed [`WireError`] and never panics, so a
//! peer sending garbage costs only its own connection. Grain arguments and results stay postcard
//! bodies (`bytes` fields); protobuf only frames them.
//!
//! # Layout
//! - [`proto`] — the types and tonic service generated from `proto/silica.proto`.
//! - `error` — [`WireError`] (a frame or field that cannot be decoded) and [`LinkError`] (why a
//!   link or connection ended).
//! - `status` — `CallError` <-> [`proto::Status`], the one status-with-code type on the wire.
//! - `envelope` — `Envelope` <-> [`proto::Envelope`], grain ids, HLC timestamps.
//! - `frame` — frame encoding and [`decode_frame`] with the maximum frame size.

mod envelope;
mod error;
mod frame;
mod status;

/// The types and tonic service generated from `proto/silica.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("silica.v1");
}

pub use envelope::{
    decode_envelope, decode_grain_id, encode_envelope, encode_grain_id, hlc_from_wire, hlc_to_wire,
};
pub use error::{LinkError, WireError};
pub use frame::{
    FRAME_OVERHEAD_BYTES, ITEM_OVERHEAD_BYTES, decode_frame, encode_frame, validate_frame,
};
pub use status::{error_from_status, status_from_error};

/// The protocol version this build speaks; a peer with another one is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// The default largest frame a link sends or accepts: 16 MiB plus room for the framing, so one
/// call with arguments at the silo's default `max_message_bytes` still fits.
pub const DEFAULT_MAX_FRAME_BYTES: usize = (16 << 20) + (64 << 10);
