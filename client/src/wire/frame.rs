//! Frames: encoding, the size limit, and the decoder that checks everything a frame holds.
//!
//! On a link tonic decodes frames itself (with `max_decoding_message_size` set to the link's
//! maximum) and the link decodes each envelope and response as it handles it, with the same
//! functions [`validate_frame`] runs; [`decode_frame`] is the whole check from raw bytes, for
//! tools, the fuzz target and the property tests.

use prost::Message;

use super::WireError;
use super::envelope::{decode_envelope, decode_grain_id};
use super::proto::{self, frame::Body};
use super::status::error_from_status;

/// Bytes a frame adds around its batch (oneof tag and length).
pub const FRAME_OVERHEAD_BYTES: usize = 16;
/// Bytes a batch adds around each request or response (field tag and length).
pub const ITEM_OVERHEAD_BYTES: usize = 11;

/// Encodes a frame.
pub fn encode_frame(frame: &proto::Frame) -> Vec<u8> {
    frame.encode_to_vec()
}

/// Decodes and validates a frame of at most `max_frame_bytes`.
pub fn decode_frame(bytes: &[u8], max_frame_bytes: usize) -> Result<proto::Frame, WireError> {
    if bytes.len() > max_frame_bytes {
        return Err(WireError::FrameTooLarge {
            len: bytes.len(),
            max: max_frame_bytes,
        });
    }
    let frame = proto::Frame::decode(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    validate_frame(&frame)?;
    Ok(frame)
}

/// Checks that every envelope and response in the frame decodes, so a frame that passes is one
/// the receiver can act on in full.
pub fn validate_frame(frame: &proto::Frame) -> Result<(), WireError> {
    match &frame.body {
        None => Err(WireError::MissingField("frame.body")),
        Some(Body::Hello(hello)) => {
            if hello.sender.is_none() {
                return Err(WireError::MissingField("hello.sender"));
            }
            Ok(())
        }
        Some(Body::Welcome(_)) => Ok(()),
        Some(Body::Batch(batch)) => {
            for envelope in &batch.requests {
                decode_envelope(envelope.clone())?;
            }
            for response in &batch.responses {
                validate_response(response)?;
            }
            Ok(())
        }
    }
}

/// Checks one response: a result is present and an error decodes to a `CallError`.
pub(crate) fn validate_response(response: &proto::Response) -> Result<(), WireError> {
    match &response.result {
        None => Err(WireError::MissingField("response.result")),
        Some(proto::response::Result::Ok(_)) => Ok(()),
        Some(proto::response::Result::Error(status)) => {
            for grain in &status.grains {
                decode_grain_id(grain.clone())?;
            }
            error_from_status(status.clone()).map(drop)
        }
    }
}
