//! The one trait every backend implements, and how a ring picks its backend.

use crate::error::RingError;
use crate::kernel::Kernel;
use crate::ring::{BackendChoice, BackendKind, RingShared};
use crate::slots::SlotId;
use std::sync::Arc;
use std::time::Duration;

/// A backend serving one ring: it consumes the ring's submitted entries on its own thread(s)
/// and completes them; the ring ([`crate::Ring`]) owns submission, slots and replies.
pub trait RingBackend<K: Kernel>: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// Writes a slot's state (activation). The slot has no message in flight.
    fn write_state(&self, slot: SlotId, state: &K::State) -> Result<(), RingError>;
    /// Reads a slot's state (deactivation). The slot has no message in flight.
    fn read_state(&self, slot: SlotId) -> Result<K::State, RingError>;
    /// Age of the device's last heartbeat, where the backend has one.
    fn heartbeat_age(&self) -> Option<Duration> {
        None
    }
    /// Stops consuming; entries not yet taken stay for the ring to fail.
    fn shutdown(&self);
    /// Diagnostic counters (name, value), for benchmarks; none by default.
    fn stats(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// Test hook; returns whether the injection is supported.
    fn inject_fault(&self, fault: FaultInjection) -> bool {
        let _ = fault;
        false
    }
}

/// Faults a test can inject.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultInjection {
    /// The persistent kernel returns as if it had crashed cleanly.
    KernelExit,
    /// A batch backend (CPU reference, CUDA launch-per-batch, wgpu) fails its next pass as if
    /// a device call had: the ring records a `BackendError` fault (calls in flight fail, every
    /// active slot is lost) and keeps serving. The only way to lose slots without a GPU.
    DeviceError,
}

pub(crate) fn start<K: Kernel>(
    shared: Arc<RingShared<K>>,
    choice: BackendChoice,
) -> Result<Box<dyn RingBackend<K>>, RingError> {
    match choice {
        BackendChoice::Exact {
            kind: BackendKind::Cpu,
            ..
        } => Ok(crate::cpu::start(shared)),
        BackendChoice::Exact {
            kind: BackendKind::Wgpu,
            device,
        } => start_wgpu(shared, device),
        BackendChoice::Exact {
            kind: BackendKind::CudaPersistent,
            device,
        } => start_cuda(shared, device, Some(true)),
        BackendChoice::Exact {
            kind: BackendKind::CudaBatch,
            device,
        } => start_cuda(shared, device, Some(false)),
        BackendChoice::CudaAuto { device } => start_cuda(shared, device, None),
    }
}

#[cfg(feature = "wgpu")]
fn start_wgpu<K: Kernel>(
    shared: Arc<RingShared<K>>,
    device: usize,
) -> Result<Box<dyn RingBackend<K>>, RingError> {
    crate::wgpu_backend::start(shared, device)
}

#[cfg(not(feature = "wgpu"))]
fn start_wgpu<K: Kernel>(
    _: Arc<RingShared<K>>,
    _: usize,
) -> Result<Box<dyn RingBackend<K>>, RingError> {
    Err(crate::error::DeviceError::NotCompiled(BackendKind::Wgpu).into())
}

#[cfg(feature = "cuda")]
fn start_cuda<K: Kernel>(
    shared: Arc<RingShared<K>>,
    device: usize,
    persistent: Option<bool>,
) -> Result<Box<dyn RingBackend<K>>, RingError> {
    crate::cuda::start(shared, device, persistent)
}

#[cfg(not(feature = "cuda"))]
fn start_cuda<K: Kernel>(
    _: Arc<RingShared<K>>,
    _: usize,
    persistent: Option<bool>,
) -> Result<Box<dyn RingBackend<K>>, RingError> {
    let kind = if persistent == Some(false) {
        BackendKind::CudaBatch
    } else {
        BackendKind::CudaPersistent
    };
    Err(crate::error::DeviceError::NotCompiled(kind).into())
}
