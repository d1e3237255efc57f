//! [`GpuTurn`]: one call's method running on a GPU variant.
//!
//! The method is polled once when the call is issued, so its first message reaches the ring in
//! call order, without spinning (a caller issuing many calls sends them all before it waits on
//! any). When the call is awaited, the turn spins up to `GpuConfig::reply_spin` on the reply
//! before it sleeps on a waker (DESIGN §3 rule 10). Around every poll it collects what the
//! method's ring messages reported (see `grain::TURN`): a ring failure ends the call with a typed
//! error at once, and the newest GPU clock stamp is merged into the silo clock when it ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use silica_clocks::{HlcTimestamp, wall_clock_ms};
use silica_gpu::{HlcStamp, Kernel};
use silica_grains::grain::OwnedTurn;
use silica_grains::{CallError, Payload};

use super::activation::Slotted;
use super::grain::{ISSUING, TURN, TurnRecord};
use crate::activation::Answered;
use crate::runtime::SiloInner;

/// A GPU call in progress. Dropping it (timeout, caller gone) drops the method's future; the
/// messages already on the ring still run.
pub(crate) struct GpuTurn<G, K: Kernel> {
    turn: OwnedTurn<G>,
    slotted: Arc<Slotted<K>>,
    latest_stamp: HlcStamp,
    spun: bool,
    finished: bool,
}

impl<G: Send + 'static, K: Kernel> GpuTurn<G, K> {
    pub(crate) fn new(turn: OwnedTurn<G>, slotted: Arc<Slotted<K>>) -> Self {
        Self {
            turn,
            slotted,
            latest_stamp: HlcStamp::default(),
            spun: false,
            finished: false,
        }
    }

    /// Polls once without spinning (its messages are staged, see `grain::ISSUING`) and answers
    /// now if the method already finished; otherwise the turn is the call's wait, ended with
    /// `Timeout` after `timeout`.
    pub(crate) fn start(mut self, silo: &SiloInner, timeout: Duration) -> Answered {
        let mut cx = Context::from_waker(Waker::noop());
        let outer = ISSUING.replace(true);
        let polled = self.poll_turn(&mut cx);
        ISSUING.set(outer);
        match polled {
            Poll::Ready(result) => Answered::Ready(result),
            Poll::Pending => Answered::Timed(silo.with_deadline(self, timeout)),
        }
    }

    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<Result<Payload, CallError>> {
        debug_assert!(!self.finished, "polled after completion");
        // Nested turns (a GPU method calling another GPU grain) keep their records apart.
        let outer = TURN.take();
        let polled = self.turn.as_mut().poll(cx);
        let record: TurnRecord = TURN.replace(outer);
        self.latest_stamp = self.latest_stamp.max(record.latest_stamp);
        if let Some(error) = record.failure {
            return Poll::Ready(self.finish(Err(self.slotted.fail(*error))));
        }
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready((_, result)) => {
                let limit = self.slotted.ring.settings.max_result_bytes;
                let result = match result {
                    Ok(bytes) if bytes.len() > limit => {
                        Err(crate::runtime::too_large("the result", bytes.len(), limit))
                    }
                    other => other,
                };
                Poll::Ready(self.finish(result))
            }
        }
    }

    fn finish(&mut self, result: Result<Payload, CallError>) -> Result<Payload, CallError> {
        self.finished = true;
        self.slotted.exit();
        let clock = &self.slotted.ring.settings.clock;
        // The GPU is a receiver like any other: what it stamped happened before this answer.
        if self.latest_stamp.hlc > clock.last().hlc {
            // A GPU stamp too far ahead (a miscalibrated device clock) is not adopted.
            let _ = clock.update(HlcTimestamp::from(self.latest_stamp), wall_clock_ms());
        }
        result
    }
}

impl<G: Send + 'static, K: Kernel> Future for GpuTurn<G, K> {
    type Output = Result<Payload, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Awaited (also from inside another turn's issue poll): messages go out at once.
        let outer = ISSUING.replace(false);
        let polled = self.poll_awaited(cx);
        ISSUING.set(outer);
        polled
    }
}

impl<G: Send + 'static, K: Kernel> GpuTurn<G, K> {
    fn poll_awaited(&mut self, cx: &mut Context<'_>) -> Poll<Result<Payload, CallError>> {
        let this = self;
        let spin = this.slotted.ring.settings.reply_spin;
        if this.spun || spin.is_zero() {
            return this.poll_turn(cx);
        }
        this.spun = true;
        let start = Instant::now();
        loop {
            if let Poll::Ready(result) = this.poll_turn(cx) {
                return Poll::Ready(result);
            }
            if start.elapsed() >= spin {
                return Poll::Pending;
            }
            for _ in 0..32 {
                std::hint::spin_loop();
            }
        }
    }
}

impl<G, K: Kernel> Drop for GpuTurn<G, K> {
    fn drop(&mut self) {
        if !self.finished {
            self.slotted.exit();
        }
    }
}
