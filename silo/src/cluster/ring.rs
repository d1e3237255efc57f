//! [`DirectoryRing`]: which silo owns which grain's directory entry, in one view.

use std::hash::{Hash, Hasher};

use hashring::HashRing;
use silica_grains::GrainId;
use silica_grains::placement::SiloAddress;

use super::snapshot::{MembershipSnapshot, TableVersion};

/// Ring points per silo by default (Orleans uses 30 for its directory ring).
pub const DEFAULT_DIRECTORY_VIRTUAL_NODES: u32 = 30;

/// A consistent-hash ring over the *active* silos of one view (`hashring`, virtual nodes added
/// explicitly). Keyed by [`GrainId::stable_hash`], so every silo holding the same view version
/// computes the same owner for every grain, and a join or death moves only about `1/n` of them.
///
/// Joining and shutting-down silos own nothing: a joining silo has not received its hand-off
/// yet, and a leaving one is handing its entries away.
#[derive(Clone, Debug)]
pub struct DirectoryRing {
    version: TableVersion,
    silos: Vec<SiloAddress>,
    ring: HashRing<VirtualNode>,
}

impl DirectoryRing {
    /// The ring of `view`'s active silos with `virtual_nodes` points each (at least 1).
    pub fn new(view: &MembershipSnapshot, virtual_nodes: u32) -> Self {
        let silos = view.active_silos();
        let mut ring = HashRing::new();
        ring.batch_add(
            silos
                .iter()
                .flat_map(|&silo| {
                    (0..virtual_nodes.max(1)).map(move |replica| VirtualNode { silo, replica })
                })
                .collect(),
        );
        Self {
            version: view.version,
            silos,
            ring,
        }
    }

    /// The view version the ring was built from.
    pub fn version(&self) -> TableVersion {
        self.version
    }

    /// The silos on the ring, in address order.
    pub fn silos(&self) -> &[SiloAddress] {
        &self.silos
    }

    /// The silo owning `grain`'s directory entry; `None` when no silo is active.
    pub fn owner(&self, grain: &GrainId) -> Option<SiloAddress> {
        self.ring.get(&RingKey(grain.stable_hash())).map(|v| v.silo)
    }
}

/// One point of a silo on the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct VirtualNode {
    silo: SiloAddress,
    replica: u32,
}

// Hashed from explicit little-endian bytes, not derived: derived `Hash` writes native-endian,
// platform-sized integers, and every silo must put a node at the same point. (The same encoding
// as the hash-based placement director's ring.)
impl Hash for VirtualNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self.silo.endpoint.ip() {
            std::net::IpAddr::V4(ip) => {
                state.write(&[4]);
                state.write(&ip.octets());
            }
            std::net::IpAddr::V6(ip) => {
                state.write(&[6]);
                state.write(&ip.octets());
            }
        }
        state.write(&self.silo.endpoint.port().to_le_bytes());
        state.write(&self.silo.generation.to_le_bytes());
        state.write(&self.replica.to_le_bytes());
    }
}

/// A grain hash as a ring key, hashed from its little-endian bytes for the same reason.
struct RingKey(u64);

impl Hash for RingKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.0.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::snapshot::{MembershipEntry, SiloStatus};
    use silica_grains::GrainType;

    fn view(ports: &[u16], version: u64) -> MembershipSnapshot {
        let mut view = MembershipSnapshot {
            version: TableVersion(version),
            ..Default::default()
        };
        for &port in ports {
            let silo = SiloAddress::new(([10, 0, 0, 1], port).into(), 1);
            view.entries
                .insert(silo, MembershipEntry::new(silo, SiloStatus::Active, 0));
        }
        view
    }

    // Pins that two silos building the ring from the same view agree on every owner, and that
    // a join moves roughly 1/n of the grains (consistent hashing), not most of them.
    #[test]
    fn same_view_same_owners_and_joins_move_few() {
        let a = DirectoryRing::new(&view(&[1, 2, 3], 5), DEFAULT_DIRECTORY_VIRTUAL_NODES);
        let b = DirectoryRing::new(&view(&[3, 1, 2], 5), DEFAULT_DIRECTORY_VIRTUAL_NODES);
        let joined = DirectoryRing::new(&view(&[1, 2, 3, 4], 6), DEFAULT_DIRECTORY_VIRTUAL_NODES);
        let grains: Vec<_> = (0..2_000i64)
            .map(|k| GrainId::new(GrainType::new("G"), k))
            .collect();
        assert!(grains.iter().all(|g| a.owner(g) == b.owner(g)));
        let moved = grains
            .iter()
            .filter(|g| a.owner(g) != joined.owner(g))
            .count();
        assert!((200..=800).contains(&moved), "moved {moved} of 2000");
    }

    // Pins that only active silos own entries.
    #[test]
    fn joining_silos_own_nothing() {
        let mut v = view(&[1], 2);
        let joining = SiloAddress::new(([10, 0, 0, 1], 2).into(), 1);
        v.entries.insert(
            joining,
            MembershipEntry::new(joining, SiloStatus::Joining, 0),
        );
        let ring = DirectoryRing::new(&v, 30);
        assert_eq!(ring.silos().len(), 1);
        let g = GrainId::new(GrainType::new("G"), 1i64);
        assert_ne!(ring.owner(&g), Some(joining));
    }
}
