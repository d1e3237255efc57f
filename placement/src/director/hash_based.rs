//! [`HashBasedPlacementDirector`]: a consistent-hash ring over the candidate silos.

use rand::Rng;
use silica_grains::placement::SiloAddress;

use super::{Candidates, PlacementDirector};
use crate::cluster_load::ClusterLoad;
use crate::error::PlacementError;
use crate::ring::SiloRing;
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
    cached: Option<SiloRing>,
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
        let stale = self
            .cached
            .as_ref()
            .is_none_or(|ring| ring.silos() != silos);
        if stale {
            self.cached = Some(SiloRing::new(silos, self.virtual_nodes));
        }
        self.cached.as_ref()?.owner(grain_hash)
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
