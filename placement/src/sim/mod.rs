//! An in-memory multi-silo harness: silos with simulated devices, each silo deciding from its
//! own [`ClusterLoad`] view, for tests and the placement experiment.
//!
//! Time is discrete and advanced by the caller ([`SimCluster::advance`]). Each device serves
//! its queue at a fixed true rate that the directors never see: they see the busy-time EWMA
//! ([`ServiceRateEwma`]) the device's silo reports. A silo's view of its own devices is exact at
//! every decision (it reads them locally); its view of other silos comes from reports broadcast
//! every `report_interval_ms`, so it is up to that old.

pub mod experiment;

use rand::Rng;
use silica_grains::placement::SiloAddress;

use crate::cluster_load::ClusterLoad;
use crate::director::PlacementDirector;
use crate::error::PlacementError;
use crate::load::{DeviceId, DeviceLoad, ServiceRateEwma, SiloLoadReport};
use crate::target::{PlacementDecision, PlacementTarget};

/// What one simulated silo has.
#[derive(Clone, Debug, PartialEq)]
pub struct SiloSpec {
    /// True service rate of each device, in messages per millisecond.
    pub device_rates_per_ms: Vec<f64>,
    /// State slots per device.
    pub slots_per_device: u64,
    /// Device memory per device, in bytes.
    pub memory_per_device: u64,
}

impl SiloSpec {
    /// A silo with devices of the given rates and ample slots and memory.
    pub fn with_rates(device_rates_per_ms: &[f64]) -> Self {
        Self {
            device_rates_per_ms: device_rates_per_ms.to_vec(),
            slots_per_device: 1 << 20,
            memory_per_device: 1 << 40,
        }
    }
}

/// One simulated device: a queue of unit messages, each holding a state slot until served.
#[derive(Clone, Debug)]
struct SimDevice {
    id: DeviceId,
    rate_per_ms: f64,
    queue: u64,
    credit: f64,
    slots: u64,
    memory_bytes: u64,
    used_memory_bytes: u64,
    ewma: ServiceRateEwma,
}

impl SimDevice {
    fn serve(&mut self, dt_ms: u64, state_bytes: u64) {
        let capacity = self.rate_per_ms * dt_ms as f64 + self.credit;
        let served = (capacity.floor() as u64).min(self.queue);
        self.queue -= served;
        self.used_memory_bytes = self.used_memory_bytes.saturating_sub(served * state_bytes);
        let busy_ms = if self.queue == 0 {
            // An idle device banks no capacity.
            self.credit = 0.0;
            served as f64 / self.rate_per_ms
        } else {
            self.credit = capacity - served as f64;
            dt_ms as f64
        };
        self.ewma.observe(served, busy_ms / 1_000.0);
    }

    fn load(&self) -> DeviceLoad {
        DeviceLoad {
            device: self.id,
            queue_depth: self.queue,
            service_rate_per_s: self.ewma.rate_per_s(),
            free_slots: self.slots - self.queue.min(self.slots),
            free_memory_bytes: self.memory_bytes - self.used_memory_bytes.min(self.memory_bytes),
        }
    }
}

#[derive(Clone, Debug)]
struct SimSilo {
    address: SiloAddress,
    devices: Vec<SimDevice>,
    activations: u64,
    view: ClusterLoad,
}

/// Several silos with simulated devices, each with its own stale view of the others.
#[derive(Clone, Debug)]
pub struct SimCluster {
    silos: Vec<SimSilo>,
    now_ms: u64,
    report_interval_ms: u64,
    last_broadcast_ms: u64,
    state_bytes: u64,
}

impl SimCluster {
    /// Silos built from `specs`, which broadcast reports every `report_interval_ms` and drop
    /// reports older than three intervals. Device rate estimates start at `initial_rate_per_ms`
    /// (what a silo would assume before measuring). Messages hold `state_bytes` of device memory.
    pub fn new(
        specs: &[SiloSpec],
        report_interval_ms: u64,
        initial_rate_per_ms: f64,
        state_bytes: u64,
    ) -> Self {
        let silos = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| SimSilo {
                address: Self::address(i),
                devices: spec
                    .device_rates_per_ms
                    .iter()
                    .enumerate()
                    .map(|(d, &rate)| SimDevice {
                        id: DeviceId(d as u32),
                        rate_per_ms: rate,
                        queue: 0,
                        credit: 0.0,
                        slots: spec.slots_per_device,
                        memory_bytes: spec.memory_per_device,
                        used_memory_bytes: 0,
                        ewma: ServiceRateEwma::new(0.05, initial_rate_per_ms * 1_000.0),
                    })
                    .collect(),
                activations: 0,
                view: ClusterLoad::new(3 * report_interval_ms.max(1)),
            })
            .collect();
        let mut cluster = Self {
            silos,
            now_ms: 0,
            report_interval_ms,
            last_broadcast_ms: 0,
            state_bytes,
        };
        cluster.broadcast();
        cluster
    }

    /// The address of silo `i` (127.0.0.1, port 11111 + i, generation 1).
    pub fn address(i: usize) -> SiloAddress {
        SiloAddress::new(([127, 0, 0, 1], 11_111 + i as u16).into(), 1)
    }

    /// Number of silos.
    pub fn len(&self) -> usize {
        self.silos.len()
    }

    /// Whether there are no silos.
    pub fn is_empty(&self) -> bool {
        self.silos.is_empty()
    }

    /// The current time in milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// What silo `i` would report now.
    pub fn report(&self, i: usize) -> SiloLoadReport {
        let silo = &self.silos[i];
        SiloLoadReport {
            activation_count: silo.activations,
            devices: silo.devices.iter().map(SimDevice::load).collect(),
            ..SiloLoadReport::new(silo.address, self.now_ms)
        }
    }

    /// Silo `from`'s view of the cluster.
    pub fn view(&self, from: usize) -> &ClusterLoad {
        &self.silos[from].view
    }

    /// Places one message-sized activation from silo `from` with `director`, deciding from
    /// `from`'s view (its own devices read fresh), and enqueues it on the chosen device.
    pub fn place(
        &mut self,
        from: usize,
        target: &PlacementTarget,
        director: &mut dyn PlacementDirector,
        rng: &mut dyn Rng,
    ) -> Result<PlacementDecision, PlacementError> {
        let local = self.report(from);
        let now = self.now_ms;
        let view = &mut self.silos[from].view;
        view.handle_report(local, now);
        let decision = director.place(target, view, now, rng)?;
        let silo = self
            .silos
            .iter_mut()
            .find(|s| s.address == decision.silo)
            .expect("decisions name known silos");
        silo.activations += 1;
        if let Some(device) = decision
            .device
            .and_then(|d| silo.devices.iter_mut().find(|x| x.id == d))
        {
            device.queue += 1;
            device.used_memory_bytes += target.gpu.map_or(0, |g| g.state_bytes);
        }
        Ok(decision)
    }

    /// Serves `dt_ms` of work on every device, advances time, and broadcasts reports when due.
    pub fn advance(&mut self, dt_ms: u64) {
        let state_bytes = self.state_bytes;
        for device in self.silos.iter_mut().flat_map(|s| s.devices.iter_mut()) {
            device.serve(dt_ms, state_bytes);
        }
        self.now_ms += dt_ms;
        if self.now_ms - self.last_broadcast_ms >= self.report_interval_ms {
            self.broadcast();
        }
    }

    /// Every silo's report, delivered to every silo now.
    pub fn broadcast(&mut self) {
        let reports: Vec<SiloLoadReport> = (0..self.silos.len()).map(|i| self.report(i)).collect();
        let now = self.now_ms;
        for silo in &mut self.silos {
            for report in &reports {
                silo.view.handle_report(report.clone(), now);
            }
        }
        self.last_broadcast_ms = now;
    }

    /// Every device's queue depth and true service rate (messages per ms), silo by silo.
    pub fn devices(&self) -> impl Iterator<Item = (u64, f64)> + '_ {
        self.silos
            .iter()
            .flat_map(|s| s.devices.iter().map(|d| (d.queue, d.rate_per_ms)))
    }
}
