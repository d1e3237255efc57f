//! The external client through gateways: typed references as inside a silo, typed errors and
//! timeouts, the call chain of an external caller reset, failover between two gateways when one
//! goes away, reconnection when a gateway comes back, and connect errors.

mod common;
mod link_support;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use common::{AccountRef, BankError, CounterRef};
use link_support::{dead_address, link_options, silo, within};
use silica_client::link::{Link, LinkError, LinkStatus, Peer};
use silica_client::wire::proto::StatusCode;
use silica_client::{CallChain, ChainLink, Client, ClientError, ClientOptions, Envelope};
use silica_clocks::{ClockConfig, HlcTimestamp, HybridClock, NodeId};
use silica_grains::{CallError, GrainId, GrainReference, Interleave, codec};
use silica_silo::{NetworkOptions, Silo};

fn options(cluster: &str) -> ClientOptions {
    ClientOptions {
        link: link_options(cluster),
        ..ClientOptions::default()
    }
}

fn gateway(silo: &Silo) -> std::net::SocketAddr {
    silo.network().unwrap().gateway_address().unwrap()
}

/// Polls until `done` holds, failing the test at the deadline.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    within(what, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

// Pins that the client's typed references work as inside a silo: values, the grain's own
// errors, panics and per-reference timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_references_through_the_gateway() {
    let server = silo("g1", true);
    let client = within(
        "connect",
        Client::connect_with([gateway(&server)], options("g1")),
    )
    .await
    .expect("connects");
    let counter: CounterRef = client.get("a");
    assert_eq!(within("add", counter.add(2)).await, Ok(2));
    assert_eq!(within("get", counter.get()).await, Ok(2));
    let account: AccountRef = client.grain_factory().get("acc");
    assert_eq!(
        within("withdraw", account.withdraw(1)).await,
        Ok(Err(BankError::Insufficient { balance: 0 }))
    );
    assert!(matches!(
        within("fail", counter.fail("no".into())).await,
        Err(CallError::GrainPanicked { .. })
    ));
    let slow = counter.with_timeout(Duration::from_millis(50));
    assert_eq!(
        within("sleep", slow.sleep(500)).await,
        Err(CallError::Timeout(Duration::from_millis(50)))
    );
    assert_eq!(server.activation_count(), 2);
    client.close();
    server.shutdown().await;
}

fn add_one_claiming_to_be_inside(target: &GrainId) -> Envelope {
    Envelope {
        target: target.clone(),
        interface: Cow::Borrowed(CounterRef::INTERFACE),
        method: Cow::Borrowed("add"),
        args: codec::encode(&(1_u64,)).unwrap(),
        hlc: HlcTimestamp::ZERO,
        chain: CallChain::from(vec![ChainLink {
            grain: target.clone(),
            turn: Interleave::Exclusive,
        }]),
        timeout: Duration::from_secs(5),
    }
}

// Pins that an external caller's claim to be inside a grain turn is dropped at the gateway
// (the same envelope between silos keeps its chain and is refused as a cycle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_call_chains_are_reset() {
    let server = silo("g2", true);
    let target = GrainId::new(CounterRef::grain_type(), "self");
    let clock = Arc::new(HybridClock::new(NodeId(9), ClockConfig::default()));
    let external = Link::new(
        gateway(&server).to_string(),
        Peer::Client("forger".into()),
        link_options("g2"),
        clock.clone(),
    );
    let answer = within(
        "external",
        external.call(add_one_claiming_to_be_inside(&target)),
    )
    .await;
    assert_eq!(answer.map(|p| codec::decode::<u64>(&p)), Ok(Ok(1)));
    let silo_address = server.network().unwrap().address().unwrap();
    let me = Peer::Silo(silica_grains::SiloAddress::new(dead_address(), 1));
    let inside = Link::new(
        silo_address.endpoint.to_string(),
        me,
        link_options("g2"),
        clock,
    );
    assert!(matches!(
        within("silo", inside.call(add_one_claiming_to_be_inside(&target))).await,
        Err(CallError::CycleDetected { .. })
    ));
    server.shutdown().await;
}

// Pins failover: with two gateways, when one silo shuts down every call still ends (a value, or
// SiloUnavailable for a call whose connection died under it; calls the draining silo refused
// are sent through the other gateway), and calls go on through the other gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_to_the_other_gateway() {
    let first = silo("g3", true);
    let second = silo("g3", true);
    let gateways = [gateway(&first), gateway(&second)];
    let client = within("connect", Client::connect_with(gateways, options("g3")))
        .await
        .expect("connects");
    until("both gateways up", || {
        client
            .gateways()
            .iter()
            .all(|(_, s)| matches!(s, LinkStatus::Up(_)))
    })
    .await;
    let counter: CounterRef = client.get("f");
    for _ in 0..10 {
        within("before", counter.add(1))
            .await
            .expect("both gateways serve");
    }
    let in_flight: Vec<_> = (0..50).map(|_| tokio::spawn(counter.add(1))).collect();
    first.shutdown().await;
    // A call the draining silo refused (ShuttingDown) went through the other gateway; only calls
    // whose connection died under them may fail.
    for call in in_flight {
        match within("in flight", call).await.unwrap() {
            Ok(_) | Err(CallError::SiloUnavailable(_)) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    until("the first gateway's link is down", || {
        !matches!(client.gateways()[0].1, LinkStatus::Up(_))
    })
    .await;
    for _ in 0..20 {
        within("after", counter.add(1))
            .await
            .expect("the second gateway serves");
    }
    assert!(second.activation_count() >= 1);
    client.close();
    second.shutdown().await;
}

// Pins reconnection: a gateway that goes away and comes back at the same address is used
// again without a new client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_when_the_gateway_comes_back() {
    let first = silo("g4", true);
    let addr = gateway(&first);
    let client = within("connect", Client::connect_with([addr], options("g4")))
        .await
        .expect("connects");
    let counter: CounterRef = client.get("r");
    assert_eq!(within("add", counter.add(1)).await, Ok(1));
    first.shutdown().await;
    until("link down", || {
        !matches!(client.gateways()[0].1, LinkStatus::Up(_))
    })
    .await;
    assert!(matches!(
        within("while down", counter.add(1)).await,
        Err(CallError::SiloUnavailable(_))
    ));
    let again = common::builder()
        .network(NetworkOptions {
            gateway: Some(addr),
            link: link_options("g4"),
            ..NetworkOptions::default()
        })
        .start()
        .expect("the gateway comes back at the same address");
    until("link up again", || {
        matches!(client.gateways()[0].1, LinkStatus::Up(_))
    })
    .await;
    assert_eq!(
        within("add", counter.add(1)).await,
        Ok(1),
        "a fresh activation"
    );
    client.close();
    again.shutdown().await;
}

// Pins the connect errors: no gateway given, none reachable, and a gateway of another cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_are_typed() {
    let none: [&str; 0] = [];
    assert_eq!(
        Client::connect(none).await.unwrap_err(),
        ClientError::NoGateways
    );
    let nobody = dead_address();
    match within("unreachable", Client::connect_with([nobody], options("g5"))).await {
        Err(ClientError::Unreachable(errors)) => {
            assert_eq!(errors.len(), 1);
            assert!(matches!(errors[0].1, LinkError::Transport(_)));
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    let server = silo("g5", true);
    match within(
        "wrong cluster",
        Client::connect_with([gateway(&server)], options("other")),
    )
    .await
    {
        Err(ClientError::Unreachable(errors)) => {
            assert_eq!(errors[0].1.code(), StatusCode::WrongCluster);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    server.shutdown().await;
}
