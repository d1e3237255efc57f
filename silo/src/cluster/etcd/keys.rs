//! The etcd key layout of one cluster's membership table, and its value encodings.
//!
//! ```text
//! silica/<cluster>/version                      table version, decimal (absent = 0)
//! silica/<cluster>/silos/<endpoint>@<gen>       one row: postcard(MembershipEntry)
//! silica/<cluster>/alive/<endpoint>@<gen>       latest heartbeat ms, decimal; on the silo's lease
//! silica/<cluster>/lease/<endpoint>@<gen>       the silo's lease id, decimal (no lease)
//! ```
//!
//! The lease record outlives the lease, so "lease record present, alive key gone" means the
//! lease expired, while a silo that never took a lease has neither.

use silica_grains::placement::SiloAddress;

use crate::cluster::snapshot::{MembershipEntry, MembershipSnapshot, SiloStatus, TableVersion};
use crate::cluster::table::MembershipTableError;

/// The keys of one cluster id.
#[derive(Clone, Debug)]
pub(super) struct Keys {
    prefix: String,
}

/// What a key under the prefix is.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum KeyKind<'a> {
    Version,
    Row,
    Alive(&'a str),
    Lease(&'a str),
    Other,
}

impl Keys {
    /// The keys of `cluster_id`; `/` and `%` are escaped so one id's range never holds another's.
    pub(super) fn new(cluster_id: &str) -> Self {
        let escaped = cluster_id.replace('%', "%25").replace('/', "%2F");
        Self {
            prefix: format!("silica/{escaped}/"),
        }
    }

    /// The prefix every key of the cluster starts with.
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(super) fn version(&self) -> String {
        format!("{}version", self.prefix)
    }

    pub(super) fn row(&self, silo: &SiloAddress) -> String {
        format!("{}silos/{}", self.prefix, silo_name(silo))
    }

    pub(super) fn alive(&self, silo: &SiloAddress) -> String {
        format!("{}alive/{}", self.prefix, silo_name(silo))
    }

    pub(super) fn lease(&self, silo: &SiloAddress) -> String {
        format!("{}lease/{}", self.prefix, silo_name(silo))
    }

    /// Classifies a key read from the cluster's range.
    pub(super) fn kind<'a>(&self, key: &'a str) -> KeyKind<'a> {
        let Some(rest) = key.strip_prefix(&self.prefix) else {
            return KeyKind::Other;
        };
        if rest == "version" {
            KeyKind::Version
        } else if rest.starts_with("silos/") {
            KeyKind::Row
        } else if let Some(silo) = rest.strip_prefix("alive/") {
            KeyKind::Alive(silo)
        } else if let Some(silo) = rest.strip_prefix("lease/") {
            KeyKind::Lease(silo)
        } else {
            KeyKind::Other
        }
    }
}

/// A silo's name in keys: `<endpoint>@<generation>`.
pub(super) fn silo_name(silo: &SiloAddress) -> String {
    format!("{}@{}", silo.endpoint, silo.generation)
}

pub(super) fn corrupt(key: &str, reason: impl std::fmt::Display) -> MembershipTableError {
    MembershipTableError::Corrupt {
        key: key.to_owned(),
        reason: reason.to_string(),
    }
}

/// Decodes a decimal value (version, heartbeat, lease id).
pub(super) fn decode_u64(key: &str, value: &[u8]) -> Result<u64, MembershipTableError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt(key, "not a decimal number"))
}

/// Decodes the version key's value, if the key was read.
pub(super) fn decode_version(
    key: &str,
    value: Option<&[u8]>,
) -> Result<TableVersion, MembershipTableError> {
    value.map_or(Ok(TableVersion(0)), |v| {
        decode_u64(key, v).map(TableVersion)
    })
}

pub(super) fn encode_row(
    key: &str,
    row: &MembershipEntry,
) -> Result<Vec<u8>, MembershipTableError> {
    postcard::to_allocvec(row).map_err(|e| corrupt(key, e))
}

pub(super) fn decode_row(key: &str, value: &[u8]) -> Result<MembershipEntry, MembershipTableError> {
    postcard::from_bytes(value).map_err(|e| corrupt(key, e))
}

/// Builds a snapshot from every key of the cluster, read at one revision.
pub(super) fn snapshot<'a>(
    keys: &Keys,
    kvs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<MembershipSnapshot, MembershipTableError> {
    let mut snap = MembershipSnapshot::default();
    let mut alive = std::collections::HashMap::new();
    let mut leased = std::collections::HashSet::new();
    for (key, value) in kvs {
        match keys.kind(key) {
            KeyKind::Version => snap.version = decode_version(key, Some(value))?,
            KeyKind::Row => {
                let row = decode_row(key, value)?;
                snap.entries.insert(row.silo, row);
            }
            KeyKind::Alive(silo) => {
                alive.insert(silo.to_owned(), decode_u64(key, value)?);
            }
            KeyKind::Lease(silo) => {
                leased.insert(silo.to_owned());
            }
            KeyKind::Other => {}
        }
    }
    for row in snap.entries.values_mut() {
        let name = silo_name(&row.silo);
        match alive.get(&name) {
            Some(&ms) => row.i_am_alive_ms = row.i_am_alive_ms.max(ms),
            None if leased.contains(&name) && row.status != SiloStatus::Dead => {
                snap.expired_leases.insert(row.silo);
            }
            None => {}
        }
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silo(port: u16) -> SiloAddress {
        SiloAddress::new(([127, 0, 0, 1], port).into(), 3)
    }

    // Pins the key layout and that one cluster id's prefix never covers another's keys.
    #[test]
    fn layout_and_escaping() {
        let keys = Keys::new("prod");
        assert_eq!(keys.row(&silo(7)), "silica/prod/silos/127.0.0.1:7@3");
        assert_eq!(keys.alive(&silo(7)), "silica/prod/alive/127.0.0.1:7@3");
        assert_eq!(keys.version(), "silica/prod/version");
        let nested = Keys::new("prod/silos");
        assert_eq!(nested.prefix(), "silica/prod%2Fsilos/");
        assert_eq!(keys.kind(&nested.version()), KeyKind::Other);
        assert_eq!(Keys::new("a%2Fb").prefix(), "silica/a%252Fb/");
    }

    // Pins how a read becomes a snapshot: heartbeats merged (the later wins), and an expired
    // lease reported only for a silo that held one and is not dead.
    #[test]
    fn snapshot_merges_heartbeats_and_flags_expired_leases() {
        let keys = Keys::new("c");
        let (a, b, d) = (silo(1), silo(2), silo(3));
        let mut dead = MembershipEntry::new(d, SiloStatus::Dead, 5);
        dead.i_am_alive_ms = 5;
        let rows = [
            MembershipEntry::new(a, SiloStatus::Active, 10),
            MembershipEntry::new(b, SiloStatus::Active, 10),
            dead,
        ];
        let mut kvs: Vec<(String, Vec<u8>)> = rows
            .iter()
            .map(|r| (keys.row(&r.silo), encode_row("k", r).unwrap()))
            .collect();
        kvs.push((keys.version(), b"4".to_vec()));
        kvs.push((keys.alive(&a), b"70".to_vec()));
        kvs.push((keys.lease(&a), b"1".to_vec()));
        kvs.push((keys.lease(&b), b"2".to_vec()));
        kvs.push((keys.lease(&d), b"3".to_vec()));
        let snap = snapshot(&keys, kvs.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).unwrap();
        assert_eq!(snap.version, TableVersion(4));
        assert_eq!(snap.entry(&a).unwrap().i_am_alive_ms, 70);
        assert_eq!(snap.expired_leases.iter().collect::<Vec<_>>(), [&b]);
        let bad = snapshot(&keys, [(keys.version().as_str(), &b"x"[..])]);
        assert!(matches!(bad, Err(MembershipTableError::Corrupt { .. })));
    }
}
