//! The silo's network: its silo link endpoint, its gateway, and its links to other silos.
//!
//! The link machinery itself (framing, batching, backpressure, reconnect, handshake checks) is
//! `silica_client::link`, shared with the external client; this module plugs it into the silo.
//! Requests that arrive, from a silo or through the gateway, go through `SiloInner::receive`
//! (HLC merge, then the ordinary call path); an external client's envelope first has its call
//! chain reset, since a caller outside the cluster cannot be inside a grain turn. Requests that
//! leave go to a given remote [`SiloAddress`] through [`SiloNetwork::send`], stamped with a tick
//! of the silo clock; which silo hosts a grain is the directory's business, not this module's.
//!
//! # Layout
//! - `mod.rs` — [`NetworkOptions`], [`SiloNetwork`]: start, send, stop.
//! - `handler` — the `LinkHandler` that delivers arriving requests to the silo.
//! - `remote` — the invoker behind [`SiloNetwork::remote_factory`].

mod handler;
mod remote;

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use silica_client::link::{
    Accept, AcceptorOptions, Link, LinkAcceptor, LinkError, LinkOptions, LinkStatus, Peer,
};
use silica_client::{Envelope, PendingCall};
use silica_clocks::{HybridClock, wall_clock_ms};
use silica_grains::GrainFactory;
use silica_grains::placement::SiloAddress;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::runtime::SiloInner;
use handler::SiloHandler;

/// Where a silo listens and how its links behave. Nothing is served unless an address is set.
#[derive(Clone, Debug, Default)]
pub struct NetworkOptions {
    /// The silo link endpoint (port 0 picks a free one); the silo's address is this endpoint
    /// plus its generation.
    pub listen: Option<SocketAddr>,
    /// The gateway endpoint for external clients.
    pub gateway: Option<SocketAddr>,
    /// Cluster id, frame size, queues, connect timeout and backoff, for both.
    pub link: LinkOptions,
    /// This incarnation's generation; by default the start time in milliseconds.
    pub generation: Option<u64>,
}

impl NetworkOptions {
    /// Whether anything is to be served.
    pub(crate) fn is_enabled(&self) -> bool {
        self.listen.is_some() || self.gateway.is_some()
    }
}

/// A running silo's network: what it serves and its links to other silos.
pub struct SiloNetwork {
    address: Option<SiloAddress>,
    gateway: Option<SocketAddr>,
    options: LinkOptions,
    clock: Arc<HybridClock>,
    links: DashMap<SiloAddress, Arc<Link>>,
    acceptors: Vec<Arc<LinkAcceptor<SiloHandler>>>,
    default_timeout: Duration,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl SiloNetwork {
    /// Binds the configured endpoints and starts serving them (on the current runtime).
    pub(crate) fn start(
        silo: &Arc<SiloInner>,
        options: NetworkOptions,
    ) -> std::io::Result<Arc<SiloNetwork>> {
        let listen = options.listen.map(bind).transpose()?;
        let gateway = options.gateway.map(bind).transpose()?;
        let generation = options.generation.unwrap_or_else(wall_clock_ms);
        let address = match &listen {
            Some(listener) => Some(SiloAddress::new(listener.local_addr()?, generation)),
            None => None,
        };
        let gateway_address = gateway.as_ref().map(|l| l.local_addr()).transpose()?;
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let handler = Arc::new(SiloHandler::new(Arc::downgrade(silo)));
        let mut acceptors = Vec::new();
        for (listener, accept) in [(listen, Accept::Silos), (gateway, Accept::Clients)] {
            let Some(listener) = listener else { continue };
            let acceptor = Arc::new(LinkAcceptor::new(
                handler.clone(),
                AcceptorOptions {
                    link: options.link.clone(),
                    accept,
                    silo: address,
                },
                silo.clock.clone(),
                shutdown.child_token(),
            ));
            acceptors.push(acceptor.clone());
            tracker.spawn(async move {
                if let Err(error) = silica_client::link::serve(listener, acceptor).await {
                    tracing::error!(%error, "link endpoint stopped");
                }
            });
        }
        Ok(Arc::new(SiloNetwork {
            address,
            gateway: gateway_address,
            options: options.link,
            clock: silo.clock.clone(),
            links: DashMap::new(),
            acceptors,
            default_timeout: silo.config.default_call_timeout,
            shutdown,
            tracker,
        }))
    }

    /// This silo's address (its link endpoint and generation), if it serves silo links.
    pub fn address(&self) -> Option<SiloAddress> {
        self.address
    }

    /// The link options (cluster id, frame size, timeouts) of this silo's links.
    pub(crate) fn link_options(&self) -> &LinkOptions {
        &self.options
    }

    /// The gateway's endpoint, if the silo serves one.
    pub fn gateway_address(&self) -> Option<SocketAddr> {
        self.gateway
    }

    /// Sends `envelope` to silo `to` over the link to it (made on first use) and returns the
    /// wait for the answer. The envelope is stamped with a tick of this silo's clock as it
    /// leaves; the response's timestamp is merged. A silo that cannot be reached, or whose link
    /// dies while the call waits, answers `SiloUnavailable`.
    pub fn send(&self, to: SiloAddress, envelope: Envelope) -> PendingCall {
        self.link(to).call(envelope)
    }

    /// A factory whose references call grains on silo `to`, over the link (until the directory
    /// routes calls, this is how a grain on another silo is reached). Calls from inside a turn
    /// carry its call chain, so cycles across silos are detected.
    pub fn remote_factory(self: &Arc<Self>, to: SiloAddress) -> GrainFactory {
        GrainFactory::new(Arc::new(remote::RemoteInvoker::new(
            Arc::downgrade(self),
            to,
            self.default_timeout,
        )))
    }

    /// Where the link to `to` is, if one was made.
    pub fn link_status(&self, to: SiloAddress) -> Option<LinkStatus> {
        self.links.get(&to).map(|link| link.status())
    }

    /// Closes and forgets the link to `to` (membership declared it dead): its waiting calls
    /// fail with `SiloUnavailable`, and it is not retried any more. A later `send` links anew.
    pub fn close_link(&self, to: SiloAddress) {
        if let Some((_, link)) = self.links.remove(&to) {
            link.close();
        }
    }

    /// Closes and forgets the link to `to` once no call waits on it, at the latest after
    /// `drain`: for a silo that left gracefully, which answers what was sent to it before it
    /// stops. Without this its link would stay, reconnecting every few seconds, forever.
    pub fn close_link_when_drained(self: &Arc<Self>, to: SiloAddress, drain: Duration) {
        let Some(link) = self.links.get(&to).map(|link| link.clone()) else {
            return;
        };
        let network = Arc::downgrade(self);
        let stopping = self.shutdown.clone();
        self.tracker.spawn(async move {
            let started = tokio::time::Instant::now();
            while link.waiting_calls() > 0 && started.elapsed() < drain {
                tokio::select! {
                    _ = stopping.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
            if let Some(network) = network.upgrade() {
                // Only this link: a later `send` may have linked anew meanwhile.
                network
                    .links
                    .remove_if(&to, |_, current| Arc::ptr_eq(current, &link));
            }
            link.close();
        });
    }

    /// The most recent errors that ended or refused connections to this silo's endpoints.
    pub fn recent_link_errors(&self) -> Vec<LinkError> {
        self.acceptors
            .iter()
            .flat_map(|acceptor| acceptor.recent_errors())
            .collect()
    }

    fn link(&self, to: SiloAddress) -> Arc<Link> {
        if let Some(link) = self.links.get(&to) {
            return link.clone();
        }
        self.links
            .entry(to)
            .or_insert_with(|| {
                let me = match self.address {
                    Some(address) => Peer::Silo(address),
                    // A silo that serves no link endpoint still calls out as a silo; the peer
                    // cannot call it back.
                    None => Peer::Silo(SiloAddress::new(([0, 0, 0, 0], 0).into(), 0)),
                };
                Arc::new(Link::to_silo(
                    to,
                    me,
                    self.options.clone(),
                    self.clock.clone(),
                ))
            })
            .clone()
    }

    /// Stops serving (every connection to this silo ends, so its callers' links go down) and
    /// closes the links to other silos (their waiting calls fail with `SiloUnavailable`).
    pub(crate) async fn stop(&self) {
        self.shutdown.cancel();
        for link in self.links.iter() {
            link.close();
        }
        self.links.clear();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl std::fmt::Debug for SiloNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiloNetwork")
            .field("address", &self.address)
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

/// Binds `addr` now, so a taken port is an error of `start`.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// The network as the references it made hold it: weakly, so they do not keep it alive.
pub(crate) type WeakNetwork = Weak<SiloNetwork>;
