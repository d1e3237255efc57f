//! [`Ring`]: one kernel's ring on one device, whichever backend serves it.

use crate::backend::RingBackend;
use crate::clock::{HlcStamp, HostClock};
use crate::error::{RingError, RingFault};
use crate::kernel::Kernel;
use crate::queue::{INVALID_SLOT, STATUS_OK, SubmitRing};
use crate::reply::{CellWait, Outcome, Reply, ReplyCell};
use crate::slots::{SlotId, SlotStatus, SlotTable};
use crate::stage::{Order, StageMark, StagedReply, Stager};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::Thread;
use std::time::Duration;

/// Which backend serves a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// CPU reference: the kernel's Rust handler on a host thread.
    Cpu,
    /// CUDA persistent ring kernel polling mapped host memory.
    CudaPersistent,
    /// CUDA, one kernel launch per batch.
    CudaBatch,
    /// wgpu compute dispatch per batch.
    Wgpu,
}

/// Which backend to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// The CUDA persistent ring on `device`, falling back to CUDA launch-per-batch when the
    /// persistent ring is unusable there.
    CudaAuto {
        /// CUDA device ordinal.
        device: usize,
    },
    /// Exactly this backend (`device` is ignored by CPU and wgpu).
    Exact {
        /// The backend.
        kind: BackendKind,
        /// CUDA device ordinal or wgpu adapter index.
        device: usize,
    },
}

/// A ring's settings.
#[derive(Clone, Debug)]
pub struct RingConfig {
    /// The backend.
    pub backend: BackendChoice,
    /// State slots (activations) the ring can hold.
    pub slots: u32,
    /// Ring entries (rounded up to a power of two): messages in flight at once.
    pub capacity: u32,
    /// Most messages one device batch takes (batch backends and the kernel's batch).
    pub max_batch: u32,
    /// Node id the ring's clock stamps responses with.
    pub clock_node: u32,
    /// How long a waiting caller spins on its reply before registering a waker.
    pub reply_spin: Duration,
    /// How long the consumer thread spins before parking when idle.
    pub consumer_spin: Duration,
    /// A heartbeat older than this is a stall (persistent ring).
    pub stall_timeout: Duration,
    /// Worker warps of the persistent kernel (besides the loader warps). With at most 8 warps
    /// in the block each loader keeps twice the loads in flight (see docs/gpu.md).
    pub worker_warps: u32,
    /// Warps of the persistent kernel that read H2K while the ring is busy, the polling warp
    /// included (1 to 8). Only the polling warp probes an idle ring; the others join it for
    /// rounds of loads once it finds messages, multiplying the bytes in flight over PCIe.
    pub loader_warps: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            backend: BackendChoice::Exact {
                kind: BackendKind::Cpu,
                device: 0,
            },
            slots: 1024,
            capacity: 4096,
            max_batch: 1024,
            clock_node: 0x6770_0000,
            reply_spin: Duration::from_micros(50),
            consumer_spin: Duration::from_millis(2),
            stall_timeout: Duration::from_secs(2),
            worker_warps: 7,
            // 8 loaders: 24-26 -> 44.6-54.7 M msg/s (median 51) on H200 machines, steadier
            // than 4 or 6 (docs/BENCHMARKS.md, 2026-12-02).
            loader_warps: 8,
        }
    }
}

/// A snapshot of a ring's health.
#[derive(Clone, Debug)]
pub struct RingHealth {
    /// The backend serving the ring.
    pub backend: BackendKind,
    /// Whether the ring accepts calls.
    pub running: bool,
    /// Faults so far (each was followed by a restart).
    pub faults: u64,
    /// The latest fault.
    pub last_fault: Option<Arc<RingFault>>,
    /// Age of the kernel's last heartbeat (persistent ring only).
    pub heartbeat_age: Option<Duration>,
    /// Messages submitted and not yet completed.
    pub queue_depth: u64,
    /// Messages completed since start.
    pub completed: u64,
}

/// State shared by a ring's handle, its futures and its backend threads.
pub(crate) struct RingShared<K: Kernel> {
    pub(crate) queue: SubmitRing<K::Response>,
    pub(crate) stager: Stager<K>,
    pub(crate) slots: SlotTable,
    pub(crate) config: RingConfig,
    pub(crate) clock: HostClock,
    consumer: Mutex<Option<Thread>>,
    consumer_sleeping: AtomicBool,
    faults: AtomicU64,
    last_fault: Mutex<Option<Arc<RingFault>>>,
}

impl<K: Kernel> RingShared<K> {
    pub(crate) fn new(config: RingConfig) -> Self {
        Self {
            queue: SubmitRing::new(config.capacity, size_of::<K::Request>()),
            stager: Stager::new(
                config.slots,
                u64::from(config.capacity.max(2).next_power_of_two()),
            ),
            slots: SlotTable::new(config.slots),
            clock: HostClock::new(config.clock_node),
            config,
            consumer: Mutex::new(None),
            consumer_sleeping: AtomicBool::new(false),
            faults: AtomicU64::new(0),
            last_fault: Mutex::new(None),
        }
    }

    /// Registers the calling thread as the consumer producers unpark.
    pub(crate) fn set_consumer(&self) {
        *self.consumer.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::thread::current());
    }

    /// Parks the consumer unless `has_work` says there is work (checked after announcing).
    pub(crate) fn park_consumer(&self, has_work: impl Fn() -> bool, timeout: Duration) {
        self.consumer_sleeping.store(true, Ordering::SeqCst);
        if !has_work() {
            std::thread::park_timeout(timeout);
        }
        self.consumer_sleeping.store(false, Ordering::SeqCst);
    }

    /// The outcome in K2H entry `t`, if the kernel has written all of it.
    pub(crate) fn k2h_outcome(&self, t: u64) -> Option<Outcome<K::Response>> {
        self.queue.k2h_read(t).map(|(status, hlc, response)| {
            if status == STATUS_OK {
                Ok(Reply {
                    response,
                    stamp: HlcStamp::new(hlc, self.clock.node()),
                })
            } else {
                Err(RingError::SlotNotActive(SlotId(INVALID_SLOT)))
            }
        })
    }

    /// A caller has read (or abandoned) its K2H entries: if anyone waits for ring room, let the
    /// consumer move `head` now rather than at its next poll.
    pub(crate) fn after_consume(&self) {
        if self.queue.has_waiters() {
            self.wake_consumer();
        }
    }

    pub(crate) fn wake_consumer(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.consumer_sleeping.load(Ordering::SeqCst)
            && let Some(t) = self
                .consumer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
        {
            t.unpark();
        }
    }

    /// Records a fault: fails everything in flight, marks active slots lost.
    pub(crate) fn fault(&self, kind: crate::error::FaultKind, detail: String) -> Arc<RingFault> {
        let lost_slots = self.slots.lose_all();
        let fault = Arc::new(RingFault {
            kind,
            lost_slots,
            detail,
        });
        self.faults.fetch_add(1, Ordering::SeqCst);
        *self.last_fault.lock().unwrap_or_else(|e| e.into_inner()) = Some(fault.clone());
        self.queue.fail_pending(&RingError::Fault(fault.clone()));
        fault
    }

    pub(crate) fn status_error(&self, slot: SlotId) -> Option<RingError> {
        match self.slots.status(slot) {
            SlotStatus::Active => None,
            SlotStatus::Lost => Some(RingError::SlotLost(slot)),
            _ => Some(RingError::SlotNotActive(slot)),
        }
    }

    /// Claims and publishes entries for `items`; `Ok(None)` when the ring is full.
    fn try_submit(
        &self,
        items: &[(SlotId, K::Request)],
        stamp: HlcStamp,
    ) -> Result<Option<Arc<ReplyCell<K::Response>>>, RingError> {
        if let [(slot, _)] = items
            && let Some(err) = self.status_error(*slot)
        {
            return Err(err);
        }
        let Some(first) = self.queue.claim(items.len() as u64)? else {
            return Ok(None);
        };
        let cell = Arc::new(ReplyCell::new(first, items.len()));
        // One reference for the whole run, dropped when its last entry completes.
        let raw = Arc::into_raw(cell.clone());
        for (i, (slot, req)) in items.iter().enumerate() {
            // Checked after the claim: a concurrent deactivation either sees this entry below
            // its tail snapshot or this check sees the slot closing (see `deactivate`).
            let wire = if self.slots.status(*slot) == SlotStatus::Active {
                slot.0
            } else {
                INVALID_SLOT
            };
            self.queue
                .publish(first + i as u64, wire, stamp.hlc, req, raw);
        }
        self.queue.published();
        self.wake_consumer();
        Ok(Some(cell))
    }
}

/// A ring serving one kernel on one device: activations are state slots, calls are messages.
pub struct Ring<K: Kernel> {
    shared: Arc<RingShared<K>>,
    backend: Box<dyn RingBackend<K>>,
}

impl<K: Kernel> Ring<K> {
    /// Starts a ring with `config`'s backend (compiling the kernel where needed).
    pub fn start(config: RingConfig) -> Result<Self, RingError> {
        let shared = Arc::new(RingShared::<K>::new(config.clone()));
        let backend = crate::backend::start(shared.clone(), config.backend)?;
        Ok(Self { shared, backend })
    }

    /// The backend serving this ring.
    pub fn backend(&self) -> BackendKind {
        self.backend.kind()
    }

    /// Activates a slot with `initial` state.
    pub fn activate(&self, initial: &K::State) -> Result<SlotId, RingError> {
        if self.shared.queue.is_closed() {
            return Err(RingError::ShutDown);
        }
        let slot = self
            .shared
            .slots
            .allocate()
            .ok_or(RingError::SlotsExhausted(
                self.shared.slots.capacity() as usize
            ))?;
        if let Err(e) = self.backend.write_state(slot, initial) {
            self.shared.slots.release(slot);
            return Err(e);
        }
        self.shared.slots.set_active(slot);
        Ok(slot)
    }

    /// Deactivates a slot after its in-flight messages; returns its final state, or
    /// [`RingError::SlotLost`] if a fault lost it (the slot is freed either way).
    pub async fn deactivate(&self, slot: SlotId) -> Result<K::State, RingError> {
        let was = self.shared.slots.close(slot);
        if !matches!(was, SlotStatus::Active | SlotStatus::Lost) {
            return Err(RingError::SlotNotActive(slot));
        }
        self.submit_staged().await;
        let upto = self.shared.queue.tail();
        WaitHead {
            shared: &self.shared,
            upto,
        }
        .await;
        let state = if was == SlotStatus::Lost {
            Err(RingError::SlotLost(slot))
        } else {
            self.backend.read_state(slot)
        };
        self.shared.slots.release(slot);
        state
    }

    /// Sends `request` to `slot`; resolves with the response and its HLC stamp.
    pub fn submit(&self, slot: SlotId, request: K::Request, stamp: HlcStamp) -> ReplyFuture<K> {
        ReplyFuture {
            shared: self.shared.clone(),
            items: vec![(slot, request)],
            stamp,
            wait: None,
        }
    }

    /// Sends many requests as one run of ring entries (one wake-up, one allocation); resolves
    /// with one outcome per request, in order. At most `capacity` requests.
    pub fn submit_batch(
        &self,
        items: Vec<(SlotId, K::Request)>,
        stamp: HlcStamp,
    ) -> BatchFuture<K> {
        BatchFuture(ReplyFuture {
            shared: self.shared.clone(),
            items,
            stamp,
            wait: None,
        })
    }

    /// Stages `request` for `slot` in the calling thread's batch and resolves with the
    /// response and its HLC stamp, like [`Ring::submit`]; messages one thread stages close
    /// together reach the ring as one run (one claim, one reply cell, one wake-up), each
    /// caller decoding its own response. The batch is submitted when one of its futures is
    /// polled while the ring is quiet (nothing submitted is unfinished), when it is full, when
    /// the ring's consumer finishes a pass of entries while one of its futures waits on it,
    /// when the consumer finds it
    /// staged at two sweeps in a row (about 100 us apart while busy, at most a few ms when
    /// idle), or by [`Ring::drain`], [`Ring::deactivate`] and [`Ring::shutdown`]: on a busy
    /// ring, an awaited message waits for the next completion pass and gathers company (Nagle's
    /// algorithm; see the `stage` module). Messages to one slot keep their staging order
    /// (across threads too). A slot that is not active is refused at once.
    pub fn stage(&self, slot: SlotId, request: K::Request, stamp: HlcStamp) -> StagedReply<K> {
        StagedReply::new(
            self.shared.stage(slot, request, stamp.hlc, Order::Ring),
            slot,
        )
    }

    /// [`Ring::stage`] with the slot's order kept in `mark`, which the caller keeps with its
    /// own data for the slot instead of in the ring's table. Every ordered message to `slot`
    /// must then go through this call with the same mark, for as long as the slot holds this
    /// activation (a new activation of the slot starts with a new mark); messages staged with
    /// [`Ring::stage`] or another mark are not ordered with these.
    pub fn stage_marked(
        &self,
        slot: SlotId,
        mark: &StageMark,
        request: K::Request,
        stamp: HlcStamp,
    ) -> StagedReply<K> {
        let staged = self
            .shared
            .stage(slot, request, stamp.hlc, Order::Mark(mark));
        StagedReply::new(staged, slot)
    }

    /// [`Ring::stage`] without keeping order per slot (for slots whose messages have no order
    /// to keep, e.g. a pool of stateless workers): skips the per-slot bookkeeping, so threads
    /// sharing a slot never force each other's batches out.
    pub fn stage_unordered(
        &self,
        slot: SlotId,
        request: K::Request,
        stamp: HlcStamp,
    ) -> StagedReply<K> {
        StagedReply::new(
            self.shared
                .stage(slot, request, stamp.hlc, Order::Unordered),
            slot,
        )
    }

    /// Submits every staged message now, and resolves once none waits for ring room.
    pub async fn submit_staged(&self) {
        std::future::poll_fn(|cx| {
            self.shared.flush_all();
            if !self.shared.has_staged() || self.shared.queue.is_closed() {
                return Poll::Ready(());
            }
            self.shared.queue.wait(cx.waker());
            self.shared.flush_all();
            if self.shared.has_staged() && !self.shared.queue.is_closed() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    }

    /// Resolves when every message submitted (or staged) before the call has completed.
    pub async fn drain(&self) {
        self.submit_staged().await;
        let upto = self.shared.queue.tail();
        WaitHead {
            shared: &self.shared,
            upto,
        }
        .await;
    }

    /// Stops the ring: new calls fail with [`RingError::ShutDown`], and so does every call
    /// still in flight that the backend had not finished.
    pub fn shutdown(&self) {
        self.shared.queue.close();
        self.backend.shutdown();
        // Staged batches fail to claim now: their futures answer `ShutDown`.
        self.shared.flush_all();
        self.shared.queue.fail_pending(&RingError::ShutDown);
    }

    /// Messages submitted and not yet completed.
    pub fn queue_depth(&self) -> u64 {
        self.shared.queue.tail() - self.shared.queue.ready()
    }

    /// Messages completed since start (sample twice for a service rate).
    pub fn completed(&self) -> u64 {
        self.shared.queue.ready()
    }

    /// Active slots.
    pub fn active_slots(&self) -> usize {
        self.shared.slots.active_count()
    }

    /// A slot's status.
    pub fn slot_status(&self, slot: SlotId) -> SlotStatus {
        self.shared.slots.status(slot)
    }

    /// The ring's health.
    pub fn health(&self) -> RingHealth {
        RingHealth {
            backend: self.backend.kind(),
            running: !self.shared.queue.is_closed(),
            faults: self.shared.faults.load(Ordering::SeqCst),
            last_fault: self
                .shared
                .last_fault
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            heartbeat_age: self.backend.heartbeat_age(),
            queue_depth: self.queue_depth(),
            completed: self.completed(),
        }
    }

    /// Diagnostic counters of the backend and of staged submission (name, value), for
    /// benchmarks; unstable. `stage_messages / stage_batches` is the mean staged batch size.
    #[doc(hidden)]
    pub fn backend_stats(&self) -> Vec<(&'static str, u64)> {
        let mut stats = self.backend.stats();
        stats.extend(self.shared.staging_stats());
        stats
    }

    /// Test hook: makes the backend misbehave; returns whether it supports the injection.
    #[doc(hidden)]
    pub fn inject_fault(&self, fault: crate::backend::FaultInjection) -> bool {
        self.backend.inject_fault(fault)
    }
}

impl<K: Kernel> Drop for Ring<K> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct WaitHead<'a, K: Kernel> {
    shared: &'a RingShared<K>,
    upto: u64,
}

impl<K: Kernel> Future for WaitHead<'_, K> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.queue.ready() >= self.upto || self.shared.queue.is_closed() {
            return Poll::Ready(());
        }
        self.shared.queue.wait(cx.waker());
        if self.shared.queue.ready() >= self.upto || self.shared.queue.is_closed() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// The future of one call: waits for room in the ring, then for the response.
pub struct ReplyFuture<K: Kernel> {
    shared: Arc<RingShared<K>>,
    items: Vec<(SlotId, K::Request)>,
    stamp: HlcStamp,
    wait: Option<CellWait<K::Response>>,
}

impl<K: Kernel> ReplyFuture<K> {
    fn poll_outcomes(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Vec<Outcome<K::Response>>, RingError>> {
        if self.wait.is_none() {
            let cell = match self.shared.try_submit(&self.items, self.stamp) {
                Ok(Some(cell)) => cell,
                Ok(None) => {
                    self.shared.queue.wait(cx.waker());
                    match self.shared.try_submit(&self.items, self.stamp) {
                        Ok(Some(cell)) => cell,
                        Ok(None) => return Poll::Pending,
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            };
            self.wait = Some(CellWait {
                cell,
                spin: self.shared.config.reply_spin,
            });
        }
        let wait = self.wait.as_mut().expect("set above");
        // Persistent ring, batches: the completion thread only checked these K2H entries;
        // decode them here, on the caller's thread.
        let shared = &self.shared;
        let ready = wait.poll_all(cx, |t| shared.k2h_outcome(t));
        if ready.is_ready() {
            self.shared.after_consume();
        }
        ready.map(|outs| {
            Ok(outs
                .into_iter()
                .zip(&self.items)
                .map(|(o, (slot, _))| match o {
                    Err(RingError::SlotNotActive(_)) => Err(RingError::SlotNotActive(*slot)),
                    other => other,
                })
                .collect())
        })
    }
}

impl<K: Kernel> Unpin for ReplyFuture<K> {}

impl<K: Kernel> Drop for ReplyFuture<K> {
    fn drop(&mut self) {
        if let Some(wait) = self.wait.take() {
            // Dropping the wait marks its entries consumed (read or abandoned).
            drop(wait);
            self.shared.after_consume();
        }
    }
}

impl<K: Kernel> Future for ReplyFuture<K> {
    type Output = Result<Reply<K::Response>, RingError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.poll_outcomes(cx)
            .map(|r| r.and_then(|mut v| v.pop().unwrap_or(Err(RingError::ShutDown))))
    }
}

/// The future of a batch: one outcome per request, in order.
pub struct BatchFuture<K: Kernel>(ReplyFuture<K>);

impl<K: Kernel> Future for BatchFuture<K> {
    type Output = Result<Vec<Outcome<K::Response>>, RingError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.poll_outcomes(cx)
    }
}
