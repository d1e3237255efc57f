//! [`MembershipSnapshot`]: one versioned view of the membership table, and its rows.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use silica_grains::placement::SiloAddress;

/// The version of the whole membership table; also its etag.
///
/// Every membership change (a row inserted, a status changed, a vote added) bumps it by one, and
/// every such write is conditional on the version the writer read, so of two racing writers exactly
/// one wins. Views are ordered by it: a larger version is a newer view.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct TableVersion(pub u64);

impl TableVersion {
    /// The version after this one.
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl std::fmt::Display for TableVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// Where a silo is in its life, as recorded in the table.
///
/// Transitions only go forward (`Joining -> Active -> ShuttingDown -> Dead`, or straight to
/// `Dead` from any of them); `Dead` is final for that generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SiloStatus {
    /// Inserted its row, not yet serving; owns no directory partition.
    Joining,
    /// Serving grains and a directory partition; probed by its peers.
    Active,
    /// Leaving gracefully: still answers, hands its grains off, owns no directory partition.
    ShuttingDown,
    /// Declared dead (by votes, by supersession, or after leaving). Must not serve again.
    Dead,
}

impl SiloStatus {
    /// Whether `next` is a legal successor of this status (forward only; same status allowed).
    pub fn can_become(self, next: SiloStatus) -> bool {
        self == next || (self != SiloStatus::Dead && self < next)
    }
}

/// One suspicion vote: `voter` failed to reach the row's silo, as of `at_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspicionVote {
    /// The silo that cast the vote.
    pub voter: SiloAddress,
    /// When the voter cast it (milliseconds, the voter's clock).
    pub at_ms: u64,
}

/// One row of the membership table: one silo incarnation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipEntry {
    /// The silo incarnation the row describes (endpoint plus generation).
    pub silo: SiloAddress,
    /// Its status.
    pub status: SiloStatus,
    /// Votes cast against it, at most one per voter (a newer vote replaces the voter's older one).
    pub suspicions: Vec<SuspicionVote>,
    /// The last time the silo said it was alive (milliseconds, its own clock).
    pub i_am_alive_ms: u64,
    /// When the row was inserted (milliseconds, the silo's clock).
    pub start_ms: u64,
}

impl MembershipEntry {
    /// A fresh row for `silo` with `status`, alive as of `now_ms`.
    pub fn new(silo: SiloAddress, status: SiloStatus, now_ms: u64) -> Self {
        Self {
            silo,
            status,
            suspicions: Vec::new(),
            i_am_alive_ms: now_ms,
            start_ms: now_ms,
        }
    }

    /// The votes cast no earlier than `expiry_ms` before `now_ms` (older votes no longer count).
    pub fn fresh_votes(&self, now_ms: u64, expiry_ms: u64) -> impl Iterator<Item = &SuspicionVote> {
        self.suspicions
            .iter()
            .filter(move |v| now_ms.saturating_sub(v.at_ms) <= expiry_ms)
    }
}

/// A versioned view of the whole membership table, as one read returned it.
///
/// Rows are keyed (and iterated) by [`SiloAddress`], so every silo that holds the same version
/// derives the same ring, the same probe targets and the same directory owners.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipSnapshot {
    /// The table version this view was read at.
    pub version: TableVersion,
    /// One row per silo incarnation ever inserted (dead ones included, until cleaned up).
    pub entries: BTreeMap<SiloAddress, MembershipEntry>,
    /// Silos not `Dead` whose store lease expired: the store stopped hearing from them (etcd
    /// leases; always empty for the in-memory table). Like heartbeats this is liveness, not
    /// membership: it changes without a version bump. The oracle turns it into suspicion votes
    /// ([`MembershipOracle::handle_lease_check`](super::MembershipOracle::handle_lease_check)).
    pub expired_leases: BTreeSet<SiloAddress>,
}

impl MembershipSnapshot {
    /// The row of `silo`, if the table has one.
    pub fn entry(&self, silo: &SiloAddress) -> Option<&MembershipEntry> {
        self.entries.get(silo)
    }

    /// The status of `silo`, if the table has a row for it.
    pub fn status(&self, silo: &SiloAddress) -> Option<SiloStatus> {
        self.entry(silo).map(|e| e.status)
    }

    /// The silos whose status is [`SiloStatus::Active`], in address order.
    pub fn active_silos(&self) -> Vec<SiloAddress> {
        self.silos_with(|s| s == SiloStatus::Active)
    }

    /// The silos that are not [`SiloStatus::Dead`], in address order.
    pub fn live_silos(&self) -> Vec<SiloAddress> {
        self.silos_with(|s| s != SiloStatus::Dead)
    }

    /// Whether `silo` has a row and is declared dead. A silo with no row is *unknown*, not dead:
    /// it may have joined after this view was read.
    pub fn is_dead(&self, silo: &SiloAddress) -> bool {
        self.status(silo) == Some(SiloStatus::Dead)
    }

    fn silos_with(&self, keep: impl Fn(SiloStatus) -> bool) -> Vec<SiloAddress> {
        self.entries
            .values()
            .filter(|e| keep(e.status))
            .map(|e| e.silo)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::SiloStatus::*;

    // Pins the status order the table enforces: forward only, Dead final.
    #[test]
    fn status_moves_forward_only() {
        assert!(Joining.can_become(Active) && Active.can_become(ShuttingDown));
        assert!(Joining.can_become(Dead) && ShuttingDown.can_become(Dead));
        assert!(Active.can_become(Active));
        assert!(!Active.can_become(Joining) && !Dead.can_become(Active));
    }
}
