//! An activation's mailbox: a FIFO queue with one waiting receiver.
//!
//! It lives through three phases. *Open*: messages queue for the activation. *Closing* (the
//! activation is deactivating and drains what it already has): new calls are held back in
//! order, other messages (timer ticks, deactivation requests) are dropped, since they belong to
//! the ending instance. *Sealed* (the activation has gone; its held-back calls were handed to
//! its successor under the catalog's lock): sends fail and the sender routes again, finding the
//! successor with those calls already queued, so no caller's calls are reordered or lost.
//!
//! The mailbox also decides when a caller may run a turn *inline*, on its own thread, instead of
//! waking the activation task (see `inline`): only while the task is parked on an empty, open
//! mailbox and no other inline turn runs. A message that arrives meanwhile queues as usual and
//! the task is woken when the inline turn ends; an inline turn that cannot finish at once is
//! handed to the task at the front of the queue, since it is the oldest message.
//!
//! Tokio's mpsc channels reserve cache-padded counters and a 32-slot block per channel, over
//! a kilobyte for every activation, idle or not; a million idle activations must fit in a GiB
//! (DESIGN §4 L3). This queue is a mutex-guarded `VecDeque` (empty until used) plus the
//! receiver's waker. Critical sections are a push or a pop, so the lock is held for nanoseconds.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Mutex;
use std::task::{Poll, Waker};

use super::{Instance, Message};

#[derive(Default)]
struct State {
    queue: VecDeque<Message>,
    receiver: Option<Waker>,
    phase: Phase,
    /// Calls that arrived while closing, for the successor.
    held_back: VecDeque<Message>,
    /// The activation task is parked in `recv` on an empty mailbox.
    task_parked: bool,
    /// A caller is running a turn inline.
    inline: bool,
    /// The grain instance while no turn runs; whoever runs a turn takes it out and puts it
    /// back. Kept under the mailbox's lock so claiming an inline turn and taking the instance
    /// are one step. `None` before activation and after a panic.
    grain: Option<Instance>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    #[default]
    Open,
    Closing,
    Sealed,
}

/// A multi-producer, single-consumer FIFO of messages for one activation.
#[derive(Default)]
pub(crate) struct Mailbox {
    state: Mutex<State>,
}

impl Mailbox {
    /// Queues `message` (holds it back while closing), or gives it back once sealed.
    pub(crate) fn send(&self, message: Message) -> Result<(), Message> {
        let waker = {
            let mut state = self.lock();
            match state.phase {
                Phase::Open => {}
                Phase::Closing => {
                    if matches!(message, Message::Call(_)) {
                        state.held_back.push_back(message);
                    }
                    return Ok(());
                }
                Phase::Sealed => return Err(message),
            }
            state.queue.push_back(message);
            state.receiver.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// The next message; `None` once the mailbox is closed and empty. One receiver only.
    pub(crate) async fn recv(&self) -> Option<Message> {
        poll_fn(|cx| {
            let mut state = self.lock();
            if !state.inline {
                if let Some(message) = state.queue.pop_front() {
                    state.task_parked = false;
                    return Poll::Ready(Some(message));
                }
                if state.phase != Phase::Open {
                    return Poll::Ready(None);
                }
            }
            state.task_parked = true;
            match &mut state.receiver {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// Claims an inline turn and takes the instance for it: only while the task is parked on an
    /// empty, open mailbox, the instance is there, and no other inline turn runs. End the turn
    /// with `release_inline`, `release_inline_lost` or `hand_over`.
    pub(crate) fn try_claim_inline(&self) -> Option<Instance> {
        let mut state = self.lock();
        if state.phase != Phase::Open
            || !state.task_parked
            || state.inline
            || !state.queue.is_empty()
        {
            return None;
        }
        let grain = state.grain.take()?;
        state.inline = true;
        Some(grain)
    }

    /// Takes the instance out for a turn run by the task.
    pub(crate) fn take_grain(&self) -> Option<Instance> {
        self.lock().grain.take()
    }

    /// Puts the instance back after a turn.
    pub(crate) fn put_grain(&self, grain: Instance) {
        self.lock().grain = Some(grain);
    }

    /// Returns messages the task took out but could not run yet to the front of the queue.
    pub(crate) fn requeue_front(&self, messages: VecDeque<Message>) {
        let mut state = self.lock();
        for message in messages.into_iter().rev() {
            state.queue.push_front(message);
        }
    }

    /// Ends an inline turn, putting the instance back; wakes the task if messages arrived
    /// meanwhile.
    pub(crate) fn release_inline(&self, grain: Instance) {
        let waker = {
            let mut state = self.lock();
            state.inline = false;
            state.grain = Some(grain);
            if state.queue.is_empty() {
                None
            } else {
                state.receiver.take()
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Ends an inline turn that panicked and took the instance with it: `InstanceLost` goes
    /// ahead of everything queued, since that is newer than the turn. At the back, a call
    /// queued during the turn would start a fresh instance that `InstanceLost` then dropped.
    pub(crate) fn release_inline_lost(&self) {
        let waker = {
            let mut state = self.lock();
            state.inline = false;
            state.grain = None;
            state.queue.push_front(Message::InstanceLost);
            state.receiver.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Ends an inline turn that could not finish at once by giving the task `resume` to finish
    /// it, ahead of everything queued (it is the oldest message). A `&self` turn leaves a second
    /// handle on the instance (`shared`) in its place, with which the task runs the calls that
    /// may interleave with it; no one can claim it before the task has received `resume`.
    pub(crate) fn hand_over(&self, resume: Message, shared: Option<Instance>) {
        let waker = {
            let mut state = self.lock();
            state.inline = false;
            state.grain = shared;
            state.queue.push_front(resume);
            state.receiver.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Drops the timer registrations still queued: they come from an instance that is gone
    /// (`register_timer` only queues them), and must not start on its successor.
    pub(crate) fn drop_timer_registrations(&self) {
        self.lock()
            .queue
            .retain(|message| !matches!(message, Message::AddTimer(_)));
    }

    /// Starts closing: queued messages can still be received, new calls are held back.
    pub(crate) fn close(&self) {
        self.lock().phase = Phase::Closing;
    }

    /// Seals the mailbox and returns the calls it still has, in order: any never received (an
    /// aborted activation), then those held back while closing.
    pub(crate) fn seal(&self) -> VecDeque<Message> {
        let mut state = self.lock();
        state.phase = Phase::Sealed;
        let mut calls: VecDeque<Message> = std::mem::take(&mut state.queue)
            .into_iter()
            .filter(|message| matches!(message, Message::Call(_)))
            .collect();
        calls.append(&mut state.held_back);
        calls
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic never happens while the lock is held (push/pop only), but stay usable anyway.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use silica_grains::DeactivationReason;

    fn message(reason: DeactivationReason) -> Message {
        Message::Deactivate(reason)
    }

    // Pins FIFO order, that a closing mailbox drains what it had and drops non-call messages,
    // and that a sealed one hands messages back.
    #[tokio::test]
    async fn fifo_then_close_drains_then_seal_refuses() {
        let mailbox = Mailbox::default();
        assert!(mailbox.send(message(DeactivationReason::Idle)).is_ok());
        assert!(mailbox.send(message(DeactivationReason::Shutdown)).is_ok());
        mailbox.close();
        assert!(mailbox.send(message(DeactivationReason::Requested)).is_ok());
        assert!(matches!(
            mailbox.recv().await,
            Some(Message::Deactivate(DeactivationReason::Idle))
        ));
        assert!(matches!(
            mailbox.recv().await,
            Some(Message::Deactivate(DeactivationReason::Shutdown))
        ));
        assert!(mailbox.recv().await.is_none());
        assert!(mailbox.seal().is_empty(), "only calls are held back");
        assert!(
            mailbox
                .send(message(DeactivationReason::Requested))
                .is_err()
        );
    }

    // Pins that a waiting receiver is woken by a send from another task.
    #[tokio::test]
    async fn receiver_wakes_on_send() {
        let mailbox = std::sync::Arc::new(Mailbox::default());
        let receiver = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { mailbox.recv().await.is_some() }
        });
        tokio::task::yield_now().await;
        assert!(mailbox.send(message(DeactivationReason::Idle)).is_ok());
        assert!(receiver.await.unwrap());
    }
}
