//! Activations: one in-memory instance of a grain, its mailbox, and the task that runs its turns.
//!
//! # Layout
//! - this file: `ActivationHandle` (what the catalog keeps), `Message`, `Call`, `spawn`.
//! - `mailbox`: the activation's FIFO queue.
//! - `turns`: the activation task: turn-based execution, interleaving, panics, deactivation.
//! - `timers`: grain timers, delivered as turns through the mailbox.
//! - `inline`: running a turn on the caller's thread when the activation is idle.

mod inline;
mod mailbox;
mod timers;
mod turns;

pub(crate) use inline::{Answered, try_inline};
pub(crate) use turns::panic_message;

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use silica_client::Envelope;
use silica_grains::Payload;
use silica_grains::context::ActivationRuntime;
use silica_grains::context::TimerRegistration;
use silica_grains::{
    BoxFuture, CallError, DeactivationReason, Grain, GrainContext, GrainId, Interleave,
};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use self::mailbox::Mailbox;
use crate::registry::Registration;
use crate::runtime::SiloInner;

/// A grain instance, type-erased. Shared so that `&self` turns can interleave with a turn that
/// owns a handle (an inline turn finished by the task); an exclusive turn holds the only one.
pub(crate) type Instance = Arc<dyn Any + Send + Sync>;

/// A call waiting in a mailbox.
pub(crate) struct Call {
    pub(crate) envelope: Envelope,
    /// How the method interleaves (resolved when the call was routed).
    pub(crate) kind: Interleave,
    pub(crate) reply: oneshot::Sender<Result<Payload, CallError>>,
    /// When the caller stops waiting; a call still queued then is dropped, not run.
    pub(crate) deadline: tokio::time::Instant,
}

impl Call {
    /// Whether the caller has already given up on this call.
    pub(crate) fn expired(&self) -> bool {
        tokio::time::Instant::now() >= self.deadline
    }
}

/// What an activation's mailbox carries. Everything that touches grain state is a message, so it
/// runs as a turn in arrival order.
pub(crate) enum Message {
    /// Boxed so a mailbox slot stays small: idle activations keep their (empty) queue blocks.
    Call(Box<Call>),
    /// A timer is due.
    Tick(u64),
    /// A timer registered through the grain's context.
    AddTimer(Box<TimerRegistration>),
    /// End the activation once the messages before this one are done.
    Deactivate(DeactivationReason),
    /// An inline turn that did not finish at once, and how it interleaves: the task runs it to
    /// the end under the same rules as a turn it started itself. It resolves with its handle
    /// on the grain instance, or `None` if the turn panicked.
    Resume(BoxFuture<'static, Option<Instance>>, Interleave),
    /// An inline turn panicked and dropped the instance: the task drops its timers too.
    InstanceLost,
}

/// The catalog's handle on a running activation.
pub(crate) struct ActivationHandle {
    /// The grain's id (shared with the catalog key and the context).
    pub(crate) id: Arc<GrainId>,
    pub(crate) mailbox: Mailbox,
    /// Calls sent and not yet answered: the activation's queue depth.
    pub(crate) in_flight: AtomicUsize,
    /// Set once shutdown or the idle collector has asked this activation to deactivate.
    pub(crate) deactivation_sent: AtomicBool,
    /// Set by every call; the idle collector clears it on each sweep.
    pub(crate) active: AtomicBool,
    /// Consecutive collector sweeps that found the activation idle.
    pub(crate) idle_sweeps: AtomicU32,
    /// Idle age of the grain type.
    pub(crate) idle_after: Duration,
    /// Aborts the activation task when shutdown's grace period runs out.
    pub(crate) abort: OnceLock<AbortHandle>,
}

impl ActivationHandle {
    /// Hands `call` to the activation (or, while it deactivates, to its successor), or gives it
    /// back if the activation has gone: route it again.
    pub(crate) fn send(&self, call: Box<Call>) -> Result<(), Box<Call>> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.active.store(true, Ordering::Relaxed);
        match self.mailbox.send(Message::Call(call)) {
            Ok(()) => Ok(()),
            Err(Message::Call(call)) => {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                Err(call)
            }
            Err(_) => unreachable!("send returns the message it was given"),
        }
    }

    /// Asks the activation to end once the messages queued before this request are done; only
    /// the first request counts.
    pub(crate) fn request_deactivation(&self, reason: DeactivationReason) {
        if !self.deactivation_sent.swap(true, Ordering::AcqRel) {
            let _ = self.mailbox.send(Message::Deactivate(reason));
        }
    }

    /// Takes the grain instance out for a turn.
    pub(crate) fn take_grain<G: Grain>(&self) -> Option<Arc<G>> {
        // Only `put_grain::<G>` stores instances, for the one grain type of this activation.
        self.mailbox.take_grain()?.downcast::<G>().ok()
    }

    /// Puts the grain instance back after a turn.
    pub(crate) fn put_grain<G: Grain>(&self, grain: Arc<G>) {
        self.mailbox.put_grain(grain);
    }

    /// Calls queued or running on this activation.
    pub(crate) fn queue_depth(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

impl ActivationRuntime for ActivationHandle {
    fn register_timer(&self, timer: TimerRegistration) {
        let _ = self.mailbox.send(Message::AddTimer(Box::new(timer)));
    }

    fn deactivate_on_idle(&self) {
        // Queued behind what the activation already has, so it ends once that is done.
        self.request_deactivation(DeactivationReason::Requested);
    }
}

/// Starts the task of a new activation of `G` for `id`.
pub(crate) fn spawn<G: Grain>(
    id: Arc<GrainId>,
    silo: &Arc<SiloInner>,
    registration: Arc<Registration>,
) -> Arc<ActivationHandle> {
    let handle = Arc::new(ActivationHandle {
        id: id.clone(),
        mailbox: Mailbox::default(),
        in_flight: AtomicUsize::new(0),
        deactivation_sent: AtomicBool::new(false),
        active: AtomicBool::new(true),
        idle_sweeps: AtomicU32::new(0),
        idle_after: registration.options.idle_after,
        abort: OnceLock::new(),
    });
    let context = GrainContext::new::<G>(id.clone(), silo.factory(), handle.clone());
    let activation =
        turns::Activation::<G>::new(id, handle.clone(), context, silo.clone(), registration);
    let task = silo.tracker.spawn_on(activation.run(), &silo.runtime);
    let _ = handle.abort.set(task.abort_handle());
    handle
}

#[cfg(test)]
mod size_probe {
    //! A tiny grain for measuring the activation task.
    use silica_grains::{Grain, GrainContext, grain};

    #[grain]
    pub(crate) trait Probe {
        async fn poke(&mut self, n: u64) -> u64;
    }
    pub(crate) struct ProbeGrain;
    impl Grain for ProbeGrain {
        type Interface = ProbeRef;
        fn create(_: &GrainContext) -> Self {
            ProbeGrain
        }
    }
    impl Probe for ProbeGrain {
        async fn poke(&mut self, n: u64) -> u64 {
            n
        }
    }

    // Pins the memory of an idle activation's task future, which L3 (1 M idle activations in
    // 1 GiB) depends on. Boxing rare paths keeps it small; a regression shows up here first.
    #[tokio::test]
    async fn idle_activation_future_stays_small() {
        let silo = crate::Silo::builder()
            .register::<ProbeGrain>()
            .start()
            .unwrap();
        let inner = silo.inner_for_tests();
        let id = silica_grains::GrainId::new(silica_grains::GrainType::new("Probe"), 1_i64);
        let registration = inner.registry.values().next().unwrap().clone();
        let id = std::sync::Arc::new(id);
        let handle = super::spawn::<ProbeGrain>(id.clone(), inner, registration.clone());
        let context = GrainContext::new::<ProbeGrain>(id.clone(), inner.factory(), handle.clone());
        let activation = super::turns::Activation::<ProbeGrain>::new(
            id,
            handle,
            context,
            inner.clone(),
            registration,
        );
        let future = activation.run();
        let size = std::mem::size_of_val(&future);
        println!("activation task future: {size} bytes");
        assert!(size <= 256, "activation future grew to {size} bytes");
    }
}
