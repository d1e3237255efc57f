//! [`HashBasedPlacementDirector`]: a consistent-hash ring over the candidate silos.

use std::hash::{Hash, Hasher};

use hashring::HashRing;
use rand::Rng;
use silica_grains::placement::SiloAddress;

use super::{Candidates, PlacementDirector};
use crate::cluster_load::ClusterLoad;
use crate::error::PlacementError;
use crate::target::{PlacementDecision, PlacementTarget};

/// Virtual nodes per silo by default (Orleans uses 30 for its ring).
pub const DEFAULT_VIRTUAL_NODES: u32 = 30;

/// Maps the target's `grain_hash` onto a consistent-hash ring (`hashring`, SipHash with fixed
/// keys) holding `virtual_nodes` points per candidate silo.
///
/// Every silo computes the same answer from the same silo set, and a silo joining or leaving
/// moves only the grains whose ring segment it takes or gives up (about `1/n` of them). Load is
/// ignored, as in Orleans. The ring is rebuilt only when the candidate set changes.
#[derive(Clone, Debug)]
pub struct HashBasedPlacementDirector {
    virtual_nodes: u32,
    cached: Option<(Vec<SiloAddress>, HashRing<VirtualNode>)>,
}

impl HashBasedPlacementDirector {
    /// A director with `virtual_nodes` ring points per silo (at least 1).
    pub fn new(virtual_nodes: u32) -> Self {
        Self {
            virtual_nodes: virtual_nodes.max(1),
            cached: None,
        }
    }

    /// The silo `grain_hash` maps to among `silos`, or `None` when `silos` is empty.
    pub fn owner(&mut self, grain_hash: u64, silos: &[SiloAddress]) -> Option<SiloAddress> {
        let stale = self.cached.as_ref().is_none_or(|(set, _)| set != silos);
        if stale {
            let mut ring = HashRing::new();
            let nodes = silos
                .iter()
                .flat_map(|&silo| {
                    (0..self.virtual_nodes).map(move |replica| VirtualNode { silo, replica })
                })
                .collect();
            ring.batch_add(nodes);
            self.cached = Some((silos.to_vec(), ring));
        }
        let (_, ring) = self.cached.as_ref()?;
        ring.get(&RingKey(grain_hash)).map(|v| v.silo)
    }
}

impl Default for HashBasedPlacementDirector {
    fn default() -> Self {
        Self::new(DEFAULT_VIRTUAL_NODES)
    }
}

impl PlacementDirector for HashBasedPlacementDirector {
    fn choose(
        &mut self,
        target: &PlacementTarget,
        load: &ClusterLoad,
        _rng: &mut dyn Rng,
    ) -> Result<PlacementDecision, PlacementError> {
        let candidates = Candidates::gather(target, load)?;
        let silo = self
            .owner(target.grain_hash, &candidates.silos)
            .expect("gather returns at least one silo");
        Ok(candidates.on_silo(silo))
    }
}

/// One point of a silo on the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct VirtualNode {
    silo: SiloAddress,
    replica: u32,
}

// Hashed from explicit little-endian bytes, not derived: derived `Hash` writes native-endian,
// platform-sized integers, and every silo must put a node at the same point.
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
