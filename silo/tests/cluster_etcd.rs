//! The etcd membership table against a real etcd (Debian's etcd-server), started per test on
//! free 127.0.0.1 ports by `cluster_etcd/harness.rs`: the shared conformance suite, concurrent
//! writers, leases and their expiry as a death signal, and etcd going away.
#![cfg(feature = "etcd")]

#[path = "cluster_etcd/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use harness::{Etcd, options};
use silica_grains::placement::SiloAddress;
use silica_silo::cluster::{
    EtcdMembershipTable, MembershipConfig, MembershipEntry, MembershipOracle, MembershipTable,
    MembershipTableError, SiloStatus, StopReason, TableVersion, conformance, driver,
};

fn silo(port: u16) -> SiloAddress {
    SiloAddress::new(SocketAddr::from(([127, 0, 0, 1], port)), 1)
}

// Polls `check` every 50 ms until it holds; panics naming `what` after `limit`.
async fn eventually<F: Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// Pins that the etcd table meets the whole `MembershipTable` contract: the same suite the
// in-memory table runs, each check on its own cluster prefix.
#[tokio::test]
async fn etcd_table_passes_conformance() {
    let etcd = Etcd::start().await;
    let table = etcd.table("base").await;
    let mut n = 0;
    conformance::run_all(|| {
        n += 1;
        table.for_cluster(&format!("conformance-{n}"))
    })
    .await;
}

// Pins the fence under real concurrency: eight connections update one row from the same read,
// and exactly one transaction wins; the others see the version it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_exactly_one_wins() {
    let etcd = Etcd::start().await;
    let first = etcd.table("race").await;
    let row = MembershipEntry::new(silo(1), SiloStatus::Joining, 0);
    first
        .insert_row(row.clone(), TableVersion(0))
        .await
        .unwrap();
    let mut writers = Vec::new();
    for voter in 0..8u16 {
        let table = etcd.table("race").await;
        let mut row = row.clone();
        row.suspicions.push(silica_silo::cluster::SuspicionVote {
            voter: silo(100 + voter),
            at_ms: 1,
        });
        writers.push(tokio::spawn(async move {
            table.update_row(row, TableVersion(1)).await
        }));
    }
    let mut won = 0;
    for writer in writers {
        match writer.await.unwrap() {
            Ok(v) => {
                assert_eq!(v, TableVersion(2));
                won += 1;
            }
            Err(MembershipTableError::VersionMismatch { current, .. }) => {
                assert_eq!(current, TableVersion(2));
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(won, 1);
    let snap = first.read_all().await.unwrap();
    assert_eq!(snap.entry(&row.silo).unwrap().suspicions.len(), 1);
}

// Pins lease semantics: a kept-alive lease keeps its silo's liveness key, a lapsed one shows
// up in `expired_leases` (only for that silo), and the lapsed silo's heartbeat is refused with
// `LeaseExpired` instead of silently writing an unleased key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapsed_lease_is_reported_kept_lease_is_not() {
    let etcd = Etcd::start().await;
    let table = etcd.table("leases").await;
    let (kept, lapsed) = (silo(1), silo(2));
    for (i, s) in [kept, lapsed].into_iter().enumerate() {
        let row = MembershipEntry::new(s, SiloStatus::Active, 10);
        table.insert_row(row, TableVersion(i as u64)).await.unwrap();
    }
    let mut keeper = table
        .grant_lease(kept, Duration::from_secs(1))
        .await
        .unwrap();
    let lapsing = table
        .grant_lease(lapsed, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(lapsing.ttl() >= Duration::from_secs(1));
    table.update_i_am_alive(lapsed, 50).await.unwrap();
    let renewals = tokio::spawn(async move {
        loop {
            keeper.keep_alive().await.expect("renew the kept lease");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    eventually("lapsed lease reported", Duration::from_secs(15), || async {
        table
            .read_all()
            .await
            .unwrap()
            .expired_leases
            .contains(&lapsed)
    })
    .await;
    let snap = table.read_all().await.unwrap();
    assert!(
        !snap.expired_leases.contains(&kept),
        "kept lease reported expired"
    );
    assert_eq!(
        snap.entry(&lapsed).unwrap().i_am_alive_ms,
        10,
        "the leased heartbeat went with the lease"
    );
    assert_eq!(
        table.update_i_am_alive(lapsed, 60).await,
        Err(MembershipTableError::LeaseExpired(lapsed))
    );
    table.update_i_am_alive(kept, 70).await.unwrap();
    assert_eq!(
        table
            .read_all()
            .await
            .unwrap()
            .entry(&kept)
            .unwrap()
            .i_am_alive_ms,
        70
    );
    renewals.abort();
}

// Pins how an expired lease feeds the failure detector: silos whose peers' lease lapsed vote
// at once (no missed probes needed), the usual vote count declares it dead, and the lapsed
// silo stops when it reads its row. A revoked lease (graceful leave) is no signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_lease_leads_to_death_by_votes() {
    let etcd = Etcd::start().await;
    let table = etcd.table("detect").await;
    let config = MembershipConfig::default();
    let mut oracles: Vec<MembershipOracle> = (1..=3)
        .map(|port| MembershipOracle::new(silo(port), config))
        .collect();
    let mut leases = Vec::new();
    for oracle in &mut oracles {
        driver::join(&table, oracle, 0).await.unwrap();
        driver::set_status(&table, oracle, SiloStatus::Active, 0)
            .await
            .unwrap();
        leases.push(
            table
                .grant_lease(oracle.me(), Duration::from_secs(1))
                .await
                .unwrap(),
        );
    }
    let lapsed = leases.pop().unwrap();
    let dead = lapsed.silo();
    drop(lapsed);
    let mut now_ms = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !table.read_all().await.unwrap().is_dead(&dead) {
        assert!(Instant::now() < deadline, "lapsed silo never declared dead");
        now_ms += 100;
        for (lease, oracle) in leases.iter_mut().zip(&mut oracles) {
            lease.keep_alive().await.unwrap();
            driver::refresh(&table, oracle).await.unwrap();
            oracle.handle_lease_check(now_ms);
            driver::process_actions(&table, oracle).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row = table
        .read_all()
        .await
        .unwrap()
        .entry(&dead)
        .cloned()
        .unwrap();
    assert_eq!(row.suspicions.len(), 2, "death took both monitors' votes");
    driver::refresh(&table, &mut oracles[2]).await.unwrap();
    assert_eq!(oracles[2].stop_decision(), Some(StopReason::DeclaredDead));
    // A graceful leave: dead row, revoked lease, and no expired-lease report.
    let leaving = leases.pop().unwrap();
    driver::set_status(&table, &mut oracles[1], SiloStatus::Dead, now_ms)
        .await
        .unwrap();
    leaving.revoke().await.unwrap();
    let snap = table.read_all().await.unwrap();
    assert!(snap.expired_leases.is_empty(), "{:?}", snap.expired_leases);
}

// Pins that a vanished etcd is a typed error within the request timeout, for every operation
// (lease renewal included), and that connecting to an endpoint where nothing listens says
// which endpoint.
#[tokio::test]
async fn etcd_gone_is_a_typed_error() {
    let etcd = Etcd::start().await;
    let endpoint = etcd.endpoint.clone();
    let table = etcd.table("gone").await;
    let row = MembershipEntry::new(silo(1), SiloStatus::Joining, 0);
    table
        .insert_row(row.clone(), TableVersion(0))
        .await
        .unwrap();
    let mut lease = table
        .grant_lease(row.silo, Duration::from_secs(5))
        .await
        .unwrap();
    drop(etcd);
    let started = Instant::now();
    let unavailable = |r: Result<(), MembershipTableError>| match r {
        Err(MembershipTableError::Unavailable(message)) => message,
        other => panic!("expected Unavailable, got {other:?}"),
    };
    let read = unavailable(table.read_all().await.map(drop));
    assert!(read.contains(&endpoint), "{read}");
    unavailable(
        table
            .update_row(row.clone(), TableVersion(1))
            .await
            .map(drop),
    );
    unavailable(
        table
            .insert_row(row.clone(), TableVersion(1))
            .await
            .map(drop),
    );
    unavailable(table.update_i_am_alive(row.silo, 5).await);
    unavailable(lease.keep_alive().await.map(drop));
    unavailable(
        table
            .grant_lease(row.silo, Duration::from_secs(1))
            .await
            .map(drop),
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "errors took {:?}",
        started.elapsed()
    );
    let refused = EtcdMembershipTable::connect(&[&endpoint], "gone", options()).await;
    let message = unavailable(refused.map(drop));
    assert!(
        message.contains("cannot reach etcd at") && message.contains(&endpoint),
        "{message}"
    );
}
