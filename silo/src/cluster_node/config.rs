//! [`ClusterConfig`]: how a silo joins a cluster and how fast it notices changes.

use std::time::Duration;

use crate::cluster::MembershipConfig;

use super::table::ClusterTable;

/// Makes a silo a member of a cluster ([`SiloBuilder::cluster`](crate::SiloBuilder::cluster)).
/// The silo must also serve silo links ([`SiloBuilder::listen`](crate::SiloBuilder::listen)):
/// its address in the table is that endpoint plus its generation. The cluster id is the link
/// options' `cluster_id` (peers of another cluster are refused) and the table's.
///
/// The defaults detect a killed silo in about 2 s (3 missed probes of 500 ms, 2 votes) and
/// spread a new view within `refresh_period` (250 ms).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// The membership table every silo of the cluster shares.
    pub table: ClusterTable,
    /// Failure detection: probes, votes, heartbeats.
    pub membership: MembershipConfig,
    /// How often the silo re-reads the table (and at once when a peer shows a newer view).
    pub refresh_period: Duration,
    /// How long one direct probe may take before it counts as missed.
    pub probe_timeout: Duration,
    /// How often the silo sends its load report to the other active silos.
    pub load_report_period: Duration,
    /// The store lease TTL, where the table has leases (etcd rounds it up to whole seconds).
    pub lease_ttl: Duration,
    /// Directory answers cached for other partitions' grains.
    pub directory_cache_capacity: usize,
    /// On a graceful leave, how long the silo waits for its directory entries to move away.
    pub leave_timeout: Duration,
}

impl ClusterConfig {
    /// A cluster on `table`, with the default timings.
    pub fn new(table: ClusterTable) -> Self {
        Self {
            table,
            membership: MembershipConfig::default(),
            refresh_period: Duration::from_millis(250),
            probe_timeout: Duration::from_millis(400),
            load_report_period: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(2),
            directory_cache_capacity: 100_000,
            leave_timeout: Duration::from_secs(10),
        }
    }

    /// Replaces the failure detector's settings.
    pub fn with_membership(mut self, membership: MembershipConfig) -> Self {
        self.membership = membership;
        self
    }

    /// Sets [`Self::refresh_period`].
    pub fn with_refresh_period(mut self, period: Duration) -> Self {
        self.refresh_period = period;
        self
    }

    /// Sets [`Self::lease_ttl`].
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }
}
