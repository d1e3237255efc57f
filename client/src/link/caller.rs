//! `Link`: the caller side of a link to one endpoint, connected and reconnected in the
//! background.
//!
//! A task owns the connection: it connects, says hello, waits for the welcome, reads responses
//! until the connection ends, fails the calls that were waiting, then reconnects after a backoff
//! (doubling from `backoff_min` to `backoff_max`). Calls made while the first attempt is under way
//! wait for it; calls made while the link is down fail at once with `SiloUnavailable`, so no call
//! waits on a peer that is not there.

use std::sync::Arc;
use std::time::Duration;

use silica_clocks::{HybridClock, wall_clock_ms};
use silica_grains::placement::SiloAddress;
use silica_grains::{CallError, PendingCall};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::connection::Connection;
use super::outbox::OutboxStream;
use super::{LinkOptions, Peer};
use crate::Envelope;
use crate::wire::proto::silo_link_client::SiloLinkClient;
use crate::wire::proto::{self, frame::Body};
use crate::wire::{LinkError, PROTOCOL_VERSION, encode_envelope};

/// Where a link is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkStatus {
    /// The first connection attempt is under way.
    Connecting,
    /// Connected; the acceptor's silo address, if it said one.
    Up(Option<SiloAddress>),
    /// Not connected; why the last attempt or connection ended. Reconnecting in the background.
    Down(LinkError),
    /// Closed on this side for good.
    Closed,
}

#[derive(Clone)]
enum State {
    Connecting,
    Up(Arc<Connection>, Option<SiloAddress>),
    Down(LinkError),
    Closed,
}

struct Shared {
    endpoint: String,
    /// The silo the link is for, if it is for one: another generation at its endpoint is
    /// refused (`LinkError::WrongSilo`).
    expected: Option<SiloAddress>,
    options: LinkOptions,
    hello: proto::Hello,
    clock: Arc<HybridClock>,
    state: watch::Sender<State>,
    shutdown: CancellationToken,
}

/// The caller side of a link to one endpoint (a silo's link endpoint or a gateway). Dropping it
/// closes the link.
pub struct Link {
    shared: Arc<Shared>,
}

impl Link {
    /// Starts linking to `endpoint` ("host:port") as `me`, on the current Tokio runtime.
    /// Outgoing envelopes are stamped by `clock` (a tick per envelope) and responses' timestamps
    /// merged into it.
    pub fn new(
        endpoint: impl Into<String>,
        me: Peer,
        options: LinkOptions,
        clock: Arc<HybridClock>,
    ) -> Link {
        Self::start(endpoint.into(), None, me, options, clock)
    }

    /// [`Link::new`] to silo `to` at its endpoint: a silo of another generation answering
    /// there (a restart on the same port) is refused with [`LinkError::WrongSilo`], so calls
    /// meant for `to` end with `SiloUnavailable` instead of reaching its successor.
    pub fn to_silo(
        to: SiloAddress,
        me: Peer,
        options: LinkOptions,
        clock: Arc<HybridClock>,
    ) -> Link {
        Self::start(to.endpoint.to_string(), Some(to), me, options, clock)
    }

    fn start(
        endpoint: String,
        expected: Option<SiloAddress>,
        me: Peer,
        options: LinkOptions,
        clock: Arc<HybridClock>,
    ) -> Link {
        let hello = proto::Hello {
            cluster_id: options.cluster_id.clone(),
            protocol_version: PROTOCOL_VERSION,
            sender: Some(me.to_wire()),
        };
        let (state, _) = watch::channel(State::Connecting);
        let shared = Arc::new(Shared {
            endpoint,
            expected,
            options,
            hello,
            clock,
            state,
            shutdown: CancellationToken::new(),
        });
        tokio::spawn(run(shared.clone()));
        Link { shared }
    }

    /// The endpoint this link connects to.
    pub fn endpoint(&self) -> &str {
        &self.shared.endpoint
    }

    /// Where the link is now.
    pub fn status(&self) -> LinkStatus {
        match &*self.shared.state.borrow() {
            State::Connecting => LinkStatus::Connecting,
            State::Up(_, silo) => LinkStatus::Up(*silo),
            State::Down(error) => LinkStatus::Down(error.clone()),
            State::Closed => LinkStatus::Closed,
        }
    }

    /// Whether the link is connected now (cheaper than [`Link::status`]: clones nothing).
    pub fn is_up(&self) -> bool {
        matches!(*self.shared.state.borrow(), State::Up(..))
    }

    /// Waits for the first connection attempt to end: `Ok` once connected, else why not.
    pub async fn ready(&self) -> Result<(), LinkError> {
        let mut state = self.shared.state.subscribe();
        let state = state
            .wait_for(|state| !matches!(state, State::Connecting))
            .await
            .map_err(|_| LinkError::Closed)?;
        match &*state {
            State::Up(..) => Ok(()),
            State::Down(error) => Err(error.clone()),
            State::Connecting | State::Closed => Err(LinkError::Closed),
        }
    }

    /// Waits until the link is up again (after `Down`), at most `timeout`.
    pub async fn wait_up(&self, timeout: Duration) -> Result<(), LinkError> {
        let mut state = self.shared.state.subscribe();
        let up = state.wait_for(|state| matches!(state, State::Up(..) | State::Closed));
        match tokio::time::timeout(timeout, up).await {
            Ok(Ok(state)) if matches!(&*state, State::Up(..)) => Ok(()),
            Ok(_) => Err(LinkError::Closed),
            Err(_) => Err(match self.status() {
                LinkStatus::Down(error) => error,
                _ => LinkError::Transport(format!("not up within {timeout:?}")),
            }),
        }
    }

    /// Calls waiting for a response on the current connection.
    pub fn waiting_calls(&self) -> usize {
        match &*self.shared.state.borrow() {
            State::Up(connection, _) => connection.waiting(),
            _ => 0,
        }
    }

    /// Sends `envelope` (stamped with a tick of the link's clock) and returns the wait for its
    /// answer: the value, the grain's typed error, `Timeout` after `envelope.timeout`, or
    /// `SiloUnavailable` if the link is down or dies first.
    pub fn call(&self, mut envelope: Envelope) -> PendingCall {
        let timeout = envelope.timeout;
        let state = self.shared.state.borrow().clone();
        match state {
            State::Up(connection, _) => {
                envelope.hlc = self.shared.clock.now(wall_clock_ms());
                connection.call(encode_envelope(&envelope, 0), timeout)
            }
            State::Down(error) => PendingCall::answered(Err(unavailable(&error))),
            State::Closed => PendingCall::answered(Err(unavailable(&LinkError::Closed))),
            State::Connecting => {
                let shared = self.shared.clone();
                let first = async move {
                    let mut watch = shared.state.subscribe();
                    let state = watch
                        .wait_for(|state| !matches!(state, State::Connecting))
                        .await
                        .map(|state| state.clone())
                        .unwrap_or(State::Closed);
                    match state {
                        State::Up(connection, _) => {
                            envelope.hlc = shared.clock.now(wall_clock_ms());
                            connection
                                .call(encode_envelope(&envelope, 0), timeout)
                                .await
                        }
                        State::Down(error) => Err(unavailable(&error)),
                        State::Connecting | State::Closed => Err(unavailable(&LinkError::Closed)),
                    }
                };
                PendingCall::waiting(async move {
                    tokio::time::timeout(timeout, first)
                        .await
                        .unwrap_or(Err(CallError::Timeout(timeout)))
                })
            }
        }
    }

    /// Closes the link: waiting calls fail with `SiloUnavailable`, later calls too.
    pub fn close(&self) {
        self.shared.shutdown.cancel();
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("endpoint", &self.shared.endpoint)
            .field("status", &self.status())
            .finish()
    }
}

fn unavailable(error: &LinkError) -> CallError {
    CallError::SiloUnavailable(format!("no link to the silo: {error}"))
}

/// The link's task: connect, serve, reconnect with backoff, until closed.
async fn run(shared: Arc<Shared>) {
    let mut backoff = shared.options.backoff_min;
    while !shared.shutdown.is_cancelled() {
        let attempt = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            attempt = connect(&shared) => attempt,
        };
        match attempt {
            Ok((connection, silo, mut inbound)) => {
                backoff = shared.options.backoff_min;
                shared
                    .state
                    .send_replace(State::Up(connection.clone(), silo));
                let reason = tokio::select! {
                    _ = shared.shutdown.cancelled() => LinkError::Closed,
                    reason = connection.read_responses(&mut inbound, &shared.clock) => reason,
                };
                tracing::debug!(endpoint = %shared.endpoint, %reason, "link ended");
                connection.close(&reason);
                shared.state.send_replace(State::Down(reason));
            }
            Err(error) => {
                tracing::debug!(endpoint = %shared.endpoint, %error, "link attempt failed");
                shared.state.send_replace(State::Down(error));
            }
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(shared.options.backoff_max);
    }
    if let State::Up(connection, _) = shared.state.send_replace(State::Closed) {
        connection.close(&LinkError::Closed);
    }
}

type Connected = (
    Arc<Connection>,
    Option<SiloAddress>,
    tonic::Streaming<proto::Frame>,
);

/// One attempt: connect, hello, welcome.
async fn connect(shared: &Shared) -> Result<Connected, LinkError> {
    let options = &shared.options;
    let transport = |e: &dyn std::fmt::Display| LinkError::Transport(e.to_string());
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", shared.endpoint))
        .map_err(|e| transport(&e))?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(options.keep_alive_interval)
        .keep_alive_timeout(options.keep_alive_interval * 2)
        .keep_alive_while_idle(true);
    let channel = endpoint.connect().await.map_err(|e| transport(&e))?;
    let mut client = SiloLinkClient::new(channel)
        .max_decoding_message_size(options.max_frame_bytes)
        .max_encoding_message_size(options.max_frame_bytes);
    let (outbox, queue) = mpsc::channel(options.queue_capacity);
    let cancel = CancellationToken::new();
    let hello = proto::Frame {
        body: Some(Body::Hello(shared.hello.clone())),
    };
    let requests = OutboxStream::new(hello, queue, options.max_frame_bytes, cancel.clone());
    let requests = tokio_stream::StreamExt::map_while(requests, Result::ok);
    let handshake = async {
        let response = client
            .open(requests)
            .await
            .map_err(|status| LinkError::from_tonic(&status))?;
        let mut inbound = response.into_inner();
        let welcome = match inbound.message().await {
            Ok(Some(proto::Frame {
                body: Some(Body::Welcome(welcome)),
            })) => welcome,
            Ok(Some(_)) => return Err(LinkError::UnexpectedFrame("expected a welcome")),
            Ok(None) => return Err(LinkError::Transport("closed before the welcome".into())),
            Err(status) => return Err(LinkError::from_tonic(&status)),
        };
        if welcome.protocol_version != PROTOCOL_VERSION {
            return Err(LinkError::WrongProtocolVersion {
                expected: PROTOCOL_VERSION,
                got: welcome.protocol_version,
            });
        }
        let silo = welcome
            .silo
            .and_then(|silo| super::silo_from_wire(&silo).ok());
        if let (Some(expected), Some(got)) = (shared.expected, silo)
            && got != expected
        {
            return Err(LinkError::WrongSilo { expected, got });
        }
        Ok((silo, inbound))
    };
    let handshake = tokio::time::timeout(options.connect_timeout, handshake).await;
    let (silo, inbound) = match handshake {
        Ok(result) => result.inspect_err(|_| cancel.cancel())?,
        Err(_) => {
            cancel.cancel();
            return Err(LinkError::Transport(format!(
                "no welcome within {:?}",
                options.connect_timeout
            )));
        }
    };
    Ok((
        Connection::new(outbox, options.max_frame_bytes, cancel),
        silo,
        inbound,
    ))
}
