//! [`SiloLease`]: one silo's etcd lease, which its liveness key is attached to.
//!
//! The silo's membership task renews it (`keep_alive`) every third of its TTL or so. A silo
//! that stops (killed, frozen, cut off from etcd) lets it expire; etcd then deletes the
//! liveness key and every silo's next read lists it in
//! [`MembershipSnapshot::expired_leases`](crate::cluster::MembershipSnapshot::expired_leases).

use std::time::Duration;

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper, Txn, TxnOp};
use silica_grains::placement::SiloAddress;

use super::EtcdMembershipTable;
use crate::cluster::table::MembershipTableError;

/// A silo's etcd lease (from [`EtcdMembershipTable::grant_lease`]).
///
/// Dropping it stops nothing: the lease lives until its TTL runs out without a renewal, or
/// until [`SiloLease::revoke`].
pub struct SiloLease {
    table: EtcdMembershipTable,
    silo: SiloAddress,
    id: i64,
    ttl: Duration,
    stream: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
}

impl std::fmt::Debug for SiloLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiloLease")
            .field("silo", &self.silo)
            .field("id", &self.id)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl SiloLease {
    pub(super) fn new(
        table: EtcdMembershipTable,
        silo: SiloAddress,
        id: i64,
        ttl: Duration,
    ) -> Self {
        Self {
            table,
            silo,
            id,
            ttl,
            stream: None,
        }
    }

    /// The etcd lease id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The TTL etcd granted (it may raise a requested TTL to its minimum).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The silo the lease belongs to.
    pub fn silo(&self) -> SiloAddress {
        self.silo
    }

    /// Renews the lease once; returns the TTL it has again.
    ///
    /// [`MembershipTableError::LeaseExpired`] when it already expired (the silo's peers may be
    /// voting it dead: it re-reads its row and stops if declared so);
    /// [`MembershipTableError::Unavailable`] when etcd does not answer (the next call opens a
    /// new keep-alive stream).
    pub async fn keep_alive(&mut self) -> Result<Duration, MembershipTableError> {
        let result = self.renew().await;
        if matches!(result, Err(MembershipTableError::Unavailable(_))) {
            self.stream = None;
        }
        result
    }

    async fn renew(&mut self) -> Result<Duration, MembershipTableError> {
        let opened = match self.stream.take() {
            Some(opened) => opened,
            None => {
                let mut client = self.table.client.lease_client();
                self.table
                    .call("lease keep-alive", client.keep_alive(self.id))
                    .await?
            }
        };
        let (keeper, stream) = self.stream.insert(opened);
        let table = &self.table;
        table.call("lease keep-alive", keeper.keep_alive()).await?;
        let answer = table.call("lease keep-alive", stream.message()).await?;
        match answer {
            Some(response) if response.ttl() > 0 => {
                Ok(Duration::from_secs(response.ttl().unsigned_abs()))
            }
            Some(_) => Err(MembershipTableError::LeaseExpired(self.silo)),
            None => Err(table.unavailable("lease keep-alive", &"the stream closed")),
        }
    }

    /// Ends the lease now (a graceful leave, after the silo's row is `Dead`): the lease record
    /// is deleted first, so the silo is not reported as an expired lease, then the lease is
    /// revoked, which deletes the liveness key.
    pub async fn revoke(self) -> Result<(), MembershipTableError> {
        let record = self.table.keys.lease(&self.silo);
        let txn = Txn::new().and_then([TxnOp::delete(record, None)]);
        self.table.txn("lease record delete", txn).await?;
        let mut client = self.table.client.lease_client();
        self.table
            .call("lease revoke", client.revoke(self.id))
            .await
            .map(drop)
    }
}
