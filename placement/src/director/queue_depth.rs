//! [`QueueDepthPlacementDirector`]: GPU variants by expected wait.

use rand::Rng;

use super::{Candidates, DeviceCandidate, PlacementDirector, sample_indices};
use crate::cluster_load::ClusterLoad;
use crate::error::PlacementError;
use crate::target::{PlacementDecision, PlacementTarget};

/// Tuning of [`QueueDepthPlacementDirector`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QueueDepthConfig {
    /// How many remote devices to sample per decision (the k of power-of-k; at least 1). The
    /// requesting silo's own devices are always all considered.
    pub sample_size: usize,
    /// A remote device must promise a wait shorter than the best local one by more than this
    /// many seconds to win: the price of the extra network hop for every later call.
    pub locality_margin_s: f64,
}

impl Default for QueueDepthConfig {
    fn default() -> Self {
        Self {
            sample_size: 2,
            locality_margin_s: 200e-6,
        }
    }
}

/// Places a GPU activation on the (silo, device) with the least expected wait, where the wait of
/// a device is `(queue_depth + 1) / service_rate`: the messages ahead of the new one plus itself,
/// at the device's recent busy-time service rate ([`crate::ServiceRateEwma`]).
///
/// Hard constraints: a free state slot and enough free device memory (see
/// [`crate::PlacementError`] when none has them). Inside the requesting silo every device is
/// compared, since its own numbers are fresh and few; across silos `sample_size` remote devices
/// are sampled, so silos deciding from the same stale reports do not all pick the same device.
/// The best local device wins unless the best sampled remote one is shorter by more than
/// `locality_margin_s`.
///
/// A target without a GPU variant, or a cluster with no device, falls back to placing the CPU
/// implementation on the requesting silo when it is a candidate, else on the sampled silo with
/// the fewest activations.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueDepthPlacementDirector {
    config: QueueDepthConfig,
}

impl QueueDepthPlacementDirector {
    /// A director with the given tuning.
    pub fn new(config: QueueDepthConfig) -> Self {
        Self {
            config: QueueDepthConfig {
                sample_size: config.sample_size.max(1),
                ..config
            },
        }
    }

    /// Its tuning.
    pub fn config(&self) -> QueueDepthConfig {
        self.config
    }

    fn choose_device(
        &self,
        target: &PlacementTarget,
        devices: &[DeviceCandidate],
        rng: &mut dyn Rng,
    ) -> DeviceCandidate {
        let local = target.requesting_silo;
        let best_local = min_wait(devices.iter().filter(|d| d.silo == local).copied());
        let remote: Vec<DeviceCandidate> = devices
            .iter()
            .filter(|d| d.silo != local)
            .copied()
            .collect();
        let sampled = sample_indices(remote.len(), self.config.sample_size, rng);
        let best_remote = min_wait(sampled.into_iter().map(|i| remote[i]));
        match (best_local, best_remote) {
            (Some(l), Some(r))
                if r.expected_wait_s() < l.expected_wait_s() - self.config.locality_margin_s =>
            {
                r
            }
            (Some(l), _) => l,
            (None, Some(r)) => r,
            (None, None) => unreachable!("gather returns at least one feasible device"),
        }
    }
}

/// The device with the least expected wait; among equal waits (idle devices), the one with the
/// most free slots, so activations spread over idle devices instead of filling the first.
fn min_wait(devices: impl Iterator<Item = DeviceCandidate>) -> Option<DeviceCandidate> {
    devices.min_by(|a, b| {
        a.expected_wait_s()
            .total_cmp(&b.expected_wait_s())
            .then(b.free_slots.cmp(&a.free_slots))
    })
}

impl PlacementDirector for QueueDepthPlacementDirector {
    fn choose(
        &mut self,
        target: &PlacementTarget,
        load: &ClusterLoad,
        rng: &mut dyn Rng,
    ) -> Result<PlacementDecision, PlacementError> {
        let candidates = Candidates::gather(target, load)?;
        if let Some(devices) = &candidates.devices {
            let d = self.choose_device(target, devices, rng);
            return Ok(d.decision());
        }
        if candidates.silos.contains(&target.requesting_silo) {
            return Ok(candidates.on_silo(target.requesting_silo));
        }
        let count = |i: usize| {
            load.report(&candidates.silos[i])
                .map_or(u64::MAX, |r| r.activation_count)
        };
        let best = sample_indices(candidates.silos.len(), self.config.sample_size.max(2), rng)
            .into_iter()
            .min_by_key(|&i| count(i))
            .expect("gather returns at least one silo");
        Ok(candidates.on_silo(candidates.silos[best]))
    }
}
