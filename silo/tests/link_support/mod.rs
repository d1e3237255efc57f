//! Helpers shared by the link and gateway tests: silos on 127.0.0.1, raw frames, deadlines.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use silica_client::link::LinkOptions;
use silica_client::link::raw::{OPEN_PATH, RawCodec};
use silica_client::wire::proto::{self, frame::Body};
use silica_silo::{NetworkOptions, Silo, SiloBuilder};
use tonic::codegen::http::uri::PathAndQuery;

/// Every wait in these tests ends by this deadline: a hang fails the test instead of blocking.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub fn localhost() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

/// Link options for `cluster` with a fast reconnect.
pub fn link_options(cluster: &str) -> LinkOptions {
    LinkOptions {
        cluster_id: cluster.into(),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(2),
        ..LinkOptions::default()
    }
}

/// A silo of the test grains serving silo links (and a gateway if asked) on 127.0.0.1.
pub fn silo(cluster: &str, gateway: bool) -> Silo {
    silo_with(
        crate::common::builder(),
        cluster,
        gateway,
        link_options(cluster),
    )
}

pub fn silo_with(builder: SiloBuilder, _cluster: &str, gateway: bool, link: LinkOptions) -> Silo {
    builder
        .network(NetworkOptions {
            listen: Some(localhost()),
            gateway: gateway.then(localhost),
            link,
            generation: None,
        })
        .start()
        .expect("silo starts")
}

/// Awaits `future`, failing the test if it takes longer than [`DEADLINE`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: no answer within {DEADLINE:?}"),
    }
}

/// An address on 127.0.0.1 where nothing listens (bound, then released).
pub fn dead_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind(localhost()).unwrap();
    listener.local_addr().unwrap()
}

/// Encodes a frame.
pub fn frame(body: Body) -> Bytes {
    proto::Frame { body: Some(body) }.encode_to_vec().into()
}

/// A hello frame.
pub fn hello(cluster: &str, version: u32, client: bool) -> Bytes {
    let sender = if client {
        proto::hello::Sender::Client(proto::ExternalClient { name: "raw".into() })
    } else {
        proto::hello::Sender::Silo(proto::SiloAddress {
            endpoint: "127.0.0.1:1".into(),
            generation: 1,
        })
    };
    frame(Body::Hello(proto::Hello {
        cluster_id: cluster.into(),
        protocol_version: version,
        sender: Some(sender),
    }))
}

/// Opens a link to `addr` with a raw codec, sends `frames` as they are, and reads what comes
/// back until the stream ends: the frames received, and the status it ended with, if any.
pub async fn raw_exchange(
    addr: SocketAddr,
    frames: Vec<Bytes>,
) -> (Vec<Bytes>, Option<tonic::Status>) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let outbound = tokio_stream::iter(frames);
    let response = grpc
        .streaming(
            tonic::Request::new(outbound),
            PathAndQuery::from_static(OPEN_PATH),
            RawCodec,
        )
        .await;
    let mut inbound = match response {
        Ok(response) => response.into_inner(),
        Err(status) => return (Vec::new(), Some(status)),
    };
    let mut received = Vec::new();
    loop {
        match inbound.message().await {
            Ok(Some(bytes)) => received.push(bytes),
            Ok(None) => return (received, None),
            Err(status) => return (received, Some(status)),
        }
    }
}
