//! What a silo reports about its GPU variants: [`GpuTypeStatus`] per variant, one
//! [`GpuDeviceStatus`] per device ring.

use silica_gpu::BackendKind;
use silica_grains::GrainType;
use silica_placement::{DeviceId, DeviceLoad};

/// One GPU variant on this silo.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GpuTypeStatus {
    /// The grain type.
    pub grain_type: GrainType,
    /// The rings serving it, one per device.
    pub devices: Vec<GpuDeviceStatus>,
    /// Why devices have no ring (no driver, compile error...), or why there are no devices.
    pub problems: Vec<String>,
    /// Activations hosted on devices now (stateless worker slots not counted).
    pub activations: usize,
}

impl GpuTypeStatus {
    pub(crate) fn not_started(grain_type: GrainType) -> Self {
        Self {
            grain_type,
            devices: Vec::new(),
            problems: vec!["the silo has not started".into()],
            activations: 0,
        }
    }

    /// Whether new activations go to a device (else the CPU implementation serves them).
    pub fn on_device(&self) -> bool {
        self.devices.iter().any(|d| d.usable)
    }

    /// A one-line description of what serves this grain type.
    pub fn served_by(&self) -> String {
        let usable: Vec<&str> = self
            .devices
            .iter()
            .filter(|d| d.usable)
            .map(|d| d.description.as_str())
            .collect();
        if usable.is_empty() {
            let why = self.problems.join("; ");
            format!("the CPU implementation ({why})")
        } else {
            usable.join(", ")
        }
    }
}

/// One ring of a GPU variant.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GpuDeviceStatus {
    /// The device, as this silo numbers them.
    pub device: DeviceId,
    /// The backend.
    pub backend: BackendKind,
    /// Backend and device name.
    pub description: String,
    /// Whether it takes new work (false after a fault that disabled the device).
    pub usable: bool,
    /// State slots in use (activations and stateless worker slots).
    pub activations: u64,
    /// Messages the ring has completed since it started.
    pub messages: u64,
    /// Its load as placement sees it (the same data a silo's load report carries).
    pub load: DeviceLoad,
    /// The ring's diagnostic counters (`silica_gpu::Ring::backend_stats`: backend and staged
    /// submission), for benchmarks; names and meaning may change.
    #[doc(hidden)]
    pub ring_stats: Vec<(&'static str, u64)>,
}
