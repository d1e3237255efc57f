//! [`DirectoryRing`]: which silo owns which grain's directory entry, in one view.

use silica_grains::GrainId;
use silica_grains::placement::SiloAddress;
use silica_placement::SiloRing;

use super::snapshot::{MembershipSnapshot, TableVersion};

/// Ring points per silo by default (Orleans uses 30 for its directory ring).
pub const DEFAULT_DIRECTORY_VIRTUAL_NODES: u32 = 30;

/// A consistent-hash ring ([`SiloRing`], shared with hash-based placement) over the *active*
/// silos of one view. Keyed by [`GrainId::stable_hash`], so every silo holding the same view version
/// computes the same owner for every grain, and a join or death moves only about `1/n` of them.
///
/// Joining and shutting-down silos own nothing: a joining silo has not received its hand-off
/// yet, and a leaving one is handing its entries away.
#[derive(Clone, Debug)]
pub struct DirectoryRing {
    version: TableVersion,
    ring: SiloRing,
}

impl DirectoryRing {
    /// The ring of `view`'s active silos with `virtual_nodes` points each (at least 1).
    pub fn new(view: &MembershipSnapshot, virtual_nodes: u32) -> Self {
        Self {
            version: view.version,
            ring: SiloRing::new(&view.active_silos(), virtual_nodes),
        }
    }

    /// The view version the ring was built from.
    pub fn version(&self) -> TableVersion {
        self.version
    }

    /// The silos on the ring, in address order.
    pub fn silos(&self) -> &[SiloAddress] {
        self.ring.silos()
    }

    /// The silo owning `grain`'s directory entry; `None` when no silo is active.
    pub fn owner(&self, grain: &GrainId) -> Option<SiloAddress> {
        self.ring.owner(grain.stable_hash())
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
