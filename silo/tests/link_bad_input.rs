//! Bad input on a silo's endpoints: a wrong cluster id, a wrong protocol version, the wrong kind
//! of peer, a malformed frame, an oversized frame, a frame out of turn. Each gets its typed status
//! (seen by the peer, and recorded by the silo), only that connection closes, and the silo keeps
//! serving another connection. A well-formed frame carrying a request that means nothing (no
//! grain, an empty method) is refused call by call; the connection goes on.

mod common;
mod link_support;

use std::sync::Arc;
use std::time::Duration;

use common::CounterRef;
use link_support::{frame, hello, link_options, raw_exchange, silo, silo_with, within};
use silica_client::link::{Link, LinkError, Peer};
use silica_client::wire::proto::{self, StatusCode, frame::Body};
use silica_client::wire::{PROTOCOL_VERSION, decode_frame, encode_envelope, error_from_status};
use silica_client::{CallChain, Envelope};
use silica_clocks::{ClockConfig, HlcTimestamp, HybridClock, NodeId, wall_clock_ms};
use silica_grains::placement::SiloAddress;
use silica_grains::{GrainId, GrainType, Payload, RejectCode};
use silica_silo::Silo;

/// Pins, after a bad connection, that the silo still serves a good one.
async fn still_serves(server: &Silo, cluster: &str) {
    let caller = silo(cluster, false);
    let to = server.network().unwrap().address().unwrap();
    let counter: CounterRef = caller.network().unwrap().remote_factory(to).get("alive");
    assert!(within("good call", counter.add(1)).await.is_ok());
    caller.shutdown().await;
}

fn refused_code(status: &tonic::Status) -> StatusCode {
    match LinkError::from_tonic(status) {
        LinkError::Refused { code, .. } => code,
        other => panic!("expected a refusal with a wire status, got {other:?}"),
    }
}

fn last_error_code(server: &Silo) -> StatusCode {
    let errors = server.network().unwrap().recent_link_errors();
    errors.last().expect("the silo recorded the error").code()
}

// Pins that a silo of another cluster is refused with WrongCluster, typed on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_cluster_is_refused() {
    let server = silo("blue", false);
    let to = server.network().unwrap().address().unwrap();
    let clock = Arc::new(HybridClock::new(NodeId(7), ClockConfig::default()));
    let me = Peer::Silo(SiloAddress::new(link_support::dead_address(), 1));
    let link = Link::new(to.endpoint.to_string(), me, link_options("red"), clock);
    match within("handshake", link.ready()).await {
        Err(LinkError::Refused { code, .. }) => assert_eq!(code, StatusCode::WrongCluster),
        other => panic!("expected WrongCluster, got {other:?}"),
    }
    assert!(matches!(
        server.network().unwrap().recent_link_errors().last(),
        Some(LinkError::WrongCluster { expected, got }) if expected == "blue" && got == "red"
    ));
    link.close();
    still_serves(&server, "blue").await;
    server.shutdown().await;
}

// Pins that a hello with another protocol version is refused with WrongProtocolVersion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_version_is_refused() {
    let server = silo("v", false);
    let addr = server.network().unwrap().address().unwrap().endpoint;
    let (frames, status) = within(
        "exchange",
        raw_exchange(addr, vec![hello("v", PROTOCOL_VERSION + 1, false)]),
    )
    .await;
    assert!(frames.is_empty());
    assert_eq!(
        refused_code(&status.expect("a status")),
        StatusCode::WrongProtocolVersion
    );
    assert_eq!(last_error_code(&server), StatusCode::WrongProtocolVersion);
    still_serves(&server, "v").await;
    server.shutdown().await;
}

// Pins that bytes that are not a frame end the connection with MalformedFrame, after the
// handshake succeeded, and that the silo keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frame_closes_the_connection() {
    let server = silo("m", false);
    let addr = server.network().unwrap().address().unwrap().endpoint;
    let garbage = bytes::Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    let (frames, status) = within(
        "exchange",
        raw_exchange(addr, vec![hello("m", PROTOCOL_VERSION, false), garbage]),
    )
    .await;
    assert_eq!(frames.len(), 1, "the welcome, then the close");
    assert_eq!(
        refused_code(&status.expect("a status")),
        StatusCode::MalformedFrame
    );
    assert_eq!(last_error_code(&server), StatusCode::MalformedFrame);
    still_serves(&server, "m").await;
    server.shutdown().await;
}

// Pins that a frame over the silo's maximum frame size ends the connection with FrameTooLarge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_closes_the_connection() {
    let mut options = link_options("o");
    options.max_frame_bytes = 4096;
    let server = silo_with(common::builder(), "o", false, options);
    let addr = server.network().unwrap().address().unwrap().endpoint;
    let big = frame(Body::Batch(proto::Batch {
        requests: vec![proto::Envelope {
            args: vec![7_u8; 10_000].into(),
            ..Default::default()
        }],
        responses: vec![],
    }));
    let (_, status) = within(
        "exchange",
        raw_exchange(addr, vec![hello("o", PROTOCOL_VERSION, false), big]),
    )
    .await;
    assert_eq!(
        refused_code(&status.expect("a status")),
        StatusCode::FrameTooLarge
    );
    assert!(matches!(
        server.network().unwrap().recent_link_errors().last(),
        Some(LinkError::Wire(silica_client::wire::WireError::FrameTooLarge { len, max: 4096 })) if *len > 4096
    ));
    still_serves(&server, "o").await;
    server.shutdown().await;
}

// Pins that a request envelope that decodes as protobuf but means nothing (no grain, an empty
// method) is refused alone: its call is answered with a typed rejection, the connection is not
// ended, and the well-formed call after it in the same batch is answered normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meaningless_request_is_refused_alone() {
    let server = silo("r", false);
    let addr = server.network().unwrap().address().unwrap().endpoint;
    let add_five = Envelope {
        target: GrainId::new(GrainType::new("Counter"), "r"),
        interface: "Counter".into(),
        method: "add".into(),
        args: Payload::from_slice(&postcard::to_allocvec(&(5_u64,)).unwrap()),
        hlc: HlcTimestamp::new(wall_clock_ms(), 0, NodeId(9)),
        chain: CallChain::EMPTY,
        timeout: Duration::from_secs(5),
    };
    let valid = encode_envelope(&add_five, 9);
    let no_target = proto::Envelope {
        call_id: 7,
        ..Default::default()
    };
    let empty_method = proto::Envelope {
        call_id: 8,
        method: String::new(),
        ..valid.clone()
    };
    let batch = frame(Body::Batch(proto::Batch {
        requests: vec![no_target, empty_method, valid],
        responses: vec![],
    }));
    let (received, status) = within(
        "exchange",
        raw_exchange(addr, vec![hello("r", PROTOCOL_VERSION, false), batch]),
    )
    .await;
    assert!(
        status.is_none(),
        "the connection ended normally: {status:?}"
    );
    let responses: Vec<proto::Response> = received
        .iter()
        .filter_map(
            |bytes| match decode_frame(bytes, usize::MAX).unwrap().body {
                Some(Body::Batch(batch)) => Some(batch.responses),
                _ => None,
            },
        )
        .flatten()
        .collect();
    let answer = |id: u64| {
        let response = responses.iter().find(|r| r.call_id == id);
        response.and_then(|r| r.result.clone()).expect("an answer")
    };
    let refused = |id: u64| match answer(id) {
        proto::response::Result::Error(status) => error_from_status(status).unwrap(),
        other => panic!("call {id}: expected a rejection, got {other:?}"),
    };
    assert_eq!(
        refused(7).reject_code(),
        Some(RejectCode::BadArguments),
        "{}",
        refused(7)
    );
    assert_eq!(refused(8).reject_code(), Some(RejectCode::UnknownMethod));
    match answer(9) {
        proto::response::Result::Ok(bytes) => {
            assert_eq!(postcard::from_bytes::<u64>(&bytes).unwrap(), 5)
        }
        other => panic!("the valid call: expected its answer, got {other:?}"),
    }
    still_serves(&server, "r").await;
    server.shutdown().await;
}

// Pins that a second hello and a batch before the hello each end their connection with a typed
// status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meaningless_frames_close_the_connection() {
    let server = silo("x", false);
    let addr = server.network().unwrap().address().unwrap().endpoint;
    let no_target = frame(Body::Batch(proto::Batch {
        requests: vec![proto::Envelope::default()],
        responses: vec![],
    }));
    let cases = [
        (
            vec![
                hello("x", PROTOCOL_VERSION, false),
                hello("x", PROTOCOL_VERSION, false),
            ],
            StatusCode::UnexpectedFrame,
        ),
        (vec![no_target], StatusCode::UnexpectedFrame),
    ];
    for (frames, expected) in cases {
        let (_, status) = within("exchange", raw_exchange(addr, frames)).await;
        assert_eq!(refused_code(&status.expect("a status")), expected);
        assert_eq!(last_error_code(&server), expected);
    }
    still_serves(&server, "x").await;
    server.shutdown().await;
}

// Pins that a silo link endpoint refuses external clients and a gateway refuses silos
// (NotAccepted), each keeping its own kind of peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_take_only_their_kind_of_peer() {
    let server = silo("k", true);
    let network = server.network().unwrap();
    let link_endpoint = network.address().unwrap().endpoint;
    let gateway = network.gateway_address().unwrap();
    for (addr, client) in [(link_endpoint, true), (gateway, false)] {
        let (_, status) = within(
            "exchange",
            raw_exchange(addr, vec![hello("k", PROTOCOL_VERSION, client)]),
        )
        .await;
        assert_eq!(
            refused_code(&status.expect("a status")),
            StatusCode::NotAccepted
        );
    }
    still_serves(&server, "k").await;
    server.shutdown().await;
}
