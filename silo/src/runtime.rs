//! The shared core of a running silo and the path every call takes through it.
//!
//! `SiloInner::send` is the path of every call: check the grain type, interface and method,
//! refuse call cycles and overload, then run the turn inline if the activation is idle (see
//! `activation::inline`) or queue it, and wait for the answer or the deadline.
//! `SiloInner::receive` first merges the HLC timestamp of an envelope from outside the silo.
//! A reference that remembers its route takes a shorter path to GPU variants (`remembered`).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use silica_client::{CallChain, Envelope};
use silica_clocks::{HybridClock, wall_clock_ms};
use silica_grains::Payload;
use silica_grains::{
    CallError, CallOptions, CallRequest, GrainFactory, GrainId, GrainOptions, Interleave, Invoker,
    PendingCall, RejectCode, Request, RouteMemo,
};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::activation::{Answered, Call};
use crate::caller::chain_for_outgoing_call;
use crate::catalog::Catalog;
use crate::cluster_node::ClusterNode;
use crate::config::SiloConfig;
use crate::deadline::{Deadline, DeadlineWheel};
use crate::registry::{Registration, Registry};

/// Where a silo is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Lifecycle {
    Running = 0,
    /// Finishing in-flight work: calls from inside grains are still served, new ones are not.
    ShuttingDown = 1,
    Stopped = 2,
}

pub(crate) struct SiloInner {
    pub(crate) config: SiloConfig,
    pub(crate) registry: Registry,
    pub(crate) catalog: Catalog,
    /// Shared with GPU variants, which merge their devices' stamps into it.
    pub(crate) clock: Arc<HybridClock>,
    /// The timeouts of calls waiting for their answers.
    pub(crate) deadlines: DeadlineWheel,
    pub(crate) tracker: TaskTracker,
    /// The runtime the silo started on: activations run here whoever calls them.
    pub(crate) runtime: tokio::runtime::Handle,
    /// Cancelled when shutdown begins: stops the idle collector.
    pub(crate) stopping: CancellationToken,
    lifecycle: AtomicU8,
    /// Taken at shutdown: its invoker holds this silo, and the cycle must not outlive it.
    factory: Mutex<Option<GrainFactory>>,
    /// Set once when the silo is a cluster member: calls to grains not hosted here take the
    /// cluster path (`cluster_node::routing`).
    pub(crate) cluster: OnceLock<Arc<ClusterNode>>,
}

impl SiloInner {
    pub(crate) fn new(
        config: SiloConfig,
        registry: Registry,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Self> {
        let clock = Arc::new(HybridClock::new(config.node_id, config.clock));
        let inner = Arc::new(Self {
            config,
            registry,
            catalog: Catalog::new(),
            clock,
            deadlines: DeadlineWheel::start(&runtime),
            tracker: TaskTracker::new(),
            runtime,
            stopping: CancellationToken::new(),
            lifecycle: AtomicU8::new(Lifecycle::Running as u8),
            factory: Mutex::new(None),
            cluster: OnceLock::new(),
        });
        let invoker: Arc<dyn Invoker> = Arc::new(SiloInvoker {
            silo: inner.clone(),
        });
        *inner.factory.lock().unwrap_or_else(|e| e.into_inner()) = Some(GrainFactory::new(invoker));
        inner
    }

    /// A factory whose references call into this silo (or, after shutdown, fail with
    /// `ShuttingDown`).
    pub(crate) fn factory(&self) -> GrainFactory {
        let factory = self.factory.lock().unwrap_or_else(|e| e.into_inner());
        factory
            .clone()
            .unwrap_or_else(|| GrainFactory::new(Arc::new(StoppedInvoker)))
    }

    /// Drops the silo's own factory, breaking the silo -> factory -> invoker -> silo cycle.
    pub(crate) fn release_factory(&self) {
        self.factory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    pub(crate) fn lifecycle(&self) -> Lifecycle {
        match self.lifecycle.load(Ordering::Acquire) {
            0 => Lifecycle::Running,
            1 => Lifecycle::ShuttingDown,
            _ => Lifecycle::Stopped,
        }
    }

    pub(crate) fn set_lifecycle(&self, lifecycle: Lifecycle) {
        self.lifecycle.store(lifecycle as u8, Ordering::Release);
    }

    /// The envelope for a request made through a reference on this silo.
    fn envelope(&self, request: Request) -> Envelope {
        self.envelope_with_chain(request, chain_for_outgoing_call())
    }

    /// The envelope for a request made through a reference on this silo, from inside the turns
    /// `chain` names (see `chain_for_outgoing_call`).
    pub(crate) fn envelope_with_chain(&self, request: Request, chain: CallChain) -> Envelope {
        Envelope {
            target: request.target,
            interface: Cow::Borrowed(request.interface),
            method: Cow::Borrowed(request.method),
            args: request.args,
            // The current reading, without a tick: sender and receiver share this one clock, so
            // an in-process call is no clock event, and ticking it on every call made all cores
            // write one cache line. Silo links must stamp envelopes that leave with a tick.
            hlc: self.clock.last(),
            chain,
            timeout: self.timeout_of(request.options),
        }
    }

    /// How long a call made with `options` waits for its answer.
    pub(crate) fn timeout_of(&self, options: CallOptions) -> std::time::Duration {
        options.timeout.unwrap_or(self.config.default_call_timeout)
    }

    /// Receives an envelope from outside this silo: merges its HLC timestamp (rejecting one too
    /// far ahead), then delivers it. Envelopes made by this silo's own references skip the merge:
    /// they were stamped by this very clock.
    pub(crate) async fn receive(self: Arc<Self>, envelope: Envelope) -> Result<Payload, CallError> {
        self.receive_from(envelope, false).await
    }

    /// [`Self::receive`] for an envelope from a link; `from_silo` when another silo of the
    /// cluster sent it (it routed the call here on purpose), and the system target (directory
    /// requests, hand-offs, load reports) is answered here.
    pub(crate) async fn receive_from(
        self: Arc<Self>,
        envelope: Envelope,
        from_silo: bool,
    ) -> Result<Payload, CallError> {
        self.clock
            .update(envelope.hlc, wall_clock_ms())
            .map_err(|e| CallError::rejected(RejectCode::ClockSkew, e.to_string()))?;
        if crate::cluster_node::is_system(&envelope.target) {
            return match self.cluster.get() {
                Some(cluster) if from_silo => cluster.handle_envelope(&envelope),
                _ => Err(CallError::rejected(
                    RejectCode::UnknownGrainType,
                    "the system target answers only silos of the cluster",
                )),
            };
        }
        let timeout = envelope.timeout;
        match self.route_from(envelope, from_silo) {
            Err(error) => Err(error),
            Ok(answered) => self.wait_for(answered, timeout).await,
        }
    }

    /// Hands `envelope` to its activation now (so calls issued in order are queued in order,
    /// whenever they are awaited) and returns the wait for the answer. The wait holds no
    /// reference to the silo on the common path: touching the silo's shared reference count on
    /// every call made two cores fight over one cache line.
    pub(crate) fn send(self: &Arc<Self>, envelope: Envelope) -> PendingCall {
        let timeout = envelope.timeout;
        match self.route_from(envelope, false) {
            Err(error) => PendingCall::answered(Err(error)),
            Ok(answered) => self.wait_for(answered, timeout),
        }
    }

    /// The local part of routing, for a call the cluster path found hosted here: the GPU
    /// variant or the catalog's activation. Its deadline is the cluster path's.
    pub(crate) async fn route_here(
        self: Arc<Self>,
        envelope: Envelope,
    ) -> Result<Payload, CallError> {
        let registration = self.registration(&envelope)?.clone();
        let kind = registration.method_kind(&envelope.method).ok_or_else(|| {
            CallError::rejected(RejectCode::UnknownMethod, envelope.method.to_string())
        })?;
        match self.route_local(envelope, &registration, kind) {
            Ok(answer) => answered_future(answer).await,
            // Deactivated between the check and now: route from the start.
            Err(Routed::Cluster(envelope)) => match self.route_from(envelope, true) {
                Ok(answer) => answered_future(answer).await,
                Err(error) => Err(error),
            },
            Err(Routed::Failed(error)) => Err(error),
        }
    }

    /// The wait for `answered`, at most `timeout`.
    pub(crate) fn wait_for(&self, answered: Answered, timeout: std::time::Duration) -> PendingCall {
        match answered {
            Answered::Ready(result) => PendingCall::answered(result),
            Answered::Timed(pending) => pending,
            Answered::Waiting(answer) => self.with_deadline(Reply(answer), timeout),
            Answered::Running(running) => self.with_deadline(running, timeout),
        }
    }

    /// `answer`, ended with `Timeout` after `timeout`: one allocation, and no timer unless the
    /// call has to wait (see `deadline`).
    pub(crate) fn with_deadline(
        &self,
        answer: impl std::future::Future<Output = Result<Payload, CallError>> + Send + 'static,
        timeout: std::time::Duration,
    ) -> PendingCall {
        PendingCall::waiting(self.deadline(answer, timeout))
    }

    /// `answer`, ended with `Timeout` after `timeout`, for a caller that places it itself.
    #[inline(always)]
    pub(crate) fn deadline<F>(&self, answer: F, timeout: std::time::Duration) -> Deadline<F> {
        Deadline::new(answer, timeout, &self.deadlines)
    }

    /// Checks `envelope` and hands it to its activation (here, or through the cluster path).
    fn route_from(
        self: &Arc<Self>,
        envelope: Envelope,
        from_silo: bool,
    ) -> Result<Answered, CallError> {
        match self.lifecycle() {
            Lifecycle::Running => {}
            Lifecycle::ShuttingDown if !envelope.chain.is_empty() => {}
            _ => return Err(CallError::ShuttingDown),
        }
        if envelope.args.len() > self.config.max_message_bytes {
            return Err(too_large(
                "arguments",
                envelope.args.len(),
                self.config.max_message_bytes,
            ));
        }
        let registration = self.registration(&envelope)?;
        let kind = registration.method_kind(&envelope.method).ok_or_else(|| {
            CallError::rejected(
                RejectCode::UnknownMethod,
                format!(
                    "interface {} has no method {:?}",
                    envelope.interface, envelope.method
                ),
            )
        })?;
        if would_wait_on_itself(
            &envelope.chain,
            &envelope.target,
            kind,
            &registration.options,
        ) {
            return Err(CallError::CycleDetected {
                chain: envelope.chain.ids_then(&envelope.target),
            });
        }
        let mut envelope = envelope;
        loop {
            // Stateless workers stay local: a pool per silo, no directory entry.
            if let Some(cluster) = self.cluster.get()
                && registration.options.stateless_worker.is_none()
            {
                match cluster.route(self, envelope, from_silo) {
                    Ok(answered) => return Ok(answered),
                    Err(hosted_here) => envelope = hosted_here,
                }
            }
            match self.route_local(envelope, registration, kind) {
                Ok(answered) => return Ok(answered),
                Err(Routed::Cluster(returned)) => envelope = returned,
                Err(Routed::Failed(error)) => return Err(error),
            }
        }
    }

    /// The GPU variant or the catalog's activation of a checked call's grain. In a cluster,
    /// an activation is created only while the grain is hosted here (registered to this silo):
    /// otherwise the envelope comes back for the cluster path.
    // The envelope comes back by value: boxing it would cost an allocation on every call.
    #[allow(clippy::result_large_err)]
    fn route_local(
        self: &Arc<Self>,
        envelope: Envelope,
        registration: &Arc<Registration>,
        kind: Interleave,
    ) -> Result<Answered, Routed> {
        if let Some(gpu) = &registration.gpu
            && let Some(answered) = gpu.route(self, &envelope)
        {
            return Ok(answered);
        }
        let gate = self
            .cluster
            .get()
            .filter(|_| registration.options.stateless_worker.is_none());
        // A send fails only if the activation has just gone; its successor, found by routing
        // again, already holds every call that was sent to the old one, so order is kept.
        let mut envelope = envelope;
        loop {
            let may_create = || gate.is_none_or(|c| c.hosted.contains_key(&envelope.target));
            let Some(handle) =
                self.catalog
                    .activation_for(&envelope.target, self, registration, &may_create)
            else {
                return Err(Routed::Cluster(envelope));
            };
            if handle.queue_depth() >= self.config.max_queued_calls {
                return Err(Routed::Failed(CallError::rejected(
                    RejectCode::Overloaded,
                    format!(
                        "{} has {} calls queued (limit {})",
                        envelope.target,
                        handle.queue_depth(),
                        self.config.max_queued_calls
                    ),
                )));
            }
            let limit = self.config.max_message_bytes;
            let inline = registration
                .handler
                .try_inline(&handle, &envelope, kind, limit);
            if let Some(answered) = inline {
                return Ok(answered);
            }
            let (reply, answer) = oneshot::channel();
            let deadline =
                crate::deadline::instant_after(tokio::time::Instant::now(), envelope.timeout);
            let call = Box::new(Call {
                envelope,
                kind,
                reply,
                deadline,
            });
            match handle.send(call) {
                Ok(()) => return Ok(Answered::Waiting(answer)),
                Err(returned) => envelope = returned.envelope,
            }
        }
    }

    /// The registration of the envelope's grain type, if it implements the envelope's interface.
    fn registration(&self, envelope: &Envelope) -> Result<&Arc<Registration>, CallError> {
        let grain_type = &envelope.target.grain_type;
        let registration = self.registry.get(grain_type).ok_or_else(|| {
            CallError::rejected(
                RejectCode::UnknownGrainType,
                format!("no grain type {grain_type} on this silo"),
            )
        })?;
        let interface = registration.handler.interface();
        // A reference of this process names the interface with the very same static string.
        if !std::ptr::eq(&*envelope.interface, interface) && envelope.interface != interface {
            return Err(CallError::rejected(
                RejectCode::WrongInterface,
                format!(
                    "grain type {grain_type} implements {interface}, not {}",
                    envelope.interface
                ),
            ));
        }
        Ok(registration)
    }
}

/// Why the local part of routing did not take a call.
pub(crate) enum Routed {
    /// The grain is not hosted here (any more): the cluster path takes the envelope.
    Cluster(Envelope),
    /// Refused.
    Failed(CallError),
}

/// The wait for an answer, whichever way it comes.
async fn answered_future(answer: Answered) -> Result<Payload, CallError> {
    match answer {
        Answered::Ready(result) => result,
        Answered::Running(running) => running.await,
        Answered::Timed(pending) => pending.await,
        Answered::Waiting(answer) => Reply(answer).await,
    }
}

/// The answer of a queued call, from the activation task.
struct Reply(oneshot::Receiver<Result<Payload, CallError>>);

impl std::future::Future for Reply {
    type Output = Result<Payload, CallError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|answer| {
            answer.unwrap_or_else(|_| {
                Err(CallError::SiloUnavailable(
                    "the activation ended without answering".into(),
                ))
            })
        })
    }
}

/// Whether a call to `target` would wait for a turn that is itself waiting on the call's
/// `chain`. Every waiting turn of the target must let the call interleave; a stateless worker
/// deadlocks only when all the activations its pool may have are waiting on the chain.
pub(crate) fn would_wait_on_itself(
    chain: &CallChain,
    target: &GrainId,
    kind: Interleave,
    options: &GrainOptions,
) -> bool {
    let mut waiting = chain.links().iter().filter(|link| link.grain == *target);
    match options.stateless_worker {
        None => waiting.any(|link| !kind.may_join(link.turn, options.reentrant)),
        Some(pool) => waiting.count() >= pool,
    }
}

/// The rejection of a message over `SiloConfig::max_message_bytes`.
pub(crate) fn too_large(what: &str, len: usize, max: usize) -> CallError {
    CallError::rejected(
        RejectCode::TooLarge,
        format!("{what} of {len} bytes exceed the limit of {max} bytes"),
    )
}

/// The invoker behind references made on a silo.
pub(crate) struct SiloInvoker {
    silo: Arc<SiloInner>,
}

impl Invoker for SiloInvoker {
    fn invoke(&self, request: Request) -> PendingCall {
        let envelope = self.silo.envelope(request);
        self.silo.send(envelope)
    }

    fn invoke_memo(&self, call: CallRequest<'_>, args: Payload, memo: &RouteMemo) -> PendingCall {
        self.silo.send_remembered(call, args, memo)
    }
}

/// The invoker of factories handed out after shutdown.
struct StoppedInvoker;

impl Invoker for StoppedInvoker {
    fn invoke(&self, _: Request) -> PendingCall {
        PendingCall::answered(Err(CallError::ShuttingDown))
    }
}
