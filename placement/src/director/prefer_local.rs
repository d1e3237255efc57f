//! [`PreferLocalPlacementDirector`]: stay on the silo that got the call.

use rand::{Rng, RngExt};

use super::{Candidates, PlacementDirector};
use crate::cluster_load::ClusterLoad;
use crate::error::PlacementError;
use crate::target::{PlacementDecision, PlacementTarget};

/// The requesting silo when it is a candidate (compatible, not overloaded, and for a GPU target
/// holding a feasible device); otherwise a candidate silo chosen uniformly at random.
#[derive(Clone, Copy, Debug, Default)]
pub struct PreferLocalPlacementDirector;

impl PlacementDirector for PreferLocalPlacementDirector {
    fn choose(
        &mut self,
        target: &PlacementTarget,
        load: &ClusterLoad,
        rng: &mut dyn Rng,
    ) -> Result<PlacementDecision, PlacementError> {
        let candidates = Candidates::gather(target, load)?;
        let silo = if candidates.silos.contains(&target.requesting_silo) {
            target.requesting_silo
        } else {
            candidates.silos[rng.random_range(0..candidates.silos.len())]
        };
        Ok(candidates.on_silo(silo))
    }
}
