//! The activation task: runs one grain instance's turns.
//!
//! Messages are taken from the mailbox in order. A `&mut self` call runs alone. A `&self` call
//! starts an *interleaving phase*: later messages that may interleave with everything running
//! (see `Interleave::may_join`) start at once; the first one that may not waits until the phase
//! has drained, which keeps per-caller FIFO order. A panic drops the grain instance: the caller
//! gets `GrainPanicked`, and the next message starts a fresh instance from `Grain::create`.

use std::any::Any;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use silica_grains::{
    BoxFuture, CallError, DeactivationReason, Grain, GrainContext, GrainId, Interleave, InterfaceDispatch, RejectCode,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::timers::Timers;
use super::{ActivationHandle, Call, ContextRuntime, Message};
use crate::caller::{TurnScope, in_turn};
use crate::registry::Registration;
use crate::runtime::SiloInner;

pub(super) struct Activation<G: Grain> {
    id: Arc<GrainId>,
    inbox: mpsc::UnboundedReceiver<Message>,
    handle: Arc<ActivationHandle>,
    runtime: Arc<ContextRuntime>,
    context: GrainContext,
    silo: Arc<SiloInner>,
    registration: Arc<Registration>,
    /// `None` before the first call, and after a panic dropped the instance.
    grain: Option<G>,
    timers: Timers<G>,
    /// Calls handled; idle collection compares it across an idle period.
    calls: u64,
}

/// What a finished call reports to the activation loop.
struct Outcome {
    kind: Interleave,
    panicked: bool,
}

impl<G: Grain> Activation<G> {
    pub(super) fn new(
        id: GrainId,
        inbox: mpsc::UnboundedReceiver<Message>,
        handle: Arc<ActivationHandle>,
        runtime: Arc<ContextRuntime>,
        context: GrainContext,
        silo: Arc<SiloInner>,
        registration: Arc<Registration>,
    ) -> Self {
        let timers = Timers::new(runtime.mailbox.clone(), silo.tracker.clone());
        Self { id: Arc::new(id), inbox, handle, runtime, context, silo, registration, grain: None, timers, calls: 0 }
    }

    pub(super) async fn run(mut self) {
        let reason = self.serve().await;
        if let Some(reason) = reason {
            self.finish(reason).await;
        }
        self.timers.cancel_all();
        self.silo.catalog.remove(&self.id, &self.handle);
        self.handle.gone.cancel();
    }

    /// Serves messages until it is time to deactivate; `None` if shutdown's grace ran out.
    async fn serve(&mut self) -> Option<DeactivationReason> {
        let idle_after = self.registration.options.idle_after;
        let abort = self.silo.abort.clone();
        let mut next: Option<Message> = None;
        let mut idle = Box::pin(tokio::time::sleep(idle_after));
        let mut calls_at_arm = self.calls;
        loop {
            let message = match next.take() {
                Some(message) => message,
                None => tokio::select! {
                    biased;
                    _ = abort.cancelled() => return None,
                    message = self.inbox.recv() => message?,
                    _ = &mut idle => {
                        if self.calls == calls_at_arm && self.handle.queue_depth() == 0 {
                            return Some(DeactivationReason::Idle);
                        }
                        calls_at_arm = self.calls;
                        idle.as_mut().reset(tokio::time::Instant::now() + idle_after);
                        continue;
                    }
                },
            };
            match message {
                Message::Call(call) => next = self.call(call, &abort).await,
                Message::Tick(timer) => self.tick(timer).await,
                Message::AddTimer(timer) => self.timers.add(timer),
                Message::Deactivate(reason) => return Some(reason),
            }
            if self.runtime.deactivate_requested.load(Ordering::Acquire) && next.is_none() && self.inbox.is_empty() {
                return Some(DeactivationReason::Requested);
            }
        }
    }

    /// Closes the mailbox, serves what was already queued, and runs `on_deactivate`.
    async fn finish(&mut self, reason: DeactivationReason) {
        self.inbox.close();
        let abort = self.silo.abort.clone();
        let mut next = None;
        loop {
            let message = match next.take() {
                Some(message) => message,
                None => match self.inbox.recv().await {
                    Some(message) => message,
                    None => break,
                },
            };
            if let Message::Call(call) = message {
                next = self.call(call, &abort).await;
            }
        }
        if let Some(grain) = self.grain.as_mut() {
            if AssertUnwindSafe(grain.on_deactivate(reason)).catch_unwind().await.is_err() {
                tracing::error!(grain = %self.id, "on_deactivate panicked");
            }
        }
    }

    /// Runs a call (and, for `&self` calls, everything that may interleave with it). Returns a
    /// message taken from the mailbox that could not join the phase and must run next.
    async fn call(&mut self, call: Call, abort: &CancellationToken) -> Option<Message> {
        self.calls += 1;
        if !self.ensure_active(&call).await {
            self.answer(call, Err(activation_failed()));
            return None;
        }
        if call.kind == Interleave::Exclusive {
            let grain = self.grain.as_mut().expect("ensured above");
            let dispatched = <G::Interface as InterfaceDispatch<G>>::dispatch_mut(grain, &call.envelope.method, &call.envelope.args);
            let outcome = tokio::select! {
                outcome = execute(dispatched, call, &self.id, &self.handle) => outcome,
                _ = abort.cancelled() => return None,
            };
            if outcome.panicked {
                self.drop_instance();
            }
            return None;
        }
        self.interleave(call, abort).await
    }

    /// An interleaving phase, started by `first`.
    async fn interleave(&mut self, first: Call, abort: &CancellationToken) -> Option<Message> {
        let reentrant = self.registration.options.reentrant;
        let grain = self.grain.as_ref().expect("ensured by the caller");
        let (id, handle, inbox) = (&self.id, &self.handle, &mut self.inbox);
        let mut running_kinds: HashMap<Interleave, usize> = HashMap::new();
        let mut running = FuturesUnordered::new();
        let start = |call: Call, running_kinds: &mut HashMap<Interleave, usize>| {
            *running_kinds.entry(call.kind).or_default() += 1;
            let dispatched = <G::Interface as InterfaceDispatch<G>>::dispatch_ref(grain, &call.envelope.method, &call.envelope.args);
            execute(dispatched, call, id, handle)
        };
        running.push(start(first, &mut running_kinds));
        let mut held_back = None;
        let mut panicked = false;
        let mut calls = 0;
        while !running.is_empty() {
            tokio::select! {
                biased;
                _ = abort.cancelled() => return None,
                Some(outcome) = running.next() => {
                    let Outcome { kind, panicked: p } = outcome;
                    panicked |= p;
                    if let Some(count) = running_kinds.get_mut(&kind) {
                        *count -= 1;
                    }
                }
                message = inbox.recv(), if held_back.is_none() && !panicked => match message {
                    Some(Message::Call(call)) if joins(call.kind, &running_kinds, reentrant) => {
                        calls += 1;
                        running.push(start(call, &mut running_kinds));
                    }
                    Some(other) => held_back = Some(other),
                    None => {}
                },
            }
        }
        drop(running);
        self.calls += calls;
        if panicked {
            self.drop_instance();
        }
        held_back
    }

    async fn tick(&mut self, timer: u64) {
        let Some(grain) = self.grain.as_mut() else { return };
        let Some(tick) = self.timers.due(timer, grain) else { return };
        if AssertUnwindSafe(tick).catch_unwind().await.is_err() {
            tracing::error!(grain = %self.id, timer, "timer callback panicked; dropping the activation's instance");
            self.drop_instance();
        }
    }

    /// Creates the grain instance if there is none. False if creation or `on_activate` failed;
    /// the next call tries again with a fresh instance.
    async fn ensure_active(&mut self, call: &Call) -> bool {
        if self.grain.is_some() {
            return true;
        }
        let context = self.context.clone();
        let Ok(mut grain) = std::panic::catch_unwind(AssertUnwindSafe(|| G::create(&context))) else {
            tracing::error!(grain = %self.id, "Grain::create panicked");
            return false;
        };
        let scope = TurnScope { parent: call.envelope.chain.clone(), grain: self.id.clone(), turn: Interleave::Exclusive };
        match AssertUnwindSafe(in_turn(scope, grain.on_activate())).catch_unwind().await {
            Ok(Ok(())) => {
                self.grain = Some(grain);
                true
            }
            Ok(Err(error)) => {
                tracing::warn!(grain = %self.id, %error, "on_activate failed");
                false
            }
            Err(_) => {
                tracing::error!(grain = %self.id, "on_activate panicked");
                false
            }
        }
    }

    /// Drops the current instance after a panic; its timers go with it.
    fn drop_instance(&mut self) {
        self.grain = None;
        self.timers.cancel_all();
    }

    fn answer(&self, call: Call, result: Result<Vec<u8>, CallError>) {
        self.handle.in_flight.fetch_sub(1, Ordering::Relaxed);
        let _ = call.reply.send(result);
    }
}

fn activation_failed() -> CallError {
    CallError::rejected(RejectCode::ActivationFailed, "the grain failed to activate")
}

/// Whether a call of `kind` may start while the calls counted in `running` are in progress.
fn joins(kind: Interleave, running: &HashMap<Interleave, usize>, reentrant: bool) -> bool {
    running.iter().filter(|(_, count)| **count > 0).all(|(running, _)| kind.may_join(*running, reentrant))
}

/// Runs one dispatched call inside its turn scope, catching panics, and answers the caller.
async fn execute<'a>(
    dispatched: Result<BoxFuture<'a, Result<Vec<u8>, CallError>>, CallError>,
    call: Call,
    id: &Arc<GrainId>,
    handle: &ActivationHandle,
) -> Outcome {
    let Call { envelope, kind, reply } = call;
    let mut panicked = false;
    let result = match dispatched {
        Err(error) => Err(error),
        Ok(future) => {
            let scope = TurnScope { parent: envelope.chain, grain: id.clone(), turn: kind };
            match AssertUnwindSafe(in_turn(scope, future)).catch_unwind().await {
                Ok(result) => result,
                Err(payload) => {
                    panicked = true;
                    let message = panic_message(payload.as_ref());
                    tracing::error!(grain = %id, method = %envelope.method, %message, "grain handler panicked");
                    Err(CallError::GrainPanicked { grain: (**id).clone(), message })
                }
            }
        }
    };
    handle.in_flight.fetch_sub(1, Ordering::Relaxed);
    let _ = reply.send(result);
    Outcome { kind, panicked }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}
