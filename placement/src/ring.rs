//! [`SiloRing`]: the consistent-hash ring over silos that hash-based placement and the grain
//! directory both use, so every silo, on every platform, puts every silo and every key at the
//! same point.

use std::hash::{Hash, Hasher};

use hashring::HashRing;
use silica_grains::placement::SiloAddress;

/// A consistent-hash ring (`hashring`, SipHash with fixed keys) holding `virtual_nodes` points
/// per silo. A silo joining or leaving moves only the keys whose segment it takes or gives up
/// (about `1/n` of them).
#[derive(Clone, Debug)]
pub struct SiloRing {
    silos: Vec<SiloAddress>,
    ring: HashRing<VirtualNode>,
}

impl SiloRing {
    /// The ring of `silos` with `virtual_nodes` points each (at least 1).
    pub fn new(silos: &[SiloAddress], virtual_nodes: u32) -> Self {
        let mut ring = HashRing::new();
        ring.batch_add(
            silos
                .iter()
                .flat_map(|&silo| {
                    (0..virtual_nodes.max(1)).map(move |replica| VirtualNode { silo, replica })
                })
                .collect(),
        );
        Self {
            silos: silos.to_vec(),
            ring,
        }
    }

    /// The silos on the ring, in the order given.
    pub fn silos(&self) -> &[SiloAddress] {
        &self.silos
    }

    /// The silo owning `key` (a stable hash, e.g. `GrainId::stable_hash`); `None` if the ring
    /// is empty.
    pub fn owner(&self, key: u64) -> Option<SiloAddress> {
        self.ring.get(&RingKey(key)).map(|node| node.silo)
    }
}

/// One point of a silo on the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct VirtualNode {
    silo: SiloAddress,
    replica: u32,
}

// Hashed from explicit little-endian bytes, not derived: derived `Hash` writes native-endian,
// platform-sized integers, and every silo must put a node at the same point.
impl Hash for VirtualNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self.silo.endpoint.ip() {
            std::net::IpAddr::V4(ip) => {
                state.write(&[4]);
                state.write(&ip.octets());
            }
            std::net::IpAddr::V6(ip) => {
                state.write(&[6]);
                state.write(&ip.octets());
            }
        }
        state.write(&self.silo.endpoint.port().to_le_bytes());
        state.write(&self.silo.generation.to_le_bytes());
        state.write(&self.replica.to_le_bytes());
    }
}

/// A key on the ring, hashed from its little-endian bytes for the same reason.
struct RingKey(u64);

impl Hash for RingKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.0.to_le_bytes());
    }
}
