//! Grain timers. A ticker task per timer sends `Message::Tick` into the activation's mailbox, so a
//! callback runs as a turn and never overlaps a handler. At most one tick per timer is queued at
//! a time: a slow callback delays the next tick instead of piling them up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use silica_grains::context::{TimerCallback, TimerRegistration};
use silica_grains::{BoxFuture, Grain};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ActivationHandle, Message};

struct Timer<G> {
    callback: TimerCallback<G>,
    cancelled: Arc<AtomicBool>,
    /// Set by the ticker when it queues a tick, cleared when the tick runs.
    queued: Arc<AtomicBool>,
    one_shot: bool,
}

/// The timers of one activation.
pub(super) struct Timers<G> {
    timers: HashMap<u64, Timer<G>>,
    next_id: u64,
    handle: Weak<ActivationHandle>,
    tracker: TaskTracker,
    /// Cancels every ticker task of the current grain instance; made with the first timer.
    stop: Option<CancellationToken>,
}

impl<G: Grain> Timers<G> {
    pub(super) fn new(handle: Weak<ActivationHandle>, tracker: TaskTracker) -> Self {
        Self {
            timers: HashMap::new(),
            next_id: 0,
            handle,
            tracker,
            stop: None,
        }
    }

    /// Starts the timer; a callback of another grain type is dropped with an error log (the
    /// context checks the type, so this does not happen through the public API).
    pub(super) fn add(&mut self, registration: TimerRegistration) {
        let TimerRegistration {
            due,
            period,
            callback,
            cancelled,
        } = registration;
        let Ok(callback) = callback.downcast::<TimerCallback<G>>() else {
            tracing::error!("timer callback for another grain type ignored");
            return;
        };
        let id = self.next_id;
        self.next_id += 1;
        let queued = Arc::new(AtomicBool::new(false));
        self.timers.insert(
            id,
            Timer {
                callback: *callback,
                cancelled: cancelled.clone(),
                queued: queued.clone(),
                one_shot: period.is_none(),
            },
        );
        let stop = self.stop.get_or_insert_with(CancellationToken::new).clone();
        let handle = self.handle.clone();
        self.tracker.spawn(async move {
            let mut delay = due;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                let Some(handle) = handle.upgrade() else {
                    return;
                };
                if cancelled.load(Ordering::Acquire) {
                    return;
                }
                if !queued.swap(true, Ordering::AcqRel)
                    && handle.mailbox.send(Message::Tick(id)).is_err()
                {
                    return;
                }
                match period {
                    Some(period) => delay = period,
                    None => return,
                }
            }
        });
    }

    /// The callback's future for a due tick of `id`, or `None` if the timer is gone or cancelled.
    pub(super) fn due<'a>(&'a mut self, id: u64, grain: &'a mut G) -> Option<BoxFuture<'a, ()>> {
        let timer = self.timers.get(&id)?;
        timer.queued.store(false, Ordering::Release);
        if timer.cancelled.load(Ordering::Acquire) {
            self.timers.remove(&id);
            return None;
        }
        if timer.one_shot {
            let mut timer = self.timers.remove(&id)?;
            return Some(Box::pin(async move { (timer.callback)(grain).await }));
        }
        let timer = self.timers.get_mut(&id)?;
        Some((timer.callback)(grain))
    }

    /// Stops every timer (the instance they belong to is gone).
    pub(super) fn cancel_all(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
        self.timers.clear();
    }
}

impl<G> Drop for Timers<G> {
    /// Ticker tasks must not outlive the activation, even an aborted one: shutdown waits for
    /// every task the silo tracks.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
    }
}
