//! What is being placed, and where it went.

use serde::{Deserialize, Serialize};
use silica_grains::placement::SiloAddress;

use crate::load::DeviceId;

/// One activation to place: the grain's type and identity, who asks, and what a GPU variant needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementTarget {
    /// The grain type name; a silo is compatible when its report lists it (or lists no types).
    pub grain_type: String,
    /// A stable hash of the grain id, given by the caller. Only the hash-based director reads it,
    /// so it must be the same on every silo and across restarts (not `std`'s `RandomState`).
    pub grain_hash: u64,
    /// The silo that received the first call; "local" for prefer-local and the locality margin.
    pub requesting_silo: SiloAddress,
    /// Present when the type has a GPU variant: the activation then wants a device as well.
    pub gpu: Option<GpuRequirements>,
}

impl PlacementTarget {
    /// A target for a CPU-only grain type.
    pub fn new(
        grain_type: impl Into<String>,
        grain_hash: u64,
        requesting_silo: SiloAddress,
    ) -> Self {
        Self {
            grain_type: grain_type.into(),
            grain_hash,
            requesting_silo,
            gpu: None,
        }
    }

    /// The same target for a type with a GPU variant whose state needs `state_bytes` on a device.
    pub fn with_gpu(mut self, state_bytes: u64) -> Self {
        self.gpu = Some(GpuRequirements { state_bytes });
        self
    }
}

/// What one GPU activation takes from a device: a state slot and this much memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuRequirements {
    /// Device memory one activation's state occupies, in bytes.
    pub state_bytes: u64,
}

/// Where an activation goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlacementDecision {
    /// The silo that will host the activation.
    pub silo: SiloAddress,
    /// The device for a GPU variant; `None` means the CPU implementation serves (the type has no
    /// GPU variant, or no compatible silo has a device).
    pub device: Option<DeviceId>,
}
