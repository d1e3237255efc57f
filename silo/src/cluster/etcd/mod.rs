//! [`EtcdMembershipTable`]: the membership table on etcd (feature `etcd`), for clusters of
//! several processes or machines.
//!
//! - `mod.rs` (here): connecting, leases, and the transaction helpers.
//! - `ops`: the [`MembershipTable`](crate::cluster::MembershipTable) operations as etcd
//!   transactions.
//! - `keys`: the key layout and value encodings.
//! - [`lease`]: [`SiloLease`], a silo's etcd lease on its liveness key.
//!
//! The table version is the etag: every row write is one transaction that compares the version
//! key's value with the writer's `expected` and, if equal, puts the row and `expected + 1`.
//! `read_all` is one range read of the cluster's prefix, so rows, version and liveness come from
//! one revision. Every request runs under [`EtcdTableOptions::request_timeout`]; an etcd that
//! cannot be reached is [`MembershipTableError::Unavailable`], never a hang or a panic.

mod keys;
pub mod lease;
mod ops;

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, KeyValue, Txn, TxnOp};
use etcd_client::{PutOptions, TxnOpResponse, TxnResponse};
use silica_grains::placement::SiloAddress;

use super::snapshot::{MembershipEntry, TableVersion};
use super::table::MembershipTableError;
use keys::Keys;
pub use lease::SiloLease;

/// Timeouts of an [`EtcdMembershipTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EtcdTableOptions {
    /// How long [`EtcdMembershipTable::connect`] waits for etcd to answer.
    pub connect_timeout: Duration,
    /// How long one table operation waits for etcd before it is `Unavailable`.
    pub request_timeout: Duration,
}

impl Default for EtcdTableOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl EtcdTableOptions {
    /// Sets [`Self::connect_timeout`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`Self::request_timeout`].
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

/// The membership table of one cluster id, stored in etcd under `silica/<cluster>/`.
///
/// Clones share one connection. It has the in-memory table's semantics (the
/// [`conformance`](crate::cluster::conformance) suite runs against both) plus leases: a silo
/// that takes a [`SiloLease`] and stops renewing it shows up in
/// [`MembershipSnapshot::expired_leases`], a death signal for the failure detector.
///
/// [`MembershipSnapshot::expired_leases`]: crate::cluster::MembershipSnapshot::expired_leases
#[derive(Clone)]
pub struct EtcdMembershipTable {
    client: Client,
    keys: Keys,
    endpoints: Arc<str>,
    options: EtcdTableOptions,
}

impl std::fmt::Debug for EtcdMembershipTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdMembershipTable")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.keys.prefix())
            .finish()
    }
}

impl EtcdMembershipTable {
    /// Connects to etcd at `endpoints` (`http://host:port`) for cluster `cluster_id`, and checks
    /// that etcd answers: an unreachable etcd is [`MembershipTableError::Unavailable`] naming
    /// the endpoints, after at most [`EtcdTableOptions::connect_timeout`].
    pub async fn connect(
        endpoints: &[impl AsRef<str>],
        cluster_id: &str,
        options: EtcdTableOptions,
    ) -> Result<Self, MembershipTableError> {
        let names: Vec<&str> = endpoints.iter().map(AsRef::as_ref).collect();
        let joined: Arc<str> = names.join(",").into();
        let unreachable = |e: &dyn std::fmt::Display| {
            MembershipTableError::Unavailable(format!("cannot reach etcd at {joined}: {e}"))
        };
        let connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_timeout(options.request_timeout);
        let client = match tokio::time::timeout(
            options.connect_timeout,
            Client::connect(&names, Some(connect)),
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(unreachable(&e)),
            Err(_) => return Err(unreachable(&"no answer within the connect timeout")),
        };
        let table = Self {
            client,
            keys: Keys::new(cluster_id),
            endpoints: joined.clone(),
            options,
        };
        // Connecting is lazy; one read proves etcd answers.
        let mut kv = table.client.kv_client();
        match tokio::time::timeout(options.connect_timeout, kv.get(table.keys.version(), None))
            .await
        {
            Ok(Ok(_)) => Ok(table),
            Ok(Err(e)) => Err(unreachable(&e)),
            Err(_) => Err(unreachable(&"no answer within the connect timeout")),
        }
    }

    /// The table of another cluster id on the same connection (tests give each check its own).
    pub fn for_cluster(&self, cluster_id: &str) -> Self {
        Self {
            keys: Keys::new(cluster_id),
            ..self.clone()
        }
    }

    /// The key prefix of this cluster's table.
    pub fn prefix(&self) -> &str {
        self.keys.prefix()
    }

    /// Grants `silo` an etcd lease of `ttl` (rounded up to whole seconds, at least 1; etcd may
    /// raise it to its minimum) and attaches the silo's liveness key to it. The silo renews it
    /// with [`SiloLease::keep_alive`] well within `ttl`; if it stops, etcd deletes the liveness
    /// key and every later read lists the silo in [`MembershipSnapshot::expired_leases`].
    ///
    /// [`MembershipSnapshot::expired_leases`]: crate::cluster::MembershipSnapshot::expired_leases
    pub async fn grant_lease(
        &self,
        silo: SiloAddress,
        ttl: Duration,
    ) -> Result<SiloLease, MembershipTableError> {
        let secs = (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1);
        let secs = i64::try_from(secs).unwrap_or(i64::MAX);
        let mut lease = self.client.lease_client();
        let granted = self.call("lease grant", lease.grant(secs, None)).await?;
        let id = granted.id();
        let result = self.attach_lease(silo, id).await;
        if result.is_err() {
            // Best effort: an unattached lease expires on its own anyway.
            let _ = self.call("lease revoke", lease.revoke(id)).await;
        }
        result?;
        Ok(SiloLease::new(
            self.clone(),
            silo,
            id,
            Duration::from_secs(granted.ttl().max(1).unsigned_abs()),
        ))
    }

    async fn attach_lease(&self, silo: SiloAddress, id: i64) -> Result<(), MembershipTableError> {
        let (row_key, alive_key) = (self.keys.row(&silo), self.keys.alive(&silo));
        for _ in 0..MAX_ATTEMPTS {
            let seen = self.get_many(&[&row_key, &alive_key]).await?;
            let row = seen[0]
                .as_ref()
                .ok_or(MembershipTableError::NotFound(silo))?;
            let mut alive_ms = keys::decode_row(&row_key, row.value())?.i_am_alive_ms;
            if let Some(kv) = &seen[1] {
                alive_ms = alive_ms.max(keys::decode_u64(&alive_key, kv.value())?);
            }
            let txn = Txn::new()
                .when([
                    Compare::version(row_key.clone(), CompareOp::Greater, 0),
                    Compare::mod_revision(alive_key.clone(), CompareOp::Equal, mod_rev(&seen[1])),
                ])
                .and_then([
                    TxnOp::put(self.keys.lease(&silo), id.to_string(), None),
                    TxnOp::put(
                        alive_key.clone(),
                        alive_ms.to_string(),
                        Some(PutOptions::new().with_lease(id)),
                    ),
                ]);
            if self.txn("attach lease", txn).await?.succeeded() {
                return Ok(());
            }
        }
        Err(self.contention("attach lease"))
    }

    // Runs one etcd request under the request timeout, mapping failures to `Unavailable`.
    async fn call<T>(
        &self,
        op: &str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, MembershipTableError> {
        match tokio::time::timeout(self.options.request_timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.unavailable(op, &e)),
            Err(_) => Err(self.unavailable(op, &"no answer within the request timeout")),
        }
    }

    fn unavailable(&self, op: &str, e: &dyn std::fmt::Display) -> MembershipTableError {
        MembershipTableError::Unavailable(format!("etcd {op} at {}: {e}", self.endpoints))
    }

    fn contention(&self, op: &str) -> MembershipTableError {
        MembershipTableError::Unavailable(format!(
            "etcd {op} at {}: {MAX_ATTEMPTS} conflicting writes in a row",
            self.endpoints
        ))
    }

    async fn txn(&self, op: &str, txn: Txn) -> Result<TxnResponse, MembershipTableError> {
        let mut kv = self.client.kv_client();
        self.call(op, kv.txn(txn)).await
    }

    // Reads several keys at one revision (a transaction with no compares).
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<KeyValue>>, MembershipTableError> {
        let ops: Vec<TxnOp> = keys.iter().map(|k| TxnOp::get(*k, None)).collect();
        let response = self.txn("read", Txn::new().and_then(ops)).await?;
        Ok(gets(&response))
    }

    fn version_is(&self, expected: TableVersion) -> Compare {
        if expected.0 == 0 {
            // Version 0 is the absent key (the version is never written as 0).
            Compare::version(self.keys.version(), CompareOp::Equal, 0)
        } else {
            Compare::value(
                self.keys.version(),
                CompareOp::Equal,
                expected.0.to_string(),
            )
        }
    }

    fn version_of(&self, kv: Option<&KeyValue>) -> Result<TableVersion, MembershipTableError> {
        keys::decode_version(&self.keys.version(), kv.map(KeyValue::value))
    }

    // A conditional row write: if the table is at `expected`, put the row and bump the version.
    // On a failed compare, the version key is read back to name the current version.
    async fn write_row(
        &self,
        op: &str,
        row: &MembershipEntry,
        expected: TableVersion,
        extra: Vec<Compare>,
    ) -> Result<Result<TableVersion, Option<KeyValue>>, MembershipTableError> {
        let row_key = self.keys.row(&row.silo);
        let next = expected.next();
        let mut when = vec![self.version_is(expected)];
        when.extend(extra);
        let txn = Txn::new()
            .when(when)
            .and_then([
                TxnOp::put(row_key.clone(), keys::encode_row(&row_key, row)?, None),
                TxnOp::put(self.keys.version(), next.0.to_string(), None),
            ])
            .or_else([TxnOp::get(self.keys.version(), None)]);
        let response = self.txn(op, txn).await?;
        if response.succeeded() {
            return Ok(Ok(next));
        }
        Ok(Err(gets(&response).into_iter().next().flatten()))
    }

    fn mismatch(&self, expected: TableVersion, current: Option<&KeyValue>) -> MembershipTableError {
        match self.version_of(current) {
            Ok(current) => MembershipTableError::VersionMismatch { expected, current },
            Err(e) => e,
        }
    }
}

// Conflicting writes tolerated by one operation before it gives up (only heartbeats and lease
// attachment retry; row writes report a version mismatch to their caller instead).
const MAX_ATTEMPTS: usize = 16;

fn mod_rev(kv: &Option<KeyValue>) -> i64 {
    kv.as_ref().map_or(0, KeyValue::mod_revision)
}

// The first key of each get in a transaction's responses, in order.
fn gets(response: &TxnResponse) -> Vec<Option<KeyValue>> {
    response
        .op_responses()
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(get) => Some(get.kvs().first().cloned()),
            _ => None,
        })
        .collect()
}
