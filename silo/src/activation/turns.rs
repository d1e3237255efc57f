//! The activation task: runs the turns of one grain instance that callers do not run inline
//! (see `inline`): calls that arrive while the activation is busy, turns that inline callers
//! hand over, timer ticks, activation and deactivation.
//!
//! Messages are taken from the mailbox in order. A `&mut self` call runs alone. A `&self` call,
//! or the rest of a `&self` turn an inline caller handed over, starts an *interleaving phase*:
//! later messages that may interleave with everything running (see `Interleave::may_join`)
//! start at once; the first one that may not waits until the phase has drained, which keeps
//! per-caller FIFO order. A panic drops the grain instance: the caller gets `GrainPanicked`, and
//! the next message starts a fresh instance from `Grain::create`.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::FutureExt;
use futures_util::future::Either;
use futures_util::stream::{FuturesUnordered, StreamExt};
use silica_client::CallChain;
use silica_grains::BoxFuture;
use silica_grains::Payload;
use silica_grains::grain::Dispatched;
use silica_grains::{
    CallError, DeactivationReason, Grain, GrainContext, GrainId, InterfaceDispatch, Interleave,
    RejectCode,
};

use super::timers::Timers;
use super::{ActivationHandle, Call, Instance, Message};
use crate::caller::{TurnScope, in_turn};
use crate::registry::Registration;
use crate::runtime::SiloInner;

pub(super) struct Activation<G: Grain> {
    id: Arc<GrainId>,
    handle: Arc<ActivationHandle>,
    context: GrainContext,
    silo: Arc<SiloInner>,
    registration: Arc<Registration>,
    /// Made with the first timer: most grains never register one.
    timers: Option<Box<Timers<G>>>,
}

/// What starts an interleaving phase.
enum First {
    /// A `&self` call taken from the mailbox.
    Call(Box<Call>),
    /// The rest of a `&self` inline turn (`Message::Resume`), and how it interleaves.
    Resumed(BoxFuture<'static, Option<Instance>>, Interleave),
}

/// What a finished call reports to the activation loop.
struct Outcome {
    kind: Interleave,
    panicked: bool,
}

impl<G: Grain> Activation<G> {
    pub(super) fn new(
        id: Arc<GrainId>,
        handle: Arc<ActivationHandle>,
        context: GrainContext,
        silo: Arc<SiloInner>,
        registration: Arc<Registration>,
    ) -> Self {
        Self {
            id,
            handle,
            context,
            silo,
            registration,
            timers: None,
        }
    }

    pub(super) async fn run(mut self) {
        // Leaves the catalog even if the task is aborted at the end of shutdown's grace period.
        let _exit = ExitGuard {
            silo: self.silo.clone(),
            id: self.id.clone(),
            handle: self.handle.clone(),
            registration: self.registration.clone(),
        };
        if let Some(reason) = self.serve().await {
            // Boxed, like the other rare paths, so an idle activation's task stays small.
            Box::pin(self.finish(reason)).await;
        }
        if let Some(timers) = self.timers.as_mut() {
            timers.cancel_all();
        }
    }

    /// Serves messages until it is time to deactivate. Idle collection and shutdown arrive as
    /// `Message::Deactivate`, so waiting costs nothing but the mailbox.
    async fn serve(&mut self) -> Option<DeactivationReason> {
        loop {
            let message = self.handle.mailbox.recv().await?;
            match message {
                Message::Call(call) => self.call(call).await,
                Message::Tick(timer) => Box::pin(self.tick(timer)).await,
                Message::AddTimer(timer) => self
                    .timers
                    .get_or_insert_with(|| {
                        Box::new(Timers::new(
                            Arc::downgrade(&self.handle),
                            self.silo.tracker.clone(),
                        ))
                    })
                    .add(*timer),
                Message::Deactivate(reason) => return Some(reason),
                Message::Resume(turn, kind) => self.resume(turn, kind).await,
                Message::InstanceLost => self.drop_instance(),
            }
        }
    }

    /// Finishes an inline turn that did not complete on the caller's thread. A `&self` turn
    /// starts an interleaving phase, as a `&self` call taken from the mailbox does: calls that
    /// may join it (the callbacks it waits for among them) must not wait for it to end.
    async fn resume(&mut self, turn: BoxFuture<'static, Option<Instance>>, kind: Interleave) {
        // The inline turn left a second handle on the instance for this (see `hand_over`).
        if kind != Interleave::Exclusive
            && let Some(instance) = self.handle.take_grain::<G>()
        {
            return Box::pin(self.interleave(instance, First::Resumed(turn, kind))).await;
        }
        let grain = turn.await.and_then(|grain| grain.downcast::<G>().ok());
        self.handle.in_flight.fetch_sub(1, Ordering::Relaxed);
        match grain {
            Some(grain) => self.handle.put_grain(grain),
            None => self.drop_instance(),
        }
    }

    /// Closes the mailbox, serves what was already queued, and runs `on_deactivate`.
    async fn finish(&mut self, reason: DeactivationReason) {
        self.handle.mailbox.close();
        loop {
            let Some(message) = self.handle.mailbox.recv().await else {
                break;
            };
            match message {
                Message::Call(call) => self.call(call).await,
                // Not expected here (no inline turn starts once closing), but a turn handed
                // over must finish, or its caller would wait for nothing.
                Message::Resume(turn, kind) => self.resume(turn, kind).await,
                _ => {}
            }
        }
        let scope = self.own_turn();
        if let Some(mut grain) = self.handle.take_grain::<G>()
            && guarded(|| in_turn(scope, exclusive(&mut grain).on_deactivate(reason)))
                .await
                .is_err()
        {
            tracing::error!(grain = %self.id, "on_deactivate panicked");
        }
    }

    /// Runs a call (and, for `&self` calls, everything that may interleave with it; what may
    /// not goes back to the front of the mailbox).
    async fn call(&mut self, call: Box<Call>) {
        // As in Orleans, a request whose caller already timed out is not run.
        if call.expired() {
            let timeout = call.envelope.timeout;
            return self.answer(call, Err(CallError::Timeout(timeout)));
        }
        let grain = match self.handle.take_grain::<G>() {
            Some(grain) => grain,
            None => match Box::pin(self.activate(&call)).await {
                Some(grain) => grain,
                None => {
                    // `on_activate` may have registered timers before it failed.
                    self.drop_instance();
                    return self.answer(call, Err(activation_failed()));
                }
            },
        };
        if call.kind != Interleave::Exclusive {
            return Box::pin(self.interleave(grain, First::Call(call))).await;
        }
        let mut grain = grain;
        let instance: &mut G = exclusive(&mut grain);
        let (method, args) = (&call.envelope.method, &call.envelope.args);
        let dispatched = decode_guarded(move || {
            let instance = instance;
            <G::Interface as InterfaceDispatch<G>>::dispatch_mut(instance, method, args)
        });
        // Boxed so the idle task does not carry the state of a running call.
        let limit = self.silo.config.max_message_bytes;
        let outcome = Box::pin(execute(dispatched, call, &self.id, &self.handle, limit)).await;
        if outcome.panicked {
            drop(grain);
            self.drop_instance();
        } else {
            self.handle.put_grain(grain);
        }
    }

    /// An interleaving phase, started by `first`.
    async fn interleave(&mut self, instance: Arc<G>, first: First) {
        let reentrant = self.registration.options.reentrant;
        let grain: &G = &instance;
        let (id, handle) = (&self.id, &self.handle);
        let mut held_back = VecDeque::new();
        let limit = self.silo.config.max_message_bytes;
        let mut running_kinds: HashMap<Interleave, usize> = HashMap::new();
        let mut running = FuturesUnordered::new();
        let start = |call: Box<Call>, running_kinds: &mut HashMap<Interleave, usize>| {
            *running_kinds.entry(call.kind).or_default() += 1;
            let dispatched = if call.expired() {
                Err(CallError::Timeout(call.envelope.timeout))
            } else {
                decode_guarded(|| {
                    <G::Interface as InterfaceDispatch<G>>::dispatch_ref(
                        grain,
                        &call.envelope.method,
                        &call.envelope.args,
                    )
                })
            };
            Either::Left(execute(dispatched, call, id, handle, limit))
        };
        match first {
            First::Call(call) => running.push(start(call, &mut running_kinds)),
            First::Resumed(turn, kind) => {
                *running_kinds.entry(kind).or_default() += 1;
                running.push(Either::Right(resumed(turn, kind, handle)));
            }
        }
        // Once a message may not join, later ones wait behind it (FIFO), except calls from the
        // waiting turns' own call chain: they are the callbacks those turns are waiting for.
        let mut inbox_open = true;
        let mut panicked = false;
        while !running.is_empty() {
            tokio::select! {
                biased;
                Some(outcome) = running.next() => {
                    let Outcome { kind, panicked: p } = outcome;
                    panicked |= p;
                    if let Some(count) = running_kinds.get_mut(&kind) {
                        *count -= 1;
                    }
                }
                message = handle.mailbox.recv(), if inbox_open && !panicked => match message {
                    Some(Message::Call(call))
                        if (held_back.is_empty() || call.envelope.chain.find(id).is_some())
                            && joins(call.kind, &running_kinds, reentrant) =>
                    {
                        running.push(start(call, &mut running_kinds));
                    }
                    Some(other) => held_back.push_back(other),
                    // Closed and drained (the activation is deactivating): stop reading.
                    None => inbox_open = false,
                },
            }
        }
        drop(running);
        // They are older than anything still in the mailbox.
        handle.mailbox.requeue_front(held_back);
        if panicked {
            drop(instance);
            self.drop_instance();
        } else {
            self.handle.put_grain(instance);
        }
    }

    async fn tick(&mut self, timer: u64) {
        let scope = self.own_turn();
        let Some(mut grain) = self.handle.take_grain::<G>() else {
            return;
        };
        if run_tick(
            exclusive(&mut grain),
            self.timers.as_deref_mut(),
            timer,
            scope,
        )
        .await
        {
            tracing::error!(grain = %self.id, timer, "timer callback panicked; dropping the activation's instance");
            drop(grain);
            self.drop_instance();
        } else {
            self.handle.put_grain(grain);
        }
    }

    /// Creates the grain instance; `None` if creation or `on_activate` failed (the next call
    /// tries again with a fresh instance).
    async fn activate(&mut self, call: &Call) -> Option<Arc<G>> {
        let context = self.context.clone();
        let Ok(mut grain) =
            std::panic::catch_unwind(AssertUnwindSafe(|| Arc::new(G::create(&context))))
        else {
            tracing::error!(grain = %self.id, "Grain::create panicked");
            return None;
        };
        let scope = TurnScope {
            parent: call.envelope.chain.clone(),
            grain: self.id.clone(),
            turn: Interleave::Exclusive,
        };
        match guarded(|| in_turn(scope, exclusive(&mut grain).on_activate())).await {
            Ok(Ok(())) => Some(grain),
            Ok(Err(error)) => {
                tracing::warn!(grain = %self.id, %error, "on_activate failed");
                None
            }
            Err(_) => {
                tracing::error!(grain = %self.id, "on_activate panicked");
                None
            }
        }
    }

    /// The scope of a turn the activation starts itself (timer ticks, `on_deactivate`): calls
    /// made from it carry this grain on their chain.
    fn own_turn(&self) -> TurnScope {
        TurnScope {
            parent: CallChain::EMPTY,
            grain: self.id.clone(),
            turn: Interleave::Exclusive,
        }
    }

    /// Forgets the current instance after a panic (the turn that panicked dropped it); its
    /// timers go with it, those its turns registered and this task has not started yet too.
    /// No turn of a successor has run yet, so every registration still queued is the old
    /// instance's.
    fn drop_instance(&mut self) {
        drop(self.handle.take_grain::<G>());
        if let Some(timers) = self.timers.as_mut() {
            timers.cancel_all();
        }
        self.handle.mailbox.drop_timer_registrations();
    }

    #[allow(clippy::boxed_local)] // calls travel boxed; unboxing just to drop would copy
    fn answer(&self, call: Box<Call>, result: Result<Payload, CallError>) {
        self.handle.in_flight.fetch_sub(1, Ordering::Relaxed);
        let _ = call.reply.send(result);
    }
}

/// Takes an ended activation out of the catalog and releases callers waiting for it to go.
struct ExitGuard {
    silo: Arc<SiloInner>,
    id: Arc<GrainId>,
    handle: Arc<ActivationHandle>,
    registration: Arc<Registration>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        // Normally already closing; not if the task was aborted or its loop died. Either way,
        // what is still queued goes to the successor with what was held back.
        self.handle.mailbox.close();
        self.silo
            .catalog
            .retire(&self.id, &self.handle, &self.silo, &self.registration);
    }
}

/// The instance for an exclusive turn. Only turns hold handles on an instance, and none runs
/// beside an exclusive one, so the turn's handle is the only one.
fn exclusive<G>(grain: &mut Arc<G>) -> &mut G {
    Arc::get_mut(grain).expect("an exclusive turn holds the only handle on its grain instance")
}

/// Finishes the rest of an inline turn inside an interleaving phase. The turn's own handle on
/// the instance is dropped here, so the phase's is the only one again when the phase ends.
async fn resumed(
    turn: BoxFuture<'static, Option<Instance>>,
    kind: Interleave,
    handle: &ActivationHandle,
) -> Outcome {
    let panicked = turn.await.is_none();
    handle.in_flight.fetch_sub(1, Ordering::Relaxed);
    Outcome { kind, panicked }
}

/// Runs a due timer's callback as a turn; true if it panicked.
async fn run_tick<G: Grain>(
    grain: &mut G,
    timers: Option<&mut Timers<G>>,
    timer: u64,
    scope: TurnScope,
) -> bool {
    let Some(timers) = timers else {
        return false;
    };
    // Moving the borrows into the closure body makes it `FnOnce`, so the future may keep them.
    let due = move || {
        let (timers, grain) = (timers, grain);
        timers.due(timer, grain)
    };
    match std::panic::catch_unwind(AssertUnwindSafe(due)) {
        Ok(None) => false,
        Ok(Some(tick)) => AssertUnwindSafe(in_turn(scope, tick))
            .catch_unwind()
            .await
            .is_err(),
        Err(_) => true,
    }
}

/// Refuses a result over the message size limit.
pub(super) fn limit_result(
    result: Result<Payload, CallError>,
    max_result_bytes: usize,
) -> Result<Payload, CallError> {
    match result {
        Ok(bytes) if bytes.len() > max_result_bytes => Err(crate::runtime::too_large(
            "the result",
            bytes.len(),
            max_result_bytes,
        )),
        other => other,
    }
}

/// Builds a future with `make` and runs it, catching a panic in either step.
async fn guarded<F: Future>(make: impl FnOnce() -> F) -> Result<F::Output, Box<dyn Any + Send>> {
    let future = std::panic::catch_unwind(AssertUnwindSafe(make))?;
    AssertUnwindSafe(future).catch_unwind().await
}

/// Runs a dispatcher's synchronous part (argument decoding, which runs user `Deserialize`
/// code), turning a panic there into a rejection of the call.
pub(super) fn decode_guarded<'a>(dispatch: impl FnOnce() -> Dispatched<'a>) -> Dispatched<'a> {
    std::panic::catch_unwind(AssertUnwindSafe(dispatch)).unwrap_or_else(|payload| {
        Err(CallError::rejected(
            RejectCode::BadArguments,
            format!(
                "decoding the arguments panicked: {}",
                panic_message(payload.as_ref())
            ),
        ))
    })
}

fn activation_failed() -> CallError {
    CallError::rejected(RejectCode::ActivationFailed, "the grain failed to activate")
}

/// Whether a call of `kind` may start while the calls counted in `running` are in progress.
fn joins(kind: Interleave, running: &HashMap<Interleave, usize>, reentrant: bool) -> bool {
    running
        .iter()
        .filter(|(_, count)| **count > 0)
        .all(|(running, _)| kind.may_join(*running, reentrant))
}

/// Runs one dispatched call inside its turn scope, catching panics, and answers the caller.
/// The call stays boxed throughout, which keeps the activation task's future small.
async fn execute<'a>(
    dispatched: Dispatched<'a>,
    call: Box<Call>,
    id: &Arc<GrainId>,
    handle: &ActivationHandle,
    max_result_bytes: usize,
) -> Outcome {
    let kind = call.kind;
    let mut panicked = false;
    let result = match dispatched {
        Err(error) => Err(error),
        Ok(future) => {
            let scope = TurnScope {
                parent: call.envelope.chain.clone(),
                grain: id.clone(),
                turn: kind,
            };
            match AssertUnwindSafe(in_turn(scope, future))
                .catch_unwind()
                .await
            {
                Ok(result) => result,
                Err(payload) => {
                    panicked = true;
                    let message = panic_message(payload.as_ref());
                    tracing::error!(grain = %id, method = %call.envelope.method, %message, "grain handler panicked");
                    Err(CallError::GrainPanicked {
                        grain: (**id).clone(),
                        message,
                    })
                }
            }
        }
    };
    let result = limit_result(result, max_result_bytes);
    handle.in_flight.fetch_sub(1, Ordering::Relaxed);
    let _ = call.reply.send(result);
    Outcome { kind, panicked }
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}
