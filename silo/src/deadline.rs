//! `Deadline`: a call's timeout that costs nothing when the answer comes quickly.
//!
//! Arming a Tokio timer for every call (register, then deregister, plus the time driver's work on
//! every park) was a large share of an in-silo round trip. Most answers arrive within one
//! scheduler round, so the first time the answer is not ready the future reschedules itself
//! instead of arming a timer; only if the answer is still missing on the next poll is the timer
//! armed, for the full timeout. A call may so wait up to one scheduler round longer than its
//! timeout, never less, and never forever.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;

pin_project_lite::pin_project! {
    /// Resolves with the inner future's output, or `Err(Elapsed)` once the timeout has passed.
    pub(crate) struct Deadline<F> {
        #[pin]
        inner: F,
        timeout: Duration,
        // The runtime whose timer arms the deadline, when the caller is outside any runtime.
        runtime: Option<tokio::runtime::Handle>,
        state: State,
    }
}

enum State {
    /// Polled at most once so far.
    Fresh,
    /// Rescheduled itself once; the next miss arms the timer.
    Yielded,
    Armed(Pin<Box<Sleep>>),
}

/// The timeout passed.
#[derive(Debug)]
pub(crate) struct Elapsed;

impl<F: Future> Deadline<F> {
    pub(crate) fn new(
        inner: F,
        timeout: Duration,
        runtime: Option<tokio::runtime::Handle>,
    ) -> Self {
        Self {
            inner,
            timeout,
            runtime,
            state: State::Fresh,
        }
    }
}

impl<F: Future> Future for Deadline<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.inner.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        match this.state {
            State::Fresh => {
                *this.state = State::Yielded;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            State::Yielded => {
                let _runtime = this.runtime.as_ref().map(tokio::runtime::Handle::enter);
                let mut sleep = Box::pin(tokio::time::sleep(*this.timeout));
                let elapsed = sleep.as_mut().poll(cx).is_ready();
                *this.state = State::Armed(sleep);
                if elapsed {
                    Poll::Ready(Err(Elapsed))
                } else {
                    Poll::Pending
                }
            }
            State::Armed(sleep) => match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pins that a future that never resolves still ends with Elapsed after its timeout.
    #[tokio::test(start_paused = true)]
    async fn pending_forever_times_out() {
        let start = tokio::time::Instant::now();
        let result =
            Deadline::new(std::future::pending::<()>(), Duration::from_secs(30), None).await;
        assert!(result.is_err());
        assert!(start.elapsed() >= Duration::from_secs(30));
    }

    // Pins that a ready answer is returned without waiting.
    #[tokio::test(start_paused = true)]
    async fn ready_answer_passes_through() {
        let result = Deadline::new(async { 7 }, Duration::from_secs(30), None).await;
        assert_eq!(result.unwrap(), 7);
    }

    // Pins that an answer arriving after a few scheduler rounds (timer armed) still arrives.
    #[tokio::test(start_paused = true)]
    async fn late_answer_after_arming_arrives() {
        let late = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            5
        };
        assert_eq!(
            Deadline::new(late, Duration::from_secs(30), None)
                .await
                .unwrap(),
            5
        );
    }
}
