//! The [`PlacementDirector`] trait, the helpers every director shares, and
//! [`PlacementDirectors`], which picks a director by [`PlacementStrategy`].
//!
//! Every director follows the same rules: only silos whose fresh report lists the grain type are
//! candidates; overloaded silos are left out unless every candidate is overloaded; for a target
//! with a GPU variant, only silos with a device that has a free slot and enough free memory are
//! candidates, and when no candidate silo has a device at all the CPU implementation is placed
//! (`device: None`). Silo-level directors (prefer-local, hash-based, activation-count) then put a
//! GPU activation on the chosen silo's device with the least expected wait.

mod activation_count;
mod hash_based;
mod prefer_local;
mod queue_depth;
mod random;

pub use activation_count::ActivationCountPlacementDirector;
pub use hash_based::{DEFAULT_VIRTUAL_NODES, HashBasedPlacementDirector};
pub use prefer_local::PreferLocalPlacementDirector;
pub use queue_depth::{QueueDepthConfig, QueueDepthPlacementDirector};
pub use random::RandomPlacementDirector;

use rand::{Rng, RngExt};
use silica_grains::placement::{PlacementStrategy, SiloAddress};

use crate::cluster_load::ClusterLoad;
use crate::error::PlacementError;
use crate::load::{DeviceId, DeviceLoad, SiloLoadReport};
use crate::target::{PlacementDecision, PlacementTarget};

/// Behaviour that turns a placement strategy into a decision, from load reports only.
pub trait PlacementDirector {
    /// Chooses where `target` goes, reading `load` as it is (no expiry, no bookkeeping).
    fn choose(
        &mut self,
        target: &PlacementTarget,
        load: &ClusterLoad,
        rng: &mut dyn Rng,
    ) -> Result<PlacementDecision, PlacementError>;

    /// Drops reports stale at `now_ms`, chooses, and applies the decision to `load` at once
    /// (see [`ClusterLoad::record_placement`]). This is what a silo calls.
    fn place(
        &mut self,
        target: &PlacementTarget,
        load: &mut ClusterLoad,
        now_ms: u64,
        rng: &mut dyn Rng,
    ) -> Result<PlacementDecision, PlacementError> {
        load.expire(now_ms);
        let decision = self.choose(target, load, rng)?;
        load.record_placement(&decision, target, now_ms);
        Ok(decision)
    }
}

/// One director per strategy, dispatched by the grain type's [`PlacementStrategy`].
#[derive(Debug, Default)]
pub struct PlacementDirectors {
    /// Serves [`PlacementStrategy::Random`] and strategies this crate does not know yet.
    pub random: RandomPlacementDirector,
    /// Serves [`PlacementStrategy::PreferLocal`].
    pub prefer_local: PreferLocalPlacementDirector,
    /// Serves [`PlacementStrategy::HashBased`].
    pub hash_based: HashBasedPlacementDirector,
    /// Serves [`PlacementStrategy::ActivationCount`].
    pub activation_count: ActivationCountPlacementDirector,
    /// Serves [`PlacementStrategy::QueueDepth`].
    pub queue_depth: QueueDepthPlacementDirector,
}

impl PlacementDirectors {
    /// The director that serves `strategy`.
    pub fn director(&mut self, strategy: PlacementStrategy) -> &mut dyn PlacementDirector {
        match strategy {
            PlacementStrategy::PreferLocal => &mut self.prefer_local,
            PlacementStrategy::HashBased => &mut self.hash_based,
            PlacementStrategy::ActivationCount => &mut self.activation_count,
            PlacementStrategy::QueueDepth => &mut self.queue_depth,
            _ => &mut self.random,
        }
    }

    /// [`PlacementDirector::place`] with the director that serves `strategy`.
    pub fn place(
        &mut self,
        strategy: PlacementStrategy,
        target: &PlacementTarget,
        load: &mut ClusterLoad,
        now_ms: u64,
        rng: &mut dyn Rng,
    ) -> Result<PlacementDecision, PlacementError> {
        self.director(strategy).place(target, load, now_ms, rng)
    }
}

/// A device that could take the activation, copied out of its report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct DeviceCandidate {
    pub(crate) silo: SiloAddress,
    pub(crate) device: DeviceId,
    pub(crate) queue_depth: u64,
    pub(crate) rate_per_s: f64,
    pub(crate) free_slots: u64,
}

impl DeviceCandidate {
    /// Seconds the new message would wait: everything queued plus itself, at the device's rate.
    pub(crate) fn expected_wait_s(&self) -> f64 {
        (self.queue_depth + 1) as f64 / self.rate_per_s
    }

    /// The decision to place the activation on this device.
    pub(crate) fn decision(&self) -> PlacementDecision {
        PlacementDecision {
            silo: self.silo,
            device: Some(self.device),
        }
    }
}

/// Silo candidates for `target`: compatible, not overloaded unless all are, and for a GPU target
/// with devices somewhere, holding a feasible device. `devices` is `None` when the CPU
/// implementation is to be placed.
pub(crate) struct Candidates {
    pub(crate) silos: Vec<SiloAddress>,
    pub(crate) devices: Option<Vec<DeviceCandidate>>,
}

impl Candidates {
    pub(crate) fn gather(
        target: &PlacementTarget,
        load: &ClusterLoad,
    ) -> Result<Self, PlacementError> {
        let compatible: Vec<&SiloLoadReport> = load
            .reports()
            .filter(|r| r.hosts(&target.grain_type))
            .collect();
        if compatible.is_empty() {
            return Err(PlacementError::NoCompatibleSilo {
                grain_type: target.grain_type.clone(),
            });
        }
        let healthy: Vec<&SiloLoadReport> = compatible
            .iter()
            .copied()
            .filter(|r| !r.overloaded)
            .collect();
        let reports = if healthy.is_empty() {
            compatible
        } else {
            healthy
        };
        let devices =
            match target.gpu {
                Some(gpu) if reports.iter().any(|r| !r.devices.is_empty()) => Some(
                    feasible_devices(&reports, gpu.state_bytes, &target.grain_type)?,
                ),
                _ => None,
            };
        let silos = match &devices {
            Some(devs) => {
                let mut silos: Vec<SiloAddress> = devs.iter().map(|d| d.silo).collect();
                silos.dedup();
                silos
            }
            None => reports.iter().map(|r| r.silo).collect(),
        };
        Ok(Self { silos, devices })
    }

    /// The decision for `silo`: its least-wait feasible device when a device is wanted.
    pub(crate) fn on_silo(&self, silo: SiloAddress) -> PlacementDecision {
        let device = self.devices.as_ref().and_then(|devs| {
            devs.iter()
                .filter(|d| d.silo == silo)
                .min_by(|a, b| a.expected_wait_s().total_cmp(&b.expected_wait_s()))
                .map(|d| d.device)
        });
        PlacementDecision { silo, device }
    }
}

fn feasible_devices(
    reports: &[&SiloLoadReport],
    state_bytes: u64,
    grain_type: &str,
) -> Result<Vec<DeviceCandidate>, PlacementError> {
    let all = || {
        reports
            .iter()
            .flat_map(|r| r.devices.iter().map(move |d| (r.silo, d)))
    };
    let known: Vec<f64> = all()
        .map(|(_, d)| d.service_rate_per_s)
        .filter(|r| *r > 0.0)
        .collect();
    // A device that has not served anything yet is assumed to be average.
    let unknown_rate = if known.is_empty() {
        1.0
    } else {
        known.iter().sum::<f64>() / known.len() as f64
    };
    let fits = |d: &DeviceLoad| d.free_slots > 0 && d.free_memory_bytes >= state_bytes;
    let devices: Vec<DeviceCandidate> = all()
        .filter(|(_, d)| fits(d))
        .map(|(silo, d)| DeviceCandidate {
            silo,
            device: d.device,
            queue_depth: d.queue_depth,
            free_slots: d.free_slots,
            rate_per_s: if d.service_rate_per_s > 0.0 {
                d.service_rate_per_s
            } else {
                unknown_rate
            },
        })
        .collect();
    if !devices.is_empty() {
        Ok(devices)
    } else if all().any(|(_, d)| d.free_slots > 0) {
        Err(PlacementError::InsufficientDeviceMemory {
            grain_type: grain_type.to_owned(),
            needed_bytes: state_bytes,
        })
    } else {
        Err(PlacementError::NoFreeGpuSlots {
            grain_type: grain_type.to_owned(),
        })
    }
}

/// Up to `k` distinct indices below `n`, uniformly at random (a partial Fisher-Yates shuffle).
pub(crate) fn sample_indices(n: usize, k: usize, rng: &mut dyn Rng) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let k = k.min(n);
    for i in 0..k {
        let j = rng.random_range(i..n);
        idx.swap(i, j);
    }
    idx.truncate(k);
    idx
}

#[cfg(test)]
mod tests;
