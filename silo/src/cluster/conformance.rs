//! The [`MembershipTable`] conformance suite: written once, run against every table.
//!
//! Each check takes a fresh, empty table and panics (with the check's name) when the table
//! breaks the contract documented on [`MembershipTable`]. The in-memory table runs it in
//! `silo/tests/cluster_table.rs`; the etcd table runs the same [`run_all`] with a table on its
//! own key prefix per check.

use std::net::SocketAddr;

use silica_grains::placement::SiloAddress;

use super::snapshot::{MembershipEntry, SiloStatus, TableVersion};
use super::table::{MembershipTable, MembershipTableError};

fn silo(port: u16, generation: u64) -> SiloAddress {
    SiloAddress::new(SocketAddr::from(([127, 0, 0, 1], port)), generation)
}

/// Runs every check, each on a table from `fresh`.
pub async fn run_all<T: MembershipTable>(mut fresh: impl FnMut() -> T) {
    fresh_table_is_empty(&fresh()).await;
    insert_then_read(&fresh()).await;
    insert_needs_current_version(&fresh()).await;
    insert_rejects_existing_row(&fresh()).await;
    update_needs_current_version(&fresh()).await;
    update_needs_existing_row(&fresh()).await;
    racing_writers_one_wins(&fresh()).await;
    status_never_moves_backwards(&fresh()).await;
    i_am_alive_is_not_a_membership_change(&fresh()).await;
    generations_are_distinct_rows(&fresh()).await;
    update_keeps_latest_heartbeat(&fresh()).await;
}

/// A fresh table has no rows and version 0.
pub async fn fresh_table_is_empty(table: &impl MembershipTable) {
    let snap = table.read_all().await.expect("read_all");
    assert_eq!(
        snap.version,
        TableVersion(0),
        "fresh_table_is_empty: version"
    );
    assert!(snap.entries.is_empty(), "fresh_table_is_empty: rows");
}

/// An insert at the current version bumps it by one and the row reads back as written.
pub async fn insert_then_read(table: &impl MembershipTable) {
    let row = MembershipEntry::new(silo(1, 1), SiloStatus::Joining, 10);
    let v = table.insert_row(row.clone(), TableVersion(0)).await;
    assert_eq!(v, Ok(TableVersion(1)), "insert_then_read: new version");
    let snap = table.read_all().await.expect("read_all");
    assert_eq!(
        snap.version,
        TableVersion(1),
        "insert_then_read: read version"
    );
    assert_eq!(snap.entry(&row.silo), Some(&row), "insert_then_read: row");
}

/// An insert conditional on an old version fails and changes nothing.
pub async fn insert_needs_current_version(table: &impl MembershipTable) {
    let a = MembershipEntry::new(silo(1, 1), SiloStatus::Joining, 0);
    let b = MembershipEntry::new(silo(2, 1), SiloStatus::Joining, 0);
    table
        .insert_row(a, TableVersion(0))
        .await
        .expect("first insert");
    let err = table.insert_row(b.clone(), TableVersion(0)).await;
    assert!(
        matches!(
            err,
            Err(MembershipTableError::VersionMismatch {
                current: TableVersion(1),
                ..
            })
        ),
        "insert_needs_current_version: {err:?}"
    );
    let snap = table.read_all().await.expect("read_all");
    assert!(
        snap.entry(&b.silo).is_none(),
        "insert_needs_current_version: row written"
    );
    assert_eq!(
        snap.version,
        TableVersion(1),
        "insert_needs_current_version: version"
    );
}

/// A second insert for the same silo fails even at the current version.
pub async fn insert_rejects_existing_row(table: &impl MembershipTable) {
    let a = MembershipEntry::new(silo(1, 1), SiloStatus::Joining, 0);
    table
        .insert_row(a.clone(), TableVersion(0))
        .await
        .expect("first insert");
    let err = table.insert_row(a.clone(), TableVersion(1)).await;
    assert_eq!(
        err,
        Err(MembershipTableError::AlreadyExists(a.silo)),
        "insert_rejects_existing_row"
    );
    let snap = table.read_all().await.expect("read_all");
    assert_eq!(
        snap.version,
        TableVersion(1),
        "insert_rejects_existing_row: version"
    );
}

/// An update conditional on an old version fails and changes nothing.
pub async fn update_needs_current_version(table: &impl MembershipTable) {
    let a = MembershipEntry::new(silo(1, 1), SiloStatus::Joining, 0);
    table
        .insert_row(a.clone(), TableVersion(0))
        .await
        .expect("insert");
    let mut active = a.clone();
    active.status = SiloStatus::Active;
    let err = table.update_row(active.clone(), TableVersion(0)).await;
    assert!(
        matches!(err, Err(MembershipTableError::VersionMismatch { .. })),
        "update_needs_current_version: {err:?}"
    );
    assert_eq!(
        table.update_row(active.clone(), TableVersion(1)).await,
        Ok(TableVersion(2)),
        "update_needs_current_version: update at current version"
    );
    let snap = table.read_all().await.expect("read_all");
    assert_eq!(
        snap.entry(&a.silo),
        Some(&active),
        "update_needs_current_version: row"
    );
}

/// An update of a silo with no row fails.
pub async fn update_needs_existing_row(table: &impl MembershipTable) {
    let a = MembershipEntry::new(silo(1, 1), SiloStatus::Active, 0);
    let err = table.update_row(a.clone(), TableVersion(0)).await;
    assert_eq!(
        err,
        Err(MembershipTableError::NotFound(a.silo)),
        "update_needs_existing_row"
    );
}

/// Two writers that read the same version both write: exactly one succeeds (the fence that
/// keeps two voters from both deciding on a stale view).
pub async fn racing_writers_one_wins(table: &impl MembershipTable) {
    let a = MembershipEntry::new(silo(1, 1), SiloStatus::Active, 0);
    table
        .insert_row(a.clone(), TableVersion(0))
        .await
        .expect("insert");
    let seen = table.read_all().await.expect("read_all").version;
    let mut vote_1 = a.clone();
    vote_1.suspicions.push(super::SuspicionVote {
        voter: silo(2, 1),
        at_ms: 5,
    });
    let mut vote_2 = a.clone();
    vote_2.suspicions.push(super::SuspicionVote {
        voter: silo(3, 1),
        at_ms: 5,
    });
    let first = table.update_row(vote_1.clone(), seen).await;
    let second = table.update_row(vote_2, seen).await;
    assert!(first.is_ok(), "racing_writers_one_wins: first {first:?}");
    assert!(
        matches!(second, Err(MembershipTableError::VersionMismatch { .. })),
        "racing_writers_one_wins: second {second:?}"
    );
    let snap = table.read_all().await.expect("read_all");
    assert_eq!(
        snap.entry(&a.silo),
        Some(&vote_1),
        "racing_writers_one_wins: row"
    );
}

/// `Dead` is final and `Active` never goes back to `Joining`.
pub async fn status_never_moves_backwards(table: &impl MembershipTable) {
    let mut row = MembershipEntry::new(silo(1, 1), SiloStatus::Active, 0);
    table
        .insert_row(row.clone(), TableVersion(0))
        .await
        .expect("insert");
    row.status = SiloStatus::Joining;
    let err = table.update_row(row.clone(), TableVersion(1)).await;
    assert!(
        matches!(err, Err(MembershipTableError::IllegalTransition { .. })),
        "status_never_moves_backwards: Active -> Joining {err:?}"
    );
    row.status = SiloStatus::Dead;
    table
        .update_row(row.clone(), TableVersion(1))
        .await
        .expect("Active -> Dead");
    row.status = SiloStatus::Active;
    let err = table.update_row(row, TableVersion(2)).await;
    assert!(
        matches!(err, Err(MembershipTableError::IllegalTransition { .. })),
        "status_never_moves_backwards: Dead -> Active {err:?}"
    );
}

/// Heartbeats change the row's `i_am_alive_ms` but not the version, and never go backwards.
pub async fn i_am_alive_is_not_a_membership_change(table: &impl MembershipTable) {
    let a = MembershipEntry::new(silo(1, 1), SiloStatus::Active, 0);
    table
        .insert_row(a.clone(), TableVersion(0))
        .await
        .expect("insert");
    table
        .update_i_am_alive(a.silo, 500)
        .await
        .expect("heartbeat");
    table
        .update_i_am_alive(a.silo, 400)
        .await
        .expect("late heartbeat");
    let snap = table.read_all().await.expect("read_all");
    assert_eq!(snap.version, TableVersion(1), "i_am_alive: version bumped");
    assert_eq!(
        snap.entry(&a.silo).map(|e| e.i_am_alive_ms),
        Some(500),
        "i_am_alive: time"
    );
    let err = table.update_i_am_alive(silo(9, 1), 1).await;
    assert_eq!(
        err,
        Err(MembershipTableError::NotFound(silo(9, 1))),
        "i_am_alive: no row"
    );
}

/// Two generations at one endpoint are two rows (a restart is a new silo).
pub async fn generations_are_distinct_rows(table: &impl MembershipTable) {
    let old = MembershipEntry::new(silo(1, 1), SiloStatus::Active, 0);
    let new = MembershipEntry::new(silo(1, 2), SiloStatus::Joining, 0);
    table
        .insert_row(old.clone(), TableVersion(0))
        .await
        .expect("insert old");
    table
        .insert_row(new.clone(), TableVersion(1))
        .await
        .expect("insert new");
    let snap = table.read_all().await.expect("read_all");
    assert_eq!(snap.entries.len(), 2, "generations_are_distinct_rows");
    assert_eq!(
        snap.status(&old.silo),
        Some(SiloStatus::Active),
        "old row untouched"
    );
}

/// An update written from an older read keeps the row's later heartbeat: `i_am_alive_ms`
/// never moves backwards, whichever write carried it.
pub async fn update_keeps_latest_heartbeat(table: &impl MembershipTable) {
    let row = MembershipEntry::new(silo(1, 1), SiloStatus::Joining, 10);
    table
        .insert_row(row.clone(), TableVersion(0))
        .await
        .expect("insert");
    table
        .update_i_am_alive(row.silo, 900)
        .await
        .expect("heartbeat");
    let mut active = row.clone();
    active.status = SiloStatus::Active;
    table
        .update_row(active, TableVersion(1))
        .await
        .expect("update");
    let snap = table.read_all().await.expect("read_all");
    let read = snap.entry(&row.silo).expect("row");
    assert_eq!(
        read.status,
        SiloStatus::Active,
        "update_keeps_latest_heartbeat: status"
    );
    assert_eq!(
        read.i_am_alive_ms, 900,
        "update_keeps_latest_heartbeat: heartbeat"
    );
}
