//! The one failure domain of placement: no target could be found.

/// Why a director could not place an activation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    /// No live, fresh load report names a silo that hosts this grain type.
    #[error("no live silo hosts grain type `{grain_type}`")]
    NoCompatibleSilo {
        /// The grain type that was being placed.
        grain_type: String,
    },
    /// Compatible silos have devices, but every device's state slot table is full.
    #[error("no GPU device has a free state slot for grain type `{grain_type}`")]
    NoFreeGpuSlots {
        /// The grain type that was being placed.
        grain_type: String,
    },
    /// Devices have free slots, but none has enough free memory for the activation's state.
    #[error("no GPU device has {needed_bytes} bytes free for grain type `{grain_type}`")]
    InsufficientDeviceMemory {
        /// The grain type that was being placed.
        grain_type: String,
        /// The device memory one activation of this type needs.
        needed_bytes: u64,
    },
}
