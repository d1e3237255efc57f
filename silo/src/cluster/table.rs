//! The [`MembershipTable`] trait: the shared store every silo reads its view from.
//!
//! The store is the only thing silos agree through. Writes are conditional on the table version
//! the writer read (an etag), so every decision taken from a view (a vote, a death declaration,
//! a supersession) is applied only if the view it was taken from is still the latest.

use std::future::Future;

use silica_grains::placement::SiloAddress;

use super::snapshot::{MembershipEntry, MembershipSnapshot, TableVersion};

/// Why a membership table operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipTableError {
    /// The table moved on since the writer read it: re-read, re-decide, retry.
    #[error("table version is {current}, the write expected {expected}")]
    VersionMismatch {
        /// The version the write was conditional on.
        expected: TableVersion,
        /// The version the table is at.
        current: TableVersion,
    },
    /// An insert named a silo that already has a row.
    #[error("silo {0} already has a row")]
    AlreadyExists(SiloAddress),
    /// An update named a silo that has no row.
    #[error("silo {0} has no row")]
    NotFound(SiloAddress),
    /// An update tried to move a row's status backwards (e.g. `Dead` to `Active`).
    #[error("silo {silo}: illegal status change {from:?} -> {to:?}")]
    IllegalTransition {
        /// The row's silo.
        silo: SiloAddress,
        /// Its status in the table.
        from: super::SiloStatus,
        /// The status the write asked for.
        to: super::SiloStatus,
    },
    /// The store itself failed or could not be reached (etcd down, timeout).
    #[error("membership store unavailable: {0}")]
    Unavailable(String),
    /// The silo's store lease expired (it did not keep it alive in time): its liveness key is
    /// gone and its peers may already be voting it dead.
    #[error("the store lease of silo {0} expired")]
    LeaseExpired(SiloAddress),
    /// The store holds a value this version cannot read (written by something else).
    #[error("membership store key {key} holds an unreadable value: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// The membership store (Orleans' `IMembershipTable`): the in-memory table, or etcd.
///
/// Contract (checked by [`conformance`](super::conformance) for every implementation):
/// - `read_all` returns a consistent snapshot: rows and version from one point in time.
/// - `insert_row` and `update_row` succeed only if the table is at `expected`; on success the
///   table is at `expected.next()`, which they return. Of several writers that read the same
///   version, exactly one succeeds; the others get [`MembershipTableError::VersionMismatch`].
/// - `update_row` never moves a status backwards, nor a row's `i_am_alive_ms` (the later of the
///   stored and the written time is kept).
/// - `update_i_am_alive` is a liveness heartbeat, not a membership change: it is unconditional
///   and does not bump the version.
/// - Errors are values: a store that cannot be reached is
///   [`MembershipTableError::Unavailable`], never a panic or a hang.
pub trait MembershipTable {
    /// Reads every row and the table version, atomically.
    fn read_all(
        &self,
    ) -> impl Future<Output = Result<MembershipSnapshot, MembershipTableError>> + Send;

    /// Inserts a row for a silo that has none, if the table is at `expected`.
    fn insert_row(
        &self,
        entry: MembershipEntry,
        expected: TableVersion,
    ) -> impl Future<Output = Result<TableVersion, MembershipTableError>> + Send;

    /// Replaces an existing row, if the table is at `expected`.
    fn update_row(
        &self,
        entry: MembershipEntry,
        expected: TableVersion,
    ) -> impl Future<Output = Result<TableVersion, MembershipTableError>> + Send;

    /// Records that `silo` was alive at `now_ms` (unconditional, no version bump).
    fn update_i_am_alive(
        &self,
        silo: SiloAddress,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), MembershipTableError>> + Send;
}
