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
use silica_grains::{CallError, Payload, PendingCall};

use super::activation::Slotted;
use super::grain::{ISSUING, TURN, TurnRecord};
use crate::activation::Answered;
use crate::runtime::SiloInner;

pin_project_lite::pin_project! {
    /// A GPU call in progress: the method's turn (`InterfaceDispatch::dispatch_consumed`, held
    /// inline, so the call with its deadline is one allocation). Dropping it (timeout, caller
    /// gone) drops the method's future; the messages already on the ring still run.
    pub(crate) struct GpuTurn<F, K: Kernel> {
        #[pin]
        turn: F,
        call: Entered<K>,
    }
}

/// The call's hold on its activation (released once, when the call ends or is dropped) and
/// what the turn learned so far.
struct Entered<K: Kernel> {
    slotted: Arc<Slotted<K>>,
    latest_stamp: HlcStamp,
    spun: bool,
    finished: bool,
}

impl<F, K> GpuTurn<F, K>
where
    F: Future<Output = Result<Payload, CallError>> + Send + 'static,
    K: Kernel,
{
    /// `turn` on the activation `slotted`, which has the call entered already.
    #[inline(always)]
    fn new(turn: F, slotted: Arc<Slotted<K>>) -> Self {
        Self {
            turn,
            call: Entered {
                slotted,
                latest_stamp: HlcStamp::default(),
                spun: false,
                finished: false,
            },
        }
    }

    /// Places `turn` on the activation `slotted` (which has the call entered already) with its
    /// deadline in its one allocation, polls it once there without spinning (its messages are
    /// staged, see `grain::ISSUING`) and answers now if the method already finished; otherwise
    /// the turn is the call's wait, ended with `Timeout` after `timeout`. Built in the box's
    /// expression, inlined: each move of the turn on the way there is a copy of 200 bytes.
    pub(crate) fn start(
        turn: F,
        slotted: Arc<Slotted<K>>,
        silo: &SiloInner,
        timeout: Duration,
    ) -> Answered {
        let mut call = Box::pin(silo.deadline(Self::new(turn, slotted), timeout));
        let mut cx = Context::from_waker(Waker::noop());
        let outer = ISSUING.replace(true);
        let polled = call.as_mut().inner().poll_turn(&mut cx);
        ISSUING.set(outer);
        match polled {
            Poll::Ready(result) => Answered::Ready(result),
            Poll::Pending => Answered::Timed(PendingCall::boxed(call)),
        }
    }

    fn poll_turn(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Payload, CallError>> {
        let this = self.project();
        let call = this.call;
        debug_assert!(!call.finished, "polled after completion");
        // Nested turns (a GPU method calling another GPU grain) keep their records apart.
        let outer = TURN.take();
        let polled = this.turn.poll(cx);
        let record: TurnRecord = TURN.replace(outer);
        call.latest_stamp = call.latest_stamp.max(record.latest_stamp);
        if let Some(error) = record.failure {
            let error = call.slotted.fail(*error);
            return Poll::Ready(call.finish(Err(error)));
        }
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                let limit = call.slotted.ring.settings.max_result_bytes;
                let result = match result {
                    Ok(bytes) if bytes.len() > limit => {
                        Err(crate::runtime::too_large("the result", bytes.len(), limit))
                    }
                    other => other,
                };
                Poll::Ready(call.finish(result))
            }
        }
    }

    fn poll_awaited(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Payload, CallError>> {
        let spin = self.call.slotted.ring.settings.reply_spin;
        if self.call.spun || spin.is_zero() {
            return self.poll_turn(cx);
        }
        self.as_mut().project().call.spun = true;
        let start = Instant::now();
        loop {
            if let Poll::Ready(result) = self.as_mut().poll_turn(cx) {
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

impl<K: Kernel> Entered<K> {
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

impl<F, K> Future for GpuTurn<F, K>
where
    F: Future<Output = Result<Payload, CallError>> + Send + 'static,
    K: Kernel,
{
    type Output = Result<Payload, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Awaited (also from inside another turn's issue poll): messages go out at once.
        let outer = ISSUING.replace(false);
        let polled = self.poll_awaited(cx);
        ISSUING.set(outer);
        polled
    }
}

impl<K: Kernel> Drop for Entered<K> {
    fn drop(&mut self) {
        if !self.finished {
            self.slotted.exit();
        }
    }
}
