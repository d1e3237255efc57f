//! Inline turns: a call to an idle activation runs on the caller's thread, at once.
//!
//! Waking the activation task for every call (schedule, poll, then wake the caller back) was most
//! of an in-silo call's cost. When the task is parked on an empty mailbox (see
//! `Mailbox::try_claim_inline`), the caller takes the grain instance, polls the turn once, and in
//! the common case gets the answer right there: no task switch, no channel, no timer. A turn that
//! does not finish on its first poll (it awaits something) is not cancelled if the caller goes
//! away: it is handed to the activation task, at the front of its queue, and the caller waits for
//! its answer as for any queued call. The task finishes it under the same rules as a turn it
//! started itself: a `&self` turn lets the calls that may interleave with it run beside it. One
//! message at a time, FIFO per caller, and the call-chain scope all hold as on the task.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use silica_client::Envelope;
use silica_grains::Payload;
use silica_grains::grain::OwnedTurn;
use silica_grains::{CallError, Grain, InterfaceDispatch, Interleave, RejectCode};
use tokio::sync::oneshot;

use super::turns::{limit_result, panic_message};
use super::{ActivationHandle, Instance, Message};
use crate::caller::{TurnScope, in_turn, in_turn_sync};

/// What a routed call resolves to: an answer already (inline), or a wait for one.
pub(crate) enum Answered {
    Ready(Result<Payload, CallError>),
    Waiting(oneshot::Receiver<Result<Payload, CallError>>),
    /// Running on the caller's side (a call waiting for its activation, or routed elsewhere).
    Running(silica_grains::BoxFuture<'static, Result<Payload, CallError>>),
    /// Running on the caller's side with its timeout already attached (a GPU variant's method
    /// awaiting its ring: one allocation for both).
    Timed(silica_grains::PendingCall),
}

/// How many inline turns may nest on one thread. A handler's call to an idle grain runs that
/// grain's first poll inside its own, so a chain of calls to active grains nests on the first
/// caller's stack, at several KiB a level (about 15 KiB in a debug build): unbounded, a deep
/// chain overflows it and aborts the process. Past this depth a call queues instead, and the
/// target's task runs it from a stack of its own.
const MAX_INLINE_DEPTH: u32 = 16;

thread_local! {
    /// The inline turns being polled on this thread, each inside the one before.
    static INLINE_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// One level of inline nesting on this thread, for as long as it lives.
struct Nested;

impl Nested {
    /// A level more; `None` if this thread is already `MAX_INLINE_DEPTH` deep.
    fn enter() -> Option<Self> {
        INLINE_DEPTH.with(|depth| {
            let entered = depth.get();
            (entered < MAX_INLINE_DEPTH).then(|| {
                depth.set(entered + 1);
                Nested
            })
        })
    }
}

impl Drop for Nested {
    fn drop(&mut self) {
        INLINE_DEPTH.with(|depth| depth.set(depth.get() - 1));
    }
}

/// Runs the call inline if the activation is idle and active, and this thread is not already
/// `MAX_INLINE_DEPTH` inline turns deep; `None` if not.
pub(crate) fn try_inline<G: Grain>(
    handle: &ActivationHandle,
    envelope: &Envelope,
    kind: Interleave,
    max_result_bytes: usize,
) -> Option<Answered> {
    // Handlers may use the runtime (timers, spawn); a caller outside one leaves the turn to
    // the activation task, which always runs on the silo's runtime.
    // (`try_id` is a thread-local read; `Handle::try_current` clones a shared `Arc`, which on
    // every call would make cores fight over its count, so it only covers `block_on`.)
    if tokio::task::try_id().is_none() && tokio::runtime::Handle::try_current().is_err() {
        return None;
    }
    let _nested = Nested::enter()?;
    let grain = handle.mailbox.try_claim_inline()?;
    let Ok(grain) = grain.downcast::<G>() else {
        unreachable!("an activation only ever holds instances of its own grain type");
    };
    handle.active.store(true, Ordering::Relaxed);
    // A `&self` turn that has to wait goes on beside the calls that may interleave with it,
    // which the task runs with this second handle on the instance.
    let shared = (kind != Interleave::Exclusive).then(|| grain.clone());
    let scope = TurnScope {
        parent: envelope.chain.clone(),
        grain: handle.id.clone(),
        turn: kind,
    };
    let method = &envelope.method;
    let dispatched = std::panic::catch_unwind(AssertUnwindSafe(|| {
        <G::Interface as InterfaceDispatch<G>>::dispatch_owned(grain, method, &envelope.args)
    }));
    let mut turn: OwnedTurn<G> = match dispatched {
        Ok(Ok(turn)) => turn,
        Ok(Err((grain, error))) => {
            drop(shared);
            handle.mailbox.release_inline(grain);
            return Some(Answered::Ready(Err(error)));
        }
        Err(payload) => {
            // A `Deserialize` impl panicked while decoding; the instance went with it.
            drop(shared);
            handle.mailbox.release_inline_lost();
            return Some(Answered::Ready(Err(CallError::rejected(
                RejectCode::BadArguments,
                format!(
                    "decoding the arguments panicked: {}",
                    panic_message(payload.as_ref())
                ),
            ))));
        }
    };
    let waker = futures_util::task::noop_waker();
    let mut context = Context::from_waker(&waker);
    let first_poll = std::panic::catch_unwind(AssertUnwindSafe(|| {
        in_turn_sync(scope.clone(), || turn.as_mut().poll(&mut context))
    }));
    match first_poll {
        Ok(Poll::Ready((grain, result))) => {
            // First, so that the instance put back has one handle again: the next turn may be
            // exclusive.
            drop(shared);
            handle.mailbox.release_inline(grain);
            Some(Answered::Ready(limit_result(result, max_result_bytes)))
        }
        Ok(Poll::Pending) => {
            // The turn awaits something: the task finishes it, so the caller cannot cancel it.
            let (reply, answer) = oneshot::channel();
            handle.in_flight.fetch_add(1, Ordering::Relaxed);
            let grain_id = handle.id.clone();
            let resume = async move {
                match AssertUnwindSafe(turn).catch_unwind().await {
                    Ok((grain, result)) => {
                        let _ = reply.send(limit_result(result, max_result_bytes));
                        Some(grain as Instance)
                    }
                    Err(payload) => {
                        let message = panic_message(payload.as_ref());
                        let _ = reply.send(Err(CallError::GrainPanicked {
                            grain: (*grain_id).clone(),
                            message,
                        }));
                        None
                    }
                }
            };
            let resume = Message::Resume(Box::pin(in_turn(scope, resume)), kind);
            handle
                .mailbox
                .hand_over(resume, shared.map(|grain| grain as Instance));
            Some(Answered::Waiting(answer))
        }
        Err(payload) => {
            drop((turn, shared));
            let message = panic_message(payload.as_ref());
            tracing::error!(grain = %handle.id, %message, "grain handler panicked");
            handle.mailbox.release_inline_lost();
            Some(Answered::Ready(Err(CallError::GrainPanicked {
                grain: (*handle.id).clone(),
                message,
            })))
        }
    }
}
