//! [`GpuConfig`]: which devices a silo hosts GPU variants on, and how their rings are sized.

use std::time::Duration;

use silica_gpu::devices::{cuda_devices, wgpu_adapters};
use silica_gpu::{BackendChoice, BackendKind, RingConfig};

/// How a silo hosts GPU variants.
#[derive(Clone, Debug)]
pub struct GpuConfig {
    /// Which devices serve GPU variants.
    pub devices: GpuDevices,
    /// State slots (activations) each GPU variant gets on each device.
    pub slots_per_device: u32,
    /// How long a caller waiting on a GPU call spins before it sleeps on a waker (DESIGN §3
    /// rule 10: a futex wake-up costs more than the whole GPU round trip). Spinning happens
    /// when the call is awaited, never when it is issued, so concurrent calls are all sent
    /// before anyone spins.
    pub reply_spin: Duration,
    /// Settings of each ring (capacity, batch size, worker warps, stall timeout). Its
    /// `backend`, `slots` and `reply_spin` are set by the silo.
    pub ring: RingConfig,
}

impl Default for GpuConfig {
    fn default() -> Self {
        Self {
            devices: GpuDevices::Auto,
            slots_per_device: 1 << 16,
            reply_spin: Duration::from_micros(50),
            ring: RingConfig {
                // Calls in flight per ring. On the persistent ring an entry is reusable only
                // after its caller has read its reply, so a ring smaller than the calls in
                // flight makes callers queue for room: G2 on an H200 went 2.2 -> 7.7 M calls/s
                // with 4,096 -> 65,536 entries. Larger rings fill less often (a run's
                // positions wait for its first reader, in ring order): 131,072 entries with
                // 128-message batches gave 12.3-13.4 -> 13.7-14.0 on one machine, 262,144 more
                // on two (docs/BENCHMARKS.md) at 32 MiB of pinned host memory per ring;
                // 131,072 take 16 MiB.
                capacity: 1 << 17,
                ..RingConfig::default()
            },
        }
    }
}

/// Which devices serve GPU variants.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GpuDevices {
    /// Every CUDA device (persistent ring, or launch-per-batch where persistent mode is
    /// unusable); with none, every wgpu adapter (when built with `wgpu`); with none of either,
    /// no device: the CPU implementations serve.
    Auto,
    /// No device: the CPU implementations serve.
    Off,
    /// Exactly these backends, one device each (e.g. `BackendKind::Cpu` rings in tests).
    Exact(Vec<BackendChoice>),
}

impl GpuDevices {
    /// The backends to start a ring on for each GPU variant, and why there are none when the
    /// list is empty.
    pub(crate) fn resolve(&self) -> (Vec<BackendChoice>, Option<String>) {
        match self {
            GpuDevices::Off => (Vec::new(), Some("GPU devices are turned off".into())),
            GpuDevices::Exact(list) => (list.clone(), None),
            GpuDevices::Auto => {
                let cuda = match cuda_devices() {
                    Ok(devices) if !devices.is_empty() => {
                        let choices = devices
                            .iter()
                            .map(|d| BackendChoice::CudaAuto { device: d.ordinal })
                            .collect();
                        return (choices, None);
                    }
                    Ok(_) => "no CUDA device".to_string(),
                    Err(e) => e.to_string(),
                };
                let adapters = wgpu_adapters();
                if adapters.is_empty() {
                    let why = format!("{cuda}; no wgpu adapter (or wgpu not built in)");
                    return (Vec::new(), Some(why));
                }
                let choices = adapters
                    .iter()
                    .map(|a| BackendChoice::Exact {
                        kind: BackendKind::Wgpu,
                        device: a.index,
                    })
                    .collect();
                (choices, None)
            }
        }
    }
}

/// A readable name for a backend on a device.
pub(crate) fn describe(kind: BackendKind, device: usize) -> String {
    match kind {
        BackendKind::CudaPersistent | BackendKind::CudaBatch => {
            let name = cuda_devices()
                .ok()
                .and_then(|ds| ds.into_iter().find(|d| d.ordinal == device))
                .map_or_else(|| format!("CUDA device {device}"), |d| d.name);
            let mode = if kind == BackendKind::CudaPersistent {
                "persistent ring"
            } else {
                "launch per batch"
            };
            format!("CUDA {mode} on {name}")
        }
        BackendKind::Wgpu => {
            let name = wgpu_adapters()
                .into_iter()
                .find(|a| a.index == device)
                .map_or_else(|| format!("adapter {device}"), |a| a.name);
            format!("wgpu on {name}")
        }
        BackendKind::Cpu => "CPU reference ring".to_string(),
    }
}
