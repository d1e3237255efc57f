//! [`ActivationCountPlacementDirector`]: power of two choices on activation counts.

use rand::Rng;

use super::{Candidates, PlacementDirector, sample_indices};
use crate::cluster_load::ClusterLoad;
use crate::error::PlacementError;
use crate::target::{PlacementDecision, PlacementTarget};

/// Samples `choices` distinct candidate silos (two by default) and takes the one hosting the
/// fewest activations; ties go to the first sampled, which is random.
///
/// Sampling instead of taking the global minimum matters because every silo decides from reports
/// of the same age: all of them would pick the one least-loaded silo until its next report.
#[derive(Clone, Copy, Debug)]
pub struct ActivationCountPlacementDirector {
    choices: usize,
}

impl ActivationCountPlacementDirector {
    /// A director that compares `choices` sampled silos (at least 1).
    pub fn new(choices: usize) -> Self {
        Self {
            choices: choices.max(1),
        }
    }
}

impl Default for ActivationCountPlacementDirector {
    fn default() -> Self {
        Self::new(2)
    }
}

impl PlacementDirector for ActivationCountPlacementDirector {
    fn choose(
        &mut self,
        target: &PlacementTarget,
        load: &ClusterLoad,
        rng: &mut dyn Rng,
    ) -> Result<PlacementDecision, PlacementError> {
        let candidates = Candidates::gather(target, load)?;
        let count = |i: usize| {
            load.report(&candidates.silos[i])
                .map_or(u64::MAX, |r| r.activation_count)
        };
        let best = sample_indices(candidates.silos.len(), self.choices, rng)
            .into_iter()
            .min_by_key(|&i| count(i))
            .expect("gather returns at least one silo");
        Ok(candidates.on_silo(candidates.silos[best]))
    }
}
