//! The [`MembershipTable`] operations of [`EtcdMembershipTable`], each one or two etcd
//! transactions (see the module docs of `etcd` for the scheme).

use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, PutOptions, Txn, TxnOp};
use silica_grains::placement::SiloAddress;

use super::{EtcdMembershipTable, MAX_ATTEMPTS, keys, mod_rev};
use crate::cluster::snapshot::{MembershipEntry, MembershipSnapshot, TableVersion};
use crate::cluster::table::{MembershipTable, MembershipTableError};

impl MembershipTable for EtcdMembershipTable {
    async fn read_all(&self) -> Result<MembershipSnapshot, MembershipTableError> {
        let mut kv = self.client.kv_client();
        let options = GetOptions::new().with_prefix();
        let response = self
            .call("read_all", kv.get(self.keys.prefix(), Some(options)))
            .await?;
        let mut pairs = Vec::with_capacity(response.kvs().len());
        for kv in response.kvs() {
            let key = kv
                .key_str()
                .map_err(|e| keys::corrupt(&String::from_utf8_lossy(kv.key()), e))?;
            pairs.push((key, kv.value()));
        }
        keys::snapshot(&self.keys, pairs)
    }

    async fn insert_row(
        &self,
        entry: MembershipEntry,
        expected: TableVersion,
    ) -> Result<TableVersion, MembershipTableError> {
        let absent = Compare::create_revision(self.keys.row(&entry.silo), CompareOp::Equal, 0);
        match self
            .write_row("insert", &entry, expected, vec![absent])
            .await?
        {
            Ok(next) => Ok(next),
            Err(current) if self.version_of(current.as_ref())? != expected => {
                Err(self.mismatch(expected, current.as_ref()))
            }
            Err(_) => Err(MembershipTableError::AlreadyExists(entry.silo)),
        }
    }

    async fn update_row(
        &self,
        mut entry: MembershipEntry,
        expected: TableVersion,
    ) -> Result<TableVersion, MembershipTableError> {
        let row_key = self.keys.row(&entry.silo);
        let seen = self.get_many(&[&self.keys.version(), &row_key]).await?;
        if self.version_of(seen[0].as_ref())? != expected {
            return Err(self.mismatch(expected, seen[0].as_ref()));
        }
        let row = seen[1]
            .as_ref()
            .ok_or(MembershipTableError::NotFound(entry.silo))?;
        let row = keys::decode_row(&row_key, row.value())?;
        if !row.status.can_become(entry.status) {
            return Err(MembershipTableError::IllegalTransition {
                silo: entry.silo,
                from: row.status,
                to: entry.status,
            });
        }
        entry.i_am_alive_ms = entry.i_am_alive_ms.max(row.i_am_alive_ms);
        // Every row write bumps the version, so the version compare also proves the row is the
        // one just checked.
        match self
            .write_row("update", &entry, expected, Vec::new())
            .await?
        {
            Ok(next) => Ok(next),
            Err(current) => Err(self.mismatch(expected, current.as_ref())),
        }
    }

    async fn update_i_am_alive(
        &self,
        silo: SiloAddress,
        now_ms: u64,
    ) -> Result<(), MembershipTableError> {
        let (row_key, alive_key) = (self.keys.row(&silo), self.keys.alive(&silo));
        let lease_key = self.keys.lease(&silo);
        for _ in 0..MAX_ATTEMPTS {
            let seen = self.get_many(&[&row_key, &alive_key, &lease_key]).await?;
            let row = seen[0]
                .as_ref()
                .ok_or(MembershipTableError::NotFound(silo))?;
            let stored = match &seen[1] {
                Some(kv) => keys::decode_u64(&alive_key, kv.value())?,
                None if seen[2].is_some() => return Err(MembershipTableError::LeaseExpired(silo)),
                None => keys::decode_row(&row_key, row.value())?.i_am_alive_ms,
            };
            if stored >= now_ms && seen[1].is_some() {
                return Ok(());
            }
            // A put without the key's lease would detach it: carry it over.
            let lease = seen[1].as_ref().map_or(0, KeyValue::lease);
            let put = (lease != 0).then(|| PutOptions::new().with_lease(lease));
            let txn = Txn::new()
                .when([
                    Compare::version(row_key.clone(), CompareOp::Greater, 0),
                    Compare::mod_revision(alive_key.clone(), CompareOp::Equal, mod_rev(&seen[1])),
                ])
                .and_then([TxnOp::put(
                    alive_key.clone(),
                    stored.max(now_ms).to_string(),
                    put,
                )]);
            match self.txn("heartbeat", txn).await {
                Ok(response) if response.succeeded() => return Ok(()),
                Ok(_) => {}
                // The lease expired between the read and the write.
                Err(MembershipTableError::Unavailable(e))
                    if lease != 0 && e.contains("lease not found") =>
                {
                    return Err(MembershipTableError::LeaseExpired(silo));
                }
                Err(e) => return Err(e),
            }
        }
        Err(self.contention("heartbeat"))
    }
}
