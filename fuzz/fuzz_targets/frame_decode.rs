//! Fuzzes the wire decoders with arbitrary bytes: the frame decoder (size limit, protobuf,
//! validation of every envelope and response), the envelope decoder and the status decoder.
//! None may panic; a frame that passes validation must decode in full.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use silica_client::wire::proto::{self, frame::Body};
use silica_client::wire::{decode_envelope, decode_frame, encode_frame, error_from_status};

/// Small enough that the fuzzer also reaches the size check.
const MAX_FRAME_BYTES: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode_frame(data, MAX_FRAME_BYTES) {
        // Re-encoding a valid frame gives a valid frame.
        let again = encode_frame(&frame);
        assert!(decode_frame(&again, usize::MAX).is_ok());
        if let Some(Body::Batch(batch)) = frame.body {
            for envelope in batch.requests {
                assert!(
                    decode_envelope(envelope).is_ok(),
                    "validated, so it decodes"
                );
            }
        }
    }
    if let Ok(envelope) = proto::Envelope::decode(data) {
        let _ = decode_envelope(envelope);
    }
    if let Ok(status) = proto::Status::decode(data) {
        let _ = error_from_status(status);
    }
});
