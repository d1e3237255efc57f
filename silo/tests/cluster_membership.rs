//! Membership: failure detection, votes, death declaration, stopping, supersession.

mod cluster_harness;

use cluster_harness::{Cluster, addr, ready};
use silica_silo::cluster::{
    MembershipConfig, MembershipEntry, MembershipOracle, SiloStatus, StopReason, TableVersion,
    driver, plan_suspicion, votes_required,
};

fn config() -> MembershipConfig {
    MembershipConfig::default()
        .with_missed_probes_limit(3)
        .with_votes_for_death(2)
        .with_vote_expiration_ms(10_000)
}

// Pins detection time: a killed silo in a 4-silo cluster is declared dead within
// `num_missed_probes_limit` probe rounds (every monitor votes on the round its limit is hit),
// and every survivor's view then drops it from the active set.
#[test]
fn killed_silo_is_declared_dead_within_the_probe_limit() {
    let mut c = Cluster::with_silos(config(), 4);
    let victim = c.silos[2].address;
    c.kill(2);
    let limit = c.config.num_missed_probes_limit;
    for round in 1..=limit {
        c.probe_round();
        let dead = c.table_view().is_dead(&victim);
        assert_eq!(dead, round == limit, "round {round}: dead = {dead}");
    }
    c.settle();
    for i in [0, 1, 3] {
        assert!(!c.silos[i].oracle.view().active_silos().contains(&victim));
        assert!(c.silos[i].oracle.is_serving());
    }
}

// Pins that one monitor's vote is not enough when more silos are active, and that the silo
// stays alive while a second vote is missing.
#[test]
fn one_vote_is_not_enough_in_a_larger_cluster() {
    let mut c = Cluster::with_silos(config().with_num_probed_silos(1), 4);
    // With one probed silo each, silo 2 is watched by exactly one monitor.
    let victim = c.silos[2].address;
    c.kill(2);
    for _ in 0..c.config.num_missed_probes_limit {
        c.probe_round();
    }
    let row = c.table_view().entry(&victim).cloned().unwrap();
    assert_eq!(row.status, SiloStatus::Active);
    assert_eq!(row.suspicions.len(), 1);
}

// Pins the vote count cap: with two silos the lone survivor's single vote declares the other
// dead ("all other live silos if fewer").
#[test]
fn lone_survivor_declares_its_peer_dead() {
    let mut c = Cluster::with_silos(config(), 2);
    let victim = c.silos[1].address;
    assert_eq!(votes_required(&c.table_view(), &victim, &c.config), 1);
    c.kill(1);
    for _ in 0..c.config.num_missed_probes_limit {
        c.probe_round();
    }
    assert!(c.table_view().is_dead(&victim));
}

// Pins vote expiry: votes older than the expiration do not add up to a death declaration.
#[test]
fn expired_votes_do_not_count() {
    let mut c = Cluster::with_silos(config().with_vote_expiration_ms(1_000), 4);
    let suspect = c.silos[3].address;
    let now = c.now_ms;
    c.refresh_all();
    let (a, b) = (0, 1);
    assert!(
        !ready(driver::suspect(
            &c.table,
            &mut c.silos[a].oracle,
            suspect,
            now
        ))
        .unwrap()
    );
    // The second vote comes after the first expired: still only one fresh vote.
    let later = now + 5_000;
    assert!(
        !ready(driver::suspect(
            &c.table,
            &mut c.silos[b].oracle,
            suspect,
            later
        ))
        .unwrap()
    );
    let row = c.table_view().entry(&suspect).cloned().unwrap();
    assert_eq!(row.status, SiloStatus::Active);
    assert_eq!(row.suspicions.len(), 1, "the expired vote is pruned");
    // A fresh second vote completes the count.
    assert!(
        ready(driver::suspect(
            &c.table,
            &mut c.silos[a].oracle,
            suspect,
            later + 1
        ))
        .unwrap()
    );
}

// Pins that a vote replaces the same voter's older vote instead of counting twice.
#[test]
fn one_voter_counts_once() {
    let c = Cluster::with_silos(config(), 4);
    let view = c.table_view();
    let (voter, suspect) = (c.silos[0].address, c.silos[1].address);
    let once = plan_suspicion(&view, voter, suspect, c.now_ms, &c.config).unwrap();
    let mut view2 = view.clone();
    view2.entries.insert(suspect, once);
    let twice = plan_suspicion(&view2, voter, suspect, c.now_ms + 1, &c.config).unwrap();
    assert_eq!(twice.suspicions.len(), 1);
    assert_eq!(twice.status, SiloStatus::Active);
}

// Pins that a silo that was declared dead while partitioned from its monitors reads its own
// death, emits Stop once, refuses to serve and probes no one, even after the partition heals.
#[test]
fn silo_declared_dead_sees_it_and_stops() {
    let mut c = Cluster::with_silos(config(), 3);
    c.partition_probes(0, 2);
    c.partition_probes(1, 2);
    for _ in 0..c.config.num_missed_probes_limit {
        c.probe_round();
    }
    assert!(c.table_view().is_dead(&c.silos[2].address));
    c.heal();
    // The victim's own probes of the others failed too; its votes must not have killed them.
    assert!(!c.table_view().is_dead(&c.silos[0].address));
    c.refresh(2);
    let victim = &mut c.silos[2];
    assert_eq!(victim.stopped, Some(StopReason::DeclaredDead));
    assert!(!victim.oracle.is_serving());
    assert!(victim.oracle.probe_targets().is_empty());
    let stop = std::iter::from_fn(|| victim.oracle.poll_action()).collect::<Vec<_>>();
    assert!(
        stop.is_empty() || stop.len() == 1,
        "Stop is emitted once: {stop:?}"
    );
}

// Pins generation supersession: a restart at the same endpoint declares the old incarnation
// dead on join, and the old one (if it still runs) stops as superseded.
#[test]
fn new_generation_supersedes_the_old() {
    let mut c = Cluster::with_silos(config(), 3);
    let old = c.silos[1].address;
    let new = c.start_silo(old.endpoint.port(), old.generation + 1);
    let table = c.table_view();
    assert!(table.is_dead(&old));
    assert_eq!(
        table.status(&c.silos[new].address),
        Some(SiloStatus::Active)
    );
    c.refresh(1);
    assert_eq!(
        c.silos[1].stopped,
        Some(StopReason::Superseded {
            by: c.silos[new].address
        })
    );
    c.settle();
    assert!(
        c.silos[0]
            .oracle
            .view()
            .active_silos()
            .contains(&c.silos[new].address)
    );
}

// Pins that an older generation cannot join after a newer one: it stops as superseded.
#[test]
fn older_generation_cannot_join() {
    let c = Cluster::with_silos(config(), 1);
    let newer = c.silos[0].address;
    let mut stale =
        MembershipOracle::new(addr(newer.endpoint.port(), newer.generation - 1), config());
    let err = ready(driver::join(&c.table, &mut stale, c.now_ms)).unwrap_err();
    assert!(
        matches!(
            err,
            driver::MembershipError::Stopped(StopReason::Superseded { .. })
        ),
        "{err:?}"
    );
    assert!(c.table_view().entry(&stale.me()).is_none());
}

// Pins the version fence between racing voters: two monitors that read the same view both get
// their vote in (the loser re-reads and retries) and together declare the silo dead.
#[test]
fn racing_voters_both_count() {
    let c = Cluster::with_silos(config(), 4);
    let suspect = c.silos[3].address;
    let mut a = MembershipOracle::new(c.silos[0].address, config());
    let mut b = MembershipOracle::new(c.silos[1].address, config());
    ready(driver::refresh(&c.table, &mut a)).unwrap();
    ready(driver::refresh(&c.table, &mut b)).unwrap();
    assert_eq!(a.view().version, b.view().version);
    ready(driver::suspect(&c.table, &mut a, suspect, c.now_ms)).unwrap();
    assert!(ready(driver::suspect(&c.table, &mut b, suspect, c.now_ms)).unwrap());
    assert_eq!(c.table_view().entry(&suspect).unwrap().suspicions.len(), 2);
}

// Pins that joining silos are neither probed nor counted, and that probing targets are the
// next active silos in address order.
#[test]
fn probe_targets_are_active_successors() {
    let mut c = Cluster::with_silos(config().with_num_probed_silos(2), 4);
    let joining = MembershipEntry::new(addr(12_000, 1), SiloStatus::Joining, 0);
    let version = c.table_view().version;
    ready(silica_silo::cluster::MembershipTable::insert_row(
        &c.table,
        joining.clone(),
        version,
    ))
    .unwrap();
    c.refresh_all();
    let all: Vec<_> = c.silos.iter().map(|s| s.address).collect();
    assert_eq!(c.silos[3].oracle.probe_targets(), vec![all[0], all[1]]);
    assert!(!c.silos[0].oracle.probe_targets().contains(&joining.silo));
    assert!(c.table_view().version > TableVersion(0));
}
