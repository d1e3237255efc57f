//! Links: long-lived gRPC bidirectional streams that carry batches of calls between silos, and
//! from external clients to gateways.
//!
//! Both ends are here because both the silo and the external client need them (the silo
//! depends on this crate, never the other way round):
//! - the caller side, [`Link`]: connects, says hello, sends requests through a bounded outbox
//!   drained into batch frames, matches responses to calls by call id, fails every waiting call
//!   with `SiloUnavailable` when the connection dies, and reconnects with backoff;
//! - the acceptor side, [`LinkAcceptor`]: checks the hello (cluster id, protocol version, kind of
//!   peer), hands each request to a [`LinkHandler`], and batches the responses back. A bad frame
//!   or handshake ends that connection with a typed status; every other connection goes on.
//!
//! # Layout
//! - `caller` — [`Link`], [`LinkStatus`], the reconnect loop.
//! - `connection` — one live caller-side connection: outbox, response reader.
//! - `acceptor` — [`LinkAcceptor`], [`LinkHandler`], [`serve`].
//! - `outbox` — the bounded queue and the batching frame stream.
//! - `pending` — waiting calls by call id.
//! - `probe` — [`Prober`], unary liveness probes (membership's direct probes).
//! - [`raw`] — a byte-level codec to send arbitrary frames (tests, tools).

mod acceptor;
mod caller;
mod connection;
mod outbox;
mod pending;
mod probe;
pub mod raw;

use std::net::SocketAddr;
use std::time::Duration;

use silica_grains::placement::SiloAddress;

pub use crate::wire::LinkError;
pub use acceptor::{Accept, AcceptorOptions, LinkAcceptor, LinkHandler, serve};
pub use caller::{Link, LinkStatus};
pub use outbox::OutboxStream;
pub use probe::Prober;

use crate::wire::proto::{self, hello::Sender};
use crate::wire::{DEFAULT_MAX_FRAME_BYTES, WireError};

/// How a link behaves; both ends of a link should agree on `cluster_id` and
/// `max_frame_bytes`.
#[derive(Clone, Debug)]
pub struct LinkOptions {
    /// The cluster this process belongs to; a peer of another cluster is refused.
    pub cluster_id: String,
    /// Largest frame sent or accepted. A request or response that cannot fit fails with
    /// `RejectCode::TooLarge`; a peer's larger frame ends its connection.
    pub max_frame_bytes: usize,
    /// Requests (caller side) or responses (acceptor side) queued before senders wait.
    pub queue_capacity: usize,
    /// How long connecting plus the handshake may take.
    pub connect_timeout: Duration,
    /// First wait before reconnecting; doubles per failed attempt.
    pub backoff_min: Duration,
    /// Longest wait between reconnection attempts.
    pub backoff_max: Duration,
    /// The caller pings the peer (HTTP/2 PING) this often and takes it as gone when a ping
    /// is not answered within twice this: a peer that hangs (frozen process, lost network)
    /// ends the link, so its waiting calls fail with `SiloUnavailable` and callers move on,
    /// instead of each waiting for its own timeout.
    pub keep_alive_interval: Duration,
}

impl Default for LinkOptions {
    fn default() -> Self {
        Self {
            cluster_id: "silica".into(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            queue_capacity: 4096,
            connect_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            keep_alive_interval: Duration::from_secs(1),
        }
    }
}

/// Who is at the other end of a link.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A silo of the cluster.
    Silo(SiloAddress),
    /// A process outside the cluster calling through a gateway; the name is for logs.
    Client(String),
}

impl Peer {
    /// Whether the peer is an external client.
    pub fn is_client(&self) -> bool {
        matches!(self, Peer::Client(_))
    }

    pub(crate) fn to_wire(&self) -> Sender {
        match self {
            Peer::Silo(silo) => Sender::Silo(silo_to_wire(silo)),
            Peer::Client(name) => Sender::Client(proto::ExternalClient { name: name.clone() }),
        }
    }

    pub(crate) fn from_wire(sender: &Sender) -> Result<Peer, WireError> {
        Ok(match sender {
            Sender::Silo(silo) => Peer::Silo(silo_from_wire(silo)?),
            Sender::Client(client) => Peer::Client(client.name.clone()),
        })
    }
}

pub(crate) fn silo_to_wire(silo: &SiloAddress) -> proto::SiloAddress {
    proto::SiloAddress {
        endpoint: silo.endpoint.to_string(),
        generation: silo.generation,
    }
}

pub(crate) fn silo_from_wire(silo: &proto::SiloAddress) -> Result<SiloAddress, WireError> {
    let endpoint: SocketAddr = silo.endpoint.parse().map_err(|e| WireError::InvalidField {
        field: "silo.endpoint",
        reason: format!("{:?}: {e}", silo.endpoint),
    })?;
    Ok(SiloAddress::new(endpoint, silo.generation))
}
