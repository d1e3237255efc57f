//! Cluster state machines: membership and the grain directory. No I/O and no clocks: inputs
//! (table reads, probe results, directory requests, hand-offs) come in as method calls with
//! `now_ms`, decisions come out. The silo links and the etcd table plug in around them.
//!
//! See `docs/cluster.md` for the model and how networking attaches.
//!
//! # Layout
//!
//! Membership (the Orleans model: a shared table, conditional writes, suspicion votes):
//! - [`snapshot`] — [`MembershipSnapshot`], its rows ([`MembershipEntry`]), [`SiloStatus`],
//!   [`SuspicionVote`], [`TableVersion`].
//! - [`table`] — the [`MembershipTable`] trait and [`MembershipTableError`].
//! - [`memory`] — [`InMemoryMembershipTable`], the embedded default.
//! - `etcd` (feature `etcd`) — `EtcdMembershipTable` and `SiloLease`: the table on etcd, with
//!   a lease per silo as a second death signal.
//! - [`conformance`] — the table conformance suite, generic over [`MembershipTable`].
//! - [`config`] — [`MembershipConfig`].
//! - [`votes`] — pure decisions on a view (votes, death, supersession).
//! - [`oracle`] — [`MembershipOracle`], one silo's view, failure detector and stop decision.
//! - [`driver`] — async read-decide-write steps applying the oracle's decisions to a table.
//!
//! Grain directory (partitioned by a consistent-hash ring over the active silos, fenced by the
//! view version):
//! - [`address`] — [`ActivationAddress`], [`ActivationId`].
//! - [`ring`] — [`DirectoryRing`].
//! - [`partition`] — [`DirectoryPartition`] (register, lookup, unregister) and [`Registration`].
//! - [`handoff`] — view changes, [`HandOff`] and [`HandOffAck`].
//! - [`directory_error`] — [`DirectoryError`] and [`DirectoryRetry`].
//! - [`cache`] — [`DirectoryCache`].

pub mod address;
pub mod cache;
pub mod config;
pub mod conformance;
pub mod directory_error;
pub mod driver;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod handoff;
pub mod memory;
pub mod oracle;
pub mod partition;
pub mod ring;
pub mod snapshot;
pub mod table;
pub mod votes;

pub use address::{ActivationAddress, ActivationId};
pub use cache::DirectoryCache;
pub use config::MembershipConfig;
pub use directory_error::{DirectoryError, DirectoryRetry};
pub use driver::MembershipError;
#[cfg(feature = "etcd")]
pub use etcd::{EtcdMembershipTable, EtcdTableOptions, SiloLease};
pub use handoff::{Duplicate, HANDOFF_PART_BYTES, HandOff, HandOffAck};
pub use memory::InMemoryMembershipTable;
pub use oracle::{MembershipAction, MembershipOracle, StopReason};
pub use partition::{DirectoryPartition, Registration};
pub use ring::{DEFAULT_DIRECTORY_VIRTUAL_NODES, DirectoryRing};
pub use snapshot::{MembershipEntry, MembershipSnapshot, SiloStatus, SuspicionVote, TableVersion};
pub use table::{MembershipTable, MembershipTableError};
pub use votes::{plan_supersession, plan_suspicion, votes_required};
