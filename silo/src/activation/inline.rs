//! Inline turns: a call to an idle activation runs on the caller's thread, at once.
//!
//! Waking the activation task for every call (schedule, poll, then wake the caller back) was most
//! of an in-silo call's cost. When the task is parked on an empty mailbox (see
//! `Mailbox::try_claim_inline`), the caller takes the grain instance, polls the turn once, and in
//! the common case gets the answer right there: no task switch, no channel, no timer. A turn that
//! does not finish on its first poll (it awaits something) is not cancelled if the caller goes
//! away: it is handed to the activation task, at the front of its queue, and the caller waits for
//! its answer as for any queued call. One message at a time, FIFO per caller, and the call-chain
//! scope all hold as on the task.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use silica_client::Envelope;
use silica_grains::{CallError, Grain, InterfaceDispatch, Interleave};
use tokio::sync::oneshot;

use super::turns::{decode_guarded, limit_result, panic_message};
use super::{ActivationHandle, Message};
use crate::caller::{TurnScope, in_turn, in_turn_sync};

/// What a routed call resolves to: an answer already (inline), or a wait for one.
pub(crate) enum Answered {
    Ready(Result<Vec<u8>, CallError>),
    Waiting(oneshot::Receiver<Result<Vec<u8>, CallError>>),
}

type Turn<G> = Pin<Box<dyn Future<Output = (Box<G>, Result<Vec<u8>, CallError>)> + Send>>;

/// Runs the call inline if the activation is idle and active; gives the envelope back if not.
// The envelope comes back by value on the common "not idle" path; boxing it would allocate.
#[allow(clippy::result_large_err)]
pub(crate) fn try_inline<G: Grain>(
    handle: &ActivationHandle,
    envelope: Envelope,
    kind: Interleave,
    max_result_bytes: usize,
) -> Result<Answered, Envelope> {
    // Handlers may use the runtime (timers, spawn); a caller outside one leaves the turn to
    // the activation task, which always runs on the silo's runtime.
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(envelope);
    }
    let Some(grain) = handle.mailbox.try_claim_inline() else {
        return Err(envelope);
    };
    let Ok(grain) = grain.downcast::<G>() else {
        unreachable!("an activation only ever holds instances of its own grain type");
    };
    handle.active.store(true, Ordering::Relaxed);
    let scope = TurnScope {
        parent: envelope.chain.clone(),
        grain: handle.id.clone(),
        turn: kind,
    };
    let mut turn: Turn<G> = Box::pin(run_turn(grain, envelope, kind));
    let waker = futures_util::task::noop_waker();
    let mut context = Context::from_waker(&waker);
    let first_poll = std::panic::catch_unwind(AssertUnwindSafe(|| {
        in_turn_sync(scope.clone(), || turn.as_mut().poll(&mut context))
    }));
    match first_poll {
        Ok(Poll::Ready((grain, result))) => {
            handle.mailbox.release_inline(Some(grain));
            Ok(Answered::Ready(limit_result(result, max_result_bytes)))
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
                        Some(grain as Box<dyn std::any::Any + Send>)
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
            handle
                .mailbox
                .hand_over(Message::Resume(Box::pin(in_turn(scope, resume))));
            Ok(Answered::Waiting(answer))
        }
        Err(payload) => {
            drop(turn);
            let message = panic_message(payload.as_ref());
            tracing::error!(grain = %handle.id, %message, "grain handler panicked");
            handle.mailbox.release_inline(None);
            let _ = handle.mailbox.send(Message::InstanceLost);
            Ok(Answered::Ready(Err(CallError::GrainPanicked {
                grain: (*handle.id).clone(),
                message,
            })))
        }
    }
}

/// One turn over an owned instance, so it can move to the task if it does not finish at once.
async fn run_turn<G: Grain>(
    mut grain: Box<G>,
    envelope: Envelope,
    kind: Interleave,
) -> (Box<G>, Result<Vec<u8>, CallError>) {
    let result = {
        let instance: &mut G = &mut grain;
        let (method, args) = (&envelope.method, &envelope.args);
        // Moving the borrow into the closure body makes it `FnOnce`, so the future may keep it.
        let dispatched = decode_guarded(move || {
            let instance = instance;
            match kind {
                Interleave::Exclusive => {
                    <G::Interface as InterfaceDispatch<G>>::dispatch_mut(instance, method, args)
                }
                _ => <G::Interface as InterfaceDispatch<G>>::dispatch_ref(instance, method, args),
            }
        });
        match dispatched {
            Ok(future) => future.await,
            Err(error) => Err(error),
        }
    };
    (grain, result)
}
