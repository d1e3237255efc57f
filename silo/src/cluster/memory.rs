//! [`InMemoryMembershipTable`]: the embedded default table, one process, shared by clones.

use std::sync::{Arc, Mutex, MutexGuard};

use silica_grains::placement::SiloAddress;

use super::snapshot::{MembershipEntry, MembershipSnapshot, TableVersion};
use super::table::{MembershipTable, MembershipTableError};

/// A membership table held in memory. Clones share one table, so several silos in one process
/// (the embedded default, and the test harness) see each other.
///
/// Every operation completes at once (its future is ready on first poll).
#[derive(Clone, Debug, Default)]
pub struct InMemoryMembershipTable {
    inner: Arc<Mutex<MembershipSnapshot>>,
}

impl InMemoryMembershipTable {
    /// An empty table at version 0.
    pub fn new() -> Self {
        Self::default()
    }

    // A panic while holding the lock cannot leave a half-applied write (every write is checked
    // before it mutates), so a poisoned lock still holds a consistent table.
    fn lock(&self) -> MutexGuard<'_, MembershipSnapshot> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(
        &self,
        expected: TableVersion,
        apply: impl FnOnce(&mut MembershipSnapshot) -> Result<(), MembershipTableError>,
    ) -> Result<TableVersion, MembershipTableError> {
        let mut table = self.lock();
        if table.version != expected {
            return Err(MembershipTableError::VersionMismatch {
                expected,
                current: table.version,
            });
        }
        apply(&mut table)?;
        table.version = table.version.next();
        Ok(table.version)
    }
}

impl MembershipTable for InMemoryMembershipTable {
    async fn read_all(&self) -> Result<MembershipSnapshot, MembershipTableError> {
        Ok(self.lock().clone())
    }

    async fn insert_row(
        &self,
        entry: MembershipEntry,
        expected: TableVersion,
    ) -> Result<TableVersion, MembershipTableError> {
        self.write(expected, |table| {
            if table.entries.contains_key(&entry.silo) {
                return Err(MembershipTableError::AlreadyExists(entry.silo));
            }
            table.entries.insert(entry.silo, entry);
            Ok(())
        })
    }

    async fn update_row(
        &self,
        entry: MembershipEntry,
        expected: TableVersion,
    ) -> Result<TableVersion, MembershipTableError> {
        self.write(expected, |table| {
            let row = table
                .entries
                .get_mut(&entry.silo)
                .ok_or(MembershipTableError::NotFound(entry.silo))?;
            if !row.status.can_become(entry.status) {
                return Err(MembershipTableError::IllegalTransition {
                    silo: entry.silo,
                    from: row.status,
                    to: entry.status,
                });
            }
            let alive_ms = row.i_am_alive_ms.max(entry.i_am_alive_ms);
            *row = entry;
            row.i_am_alive_ms = alive_ms;
            Ok(())
        })
    }

    async fn update_i_am_alive(
        &self,
        silo: SiloAddress,
        now_ms: u64,
    ) -> Result<(), MembershipTableError> {
        let mut table = self.lock();
        let row = table
            .entries
            .get_mut(&silo)
            .ok_or(MembershipTableError::NotFound(silo))?;
        row.i_am_alive_ms = row.i_am_alive_ms.max(now_ms);
        Ok(())
    }
}
