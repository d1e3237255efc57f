//! The membership table conformance suite against the in-memory table.

mod cluster_harness;

use cluster_harness::{addr, ready};
use silica_silo::cluster::{
    InMemoryMembershipTable, MembershipConfig, MembershipEntry, MembershipOracle, MembershipTable,
    SiloStatus, TableVersion, conformance, driver,
};

// Pins that the in-memory table meets the whole `MembershipTable` contract (the same suite the
// etcd table will run).
#[test]
fn in_memory_table_passes_conformance() {
    ready(conformance::run_all(InMemoryMembershipTable::new));
}

// Pins that clones share one table, which is how several silos in one process see each other.
#[test]
fn clones_share_one_table() {
    let a = InMemoryMembershipTable::new();
    let b = a.clone();
    let row = MembershipEntry::new(addr(1, 1), SiloStatus::Joining, 0);
    ready(a.insert_row(row.clone(), TableVersion(0))).unwrap();
    let seen = ready(b.read_all()).unwrap();
    assert_eq!(seen.version, TableVersion(1));
    assert_eq!(seen.entry(&row.silo), Some(&row));
}

// Pins that the table's and the driver's futures are Send, so the silo can run them on
// spawned tasks.
#[test]
fn table_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let table = InMemoryMembershipTable::new();
    is_send(&table.read_all());
    is_send(&table.update_i_am_alive(addr(1, 1), 0));
    let mut oracle = MembershipOracle::new(addr(1, 1), MembershipConfig::default());
    is_send(&driver::join(&table, &mut oracle, 0));
    is_send(&driver::process_actions(&table, &mut oracle));
}
