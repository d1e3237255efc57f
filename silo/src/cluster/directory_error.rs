//! [`DirectoryError`]: why a directory partition refused a request.

use silica_grains::placement::SiloAddress;

use super::snapshot::TableVersion;

/// Why a [`DirectoryPartition`](super::DirectoryPartition) refused a request. Every variant is
/// a "not here, not now": nothing was changed, and [`DirectoryError::action`] says what the
/// caller does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The request was routed with an older view than the partition's: the caller refreshes its
    /// membership view and routes again (the owner may have moved).
    #[error("request view {request} is older than the partition's {partition}")]
    StaleView {
        /// The view version the request carried.
        request: TableVersion,
        /// The partition's view version.
        partition: TableVersion,
    },
    /// The request carries a newer view than the partition's: the owner must refresh its view
    /// before it may answer; the caller retries.
    #[error("partition view {partition} is older than the request's {request}")]
    PartitionBehind {
        /// The view version the request carried.
        request: TableVersion,
        /// The partition's view version.
        partition: TableVersion,
    },
    /// This silo does not own the grain in its view: the caller refreshes and re-routes.
    #[error("not the owner in {version}; the owner is {owner:?}")]
    NotOwner {
        /// The owner in the partition's view, if any silo is active.
        owner: Option<SiloAddress>,
        /// The partition's view version.
        version: TableVersion,
    },
    /// The grain's entry may still be in a hand-off from its previous owner: retry shortly.
    #[error("hand-off into view {version} still pending")]
    HandOffPending {
        /// The partition's view version.
        version: TableVersion,
    },
    /// The activation to register lives on a silo that is not active in the partition's view.
    #[error("silo {0} is not active")]
    SiloNotActive(SiloAddress),
    /// This silo stopped serving (declared dead or superseded).
    #[error("silo stopped serving")]
    NotServing,
}

/// What a caller does after a [`DirectoryError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DirectoryRetry {
    /// Refresh the membership view, then route again.
    RefreshView,
    /// Route again to the same owner after a short wait.
    Retry,
    /// Give up on this request.
    Fail,
}

impl DirectoryError {
    /// What the caller does next.
    pub fn action(&self) -> DirectoryRetry {
        match self {
            DirectoryError::StaleView { .. }
            | DirectoryError::NotOwner { .. }
            | DirectoryError::NotServing => DirectoryRetry::RefreshView,
            DirectoryError::PartitionBehind { .. } | DirectoryError::HandOffPending { .. } => {
                DirectoryRetry::Retry
            }
            DirectoryError::SiloNotActive(_) => DirectoryRetry::Fail,
        }
    }
}
