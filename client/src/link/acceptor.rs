//! The acceptor side of links: the tonic service a silo serves on its link endpoint and on its
//! gateway.
//!
//! Each connection: the first frame must be a hello from this cluster, at this protocol version,
//! from a kind of peer this endpoint takes; otherwise the RPC fails with the typed status and
//! nothing else happens. Then a task reads batches and hands each request to the
//! [`LinkHandler`]. An answer ready at once is queued right away; others are awaited on their
//! own task. A frame that does not decode, is too large, or does not belong ends that connection
//! with its typed status after the responses already queued.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use silica_clocks::{HybridClock, wall_clock_ms};
use silica_grains::placement::SiloAddress;
use silica_grains::{CallError, Payload, PendingCall, RejectCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::outbox::{OutboxStream, Outgoing, fits};
use super::{LinkOptions, Peer};
use crate::Envelope;
use crate::wire::proto::silo_link_server::{SiloLink, SiloLinkServer};
use crate::wire::proto::{self, frame::Body};
use crate::wire::{
    LinkError, PROTOCOL_VERSION, WireError, decode_envelope, hlc_to_wire, status_from_error,
};

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Connection errors kept for [`LinkAcceptor::recent_errors`].
const KEPT_ERRORS: usize = 64;

/// Handles the requests that arrive on links.
pub trait LinkHandler: Send + Sync + 'static {
    /// Delivers one request from `peer` and returns the wait for its answer.
    fn handle(&self, peer: &Peer, envelope: Envelope) -> PendingCall;
}

/// Which peers an endpoint takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    /// Silos of the cluster only (a silo link endpoint).
    Silos,
    /// External clients only (a gateway).
    Clients,
}

/// How an acceptor behaves.
#[derive(Clone, Debug)]
pub struct AcceptorOptions {
    /// Cluster id, frame size limit and queue capacity (the reconnect settings are unused).
    pub link: LinkOptions,
    /// Which peers this endpoint takes.
    pub accept: Accept,
    /// The silo answering, told to callers in the welcome.
    pub silo: Option<SiloAddress>,
}

/// The acceptor side of links; serve it with [`serve`].
pub struct LinkAcceptor<H> {
    handler: Arc<H>,
    options: AcceptorOptions,
    clock: Arc<HybridClock>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    errors: Arc<Mutex<VecDeque<LinkError>>>,
}

impl<H: LinkHandler> LinkAcceptor<H> {
    /// An acceptor handing requests to `handler`; responses are stamped by `clock`.
    /// `shutdown` ends every connection (and [`serve`]).
    pub fn new(
        handler: Arc<H>,
        options: AcceptorOptions,
        clock: Arc<HybridClock>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            handler,
            options,
            clock,
            shutdown,
            tracker: TaskTracker::new(),
            errors: Arc::default(),
        }
    }

    /// The most recent errors that ended or refused a connection, oldest first.
    pub fn recent_errors(&self) -> Vec<LinkError> {
        lock(&self.errors).iter().cloned().collect()
    }

    fn refuse(&self, error: LinkError) -> tonic::Status {
        tracing::info!(%error, "link refused");
        record(&self.errors, error.clone());
        error.to_tonic()
    }

    fn check(&self, hello: proto::Hello) -> Result<Peer, LinkError> {
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(LinkError::WrongProtocolVersion {
                expected: PROTOCOL_VERSION,
                got: hello.protocol_version,
            });
        }
        if hello.cluster_id != self.options.link.cluster_id {
            return Err(LinkError::WrongCluster {
                expected: self.options.link.cluster_id.clone(),
                got: hello.cluster_id,
            });
        }
        let sender = hello
            .sender
            .ok_or(WireError::MissingField("hello.sender"))?;
        let peer = Peer::from_wire(&sender)?;
        match (self.options.accept, &peer) {
            (Accept::Silos, Peer::Silo(_)) | (Accept::Clients, Peer::Client(_)) => Ok(peer),
            (Accept::Silos, Peer::Client(_)) => Err(LinkError::NotAccepted(
                "external clients connect to a gateway, not to a silo link endpoint".into(),
            )),
            (Accept::Clients, Peer::Silo(_)) => Err(LinkError::NotAccepted(
                "silos link to a silo link endpoint, not to a gateway".into(),
            )),
        }
    }
}

#[tonic::async_trait]
impl<H: LinkHandler> SiloLink for LinkAcceptor<H> {
    type OpenStream = OutboxStream;

    async fn open(
        &self,
        request: tonic::Request<tonic::Streaming<proto::Frame>>,
    ) -> Result<tonic::Response<OutboxStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Err(_) => return Err(self.refuse(LinkError::Transport("no hello in time".into()))),
            Ok(Err(status)) => return Err(self.refuse(LinkError::from_tonic(&status))),
            Ok(Ok(None)) => {
                return Err(self.refuse(LinkError::Transport("closed before the hello".into())));
            }
            Ok(Ok(Some(proto::Frame {
                body: Some(Body::Hello(hello)),
            }))) => hello,
            Ok(Ok(Some(_))) => {
                return Err(self.refuse(LinkError::UnexpectedFrame("expected a hello")));
            }
        };
        let peer = self.check(hello).map_err(|error| self.refuse(error))?;
        let options = &self.options.link;
        let (outbox, queue) = mpsc::channel(options.queue_capacity);
        let cancel = self.shutdown.child_token();
        let welcome = proto::Frame {
            body: Some(Body::Welcome(proto::Welcome {
                protocol_version: PROTOCOL_VERSION,
                silo: self.options.silo.as_ref().map(super::silo_to_wire),
            })),
        };
        let responses = OutboxStream::new(welcome, queue, options.max_frame_bytes, cancel.clone());
        let reader = Reader {
            handler: self.handler.clone(),
            peer,
            outbox,
            clock: self.clock.clone(),
            tracker: self.tracker.clone(),
            max_frame_bytes: options.max_frame_bytes,
        };
        let errors = self.errors.clone();
        self.tracker.spawn(async move {
            let ended = tokio::select! {
                _ = cancel.cancelled() => None,
                ended = reader.read(&mut inbound) => ended,
            };
            if let Some(error) = ended {
                tracing::info!(%error, "link closed");
                record(&errors, error.clone());
                // After the responses already queued; if the peer does not read, drop it.
                if reader
                    .outbox
                    .try_send(Outgoing::Close(error.to_tonic()))
                    .is_err()
                {
                    cancel.cancel();
                }
            }
        });
        Ok(tonic::Response::new(responses))
    }

    async fn probe(
        &self,
        request: tonic::Request<proto::ProbeRequest>,
    ) -> Result<tonic::Response<proto::ProbeReply>, tonic::Status> {
        let probe = request.into_inner();
        if probe.cluster_id != self.options.link.cluster_id {
            return Err(self.refuse(LinkError::WrongCluster {
                expected: self.options.link.cluster_id.clone(),
                got: probe.cluster_id,
            }));
        }
        Ok(tonic::Response::new(proto::ProbeReply {
            nonce: probe.nonce,
            silo: self.options.silo.as_ref().map(super::silo_to_wire),
        }))
    }
}

/// The request reader of one connection.
struct Reader<H> {
    handler: Arc<H>,
    peer: Peer,
    outbox: mpsc::Sender<Outgoing>,
    clock: Arc<HybridClock>,
    tracker: TaskTracker,
    max_frame_bytes: usize,
}

impl<H: LinkHandler> Reader<H> {
    /// Reads requests until the caller is done (`None`) or a frame ends the connection.
    async fn read(&self, inbound: &mut tonic::Streaming<proto::Frame>) -> Option<LinkError> {
        loop {
            let frame = match inbound.message().await {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(status) => return Some(LinkError::from_tonic(&status)),
            };
            let batch = match frame.body {
                Some(Body::Batch(batch)) => batch,
                Some(_) => return Some(LinkError::UnexpectedFrame("a second handshake")),
                None => return Some(WireError::MissingField("frame.body").into()),
            };
            if !batch.responses.is_empty() {
                return Some(LinkError::UnexpectedFrame("responses from the caller"));
            }
            for envelope in batch.requests {
                let call_id = envelope.call_id;
                match decode_envelope(envelope) {
                    Ok((call_id, envelope)) => self.dispatch(call_id, envelope).await,
                    // The frame itself was well formed: only this call is refused, and the
                    // connection, with every other call on it, goes on.
                    Err(error) => {
                        let refused = Err(malformed_request(&error));
                        let _ = self.outbox.send(self.response(call_id, refused)).await;
                    }
                }
            }
        }
    }

    async fn dispatch(&self, call_id: u64, envelope: Envelope) {
        let mut call = self.handler.handle(&self.peer, envelope);
        if let Some(result) = (&mut call).now_or_never() {
            // Waiting here when the outbox is full slows this peer's reads: backpressure.
            let _ = self.outbox.send(self.response(call_id, result)).await;
            return;
        }
        let outbox = self.outbox.clone();
        let clock = self.clock.clone();
        let max = self.max_frame_bytes;
        self.tracker.spawn(async move {
            let result = call.await;
            let _ = outbox.send(response(call_id, result, &clock, max)).await;
        });
    }

    fn response(&self, call_id: u64, result: Result<Payload, CallError>) -> Outgoing {
        response(call_id, result, &self.clock, self.max_frame_bytes)
    }
}

/// The rejection of a request envelope that does not decode (e.g. an empty method name).
fn malformed_request(error: &WireError) -> CallError {
    let code = match error {
        WireError::InvalidField {
            field: "method", ..
        } => RejectCode::UnknownMethod,
        WireError::InvalidField {
            field: "interface", ..
        } => RejectCode::WrongInterface,
        WireError::InvalidField {
            field: "grain_type",
            ..
        } => RejectCode::UnknownGrainType,
        _ => RejectCode::BadArguments,
    };
    CallError::rejected(code, format!("malformed request: {error}"))
}

fn response(
    call_id: u64,
    result: Result<Payload, CallError>,
    clock: &HybridClock,
    max_frame_bytes: usize,
) -> Outgoing {
    let result = match result {
        Ok(payload) if !fits(payload.len() + 32, max_frame_bytes) => Err(CallError::rejected(
            RejectCode::TooLarge,
            format!(
                "a result of {} bytes does not fit in a frame of at most {max_frame_bytes} bytes",
                payload.len()
            ),
        )),
        other => other,
    };
    let result = match result {
        Ok(payload) => proto::response::Result::Ok(bytes::Bytes::copy_from_slice(&payload)),
        Err(error) => proto::response::Result::Error(status_from_error(&error)),
    };
    Outgoing::Response(proto::Response {
        call_id,
        hlc: Some(hlc_to_wire(clock.now(wall_clock_ms()))),
        result: Some(result),
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn record(errors: &Mutex<VecDeque<LinkError>>, error: LinkError) {
    let mut errors = lock(errors);
    if errors.len() == KEPT_ERRORS {
        errors.pop_front();
    }
    errors.push_back(error);
}

/// Serves `acceptor` on `listener` until its shutdown token fires; then every connection ends
/// (callers see their links go down) and this returns.
pub async fn serve<H: LinkHandler>(
    listener: tokio::net::TcpListener,
    acceptor: Arc<LinkAcceptor<H>>,
) -> Result<(), LinkError> {
    let max = acceptor.options.link.max_frame_bytes;
    let shutdown = acceptor.shutdown.clone();
    let tracker = acceptor.tracker.clone();
    let service = SiloLinkServer::from_arc(acceptor)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let served = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await;
    tracker.close();
    tracker.wait().await;
    served.map_err(|e| LinkError::Transport(e.to_string()))
}
