//! What a user writes for a GPU variant: [`GpuGrain`] (the interface implemented on top of a
//! kernel), [`GpuStateStore`] (where activations start and where their final state goes), and
//! [`GpuActivation`], the handle whose [`GpuActivation::call`] sends one message to the ring.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use silica_gpu::{BackendKind, HlcStamp, Kernel, RingError, StagedReply};
use silica_grains::{DeactivationReason, GrainId, GrainOptions, GrainReference, InterfaceDispatch};
use silica_placement::DeviceId;

use super::activation::Slotted;

/// The GPU variant of a grain interface: the same interface as a CPU [`silica_grains::Grain`],
/// implemented by sending messages to a ring kernel that holds the activation's state.
///
/// The silo makes a value with [`GpuGrain::create`] for every call (keep it a thin wrapper
/// around the [`GpuActivation`]) and runs the method on it. Methods are thin: they translate a
/// call into one or more [`GpuActivation::call`]s and their responses into the method's return
/// value. The ring, not the silo, gives turn order: messages to one activation run on the device
/// one at a time, in the order they were sent; calls to one GPU activation do not wait for each
/// other's methods on the host.
///
/// A method may also answer without the device (e.g. which backend serves it). If the device
/// fails while a method awaits a message, the call ends with `CallError::GpuFault` and the
/// method's future is dropped.
pub trait GpuGrain: Send + Sync + Sized + 'static {
    /// The interface, named by its generated reference type; the CPU implementation registered
    /// beside this variant implements the same one.
    type Interface: GrainReference + InterfaceDispatch<Self>;
    /// The kernel that holds the state and handles the messages.
    type Kernel: Kernel;

    /// The per-call value the method runs on.
    fn create(activation: GpuActivation<Self::Kernel>) -> Self;

    /// Options for this grain type; by default those declared on the interface. Of them the GPU
    /// variant uses `idle_after` and `stateless_worker` (a pool of that many slots per device,
    /// each call to the least loaded device).
    fn options() -> GrainOptions {
        <Self::Interface as GrainReference>::DEFAULT_OPTIONS
    }
}

/// Where a GPU variant's activations get their first state and leave their last one.
///
/// A silo calls [`load`](GpuStateStore::load) when it activates a grain on a device and
/// [`save`](GpuStateStore::save) with the state read back when the activation ends (idle, or
/// shutdown), so the next activation, on any device, can continue from it.
pub trait GpuStateStore<K: Kernel>: Send + Sync + 'static {
    /// The state a new activation of `grain` starts from. A panic here is caught and logged:
    /// the call that was activating the grain fails with `Rejected(ActivationFailed)`, and the
    /// next call tries again (a stateless worker slot: the next call that finds it failed).
    fn load(&self, grain: &GrainId) -> K::State;
    /// The final state of an activation of `grain`, or [`StateLost`] if a device fault lost it.
    /// A panic here is caught and logged: that state is dropped, and the grain's next call
    /// starts a fresh activation from [`load`](GpuStateStore::load) as usual.
    fn save(&self, grain: &GrainId, state: Result<K::State, StateLost>, reason: DeactivationReason);
}

/// The store used when none is given: every activation starts from `State::default()` and the
/// final state is dropped.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultState;

impl<K: Kernel> GpuStateStore<K> for DefaultState
where
    K::State: Default,
{
    fn load(&self, _: &GrainId) -> K::State {
        K::State::default()
    }
    fn save(&self, _: &GrainId, _: Result<K::State, StateLost>, _: DeactivationReason) {}
}

/// An activation's device state was lost in a device fault before it could be read back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the activation's device state was lost: {0}")]
pub struct StateLost(pub String);

/// One GPU activation as its methods see it: a state slot in a ring on one device.
pub struct GpuActivation<K: Kernel> {
    pub(crate) entry: Arc<Slotted<K>>,
    pub(crate) stamp: HlcStamp,
}

impl<K: Kernel> GpuActivation<K> {
    /// Sends `request` to this activation's state on the device; resolves with the response.
    ///
    /// The message is queued for the ring when this future is first polled, so messages are
    /// handled in the order their futures are first polled. If the device fails, the future
    /// never resolves: the silo ends the whole call with `CallError::GpuFault` instead.
    ///
    /// Messages a thread issues close together reach the ring as one run (see
    /// `silica_gpu::Ring::stage`), on every backend: while the silo issues a call (the
    /// method's first poll), the message is staged. It goes out when the call is awaited and
    /// the ring is quiet, when the thread's batch is full, or when the ring's consumer finishes
    /// a pass or goes idle: on a busy ring, calls awaited close together share one run.
    ///
    /// The future borrows the activation: a message belongs to the turn that sends it.
    pub fn call(&self, request: K::Request) -> GpuCall<'_, K> {
        GpuCall {
            state: CallState::Unsent {
                entry: &self.entry,
                request,
                stamp: self.stamp,
            },
        }
    }

    /// The backend serving this activation.
    pub fn backend(&self) -> BackendKind {
        self.entry.ring.backend
    }

    /// The device this activation lives on, as this silo numbers its devices.
    pub fn device(&self) -> DeviceId {
        self.entry.ring.device
    }

    /// A human-readable name of the device and backend (e.g. "CUDA persistent ring on NVIDIA
    /// H100 80GB HBM3").
    pub fn device_name(&self) -> &str {
        &self.entry.ring.description
    }
}

/// The future of one message to a GPU activation: see [`GpuActivation::call`].
#[must_use = "the message is sent when the future is first polled"]
pub struct GpuCall<'a, K: Kernel> {
    state: CallState<'a, K>,
}

enum CallState<'a, K: Kernel> {
    Unsent {
        /// Borrowed, not cloned: a clone and its drop were two more atomic writes a call on
        /// the activation's reference count.
        entry: &'a Slotted<K>,
        request: K::Request,
        stamp: HlcStamp,
    },
    Sent(StagedReply<K>),
    Taken,
}

impl<K: Kernel> Unpin for GpuCall<'_, K> {}

impl<K: Kernel> Future for GpuCall<'_, K> {
    type Output = K::Response;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<K::Response> {
        if matches!(self.state, CallState::Unsent { .. }) {
            let CallState::Unsent {
                entry,
                request,
                stamp,
            } = std::mem::replace(&mut self.state, CallState::Taken)
            else {
                unreachable!("checked above")
            };
            let ring = &entry.ring.ring;
            // A pool of stateless workers promises no order between calls.
            let staged = if entry.worker.is_some() {
                ring.stage_unordered(entry.slot, request, stamp)
            } else {
                ring.stage_marked(entry.slot, &entry.mark, request, stamp)
            };
            self.state = CallState::Sent(staged);
            if ISSUING.get() {
                // The silo is issuing the call: leave the message staged with this thread's
                // others; it goes out when the call is awaited (or sooner, see `call`).
                return Poll::Pending;
            }
        }
        let polled = match &mut self.state {
            CallState::Sent(reply) => Pin::new(&mut *reply)
                .poll(cx)
                .map(|r| r.map(|r| (reply.run_high_stamp(), r))),
            _ => panic!("GpuCall polled after completion"),
        };
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok((high, r))) => {
                // The run's highest stamp: merged once, the other calls of the run skip it.
                let high = high.unwrap_or(r.stamp).max(r.stamp);
                TURN.with_borrow_mut(|t| t.latest_stamp = t.latest_stamp.max(high));
                Poll::Ready(r.response)
            }
            Poll::Ready(Err(error)) => {
                TURN.with_borrow_mut(|t| {
                    t.failure.get_or_insert_with(|| Box::new(error));
                });
                // The turn wrapper sees the failure right after this poll and ends the call.
                Poll::Pending
            }
        }
    }
}

/// What the messages of a GPU turn reported during one poll of the turn, collected by the turn
/// wrapper (`turn.rs`) around each poll. A thread-local is enough: a poll runs on one thread,
/// and the wrapper takes the record before it returns. Kept small (the error boxed): the
/// wrapper swaps it in and out around every poll of every GPU call.
#[derive(Default)]
pub(crate) struct TurnRecord {
    pub(crate) failure: Option<Box<RingError>>,
    pub(crate) latest_stamp: HlcStamp,
}

impl TurnRecord {
    /// Nothing reported yet (the thread-local's value between polls).
    const EMPTY: Self = Self {
        failure: None,
        latest_stamp: HlcStamp::new(0, 0),
    };
}

const _: () = assert!(
    size_of::<TurnRecord>() <= 32,
    "TurnRecord is copied around every poll"
);

thread_local! {
    pub(crate) static TURN: RefCell<TurnRecord> = const { RefCell::new(TurnRecord::EMPTY) };
    /// Set while the silo issues a GPU call (the turn's first poll, `GpuTurn::start`): its
    /// messages are staged rather than sent, so one thread's burst of calls goes as one run.
    pub(crate) static ISSUING: Cell<bool> = const { Cell::new(false) };
}
