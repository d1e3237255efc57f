//! Three clustered silos in one process on 127.0.0.1 over the in-memory table: single
//! activation under racing first calls, calls from any silo reaching the one activation, a
//! graceful leave that loses no call, and a crashed silo's grains re-activating elsewhere.
//! (Each test uses its own range of grain keys: they share the record of live activations.)

mod cluster_support;

use std::time::{Duration, Instant};

use cluster_support::{Load, LocalRef, NearRef, TrackedRef, live_on, silo, three, within};
use silica_grains::CallError;
use silica_silo::cluster::InMemoryMembershipTable;

// Pins single activation: every silo calls the same 24 fresh grains at once, 4 calls each, and
// every grain ends with exactly one activation, on one silo, that counted all 12 calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_first_calls_from_all_silos_make_one_activation() {
    let silos = three("race").await;
    let keys: Vec<i64> = (1_000..1_024).collect();
    let calls = silos.iter().flat_map(|silo| {
        let factory = silo.grain_factory();
        keys.iter().flat_map(move |&key| {
            let grain: TrackedRef = factory.get(key);
            (0..4).map(move |_| {
                let grain = grain.clone();
                async move { (key, grain.hit().await) }
            })
        })
    });
    let results = within("racing calls", futures_util::future::join_all(calls)).await;
    for &key in &keys {
        let mut answers: Vec<(usize, u64)> = results
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, r)| r.clone().expect("call answered"))
            .collect();
        answers.sort_unstable_by_key(|a| a.1);
        let host = answers[0].0;
        assert!(
            answers.iter().all(|a| a.0 == host),
            "key {key}: {answers:?}"
        );
        let counts: Vec<u64> = answers.iter().map(|a| a.1).collect();
        assert_eq!(counts, (1..=12).collect::<Vec<_>>(), "key {key}");
        assert_eq!(live_on(&key.to_string(), &[]), [host], "key {key}");
    }
    let hosts: std::collections::BTreeSet<usize> = keys
        .iter()
        .map(|k| live_on(&k.to_string(), &[])[0])
        .collect();
    assert!(
        hosts.len() >= 2,
        "random placement spread 24 grains over {hosts:?}"
    );
    for silo in &silos {
        silo.shutdown().await;
    }
}

// Pins that calls from every silo (and through every gateway) reach the same activation,
// in order: one counter incremented round-robin from the three silos counts 1..=30.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_any_silo_reach_the_one_activation() {
    let silos = three("any").await;
    let gateways: Vec<std::net::SocketAddr> = silos
        .iter()
        .map(|s| s.network().unwrap().gateway_address().unwrap())
        .collect();
    let options = silica_client::ClientOptions {
        link: silica_client::link::LinkOptions {
            cluster_id: "any".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let client = within(
        "connect",
        silica_client::Client::connect_with(&gateways, options),
    )
    .await
    .expect("client connects");
    let mut host = None;
    for i in 0..30u64 {
        let grain: TrackedRef = match i % 4 {
            3 => client.get(2_000i64),
            n => silos[n as usize].grain_factory().get(2_000i64),
        };
        let (on, count) = within("hit", grain.hit()).await.expect("answered");
        assert_eq!(count, i + 1);
        assert_eq!(*host.get_or_insert(on), on, "the activation stayed put");
    }
    assert_eq!(live_on("2000", &[]).len(), 1);
    for silo in &silos {
        silo.shutdown().await;
    }
}

// Pins that stateless workers stay local: the same worker key called from each silo runs on
// that silo (no directory entry, no forwarding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_workers_run_on_the_calling_silo() {
    let silos = three("local").await;
    for (i, silo) in silos.iter().enumerate() {
        let worker: LocalRef = silo.grain_factory().get(0i64);
        for _ in 0..3 {
            assert_eq!(within("worker", worker.where_am_i()).await, Ok(i));
        }
    }
    for silo in &silos {
        silo.shutdown().await;
    }
}

// Pins that new activations are placed by the type's director: a prefer-local type's fresh
// grains activate on the silo that called first, and stay there when others call them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_follows_the_types_director() {
    let silos = three("placement").await;
    for (i, silo) in silos.iter().enumerate() {
        for k in 0..5i64 {
            let grain: NearRef = silo.grain_factory().get(i as i64 * 100 + k);
            assert_eq!(within("first call", grain.host()).await, Ok(i));
        }
    }
    let grain: NearRef = silos[2].grain_factory().get(3i64);
    assert_eq!(within("from another silo", grain.host()).await, Ok(0));
    for silo in &silos {
        silo.shutdown().await;
    }
}

// Pins that a deactivated grain leaves the directory: after its activation ends, a call from
// another silo activates it afresh (count 1), with one activation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivated_grains_activate_afresh_from_any_silo() {
    let silos = three("retire").await;
    for key in 5_000..5_006i64 {
        let grain: TrackedRef = silos[0].grain_factory().get(key);
        within("hit", grain.hit()).await.expect("answered");
        within("retire", grain.retire()).await.expect("answered");
        within("deactivation", async {
            while !live_on(&key.to_string(), &[]).is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        let again: TrackedRef = silos[(key % 3) as usize].grain_factory().get(key);
        let (on, count) = within("hit again", again.hit()).await.expect("answered");
        assert_eq!(count, 1, "key {key}: a fresh activation");
        assert_eq!(live_on(&key.to_string(), &[]), [on], "key {key}");
    }
    for silo in &silos {
        silo.shutdown().await;
    }
}

// Pins hand-offs on a join: while two silos keep calling 20 grains, a third joins (part of the
// directory moves to it); no call fails and every grain still has one activation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_under_load_moves_entries_without_failures() {
    let table = InMemoryMembershipTable::new();
    let (a, b) = (silo::<0>(&table, "join"), silo::<1>(&table, "join"));
    within("join", a.joined()).await.unwrap();
    within("join", b.joined()).await.unwrap();
    let keys: Vec<i64> = (6_000..6_020).collect();
    let load = Load::start(&[a.clone(), b.clone()], &keys, 0);
    let c = silo::<2>(&table, "join");
    within("third joins", c.joined()).await.unwrap();
    within("everyone sees three", async {
        while [&a, &b, &c]
            .iter()
            .any(|s| s.membership().is_none_or(|v| v.active_silos().len() < 3))
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    load.calls_pass(100).await;
    let (calls, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed: {failures:?}",
        failures.len()
    );
    for &key in &keys {
        assert_eq!(live_on(&key.to_string(), &[]).len(), 1, "key {key}");
        let grain: TrackedRef = c.grain_factory().get(key);
        let (on, _) = within("from the new silo", grain.hit())
            .await
            .expect("answered");
        assert_eq!(live_on(&key.to_string(), &[]), [on], "key {key}");
    }
    for silo in [&a, &b, &c] {
        silo.shutdown().await;
    }
}

// Pins a graceful leave: while two silos keep calling 20 grains, the third (hosting some of
// them) shuts down; not one call fails, its grains are active on the others afterwards, and
// the others drop their links to it (none keeps reconnecting to a silo that left).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_leave_loses_no_call() {
    let [a, b, leaving] = three("leave").await;
    let keys: Vec<i64> = (3_000..3_020).collect();
    for &key in &keys {
        let grain: TrackedRef = leaving.grain_factory().get(key);
        within("warm up", grain.hit()).await.expect("answered");
    }
    let on_leaving: Vec<i64> = keys
        .iter()
        .copied()
        .filter(|k| live_on(&k.to_string(), &[]) == [2])
        .collect();
    let placed: Vec<Vec<usize>> = keys.iter().map(|k| live_on(&k.to_string(), &[])).collect();
    assert!(
        !on_leaving.is_empty(),
        "the leaving silo hosts no grain: {placed:?}"
    );
    let load = Load::start(&[a.clone(), b.clone()], &keys, 2);
    load.calls_pass(20).await;
    let left = leaving.network().unwrap().address().unwrap();
    within("leave", leaving.shutdown()).await;
    // Keep calling after the leave: the grains that moved answer from their new silos.
    load.calls_pass(100).await;
    let (calls, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed: {failures:?}",
        failures.len()
    );
    for key in on_leaving {
        let grain: TrackedRef = a.grain_factory().get(key);
        let (on, _) = within("after leave", grain.hit()).await.expect("answered");
        assert_ne!(on, 2, "key {key} moved off the silo that left");
        assert_eq!(live_on(&key.to_string(), &[]), [on], "key {key}");
    }
    within("links to the silo that left closed", async {
        while [&a, &b]
            .iter()
            .any(|s| s.network().unwrap().link_status(left).is_some())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

// Pins failure handling: a silo that crashes (no leave, connections dropped) is declared dead,
// and calls to the grains it hosted activate them on the survivors, with one activation each;
// calls before that end with a typed error, never hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_silos_grains_reactivate_elsewhere() {
    let [a, b, doomed] = three("crash").await;
    let keys: Vec<i64> = (4_000..4_020).collect();
    for &key in &keys {
        let grain: TrackedRef = doomed.grain_factory().get(key);
        within("warm up", grain.hit()).await.expect("answered");
    }
    let lost: Vec<i64> = keys
        .iter()
        .copied()
        .filter(|k| live_on(&k.to_string(), &[]) == [2])
        .collect();
    let placed: Vec<Vec<usize>> = keys.iter().map(|k| live_on(&k.to_string(), &[])).collect();
    assert!(
        !lost.is_empty(),
        "the crashing silo hosts no grain: {placed:?}"
    );
    let killed = Instant::now();
    doomed.crash().await;
    for (i, &key) in lost.iter().enumerate() {
        let caller = if i % 2 == 0 { &a } else { &b };
        let grain: TrackedRef = caller.grain_factory().get(key);
        let on = within("re-activation", async {
            loop {
                match grain.hit().await {
                    Ok((on, count)) => {
                        assert_eq!(count, 1, "a fresh activation");
                        return on;
                    }
                    Err(CallError::SiloUnavailable(_) | CallError::Timeout(_)) => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(other) => panic!("unexpected error {other:?}"),
                }
            }
        })
        .await;
        assert_ne!(on, 2);
        assert_eq!(live_on(&key.to_string(), &[2]), [on], "key {key}");
    }
    println!(
        "crash: all lost grains answered again {:?} after the crash",
        killed.elapsed()
    );
    let view = a.membership().unwrap();
    assert_eq!(
        view.active_silos().len(),
        2,
        "the crashed silo is out of the view"
    );
    a.shutdown().await;
    b.shutdown().await;
}
