//! The rings of one GPU variant on this silo's devices ([`RingSet`]), their load as placement
//! sees it, and the choice of a ring for a new activation or a stateless call.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use silica_gpu::{BackendChoice, BackendKind, Kernel, Ring, RingConfig, SlotId};
use silica_grains::placement::SiloAddress;
use silica_placement::{
    ClusterLoad, DeviceId, DeviceLoad, PlacementDirector, PlacementError, PlacementTarget,
    QueueDepthPlacementDirector, ServiceRateEwma, SiloLoadReport,
};

use super::activation::RingSettings;
use super::config::{GpuConfig, describe};

/// One ring of a GPU variant on one device.
pub(crate) struct DeviceRing<K: Kernel> {
    pub(crate) ring: Ring<K>,
    pub(crate) device: DeviceId,
    pub(crate) backend: BackendKind,
    pub(crate) description: String,
    pub(crate) settings: Arc<RingSettings>,
    capacity: u32,
    /// Slots in use.
    active: AtomicU64,
    /// Cleared when the ring fails for good (a sticky device error): no new activations.
    usable: AtomicBool,
    rate: Mutex<RateSampler>,
    /// The last sampled service rate (`f64` bits), read without the lock on every stateless call.
    rate_bits: AtomicU64,
}

/// Busy-time service rate of a ring, sampled whenever placement looks at it.
struct RateSampler {
    ewma: ServiceRateEwma,
    completed: u64,
    at: Instant,
    busy: bool,
}

impl<K: Kernel> DeviceRing<K> {
    fn start(
        device: DeviceId,
        choice: BackendChoice,
        config: &GpuConfig,
        settings: Arc<RingSettings>,
    ) -> Result<Self, String> {
        let ring_config = RingConfig {
            backend: choice,
            slots: config.slots_per_device,
            // The silo spins in its turn wrapper, when the call is awaited (see `GpuConfig`).
            reply_spin: std::time::Duration::ZERO,
            ..config.ring.clone()
        };
        let ring = Ring::<K>::start(ring_config).map_err(|e| e.to_string())?;
        let backend = ring.backend();
        let ordinal = match choice {
            BackendChoice::CudaAuto { device } | BackendChoice::Exact { device, .. } => device,
        };
        Ok(Self {
            description: describe(backend, ordinal),
            settings,
            device,
            backend,
            capacity: config.slots_per_device,
            active: AtomicU64::new(0),
            usable: AtomicBool::new(true),
            rate_bits: AtomicU64::new(prior_rate(backend).to_bits()),
            rate: Mutex::new(RateSampler {
                ewma: ServiceRateEwma::new(0.1, prior_rate(backend)),
                completed: 0,
                at: Instant::now(),
                busy: false,
            }),
            ring,
        })
    }

    /// Whether new work may go here, as last checked (one atomic load: it is read per call).
    pub(crate) fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Relaxed)
    }

    /// Checks the ring's health: a ring that stopped running (a sticky device error, or shut
    /// down) takes no new work from then on. Returns whether it is usable.
    pub(crate) fn refresh_usable(&self) -> bool {
        if self.is_usable() && !self.ring.health().running {
            tracing::warn!(device = %self.device, "{} stopped; its GPU variant takes no new work there", self.description);
            self.usable.store(false, Ordering::Relaxed);
        }
        self.is_usable()
    }

    /// Takes a slot with `state`; `None` when the table is full.
    pub(crate) fn activate(&self, state: &K::State) -> Result<SlotId, silica_gpu::RingError> {
        let slot = self.ring.activate(state)?;
        self.active.fetch_add(1, Ordering::Relaxed);
        Ok(slot)
    }

    /// Gives a slot back and returns its final state. A slot the ring refuses (closing or free
    /// already: given back by someone else) leaves the count alone.
    pub(crate) async fn deactivate(&self, slot: SlotId) -> Result<K::State, silica_gpu::RingError> {
        let state = self.ring.deactivate(slot).await;
        if !matches!(state, Err(silica_gpu::RingError::SlotNotActive(_))) {
            self.active.fetch_sub(1, Ordering::Relaxed);
        }
        state
    }

    /// Expected wait of one more message, in seconds, for stateless calls: cheap (no lock).
    pub(crate) fn expected_wait_s(&self) -> f64 {
        (self.ring.queue_depth() + 1) as f64 / self.rate_per_s().max(1.0)
    }

    /// This ring as a device in a load report (samples the service rate).
    fn load(&self) -> DeviceLoad {
        let health = self.ring.health();
        let mut rate = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if rate.busy {
            let served = health.completed.saturating_sub(rate.completed);
            let busy_s = (now - rate.at).as_secs_f64();
            rate.ewma.observe(served, busy_s);
        }
        self.rate_bits
            .store(rate.ewma.rate_per_s().to_bits(), Ordering::Relaxed);
        rate.completed = health.completed;
        rate.at = now;
        rate.busy = health.queue_depth > 0;
        let free_slots =
            u64::from(self.capacity).saturating_sub(self.active.load(Ordering::Relaxed));
        DeviceLoad {
            device: self.device,
            queue_depth: health.queue_depth,
            service_rate_per_s: rate.ewma.rate_per_s(),
            free_slots,
            // The state table is allocated whole when the ring starts.
            free_memory_bytes: free_slots * size_of::<K::State>() as u64,
        }
    }

    /// The service-rate estimate as last sampled.
    pub(crate) fn rate_per_s(&self) -> f64 {
        f64::from_bits(self.rate_bits.load(Ordering::Relaxed))
    }

    /// Slots in use.
    pub(crate) fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
}

/// A starting estimate of a backend's service rate, until it has been measured busy.
fn prior_rate(kind: BackendKind) -> f64 {
    match kind {
        BackendKind::CudaPersistent => 10e6,
        BackendKind::CudaBatch => 2e6,
        BackendKind::Wgpu => 0.5e6,
        BackendKind::Cpu => 2e6,
    }
}

/// The rings of one GPU variant, one per device this silo uses.
pub(crate) struct RingSet<K: Kernel> {
    pub(crate) rings: Vec<Arc<DeviceRing<K>>>,
    /// Why a device has no ring (compile error, driver error), or why there are no devices.
    pub(crate) problems: Vec<String>,
    director: Mutex<(QueueDepthPlacementDirector, SmallRng)>,
}

impl<K: Kernel> RingSet<K> {
    /// Starts a ring on each of `choices`; failures are recorded, not fatal.
    pub(crate) fn start(
        choices: &[BackendChoice],
        no_devices: Option<String>,
        config: &GpuConfig,
        settings: Arc<RingSettings>,
    ) -> Self {
        let mut rings = Vec::new();
        let mut problems: Vec<String> = no_devices.into_iter().collect();
        for (i, choice) in choices.iter().enumerate() {
            let device = DeviceId(i as u32);
            match DeviceRing::<K>::start(device, *choice, config, settings.clone()) {
                Ok(ring) => rings.push(Arc::new(ring)),
                Err(e) => {
                    tracing::warn!(kernel = K::NAME, %device, "GPU ring did not start: {e}");
                    problems.push(format!("{device} ({choice:?}): {e}"));
                }
            }
        }
        Self {
            rings,
            problems,
            director: Mutex::new((
                QueueDepthPlacementDirector::default(),
                SmallRng::seed_from_u64(0x51_1CA),
            )),
        }
    }

    /// Whether any ring can take new work (as last checked).
    pub(crate) fn any_usable(&self) -> bool {
        self.rings.iter().any(|r| r.is_usable())
    }

    /// Re-checks every ring's health; returns whether any is usable.
    pub(crate) fn refresh_usable(&self) -> bool {
        self.rings
            .iter()
            .fold(false, |any, r| r.refresh_usable() | any)
    }

    /// The ring a new activation goes to: the least expected wait among usable rings with a
    /// free slot (the queue-depth director over this silo's devices).
    pub(crate) fn place(&self, grain_type: &str, grain_hash: u64) -> Result<usize, PlacementError> {
        let here = SiloAddress::new(([127, 0, 0, 1], 0).into(), 0);
        let mut report = SiloLoadReport::new(here, 0);
        report.devices = self
            .rings
            .iter()
            .filter(|r| r.refresh_usable())
            .map(|r| r.load())
            .collect();
        let mut load = ClusterLoad::new(u64::MAX);
        load.handle_report(report, 0);
        let target = PlacementTarget::new(grain_type, grain_hash, here)
            .with_gpu(size_of::<K::State>() as u64);
        let mut guard = self.director.lock().unwrap_or_else(|e| e.into_inner());
        let (director, rng) = &mut *guard;
        let decision = director.choose(&target, &load, rng)?;
        let no_slots = || PlacementError::NoFreeGpuSlots {
            grain_type: grain_type.to_string(),
        };
        let device = decision.device.ok_or_else(no_slots)?;
        self.rings
            .iter()
            .position(|r| r.device == device)
            .ok_or_else(no_slots)
    }

    /// The usable ring with the least expected wait for one more message (stateless workers).
    pub(crate) fn least_loaded(&self) -> Option<usize> {
        (0..self.rings.len())
            .filter(|&i| self.rings[i].is_usable())
            .min_by(|&a, &b| {
                let wait = |i: usize| self.rings[i].expected_wait_s();
                wait(a).total_cmp(&wait(b))
            })
    }

    /// Every ring's current load, for reports.
    pub(crate) fn loads(&self) -> Vec<DeviceLoad> {
        self.rings.iter().map(|r| r.load()).collect()
    }
}

#[cfg(test)]
mod tests {
    use silica_gpu::samples::{Empty, VectorAdd};

    use super::*;

    // Pins that a deactivation the ring refuses (the slot already given back) leaves the count
    // of slots in use alone, so placement's free slots do not drift.
    #[tokio::test]
    async fn a_refused_deactivation_leaves_the_slot_count() {
        let config = GpuConfig {
            slots_per_device: 4,
            ..GpuConfig::default()
        };
        let choice = BackendChoice::Exact {
            kind: BackendKind::Cpu,
            device: 0,
        };
        let settings = Arc::new(RingSettings {
            clock: Arc::new(silica_clocks::HybridClock::new(
                silica_clocks::NodeId(1),
                Default::default(),
            )),
            max_result_bytes: 1 << 20,
            reply_spin: std::time::Duration::ZERO,
        });
        let ring = DeviceRing::<VectorAdd>::start(DeviceId(0), choice, &config, settings).unwrap();
        let kept = ring.activate(&Empty::default()).unwrap();
        let slot = ring.activate(&Empty::default()).unwrap();
        assert!(ring.deactivate(slot).await.is_ok());
        assert!(matches!(
            ring.deactivate(slot).await,
            Err(silica_gpu::RingError::SlotNotActive(_))
        ));
        assert_eq!(ring.active(), 1, "only `kept` is in use");
        assert!(ring.deactivate(kept).await.is_ok());
        ring.ring.shutdown();
    }
}
