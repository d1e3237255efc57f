//! The wire codec: envelopes and call errors survive the trip through protobuf unchanged, and the
//! frame and envelope decoders return typed errors, never panic, on any bytes.

use std::borrow::Cow;
use std::time::Duration;

use proptest::prelude::*;
use silica_client::wire::proto::{self, frame::Body};
use silica_client::wire::{
    WireError, decode_envelope, decode_frame, encode_envelope, encode_frame, error_from_status,
    status_from_error,
};
use silica_client::{CallChain, ChainLink, Envelope};
use silica_clocks::{HlcTimestamp, NodeId};
use silica_grains::{CallError, GrainId, GrainKey, GrainType, Interleave, Payload, RejectCode};

fn grain_id() -> impl Strategy<Value = GrainId> {
    let key = prop_oneof![
        any::<i64>().prop_map(GrainKey::from),
        "[a-z]{0,12}".prop_map(|s| GrainKey::from(s.as_str())),
        (any::<i64>(), "[a-z]{0,6}").prop_map(|(i, s)| GrainKey::from((i, s.as_str()))),
        any::<u128>().prop_map(|u| GrainKey::Uuid(uuid::Uuid::from_u128(u))),
    ];
    ("[A-Z][a-z]{0,10}", key).prop_map(|(t, key)| GrainId::new(GrainType::new(t), key))
}

fn call_error() -> impl Strategy<Value = CallError> {
    let reject = prop_oneof![
        Just(RejectCode::UnknownGrainType),
        Just(RejectCode::WrongInterface),
        Just(RejectCode::UnknownMethod),
        Just(RejectCode::BadArguments),
        Just(RejectCode::TooLarge),
        Just(RejectCode::Overloaded),
        Just(RejectCode::ClockSkew),
        Just(RejectCode::VersionMismatch),
        Just(RejectCode::ActivationFailed),
    ];
    prop_oneof![
        any::<u64>().prop_map(|n| CallError::Timeout(Duration::from_nanos(n))),
        ".{0,20}".prop_map(CallError::SiloUnavailable),
        Just(CallError::ShuttingDown),
        (grain_id(), ".{0,20}")
            .prop_map(|(grain, message)| CallError::GrainPanicked { grain, message }),
        (grain_id(), ".{0,20}").prop_map(|(grain, message)| CallError::GpuFault { grain, message }),
        proptest::collection::vec(grain_id(), 0..4)
            .prop_map(|chain| CallError::CycleDetected { chain }),
        (reject, ".{0,20}").prop_map(|(code, message)| CallError::rejected(code, message)),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    let turn = prop_oneof![
        Just(Interleave::Exclusive),
        Just(Interleave::Shared),
        Just(Interleave::ReadOnly),
        Just(Interleave::Always),
    ];
    (
        grain_id(),
        "[A-Z][a-z]{1,8}",
        "[a-z]{1,8}",
        proptest::collection::vec(any::<u8>(), 0..100),
        any::<(u64, u32)>(),
        proptest::collection::vec((grain_id(), turn), 0..4),
        any::<u64>(),
    )
        .prop_map(
            |(target, interface, method, args, (hlc, node), chain, timeout)| Envelope {
                target,
                interface: Cow::Owned(interface),
                method: Cow::Owned(method),
                args: Payload::from_vec(args),
                hlc: HlcTimestamp::from_hlc(hlc, NodeId(node)),
                chain: CallChain::from(
                    chain
                        .into_iter()
                        .map(|(grain, turn)| ChainLink { grain, turn })
                        .collect::<Vec<_>>(),
                ),
                timeout: Duration::from_nanos(timeout),
            },
        )
}

proptest! {
    // Pins that every CallError maps to the wire status and back unchanged (lossless).
    #[test]
    fn call_errors_round_trip(error in call_error()) {
        let back = error_from_status(status_from_error(&error)).unwrap();
        prop_assert_eq!(back, error);
    }

    // Pins that an envelope and its call id round-trip through the wire form, also through the
    // bytes of a batch frame.
    #[test]
    fn envelopes_round_trip(envelope in envelope(), call_id in any::<u64>()) {
        let frame = proto::Frame {
            body: Some(Body::Batch(proto::Batch {
                requests: vec![encode_envelope(&envelope, call_id)],
                responses: vec![],
            })),
        };
        let bytes = encode_frame(&frame);
        let Some(Body::Batch(batch)) = decode_frame(&bytes, 1 << 20).unwrap().body else {
            panic!("not a batch");
        };
        let (id, back) = decode_envelope(batch.requests.into_iter().next().unwrap()).unwrap();
        prop_assert_eq!(id, call_id);
        prop_assert_eq!(&back.target, &envelope.target);
        prop_assert_eq!(&back.interface, &envelope.interface);
        prop_assert_eq!(&back.method, &envelope.method);
        prop_assert_eq!(&back.args, &envelope.args);
        prop_assert_eq!(back.hlc, envelope.hlc);
        prop_assert_eq!(&back.chain, &envelope.chain);
        prop_assert_eq!(back.timeout, envelope.timeout);
    }

    // Pins that the frame decoder never panics on arbitrary bytes: a frame or a typed error.
    #[test]
    fn frame_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_frame(&bytes, 256);
    }

    // Pins that arbitrary bytes inside an envelope's fields (keys, chain, enums) give typed
    // errors, never panics: the envelope decoder runs on structurally valid protobuf.
    #[test]
    fn envelope_decoder_never_panics(
        key in proptest::collection::vec(any::<u8>(), 0..40),
        grain_type in ".{0,8}",
        turn in any::<i32>(),
        status_code in any::<i32>(),
    ) {
        let grain = proto::GrainId { grain_type, key: key.into() };
        let envelope = proto::Envelope {
            call_id: 1,
            target: Some(grain.clone()),
            interface: "I".into(),
            method: "m".into(),
            chain: vec![proto::ChainLink { grain: Some(grain.clone()), turn }],
            hlc: Some(proto::Hlc::default()),
            ..Default::default()
        };
        let _ = decode_envelope(envelope);
        let status = proto::Status { code: status_code, grains: vec![grain], ..Default::default() };
        let _ = error_from_status(status);
    }
}

// Pins the size limit: a frame over the maximum is refused before it is decoded.
#[test]
fn oversized_frames_are_refused() {
    let frame = proto::Frame {
        body: Some(Body::Batch(proto::Batch {
            requests: vec![proto::Envelope {
                args: vec![0_u8; 1000].into(),
                ..Default::default()
            }],
            responses: vec![],
        })),
    };
    let bytes = encode_frame(&frame);
    assert!(matches!(
        decode_frame(&bytes, 100),
        Err(WireError::FrameTooLarge { max: 100, .. })
    ));
}

// Pins typed errors for frames that decode as protobuf but mean nothing: no body, an envelope
// without its target, an unknown turn kind, a link-level code in a call's response.
#[test]
fn meaningless_frames_get_typed_errors() {
    let empty = encode_frame(&proto::Frame { body: None });
    assert_eq!(
        decode_frame(&empty, 1024),
        Err(WireError::MissingField("frame.body"))
    );
    let batch = |requests, responses| {
        encode_frame(&proto::Frame {
            body: Some(Body::Batch(proto::Batch {
                requests,
                responses,
            })),
        })
    };
    let no_target = batch(vec![proto::Envelope::default()], vec![]);
    assert_eq!(
        decode_frame(&no_target, 1024),
        Err(WireError::MissingField("target"))
    );
    let link_code = proto::Response {
        call_id: 1,
        hlc: None,
        result: Some(proto::response::Result::Error(proto::Status {
            code: proto::StatusCode::WrongCluster as i32,
            ..Default::default()
        })),
    };
    assert!(matches!(
        decode_frame(&batch(vec![], vec![link_code]), 1024),
        Err(WireError::InvalidField {
            field: "status.code",
            ..
        })
    ));
    assert!(matches!(
        decode_frame(&[0xff, 0xff, 0xff], 1024),
        Err(WireError::Malformed(_))
    ));
}
