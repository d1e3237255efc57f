//! [`RandomPlacementDirector`]: the Orleans default.

use rand::{Rng, RngExt};

use super::{Candidates, PlacementDirector};
use crate::cluster_load::ClusterLoad;
use crate::error::PlacementError;
use crate::target::{PlacementDecision, PlacementTarget};

/// Any candidate silo, uniformly at random. A GPU activation goes to any feasible device in the
/// cluster, uniformly at random (so a silo with more devices gets more of them); this is the
/// baseline of the placement experiment.
#[derive(Clone, Copy, Debug, Default)]
pub struct RandomPlacementDirector;

impl PlacementDirector for RandomPlacementDirector {
    fn choose(
        &mut self,
        target: &PlacementTarget,
        load: &ClusterLoad,
        rng: &mut dyn Rng,
    ) -> Result<PlacementDecision, PlacementError> {
        let candidates = Candidates::gather(target, load)?;
        if let Some(devices) = &candidates.devices {
            let d = devices[rng.random_range(0..devices.len())];
            return Ok(d.decision());
        }
        let silo = candidates.silos[rng.random_range(0..candidates.silos.len())];
        Ok(PlacementDecision { silo, device: None })
    }
}
