//! [`Deadline`]: a call's timeout that costs one lock of its thread's shard when the call has to
//! wait, and only a reference-count increment when it is answered at once.
//!
//! The first time the answer is not ready, the call registers its waker and timeout in its
//! thread's shard of the silo's [`DeadlineWheel`]; it removes the entry when answered (or
//! dropped). The shard's sweeper wakes it once the timeout has passed, and it ends with
//! `CallError::Timeout`. A call never times out early; it may wait up to one sweep period longer
//! than its timeout (1/16 of the timeout, between 1 ms and 250 ms; see `wheel`).

mod wheel;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use silica_grains::{CallError, Payload};

use wheel::Shard;
pub(crate) use wheel::{DeadlineWheel, instant_after};

pin_project_lite::pin_project! {
    /// Resolves with the inner future's answer, or `Err(Timeout)` once the timeout has passed.
    pub(crate) struct Deadline<F> {
        #[pin]
        inner: F,
        timeout: Duration,
        ticket: Ticket,
    }
}

/// The call's entry in its shard, removed when the call ends or is dropped.
struct Ticket {
    shard: Arc<Shard>,
    key: Option<u32>,
}

impl Ticket {
    fn release(&mut self) {
        if let Some(key) = self.key.take() {
            self.shard.remove(key);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.release();
    }
}

impl<F> Deadline<F> {
    /// `inner`, ended with `Timeout` after `timeout`; registered with the calling thread's shard
    /// of `wheel` if it has to wait.
    #[inline(always)]
    pub(crate) fn new(inner: F, timeout: Duration, wheel: &DeadlineWheel) -> Self {
        Self {
            inner,
            timeout,
            ticket: Ticket {
                shard: wheel.shard().clone(),
                key: None,
            },
        }
    }

    /// The future inside, to poll without the deadline (a poll that must not register).
    pub(crate) fn inner(self: Pin<&mut Self>) -> Pin<&mut F> {
        self.project().inner
    }
}

impl<F: Future<Output = Result<Payload, CallError>>> Future for Deadline<F> {
    type Output = Result<Payload, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(answer) = this.inner.poll(cx) {
            this.ticket.release();
            return Poll::Ready(answer);
        }
        let ticket = this.ticket;
        match ticket.key {
            None => {
                ticket.key = Some(ticket.shard.register(*this.timeout, cx.waker()));
                Poll::Pending
            }
            Some(key) if ticket.shard.still_waiting(key, cx.waker()) => Poll::Pending,
            Some(_) => {
                ticket.release();
                Poll::Ready(Err(CallError::Timeout(*this.timeout)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wheel() -> DeadlineWheel {
        DeadlineWheel::start(&tokio::runtime::Handle::current())
    }

    // Pins that a future that never resolves still ends with Timeout, no sooner than its
    // timeout.
    #[tokio::test(start_paused = true)]
    async fn pending_forever_times_out() {
        let start = tokio::time::Instant::now();
        let forever = std::future::pending::<Result<Payload, CallError>>();
        let result = Deadline::new(forever, Duration::from_secs(30), &wheel()).await;
        assert_eq!(result, Err(CallError::Timeout(Duration::from_secs(30))));
        assert!(start.elapsed() >= Duration::from_secs(30));
    }

    // Pins that a ready answer is returned without waiting.
    #[tokio::test(start_paused = true)]
    async fn ready_answer_passes_through() {
        let ready = async { Ok(Payload::from_slice(&[7])) };
        let result = Deadline::new(ready, Duration::from_secs(30), &wheel()).await;
        assert_eq!(result.unwrap().as_slice(), &[7]);
    }

    // Pins that an answer arriving after the call registered (and after several sweeps) still
    // arrives, and that a shorter timeout registered later still fires on time.
    #[tokio::test(start_paused = true)]
    async fn late_answer_arrives_and_a_later_short_timeout_fires() {
        let wheel = wheel();
        let late = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(Payload::from_slice(&[5]))
        };
        let slow = Deadline::new(late, Duration::from_secs(30), &wheel);
        let short = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let start = tokio::time::Instant::now();
            let forever = std::future::pending::<Result<Payload, CallError>>();
            let result = Deadline::new(forever, Duration::from_millis(50), &wheel).await;
            (result, start.elapsed())
        };
        let (slow, (short, waited)) = tokio::join!(slow, short);
        assert_eq!(slow.unwrap().as_slice(), &[5]);
        assert_eq!(short, Err(CallError::Timeout(Duration::from_millis(50))));
        assert!(waited >= Duration::from_millis(50));
    }
}
