//! `Client`: an external process's connection to a cluster through its gateways.
//!
//! It links to every gateway given and hands out the same typed references as a silo. Each call
//! goes to a gateway whose link is up, round robin; when a gateway dies its link goes down, the
//! calls waiting on it fail with `SiloUnavailable` (delivery is at most once: the client does not
//! resend them), and later calls go to the others while the dead one is retried in the
//! background. A call that a gateway's silo refused because it is shutting down (so it ran
//! nothing) is sent once more through another gateway. Calls time out with `CallError::Timeout`
//! (default 30 s, per reference with `with_timeout`).
//!
//! ```no_run
//! use silica_client::Client;
//! use silica_grains::grain;
//!
//! #[grain]
//! pub trait Counter {
//!     async fn add(&mut self, n: u64) -> u64;
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Silos started with `SiloBuilder::gateway(addr)` serve these.
//! let client = Client::connect(["127.0.0.1:30000", "127.0.0.1:30001"]).await?;
//! let counter: CounterRef = client.get("visits");
//! let total = counter.add(1).await?;
//! # let _ = total;
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use silica_clocks::{ClockConfig, HybridClock, NodeId};
use silica_grains::{CallError, GrainFactory, Invoker, PendingCall, Request};

use crate::link::{Link, LinkOptions, LinkStatus, Peer};
use crate::wire::LinkError;
use crate::{CallChain, DEFAULT_CALL_TIMEOUT, Envelope};

/// Why [`Client::connect`] failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No gateway address was given.
    #[error("no gateway address given")]
    NoGateways,
    /// No gateway could be reached; each one's error.
    #[error("no gateway reachable: {}", describe(.0))]
    Unreachable(Vec<(String, LinkError)>),
}

fn describe(errors: &[(String, LinkError)]) -> String {
    errors
        .iter()
        .map(|(gateway, error)| format!("{gateway}: {error}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// How a client behaves.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Cluster id, frame size, queue, connect timeout and reconnect backoff.
    pub link: LinkOptions,
    /// Timeout of calls whose reference sets none.
    pub default_call_timeout: Duration,
    /// The name gateways log for this client.
    pub name: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            link: LinkOptions::default(),
            default_call_timeout: DEFAULT_CALL_TIMEOUT,
            name: "silica-client".into(),
        }
    }
}

/// A connection to a cluster through its gateways. It derefs to the [`GrainFactory`] whose
/// references call through it. Dropping the last handle (and every reference) closes the links.
#[derive(Clone, Debug)]
pub struct Client {
    gateways: Arc<Gateways>,
    factory: GrainFactory,
}

impl Client {
    /// Connects with the default options; see [`Client::connect_with`].
    pub async fn connect<A: ToString>(
        gateways: impl IntoIterator<Item = A>,
    ) -> Result<Client, ClientError> {
        Self::connect_with(gateways, ClientOptions::default()).await
    }

    /// Links to every gateway ("host:port", or a `SocketAddr`) and returns once one of them is
    /// up; the others keep connecting in the background. Fails if none can be reached.
    pub async fn connect_with<A: ToString>(
        gateways: impl IntoIterator<Item = A>,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let clock = Arc::new(HybridClock::new(random_node(), ClockConfig::default()));
        let links: Vec<Link> = gateways
            .into_iter()
            .map(|gateway| {
                let me = Peer::Client(options.name.clone());
                Link::new(gateway.to_string(), me, options.link.clone(), clock.clone())
            })
            .collect();
        if links.is_empty() {
            return Err(ClientError::NoGateways);
        }
        first_up(&links).await?;
        let gateways = Arc::new(Gateways {
            draining_until_ms: links.iter().map(|_| AtomicU64::new(0)).collect(),
            started: std::time::Instant::now(),
            links,
            next: AtomicUsize::new(0),
            default_timeout: options.default_call_timeout,
        });
        let factory = GrainFactory::new(Arc::new(GatewayInvoker(gateways.clone())));
        Ok(Client { gateways, factory })
    }

    /// The factory whose references call through this client.
    pub fn grain_factory(&self) -> GrainFactory {
        self.factory.clone()
    }

    /// Each gateway and where its link is.
    pub fn gateways(&self) -> Vec<(String, LinkStatus)> {
        self.gateways
            .links
            .iter()
            .map(|link| (link.endpoint().to_owned(), link.status()))
            .collect()
    }

    /// Closes every gateway link: waiting calls and later ones fail with `SiloUnavailable`.
    pub fn close(&self) {
        for link in &self.gateways.links {
            link.close();
        }
    }
}

impl std::ops::Deref for Client {
    type Target = GrainFactory;

    fn deref(&self) -> &GrainFactory {
        &self.factory
    }
}

/// How long a gateway whose silo refused a call as shutting down is passed over: its silo is
/// leaving the cluster, and calls sent there would only be refused (or, once it closes, lost).
const DRAINING: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Gateways {
    links: Vec<Link>,
    next: AtomicUsize,
    default_timeout: Duration,
    /// Per gateway: until when (ms since `started`) it is passed over as draining.
    draining_until_ms: Vec<AtomicU64>,
    started: std::time::Instant,
}

impl Gateways {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Gateway `index` refused a call as shutting down: pass it over for a while.
    fn draining(&self, index: usize) {
        let until = self.now_ms() + DRAINING.as_millis() as u64;
        self.draining_until_ms[index].fetch_max(until, Ordering::Relaxed);
    }

    /// The next gateway that is up and not draining, round robin, other than `not` (the index
    /// of one that just refused); else one that is up though draining; else one still
    /// connecting; else none. Returns its index too.
    fn pick(&self, not: Option<usize>) -> Result<(usize, &Link), CallError> {
        let now = self.now_ms();
        let draining = |i: usize| self.draining_until_ms[i].load(Ordering::Relaxed) > now;
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let count = self.links.len();
        let up = (0..count)
            .map(|i| (start + i) % count)
            .find(|&i| Some(i) != not && !draining(i) && self.links[i].is_up());
        if let Some(index) = up {
            return Ok((index, &self.links[index]));
        }
        let in_order = (0..count)
            .map(|i| (start + i) % count)
            .filter(|&i| Some(i) != not)
            .map(|i| (i, &self.links[i]));
        let mut connecting = None;
        let mut errors = Vec::new();
        for (index, link) in in_order {
            if link.is_up() {
                return Ok((index, link));
            }
            match link.status() {
                LinkStatus::Up(_) => return Ok((index, link)),
                LinkStatus::Connecting => connecting = connecting.or(Some((index, link))),
                LinkStatus::Down(error) => errors.push(format!("{}: {error}", link.endpoint())),
                _ => errors.push(format!("{}: closed", link.endpoint())),
            }
        }
        connecting.ok_or_else(|| {
            CallError::SiloUnavailable(format!("no gateway is up ({})", errors.join("; ")))
        })
    }
}

/// Waits until one link is up; fails with every link's error if none comes up.
async fn first_up(links: &[Link]) -> Result<(), ClientError> {
    let mut attempts: Vec<_> = links
        .iter()
        .map(|link| Box::pin(async move { (link.endpoint().to_owned(), link.ready().await) }))
        .collect();
    let mut errors = Vec::new();
    while !attempts.is_empty() {
        let ((gateway, result), _, rest) = futures_util::future::select_all(attempts).await;
        match result {
            Ok(()) => return Ok(()),
            Err(error) => errors.push((gateway, error)),
        }
        attempts = rest;
    }
    errors.sort_by(|a, b| a.0.cmp(&b.0));
    Err(ClientError::Unreachable(errors))
}

/// The invoker behind a client's references.
struct GatewayInvoker(Arc<Gateways>);

impl Invoker for GatewayInvoker {
    fn invoke(&self, request: Request) -> PendingCall {
        let (index, link) = match self.0.pick(None) {
            Ok(picked) => picked,
            Err(error) => return PendingCall::answered(Err(error)),
        };
        let envelope = Envelope {
            target: request.target,
            interface: Cow::Borrowed(request.interface),
            method: Cow::Borrowed(request.method),
            args: request.args,
            // Stamped by the link as the envelope leaves.
            hlc: silica_clocks::HlcTimestamp::ZERO,
            chain: CallChain::EMPTY,
            timeout: request.options.timeout.unwrap_or(self.0.default_timeout),
        };
        if self.0.links.len() == 1 {
            return link.call(envelope);
        }
        // A silo that is shutting down refuses a call before it runs anything, so sending it
        // once more, through another gateway, keeps delivery at most once.
        let again = envelope.clone();
        let first = link.call(envelope);
        let gateways = self.0.clone();
        PendingCall::waiting(async move {
            match first.await {
                Err(CallError::ShuttingDown) => {
                    gateways.draining(index);
                    match gateways.pick(Some(index)) {
                        Ok((_, other)) => other.call(again).await,
                        Err(_) => Err(CallError::ShuttingDown),
                    }
                }
                answer => answer,
            }
        })
    }
}

fn random_node() -> NodeId {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::hash::RandomState::new().build_hasher().finish();
    NodeId((bits ^ (bits >> 32)) as u32)
}
