//! `GrainContext`: what an activation knows about itself and the runtime around it.
//!
//! Handed to `Grain::create`; grains keep it if they need their id, other grains, timers, or to
//! deactivate themselves.

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::{BoxFuture, Grain, GrainFactory, GrainId};

/// A timer callback on grain type `G`: runs as a turn of the activation, with `&mut G`.
pub type TimerCallback<G> = Box<dyn for<'a> FnMut(&'a mut G) -> BoxFuture<'a, ()> + Send>;

/// A timer registration handed to the runtime; `callback` holds a `TimerCallback<G>`.
pub struct TimerRegistration {
    /// Delay before the first tick.
    pub due: Duration,
    /// Delay between later ticks; `None` for a one-shot timer.
    pub period: Option<Duration>,
    /// The `TimerCallback<G>` of the activation's grain type, type-erased.
    pub callback: Box<dyn Any + Send>,
    /// Set when the timer is cancelled.
    pub cancelled: Arc<AtomicBool>,
}

impl fmt::Debug for TimerRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerRegistration")
            .field("due", &self.due)
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

/// The runtime side of a context, implemented by the silo for each activation.
pub trait ActivationRuntime: Send + Sync + 'static {
    /// Starts a timer on this activation.
    fn register_timer(&self, timer: TimerRegistration);
    /// Deactivates the activation once its current turn and queued messages are done.
    fn deactivate_on_idle(&self);
}

/// An activation's view of itself and of the runtime. Cheap to clone.
#[derive(Clone)]
pub struct GrainContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    id: Arc<GrainId>,
    factory: GrainFactory,
    grain_type_id: TypeId,
    runtime: Arc<dyn ActivationRuntime>,
}

impl GrainContext {
    /// A context for an activation of grain type `G` (called by the runtime).
    pub fn new<G: Grain>(
        id: Arc<GrainId>,
        factory: GrainFactory,
        runtime: Arc<dyn ActivationRuntime>,
    ) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                id,
                factory,
                grain_type_id: TypeId::of::<G>(),
                runtime,
            }),
        }
    }

    /// This grain's id.
    pub fn id(&self) -> &GrainId {
        &self.inner.id
    }

    /// A factory for references to other grains (and to this one).
    pub fn grain_factory(&self) -> &GrainFactory {
        &self.inner.factory
    }

    /// Registers a non-durable timer. Each tick runs `callback` as a turn of this activation, so it
    /// never overlaps a message handler. Timers end with the activation.
    ///
    /// # Panics
    /// If `G` is not the grain type of this activation.
    pub fn register_timer<G, F>(
        &self,
        due: Duration,
        period: Option<Duration>,
        callback: F,
    ) -> TimerHandle
    where
        G: Grain,
        F: for<'a> FnMut(&'a mut G) -> BoxFuture<'a, ()> + Send + 'static,
    {
        assert_eq!(
            self.inner.grain_type_id,
            TypeId::of::<G>(),
            "register_timer::<{}> called from a context of another grain type",
            std::any::type_name::<G>()
        );
        let cancelled = Arc::new(AtomicBool::new(false));
        let callback: TimerCallback<G> = Box::new(callback);
        self.inner.runtime.register_timer(TimerRegistration {
            due,
            period,
            callback: Box::new(callback),
            cancelled: cancelled.clone(),
        });
        TimerHandle { cancelled }
    }

    /// Asks the runtime to deactivate this grain once the current turn and any queued messages
    /// are done (Orleans `DeactivateOnIdle`).
    pub fn deactivate_on_idle(&self) {
        self.inner.runtime.deactivate_on_idle();
    }
}

impl fmt::Debug for GrainContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrainContext")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

/// Cancels a timer. Dropping the handle leaves the timer running until the activation ends.
#[derive(Clone, Debug)]
pub struct TimerHandle {
    cancelled: Arc<AtomicBool>,
}

impl TimerHandle {
    /// Stops the timer; a tick already queued still runs.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }
}
