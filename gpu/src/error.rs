//! Error types, one per failure domain: devices, kernel compilation, ring calls and faults.

use crate::ring::BackendKind;
use crate::slots::SlotId;
use std::sync::Arc;
use thiserror::Error;

/// Finding, opening or driving a device failed.
#[non_exhaustive]
#[derive(Debug, Error, Clone)]
pub enum DeviceError {
    /// The CUDA driver library (libcuda) cannot be loaded on this machine.
    #[error("the CUDA driver library (libcuda) is not present on this machine")]
    NoDriver,
    /// The NVRTC library cannot be loaded, so CUDA kernels cannot be compiled.
    #[error("the NVRTC library (libnvrtc) is not present on this machine")]
    NoNvrtc,
    /// A CUDA driver call returned an error.
    #[error("CUDA driver call {call} failed: {message}")]
    Driver {
        /// The driver function that failed.
        call: &'static str,
        /// The driver's description of the error.
        message: String,
    },
    /// No CUDA device has this ordinal.
    #[error("no CUDA device with ordinal {0}")]
    NoSuchDevice(usize),
    /// No wgpu adapter is available.
    #[error("no wgpu adapter is available")]
    NoAdapter,
    /// wgpu failed to create a device or resource.
    #[error("wgpu: {0}")]
    Wgpu(String),
    /// The backend was not compiled in; enable its cargo feature.
    #[error("the {0:?} backend is not compiled in (enable its cargo feature)")]
    NotCompiled(BackendKind),
    /// The device cannot run a persistent ring (e.g. no mapped host memory).
    #[error("persistent ring unusable on this device: {0}")]
    PersistentUnusable(String),
}

/// A kernel's generated source did not compile.
#[non_exhaustive]
#[derive(Debug, Error, Clone)]
pub enum CompileError {
    /// NVRTC rejected the CUDA source; line numbers in `log` refer to `numbered_source`.
    #[error(
        "NVRTC could not compile kernel {kernel}:\n{log}\n--- generated source ---\n{numbered_source}"
    )]
    Nvrtc {
        /// The kernel's name.
        kernel: String,
        /// NVRTC's log.
        log: String,
        /// The generated source, one numbered line each.
        numbered_source: String,
    },
    /// naga rejected the WGSL source; line numbers refer to `numbered_source`.
    #[error(
        "WGSL of kernel {kernel} is invalid:\n{message}\n--- generated source ---\n{numbered_source}"
    )]
    Wgsl {
        /// The kernel's name.
        kernel: String,
        /// naga's message.
        message: String,
        /// The generated source, one numbered line each.
        numbered_source: String,
    },
}

/// What went wrong in a ring fault.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The kernel's heartbeat stopped advancing.
    HeartbeatStall,
    /// The kernel hit a CUDA error (illegal address, trap, ...).
    CudaError,
    /// The kernel exited without being asked to.
    KernelExited,
    /// A batch backend's device call failed.
    BackendError,
}

/// A ring fault: every message in flight failed with it, the ring restarted, and `lost_slots`
/// lost their state (they answer [`RingError::SlotLost`] until deactivated).
#[derive(Debug, Clone)]
pub struct RingFault {
    /// What happened.
    pub kind: FaultKind,
    /// Active slots whose state was lost.
    pub lost_slots: Vec<SlotId>,
    /// The driver's or watchdog's description.
    pub detail: String,
}

/// A ring operation or call failed.
#[non_exhaustive]
#[derive(Debug, Error, Clone)]
pub enum RingError {
    /// The device could not be opened or driven.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The kernel did not compile.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// The ring was shut down before this call completed.
    #[error("the ring is shut down")]
    ShutDown,
    /// The slot is not active (never activated, or deactivated).
    #[error("slot {0:?} is not active")]
    SlotNotActive(SlotId),
    /// Every state slot of the ring is in use.
    #[error("all {0} state slots are in use")]
    SlotsExhausted(usize),
    /// The slot lost its state in a fault; deactivate and activate it again.
    #[error("slot {0:?} lost its state in a ring fault")]
    SlotLost(SlotId),
    /// The ring faulted while this call was in flight.
    #[error("ring fault ({:?}): {}", .0.kind, .0.detail)]
    Fault(Arc<RingFault>),
    /// The batch holds more messages than the ring has entries.
    #[error("batch of {0} messages exceeds the ring capacity")]
    BatchTooLarge(usize),
}
