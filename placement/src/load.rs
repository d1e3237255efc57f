//! Load reports: what each silo says about itself, and the service-rate estimate they carry.
//!
//! Reports are plain serde data so the cluster can carry them between silos; nothing here reads a
//! clock. Times are milliseconds on the cluster's physical clock, passed in by the caller.

use serde::{Deserialize, Serialize};
use silica_grains::placement::SiloAddress;

/// One device on one silo (the index the silo's GPU backend gives it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceId(pub u32);

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dev{}", self.0)
    }
}

/// The load of one device as its silo last measured it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceLoad {
    /// Which device on the reporting silo.
    pub device: DeviceId,
    /// Messages queued or in service on the device's ring kernels.
    pub queue_depth: u64,
    /// Recent service rate in messages per second while busy (an EWMA, see [`ServiceRateEwma`]);
    /// 0 when the device has not served anything yet.
    pub service_rate_per_s: f64,
    /// Free activation slots in the device's state tables.
    pub free_slots: u64,
    /// Free device memory in bytes.
    pub free_memory_bytes: u64,
}

impl DeviceLoad {
    /// An idle device with the given capacity and a service-rate estimate.
    pub fn idle(
        device: DeviceId,
        service_rate_per_s: f64,
        free_slots: u64,
        free_memory_bytes: u64,
    ) -> Self {
        Self {
            device,
            queue_depth: 0,
            service_rate_per_s,
            free_slots,
            free_memory_bytes,
        }
    }
}

/// What one silo says about its load at one instant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SiloLoadReport {
    /// The reporting silo.
    pub silo: SiloAddress,
    /// When the silo measured this, in milliseconds on the cluster clock.
    pub at_ms: u64,
    /// Grain activations (CPU and GPU) the silo hosts.
    pub activation_count: u64,
    /// The silo is shedding load (CPU or memory); directors avoid it unless every silo is.
    pub overloaded: bool,
    /// The grain types the silo can host; `None` means every type.
    pub grain_types: Option<Vec<String>>,
    /// The silo's devices; empty on a silo without a GPU.
    pub devices: Vec<DeviceLoad>,
}

impl SiloLoadReport {
    /// A report of an idle silo that hosts every type and has no device.
    pub fn new(silo: SiloAddress, at_ms: u64) -> Self {
        Self {
            silo,
            at_ms,
            activation_count: 0,
            overloaded: false,
            grain_types: None,
            devices: Vec::new(),
        }
    }

    /// Whether this silo can host `grain_type`.
    pub fn hosts(&self, grain_type: &str) -> bool {
        self.grain_types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == grain_type))
    }

    /// The device entry for `device`, if the silo has it.
    pub fn device_mut(&mut self, device: DeviceId) -> Option<&mut DeviceLoad> {
        self.devices.iter_mut().find(|d| d.device == device)
    }
}

/// An exponentially weighted estimate of a device's service rate, measured only while it is busy.
///
/// An idle device serves nothing; counting idle time would make it look slow and starve it of
/// work, so callers report `(served, busy_time)` and idle intervals leave the estimate unchanged.
/// The weight of a sample grows with the busy time it covers: `alpha = 1 - exp(-busy / tau)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ServiceRateEwma {
    tau_s: f64,
    rate_per_s: f64,
}

impl ServiceRateEwma {
    /// An estimator with time constant `tau_s` seconds, starting at `initial_rate_per_s`
    /// (0 for "unknown"; the first busy interval then replaces it).
    pub fn new(tau_s: f64, initial_rate_per_s: f64) -> Self {
        Self {
            tau_s,
            rate_per_s: initial_rate_per_s,
        }
    }

    /// Folds in one busy interval: `served` messages in `busy_s` seconds of busy time.
    pub fn observe(&mut self, served: u64, busy_s: f64) {
        if busy_s <= 0.0 {
            return;
        }
        let sample = served as f64 / busy_s;
        if self.rate_per_s <= 0.0 {
            self.rate_per_s = sample;
            return;
        }
        let alpha = 1.0 - (-busy_s / self.tau_s).exp();
        self.rate_per_s += alpha * (sample - self.rate_per_s);
    }

    /// The current estimate in messages per second (0 when unknown).
    pub fn rate_per_s(&self) -> f64 {
        self.rate_per_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_rate_ignores_idle_time_and_tracks_busy_rate() {
        // Pins the EWMA: idle intervals leave it unchanged; busy intervals pull it to the truth.
        let mut ewma = ServiceRateEwma::new(0.05, 0.0);
        ewma.observe(0, 0.0);
        assert_eq!(ewma.rate_per_s(), 0.0);
        ewma.observe(10, 0.001);
        assert_eq!(ewma.rate_per_s(), 10_000.0);
        for _ in 0..1_000 {
            ewma.observe(2, 0.001);
        }
        assert!((ewma.rate_per_s() - 2_000.0).abs() < 1.0);
    }
}
