//! [`CoveredDeadline`]: a call's timeout for a future whose first wait is watched by what it
//! waits on, so that the common call (answered after that one wait) registers nowhere.
//!
//! A GPU call waits on its ring's reply. The persistent CUDA ring's completion thread wakes
//! every staged call that has waited longer than its long-wait bound (1 ms by default, see
//! `silica_gpu::cuda::Tuning::long_wait`), answer or not. So the first wait of such a call
//! needs no entry in the deadline wheel: if it is still waiting when woken, it registers then,
//! with its whole timeout, exactly as [`Deadline`](super::Deadline) does on its first wait.
//! Registering (a lock, a waker clone) and removing (a lock, a waker drop) were 8 of a GPU
//! call's atomic writes.
//!
//! The cost: such a call can time out later than asked by up to the ring's bound (plus one
//! sweep); it never times out early. Only the first wait is covered: any later wait (a second
//! ring call, a timer, another grain) registers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use silica_grains::{CallError, Payload};

use super::{DeadlineWheel, Ticket};

/// What [`CoveredDeadline`] needs from the future it bounds.
pub(crate) trait CoveredWait: Future<Output = Result<Payload, CallError>> {
    /// The wheel to register with when a wait is not covered.
    fn wheel(&self) -> &DeadlineWheel;
    /// Whether the wait its last poll began is sure to be woken by what it waits on within
    /// that thing's long-wait bound (see the module docs); asked once, after its first
    /// pending poll.
    fn wait_covered(&self) -> bool;
}

pin_project_lite::pin_project! {
    /// Resolves with the inner future's answer, or `Err(Timeout)` once the timeout has passed
    /// (see the module docs for when it registers).
    pub(crate) struct CoveredDeadline<F> {
        #[pin]
        inner: F,
        timeout: Duration,
        // Registered with the calling thread's shard; `None` until a wait is not covered.
        ticket: Option<Ticket>,
        // The first wait went unregistered (covered); the next one registers.
        skipped: bool,
    }
}

impl<F> CoveredDeadline<F> {
    /// `inner`, ended with `Timeout` after `timeout`.
    pub(crate) fn new(inner: F, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            ticket: None,
            skipped: false,
        }
    }

    /// The future inside, to poll without the deadline (a poll that must not register).
    pub(crate) fn inner(self: Pin<&mut Self>) -> Pin<&mut F> {
        self.project().inner
    }
}

impl<F: CoveredWait> Future for CoveredDeadline<F> {
    type Output = Result<Payload, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(answer) = this.inner.as_mut().poll(cx) {
            // Dropping the ticket removes its entry.
            this.ticket.take();
            return Poll::Ready(answer);
        }
        match this.ticket {
            None if !*this.skipped && this.inner.wait_covered() => {
                *this.skipped = true;
                Poll::Pending
            }
            None => {
                let shard = this.inner.wheel().shard().clone();
                let key = shard.register(*this.timeout, cx.waker());
                *this.ticket = Some(Ticket {
                    shard,
                    key: Some(key),
                });
                Poll::Pending
            }
            Some(ticket) if ticket.still_waiting(cx.waker()) => Poll::Pending,
            Some(_) => {
                this.ticket.take();
                Poll::Ready(Err(CallError::Timeout(*this.timeout)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A wait that never ends on its own, covered or not, and that can be answered.
    struct Waiting {
        wheel: Arc<DeadlineWheel>,
        covered: bool,
        answer: Arc<AtomicBool>,
    }

    impl Future for Waiting {
        type Output = Result<Payload, CallError>;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            if self.answer.load(Ordering::SeqCst) {
                Poll::Ready(Ok(Payload::from_slice(&[1])))
            } else {
                Poll::Pending
            }
        }
    }

    impl CoveredWait for Waiting {
        fn wheel(&self) -> &DeadlineWheel {
            &self.wheel
        }
        fn wait_covered(&self) -> bool {
            self.covered
        }
    }

    fn waiting(covered: bool) -> (Waiting, Arc<AtomicBool>, Arc<DeadlineWheel>) {
        let wheel = Arc::new(DeadlineWheel::start(&tokio::runtime::Handle::current()));
        let answer = Arc::new(AtomicBool::new(false));
        let inner = Waiting {
            wheel: wheel.clone(),
            covered,
            answer: answer.clone(),
        };
        (inner, answer, wheel)
    }

    // Pins the covered first wait: nothing is registered, so nothing would time the call out
    // if what it waits on did not wake it; once woken and still waiting, it registers and times
    // out no sooner than its timeout from then.
    #[tokio::test(start_paused = true)]
    async fn covered_first_wait_registers_only_when_woken_again() {
        let (inner, _answer, wheel) = waiting(true);
        let timeout = Duration::from_millis(50);
        let mut call = Box::pin(CoveredDeadline::new(inner, timeout));
        assert!(futures_util::poll!(call.as_mut()).is_pending());
        assert!(
            call.ticket.is_none(),
            "the covered first wait registers nothing"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            futures_util::poll!(call.as_mut()).is_pending(),
            "no timeout without a registration"
        );
        // That poll is the wake-up of the covered wait: it registered.
        assert!(call.ticket.is_some());
        let start = tokio::time::Instant::now();
        assert_eq!(call.await, Err(CallError::Timeout(timeout)));
        assert!(start.elapsed() >= timeout);
        drop(wheel);
    }

    // Pins that an uncovered wait registers at once, times out, and that an answer before the
    // timeout passes through (its entry removed).
    #[tokio::test(start_paused = true)]
    async fn uncovered_wait_registers_at_once() {
        let (inner, _answer, _wheel) = waiting(false);
        let timeout = Duration::from_millis(50);
        let start = tokio::time::Instant::now();
        let result = CoveredDeadline::new(inner, timeout).await;
        assert_eq!(result, Err(CallError::Timeout(timeout)));
        assert!(start.elapsed() >= timeout);

        let (inner, answer, _wheel) = waiting(true);
        let mut call = Box::pin(CoveredDeadline::new(inner, timeout));
        assert!(futures_util::poll!(call.as_mut()).is_pending());
        answer.store(true, Ordering::SeqCst);
        assert_eq!(call.await.unwrap().as_slice(), &[1]);
    }
}
