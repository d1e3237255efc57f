//! Placement *strategies*: plain data saying where a grain type would like its activations.
//!
//! The behaviour that turns a strategy into a decision lives in `silica-placement` (the
//! `*Director` types), following Orleans' split between `HashBasedPlacement` (data, here) and
//! `HashBasedPlacementDirector` (behaviour, there).

use serde::{Deserialize, Serialize};

/// Where a grain type's activations are placed when they are first called.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PlacementStrategy {
    /// Any compatible silo, chosen uniformly at random (the Orleans default).
    #[default]
    Random,
    /// The silo that received the call, when it is compatible; otherwise random.
    PreferLocal,
    /// A silo chosen by hashing the grain id onto the live silos.
    HashBased,
    /// The less loaded of two randomly sampled silos, by activation count.
    ActivationCount,
    /// GPU variants: the (silo, device) with the least expected wait (queue depth over service
    /// rate), with free slots and device memory as constraints.
    QueueDepth,
}

/// The address of one silo incarnation: where it listens, and which start of that process it is.
///
/// Two silos at the same address with different generations are different silos; a restarted
/// process never inherits the activations of its previous incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SiloAddress {
    /// The socket the silo listens on for silo links and gateway clients.
    pub endpoint: std::net::SocketAddr,
    /// Distinguishes restarts at the same endpoint; larger is newer.
    pub generation: u64,
}

impl SiloAddress {
    /// Creates the address of one silo incarnation.
    pub fn new(endpoint: std::net::SocketAddr, generation: u64) -> Self {
        Self {
            endpoint,
            generation,
        }
    }
}

impl std::fmt::Display for SiloAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.endpoint, self.generation)
    }
}
