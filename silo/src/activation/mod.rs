//! Activations: one in-memory instance of a grain, its mailbox, and the task that runs its turns.
//!
//! # Layout
//! - this file: `ActivationHandle` (what the catalog keeps), `Message`, `Call`, `spawn`.
//! - `turns`: the activation task: turn-based execution, interleaving, panics, deactivation.
//! - `timers`: grain timers, delivered as turns through the mailbox.

mod timers;
mod turns;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use silica_client::Envelope;
use silica_grains::context::ActivationRuntime;
use silica_grains::{CallError, DeactivationReason, Grain, GrainContext, GrainId, Interleave};
use silica_grains::context::TimerRegistration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::registry::Registration;
use crate::runtime::SiloInner;

/// A call waiting in a mailbox.
pub(crate) struct Call {
    pub(crate) envelope: Envelope,
    /// How the method interleaves (resolved when the call was routed).
    pub(crate) kind: Interleave,
    pub(crate) reply: oneshot::Sender<Result<Vec<u8>, CallError>>,
}

/// What an activation's mailbox carries. Everything that touches grain state is a message, so it
/// runs as a turn in arrival order.
pub(crate) enum Message {
    Call(Call),
    /// A timer is due.
    Tick(u64),
    /// A timer registered through the grain's context.
    AddTimer(TimerRegistration),
    /// End the activation once the messages before this one are done.
    Deactivate(DeactivationReason),
}

/// The catalog's handle on a running activation.
pub(crate) struct ActivationHandle {
    pub(crate) mailbox: mpsc::UnboundedSender<Message>,
    /// Calls sent and not yet answered: the activation's queue depth.
    pub(crate) in_flight: AtomicUsize,
    /// Cancelled once the activation has ended and left the catalog; callers whose send failed
    /// (the mailbox closed while it was deactivating) wait on it and route again.
    pub(crate) gone: CancellationToken,
    /// Set once shutdown has asked this activation to deactivate.
    pub(crate) shutdown_sent: AtomicBool,
}

impl ActivationHandle {
    /// Hands `call` to the activation, or gives it back if the mailbox has closed.
    pub(crate) fn send(&self, call: Call) -> Result<(), Call> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        match self.mailbox.send(Message::Call(call)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(Message::Call(call))) => {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                Err(call)
            }
            Err(_) => unreachable!("send returns the message it was given"),
        }
    }

    /// Calls queued or running on this activation.
    pub(crate) fn queue_depth(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// The `ActivationRuntime` a grain's context talks to.
struct ContextRuntime {
    mailbox: mpsc::WeakUnboundedSender<Message>,
    deactivate_requested: AtomicBool,
}

impl ActivationRuntime for ContextRuntime {
    fn register_timer(&self, timer: TimerRegistration) {
        if let Some(mailbox) = self.mailbox.upgrade() {
            let _ = mailbox.send(Message::AddTimer(timer));
        }
    }

    fn deactivate_on_idle(&self) {
        self.deactivate_requested.store(true, Ordering::Release);
    }
}

/// Starts the task of a new activation of `G` for `id`.
pub(crate) fn spawn<G: Grain>(id: GrainId, silo: &Arc<SiloInner>, registration: Arc<Registration>) -> Arc<ActivationHandle> {
    let (mailbox, inbox) = mpsc::unbounded_channel();
    let runtime = Arc::new(ContextRuntime { mailbox: mailbox.downgrade(), deactivate_requested: AtomicBool::new(false) });
    let handle = Arc::new(ActivationHandle {
        mailbox,
        in_flight: AtomicUsize::new(0),
        gone: CancellationToken::new(),
        shutdown_sent: AtomicBool::new(false),
    });
    let context = GrainContext::new::<G>(id.clone(), silo.factory(), runtime.clone());
    let activation = turns::Activation::<G>::new(id, inbox, handle.clone(), runtime, context, silo.clone(), registration);
    silo.tracker.spawn(activation.run());
    handle
}
