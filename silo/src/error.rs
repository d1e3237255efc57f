//! Errors of starting and configuring a silo (call failures are `CallError`).

/// Why a silo could not be built or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SiloError {
    /// Two registrations used the same grain type name.
    #[error("grain type {0} is registered twice")]
    DuplicateGrainType(String),
    /// `start` was called outside a Tokio runtime.
    #[error("a silo must start inside a Tokio runtime")]
    NoRuntime,
    /// An endpoint of the silo's network could not be bound.
    #[error("cannot serve the silo's network: {0}")]
    Listen(#[source] std::io::Error),
    /// A cluster member needs a silo link endpoint (`SiloBuilder::listen`).
    #[error("a clustered silo needs a silo link endpoint (SiloBuilder::listen)")]
    ClusterWithoutListen,
    /// The silo's cluster membership failed or ended (why, in words).
    #[error("cluster membership: {0}")]
    Cluster(String),
}
