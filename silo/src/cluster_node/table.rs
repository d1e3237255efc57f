//! [`ClusterTable`]: the membership table a clustered silo uses, with its type erased, and the
//! store lease where the table offers one (etcd).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use silica_grains::placement::SiloAddress;

use crate::cluster::TableVersion;
use crate::cluster::{MembershipEntry, MembershipSnapshot, MembershipTable, MembershipTableError};

type TableResult<T> = Result<T, MembershipTableError>;

/// A store lease the membership task keeps alive (etcd's `SiloLease`).
pub(crate) trait ErasedLease: Send {
    fn keep_alive(&mut self) -> BoxFuture<'_, TableResult<Duration>>;
    fn revoke(self: Box<Self>) -> BoxFuture<'static, TableResult<()>>;
}

trait ErasedTable: Send + Sync {
    fn read_all(&self) -> BoxFuture<'_, TableResult<MembershipSnapshot>>;
    fn insert_row(
        &self,
        e: MembershipEntry,
        v: TableVersion,
    ) -> BoxFuture<'_, TableResult<TableVersion>>;
    fn update_row(
        &self,
        e: MembershipEntry,
        v: TableVersion,
    ) -> BoxFuture<'_, TableResult<TableVersion>>;
    fn update_i_am_alive(&self, s: SiloAddress, now_ms: u64) -> BoxFuture<'_, TableResult<()>>;
    fn grant_lease(
        &self,
        silo: SiloAddress,
        ttl: Duration,
    ) -> BoxFuture<'_, TableResult<Option<Box<dyn ErasedLease>>>>;
}

/// How a table's silos get store leases: [`NoLeases`] for tables without them, or etcd's.
trait LeaseSource<T>: Send + Sync + 'static {
    fn grant(
        table: &T,
        silo: SiloAddress,
        ttl: Duration,
    ) -> BoxFuture<'_, TableResult<Option<Box<dyn ErasedLease>>>>;
}

/// Tables without leases: probes and votes are the only death signal.
struct NoLeases;

impl<T: Sync> LeaseSource<T> for NoLeases {
    fn grant(
        _: &T,
        _: SiloAddress,
        _: Duration,
    ) -> BoxFuture<'_, TableResult<Option<Box<dyn ErasedLease>>>> {
        Box::pin(async { Ok(None) })
    }
}

/// A table with its type erased, granting leases through `L`.
struct Erased<T, L>(T, std::marker::PhantomData<fn() -> L>);

impl<T: MembershipTable + Send + Sync, L: LeaseSource<T>> ErasedTable for Erased<T, L> {
    fn read_all(&self) -> BoxFuture<'_, TableResult<MembershipSnapshot>> {
        Box::pin(self.0.read_all())
    }
    fn insert_row(
        &self,
        e: MembershipEntry,
        v: TableVersion,
    ) -> BoxFuture<'_, TableResult<TableVersion>> {
        Box::pin(self.0.insert_row(e, v))
    }
    fn update_row(
        &self,
        e: MembershipEntry,
        v: TableVersion,
    ) -> BoxFuture<'_, TableResult<TableVersion>> {
        Box::pin(self.0.update_row(e, v))
    }
    fn update_i_am_alive(&self, s: SiloAddress, now_ms: u64) -> BoxFuture<'_, TableResult<()>> {
        Box::pin(self.0.update_i_am_alive(s, now_ms))
    }
    fn grant_lease(
        &self,
        silo: SiloAddress,
        ttl: Duration,
    ) -> BoxFuture<'_, TableResult<Option<Box<dyn ErasedLease>>>> {
        L::grant(&self.0, silo, ttl)
    }
}

#[cfg(feature = "etcd")]
mod etcd {
    use super::*;
    use crate::cluster::{EtcdMembershipTable, SiloLease};

    /// etcd's leases, one per silo.
    pub(super) struct EtcdLeases;

    impl ErasedLease for SiloLease {
        fn keep_alive(&mut self) -> BoxFuture<'_, TableResult<Duration>> {
            Box::pin(SiloLease::keep_alive(self))
        }
        fn revoke(self: Box<Self>) -> BoxFuture<'static, TableResult<()>> {
            Box::pin(SiloLease::revoke(*self))
        }
    }

    impl LeaseSource<EtcdMembershipTable> for EtcdLeases {
        fn grant(
            table: &EtcdMembershipTable,
            silo: SiloAddress,
            ttl: Duration,
        ) -> BoxFuture<'_, TableResult<Option<Box<dyn ErasedLease>>>> {
            Box::pin(async move {
                let lease = table.grant_lease(silo, ttl).await?;
                Ok(Some(Box::new(lease) as Box<dyn ErasedLease>))
            })
        }
    }
}

/// The membership table of a clustered silo: any [`MembershipTable`], shared by clones. Built
/// with [`ClusterTable::new`], or `ClusterTable::etcd` (feature `etcd`), which also gives
/// the silo an etcd lease as a second death signal.
#[derive(Clone)]
pub struct ClusterTable(Arc<dyn ErasedTable>);

impl ClusterTable {
    /// A cluster on `table` (for instance a clone of an
    /// [`InMemoryMembershipTable`](crate::cluster::InMemoryMembershipTable) shared by silos of
    /// one process).
    pub fn new(table: impl MembershipTable + Send + Sync + 'static) -> Self {
        Self(Arc::new(Erased::<_, NoLeases>(
            table,
            std::marker::PhantomData,
        )))
    }

    /// A cluster on etcd: the table, plus a lease per silo that the membership task keeps
    /// alive; a silo that stops renewing it is voted dead after about one TTL.
    #[cfg(feature = "etcd")]
    pub fn etcd(table: crate::cluster::EtcdMembershipTable) -> Self {
        Self(Arc::new(Erased::<_, etcd::EtcdLeases>(
            table,
            std::marker::PhantomData,
        )))
    }

    pub(crate) async fn grant_lease(
        &self,
        silo: SiloAddress,
        ttl: Duration,
    ) -> TableResult<Option<Box<dyn ErasedLease>>> {
        self.0.grant_lease(silo, ttl).await
    }
}

impl std::fmt::Debug for ClusterTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTable").finish_non_exhaustive()
    }
}

impl MembershipTable for ClusterTable {
    fn read_all(&self) -> impl Future<Output = TableResult<MembershipSnapshot>> + Send {
        self.0.read_all()
    }
    fn insert_row(
        &self,
        entry: MembershipEntry,
        expected: TableVersion,
    ) -> impl Future<Output = TableResult<TableVersion>> + Send {
        self.0.insert_row(entry, expected)
    }
    fn update_row(
        &self,
        entry: MembershipEntry,
        expected: TableVersion,
    ) -> impl Future<Output = TableResult<TableVersion>> + Send {
        self.0.update_row(entry, expected)
    }
    fn update_i_am_alive(
        &self,
        silo: SiloAddress,
        now_ms: u64,
    ) -> impl Future<Output = TableResult<()>> + Send {
        self.0.update_i_am_alive(silo, now_ms)
    }
}
