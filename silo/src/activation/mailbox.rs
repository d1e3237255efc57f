//! An activation's mailbox: a FIFO queue with one waiting receiver.
//!
//! Tokio's mpsc channels reserve cache-padded counters and a 32-slot block per channel, over
//! a kilobyte for every activation, idle or not; a million idle activations must fit in a GiB
//! (DESIGN §4 L3). This queue is a mutex-guarded `VecDeque` (empty until used) plus the
//! receiver's waker. Critical sections are a push or a pop, so the lock is held for nanoseconds.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Mutex;
use std::task::{Poll, Waker};

use super::Message;

#[derive(Default)]
struct State {
    queue: VecDeque<Message>,
    receiver: Option<Waker>,
    closed: bool,
}

/// A multi-producer, single-consumer FIFO of messages for one activation.
#[derive(Default)]
pub(crate) struct Mailbox {
    state: Mutex<State>,
}

impl Mailbox {
    /// Queues `message`, or gives it back if the mailbox is closed.
    pub(crate) fn send(&self, message: Message) -> Result<(), Message> {
        let waker = {
            let mut state = self.lock();
            if state.closed {
                return Err(message);
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
            if let Some(message) = state.queue.pop_front() {
                return Poll::Ready(Some(message));
            }
            if state.closed {
                return Poll::Ready(None);
            }
            match &mut state.receiver {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// Refuses further messages; those already queued can still be received.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
    }

    /// Whether no message is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().queue.is_empty()
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

    // Pins FIFO order and that a closed mailbox hands back new messages but drains old ones.
    #[tokio::test]
    async fn fifo_then_close_drains() {
        let mailbox = Mailbox::default();
        assert!(mailbox.send(message(DeactivationReason::Idle)).is_ok());
        assert!(mailbox.send(message(DeactivationReason::Shutdown)).is_ok());
        mailbox.close();
        assert!(
            mailbox
                .send(message(DeactivationReason::Requested))
                .is_err()
        );
        assert!(matches!(
            mailbox.recv().await,
            Some(Message::Deactivate(DeactivationReason::Idle))
        ));
        assert!(matches!(
            mailbox.recv().await,
            Some(Message::Deactivate(DeactivationReason::Shutdown))
        ));
        assert!(mailbox.recv().await.is_none());
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
