//! Silo links on 127.0.0.1: calls between two silos, batching under concurrency, typed errors
//! across the wire, HLC stamping and merging, and calls that end (never hang) when the other silo
//! is not there or goes away.

mod common;
mod link_support;

use std::time::Duration;

use common::{AccountRef, BankError, CounterRef};
use link_support::{DEADLINE, dead_address, silo, within};
use silica_client::link::{LinkError, LinkStatus};
use silica_grains::placement::SiloAddress;
use silica_grains::{CallError, GrainReference};
use silica_silo::SiloConfig;

// Pins that a reference made for a remote silo runs the grain there (not locally), and that
// answers and the grain's own errors come back over the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_run_on_the_remote_silo() {
    let a = silo("c1", false);
    let b = silo("c1", false);
    let to_b = a
        .network()
        .unwrap()
        .remote_factory(b.network().unwrap().address().unwrap());
    let counter: CounterRef = to_b.get("x");
    assert_eq!(within("add", counter.add(2)).await, Ok(2));
    assert_eq!(within("add", counter.add(3)).await, Ok(5));
    assert_eq!(b.activation_count(), 1);
    assert_eq!(a.activation_count(), 0);
    let account: AccountRef = to_b.get("acc");
    assert_eq!(
        within("withdraw", account.withdraw(5)).await,
        Ok(Err(BankError::Insufficient { balance: 0 }))
    );
    a.shutdown().await;
    b.shutdown().await;
}

// Pins that many concurrent callers on one link all get their own answers (responses are
// matched by call id, whatever the batching).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_are_matched_to_their_callers() {
    let a = silo("c2", false);
    let b = silo("c2", false);
    let to_b = a
        .network()
        .unwrap()
        .remote_factory(b.network().unwrap().address().unwrap());
    let calls = (0..400_u64).map(|i| {
        let counter: CounterRef = to_b.get(format!("k{}", i % 20));
        async move { (i % 20, counter.add(1).await) }
    });
    let results = within("400 calls", futures_util::future::join_all(calls)).await;
    for key in 0..20 {
        let mut seen: Vec<u64> = results
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, r)| *r.as_ref().unwrap())
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (1..=20).collect::<Vec<_>>(), "grain k{key}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

// Pins that typed errors cross the wire intact: a panic names the grain, a slow call times out
// with the caller's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors_cross_the_wire() {
    let a = silo("c3", false);
    let b = silo("c3", false);
    let to_b = a
        .network()
        .unwrap()
        .remote_factory(b.network().unwrap().address().unwrap());
    let counter: CounterRef = to_b.get("p");
    match within("fail", counter.fail("boom".into())).await {
        Err(CallError::GrainPanicked { grain, message }) => {
            assert_eq!(&grain, counter.id());
            assert!(message.contains("boom"), "{message}");
        }
        other => panic!("expected GrainPanicked, got {other:?}"),
    }
    let slow = counter.with_timeout(Duration::from_millis(50));
    assert_eq!(
        within("sleep", slow.sleep(500)).await,
        Err(CallError::Timeout(Duration::from_millis(50)))
    );
    a.shutdown().await;
    b.shutdown().await;
}

// Pins that a link made for one incarnation of a silo does not deliver to another one at the
// same endpoint (a restart on the same port): its calls end with SiloUnavailable and the link
// says why, while a link for the incarnation that answers works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_refuses_another_generation_at_the_endpoint() {
    let a = silo("g1", false);
    let b = silo("g1", false);
    let real = b.network().unwrap().address().unwrap();
    let gone = SiloAddress::new(real.endpoint, real.generation.wrapping_sub(1));
    let network = a.network().unwrap();
    let stale: CounterRef = network.remote_factory(gone).get("g");
    match within("call", stale.add(1)).await {
        Err(CallError::SiloUnavailable(message)) => {
            assert!(message.contains("answers at the endpoint of"), "{message}")
        }
        other => panic!("expected SiloUnavailable, got {other:?}"),
    }
    assert!(
        matches!(
            network.link_status(gone),
            Some(LinkStatus::Down(LinkError::WrongSilo { expected, got }))
                if expected == gone && got == real
        ),
        "{:?}",
        network.link_status(gone)
    );
    let current: CounterRef = network.remote_factory(real).get("g");
    assert_eq!(within("call", current.add(1)).await, Ok(1));
    a.shutdown().await;
    b.shutdown().await;
}

// Pins HLC handling on links: the receiver merges the sender's stamp and the sender merges the
// response's, so after a round trip neither clock is behind the other's last reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clocks_are_stamped_and_merged() {
    let a = silo("c4", false);
    let b = silo("c4", false);
    let to_b = a
        .network()
        .unwrap()
        .remote_factory(b.network().unwrap().address().unwrap());
    let counter: CounterRef = to_b.get("t");
    let before = a.clock().last();
    within("add", counter.add(1)).await.unwrap();
    let (a_now, b_now) = (a.clock().last(), b.clock().last());
    assert!(a_now > before, "sending ticks the sender's clock");
    assert!(b_now > before, "the receiver merged the request's stamp");
    assert!(a_now >= b_now, "the sender merged the response's stamp");
    a.shutdown().await;
    b.shutdown().await;
}

// Pins that a call to a silo nobody listens for fails with SiloUnavailable, promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_silo_is_a_typed_error() {
    let a = silo("c5", false);
    let nobody = SiloAddress::new(dead_address(), 1);
    let counter: CounterRef = a.network().unwrap().remote_factory(nobody).get("x");
    match within("call to nobody", counter.add(1)).await {
        Err(CallError::SiloUnavailable(_)) => {}
        other => panic!("expected SiloUnavailable, got {other:?}"),
    }
    assert!(matches!(
        a.network().unwrap().link_status(nobody),
        Some(LinkStatus::Down(_))
    ));
    a.network().unwrap().close_link(nobody);
    assert_eq!(
        a.network().unwrap().link_status(nobody),
        None,
        "not retried any more"
    );
    a.shutdown().await;
}

// Pins that calls waiting on a silo that goes away end with an error (not a hang), and that
// calls made after it is gone fail fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_end_when_the_silo_goes_away() {
    let a = silo("c6", false);
    let config = SiloConfig {
        shutdown_grace: Duration::from_millis(50),
        ..SiloConfig::default()
    };
    let b = link_support::silo_with(
        common::builder().config(config),
        "c6",
        false,
        link_support::link_options("c6"),
    );
    let b_address = b.network().unwrap().address().unwrap();
    let counter: CounterRef = a.network().unwrap().remote_factory(b_address).get("s");
    let slow = tokio::spawn(async move { counter.sleep(60_000).await });
    // Wait until the call is in the grain on b.
    within("activation on b", async {
        while b.activation_count() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    b.shutdown().await;
    let result = within("call in flight", slow).await.unwrap();
    assert!(
        matches!(result, Err(CallError::SiloUnavailable(_))),
        "expected SiloUnavailable, got {result:?}"
    );
    let later: CounterRef = a.network().unwrap().remote_factory(b_address).get("s");
    let started = tokio::time::Instant::now();
    assert!(matches!(
        within("call after", later.add(1)).await,
        Err(CallError::SiloUnavailable(_))
    ));
    assert!(started.elapsed() < DEADLINE);
    a.shutdown().await;
}

// Pins the unary probe membership uses: a live silo answers with its address, a dead one and
// a silo of another cluster give typed errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_with_the_silo_address() {
    use silica_client::link::{LinkError, Prober};
    use silica_client::wire::proto::StatusCode;
    let b = silo("c7", false);
    let address = b.network().unwrap().address().unwrap();
    let endpoint = address.endpoint.to_string();
    let timeout = Duration::from_secs(2);
    let prober = Prober::new(&endpoint, &link_support::link_options("c7"), timeout).unwrap();
    assert_eq!(within("probe", prober.probe(1)).await, Ok(Some(address)));
    let stranger = Prober::new(&endpoint, &link_support::link_options("c8"), timeout).unwrap();
    assert_eq!(
        within("probe", stranger.probe(2)).await.unwrap_err().code(),
        StatusCode::WrongCluster
    );
    let nobody = dead_address().to_string();
    let dead = Prober::new(&nobody, &link_support::link_options("c7"), timeout).unwrap();
    assert!(matches!(
        within("probe", dead.probe(3)).await,
        Err(LinkError::Transport(_))
    ));
    b.shutdown().await;
}

// Pins that an envelope stamped too far ahead of the receiver's clock is rejected with
// ClockSkew and its timestamp not adopted (the receiving silo merges every stamp it accepts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamps_too_far_ahead_are_rejected() {
    use std::sync::Arc;

    use silica_client::link::{Link, Peer};
    use silica_clocks::{ClockConfig, HybridClock, NodeId, wall_clock_ms};
    use silica_grains::RejectCode;

    let b = silo("c9", false);
    let to = b.network().unwrap().address().unwrap();
    let ahead = Arc::new(HybridClock::new(NodeId(3), ClockConfig::default()));
    let forged = ahead.now(wall_clock_ms() + 60_000);
    let me = Peer::Silo(SiloAddress::new(dead_address(), 1));
    let link = Link::new(
        to.endpoint.to_string(),
        me,
        link_support::link_options("c9"),
        ahead,
    );
    let envelope = silica_client::Envelope {
        target: silica_grains::GrainId::new(CounterRef::grain_type(), "skew"),
        interface: std::borrow::Cow::Borrowed(CounterRef::INTERFACE),
        method: std::borrow::Cow::Borrowed("get"),
        args: silica_grains::codec::encode(&()).unwrap(),
        hlc: silica_clocks::HlcTimestamp::ZERO,
        chain: silica_client::CallChain::EMPTY,
        timeout: Duration::from_secs(5),
    };
    let answer = within("skewed call", link.call(envelope)).await;
    assert_eq!(
        answer.unwrap_err().reject_code(),
        Some(RejectCode::ClockSkew)
    );
    assert!(
        b.clock().last() < forged,
        "the forged stamp was not adopted"
    );
    assert_eq!(b.activation_count(), 0, "the call ran nothing");
    b.shutdown().await;
}
