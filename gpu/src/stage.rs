//! Coalesced submission ([`Ring::stage`](crate::Ring::stage)): messages one thread issues close
//! together go to the ring as one run of entries (one claim of `tail`, one reply cell, one
//! wake-up from the completion thread, each caller decoding its own K2H entry), instead of one
//! claim, cell and wake-up each.
//!
//! Each thread stages into one of [`SHARDS`] shards of the ring (a thread keeps its shard for
//! life). A shard's open batch is submitted, under the shard's lock, when
//! - a future of the batch is polled (the batch's first awaited message flushes it),
//! - it is full (`SILICA_GPU_STAGE_MAX`, default 64 messages),
//! - a message for a slot whose previous message sits in another shard's open batch is staged
//!   (that batch is submitted first; see "Order"),
//! - the ring's consumer thread sweeps it: a batch found open at two sweeps in a row (~100 us
//!   apart while the consumer spins, up to its park timeout when it sleeps) is submitted, so a
//!   caller that awaits something else never leaves its message staged for long,
//! - or `drain`, `deactivate` or `shutdown` run.
//!
//! A lone call costs no waiting: its future flushes a batch of one when awaited, and a batch
//! of one is an ordinary single-message cell (decoded by the completion thread).
//!
//! # Order
//! Messages to one slot keep their staging order. Per slot, `marks` holds the id of the batch
//! that took the slot's latest staged message; staging for a slot first submits that batch if
//! it is another shard's and still open, then swaps in its own batch's id (a failed swap means
//! a concurrent stager: the own batch is submitted at once). So every earlier message of the
//! slot is on the ring, or in the batch that takes the new one, or in the `pending` queue,
//! which keeps submission order when the ring is full: once one batch waits there for room,
//! every later batch queues behind it.

use crate::clock::HlcStamp;
use crate::error::RingError;
use crate::kernel::Kernel;
use crate::queue::INVALID_SLOT;
use crate::reply::{Outcome, Reply, ReplyCell};
use crate::ring::RingShared;
use crate::slots::{SlotId, SlotStatus};
use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

/// Staging shards per ring; threads are spread over them round-robin.
pub(crate) const SHARDS: usize = 64;

const OPEN: u8 = 0;
const PENDING: u8 = 1;
const SUBMITTED: u8 = 2;
const FAILED: u8 = 3;

struct Item<Q> {
    slot: SlotId,
    hlc: u64,
    request: Q,
}

struct Shard<K: Kernel> {
    items: Vec<Item<K::Request>>,
    batch: Option<Arc<Batch<K>>>,
    seq: u64,
}

#[repr(align(128))]
struct ShardCell<K: Kernel> {
    /// Id of the open batch, 0 when none (read by the sweeper without the lock).
    open: AtomicU64,
    shard: Mutex<Shard<K>>,
}

/// A ring's staging area.
pub(crate) struct Stager<K: Kernel> {
    shards: Box<[ShardCell<K>]>,
    /// The sweeper's view of each shard's open batch at its last sweep.
    seen: Box<[AtomicU64]>,
    /// Per slot: id of the batch that took its latest staged message (0: none yet).
    marks: Box<[AtomicU64]>,
    /// Open batches, for cheap checks.
    open: AtomicUsize,
    /// Submitted batches that found the ring full, in submission order.
    pending: Mutex<VecDeque<Arc<Batch<K>>>>,
    pending_len: AtomicUsize,
    /// A waiter of the oldest pending batch was woken for new room and has not drained yet.
    room_woken: AtomicBool,
    max: usize,
}

impl<K: Kernel> Stager<K> {
    pub(crate) fn new(slots: u32, capacity: u64) -> Self {
        let max = std::env::var("SILICA_GPU_STAGE_MAX")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(64)
            .clamp(1, (capacity / 4).max(1) as usize);
        Self {
            shards: (0..SHARDS)
                .map(|_| ShardCell {
                    open: AtomicU64::new(0),
                    shard: Mutex::new(Shard {
                        items: Vec::with_capacity(max),
                        batch: None,
                        seq: 0,
                    }),
                })
                .collect(),
            seen: (0..SHARDS).map(|_| AtomicU64::new(0)).collect(),
            marks: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            open: AtomicUsize::new(0),
            pending: Mutex::new(VecDeque::new()),
            pending_len: AtomicUsize::new(0),
            room_woken: AtomicBool::new(false),
            max,
        }
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard<K>> {
        self.shards[shard]
            .shard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// One staged run of messages, shared by the futures of its messages.
pub(crate) struct Batch<K: Kernel> {
    shared: Arc<RingShared<K>>,
    id: u64,
    home: usize,
    state: AtomicU8,
    cell: OnceLock<Arc<ReplyCell<K::Response>>>,
    error: OnceLock<RingError>,
    /// The messages of a batch waiting in `pending` for ring room.
    waiting: Mutex<Vec<Item<K::Request>>>,
    /// Futures of a pending batch, by entry index; moved to the reply cell when it is
    /// published (so a published batch costs no extra wake-up), woken if it fails.
    waiters: Mutex<Vec<(u32, Waker)>>,
    /// Futures that have not read (or dropped) their outcome yet.
    readers: AtomicUsize,
}

impl<K: Kernel> Batch<K> {
    fn fail(&self, error: RingError) {
        let _ = self.error.set(error);
        let waiters = {
            let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            self.state.store(FAILED, Ordering::SeqCst);
            std::mem::take(&mut *w)
        };
        waiters.into_iter().for_each(|(_, w)| w.wake());
    }

    /// Registers the waker of entry `index` while the batch waits for room; `false` if it
    /// left `PENDING` meanwhile.
    fn wait_pending(&self, index: u32, waker: &Waker) -> bool {
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if self.state.load(Ordering::SeqCst) != PENDING {
            return false;
        }
        match w.iter_mut().find(|(i, _)| *i == index) {
            Some((_, old)) => old.clone_from(waker),
            None => w.push((index, waker.clone())),
        }
        true
    }

    /// One future is done with its entry; the last one lets the ring reuse the positions.
    fn release_reader(&self) {
        if self.readers.fetch_sub(1, Ordering::SeqCst) == 1
            && self.state.load(Ordering::SeqCst) == SUBMITTED
            && let Some(cell) = self.cell.get()
        {
            cell.mark_consumed();
            self.shared.after_consume();
        }
    }
}

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The calling thread's shard.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    SHARD.with(|s| {
        let mut v = s.get();
        if v == usize::MAX {
            v = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            s.set(v);
        }
        v
    })
}

impl<K: Kernel> RingShared<K> {
    /// Stages `request` for `slot` in the calling thread's batch (see the module docs).
    pub(crate) fn stage(
        self: &Arc<Self>,
        slot: SlotId,
        request: K::Request,
        hlc: u64,
        ordered: bool,
    ) -> Result<(Arc<Batch<K>>, u32), RingError> {
        if let Some(err) = self.status_error(slot) {
            return Err(err);
        }
        let st = &self.stager;
        let home = shard_index();
        let mark_at = ordered.then(|| &st.marks[slot.0 as usize]);
        let mark = mark_at.map_or(0, |m| m.load(Ordering::Acquire));
        if mark != 0 && (mark as usize) % SHARDS != home {
            self.flush_shard((mark as usize) % SHARDS, Some(mark));
        }
        let mut shard = st.lock(home);
        let batch = match &shard.batch {
            Some(b) => b.clone(),
            None => {
                shard.seq += 1;
                let id = shard.seq * SHARDS as u64 + home as u64;
                let b = Arc::new(Batch {
                    shared: self.clone(),
                    id,
                    home,
                    state: AtomicU8::new(OPEN),
                    cell: OnceLock::new(),
                    error: OnceLock::new(),
                    waiting: Mutex::new(Vec::new()),
                    waiters: Mutex::new(Vec::new()),
                    readers: AtomicUsize::new(0),
                });
                st.shards[home].open.store(id, Ordering::Relaxed);
                st.open.fetch_add(1, Ordering::Relaxed);
                shard.batch = Some(b.clone());
                b
            }
        };
        let index = shard.items.len() as u32;
        shard.items.push(Item { slot, hlc, request });
        batch.readers.fetch_add(1, Ordering::Relaxed);
        let raced = mark_at.is_some_and(|m| {
            mark != batch.id
                && m.compare_exchange(mark, batch.id, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
        });
        if raced || shard.items.len() >= st.max {
            self.submit_locked(home, &mut shard);
        }
        Ok((batch, index))
    }

    /// Submits shard `home`'s open batch (only if its id is `only`, when given).
    pub(crate) fn flush_shard(&self, home: usize, only: Option<u64>) {
        let mut shard = self.stager.lock(home);
        if shard
            .batch
            .as_ref()
            .is_some_and(|b| only.is_none_or(|id| b.id == id))
        {
            self.submit_locked(home, &mut shard);
        }
    }

    /// Submits every open batch and whatever waits for room (drain, deactivate, shutdown).
    pub(crate) fn flush_all(&self) {
        if self.stager.open.load(Ordering::SeqCst) != 0 {
            for home in 0..SHARDS {
                if self.stager.shards[home].open.load(Ordering::Relaxed) != 0 {
                    self.flush_shard(home, None);
                }
            }
        }
        self.drain_pending();
    }

    /// Whether staged messages wait for a flush or for ring room.
    pub(crate) fn has_staged(&self) -> bool {
        self.stager.open.load(Ordering::SeqCst) != 0
            || self.stager.pending_len.load(Ordering::SeqCst) != 0
    }

    /// The consumer thread's fallback: submits batches found open at the previous sweep too,
    /// and moves waiting batches onto the ring if it has room.
    pub(crate) fn sweep_staged(&self) {
        let st = &self.stager;
        if st.open.load(Ordering::Relaxed) != 0 {
            for home in 0..SHARDS {
                let id = st.shards[home].open.load(Ordering::Relaxed);
                let seen = st.seen[home].load(Ordering::Relaxed);
                if id != 0 && id == seen {
                    self.flush_shard(home, Some(id));
                } else if id != seen {
                    st.seen[home].store(id, Ordering::Relaxed);
                }
            }
        }
        self.drain_pending();
    }

    fn submit_locked(&self, home: usize, shard: &mut Shard<K>) {
        let Some(batch) = shard.batch.take() else {
            return;
        };
        let st = &self.stager;
        st.shards[home].open.store(0, Ordering::Relaxed);
        st.open.fetch_sub(1, Ordering::SeqCst);
        if st.pending_len.load(Ordering::SeqCst) == 0 {
            match self.queue.claim(shard.items.len() as u64) {
                Ok(Some(first)) => {
                    self.publish_batch(&batch, first, &shard.items);
                    shard.items.clear();
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    batch.fail(e);
                    shard.items.clear();
                    return;
                }
            }
        }
        // The ring is full (or others already wait): queue behind them, in order.
        *batch.waiting.lock().unwrap_or_else(|e| e.into_inner()) =
            std::mem::replace(&mut shard.items, Vec::with_capacity(st.max));
        batch.state.store(PENDING, Ordering::SeqCst);
        {
            let mut pending = st.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.push_back(batch);
            st.pending_len.store(pending.len(), Ordering::SeqCst);
        }
        self.drain_pending();
    }

    /// The ring has new room (the consumer moved `head`): wakes one future of the oldest
    /// waiting batch, which moves as many batches onto the ring as fit. At most one such
    /// wake-up is outstanding; the consumer's sweep drains if its task never polls.
    pub(crate) fn room_for_staged(&self) {
        let st = &self.stager;
        if st.pending_len.load(Ordering::SeqCst) == 0 || st.room_woken.swap(true, Ordering::SeqCst)
        {
            return;
        }
        let waker = {
            let pending = st.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.front().and_then(|b| {
                let w = b.waiters.lock().unwrap_or_else(|e| e.into_inner());
                w.last().map(|(_, w)| w.clone())
            })
        };
        match waker {
            Some(w) => w.wake(),
            None => st.room_woken.store(false, Ordering::SeqCst),
        }
    }

    /// Moves waiting batches onto the ring, oldest first, while there is room.
    pub(crate) fn drain_pending(&self) {
        let st = &self.stager;
        if st.pending_len.load(Ordering::SeqCst) == 0 {
            return;
        }
        st.room_woken.store(false, Ordering::SeqCst);
        let mut pending = st.pending.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(batch) = pending.front() {
            let mut items = batch.waiting.lock().unwrap_or_else(|e| e.into_inner());
            match self.queue.claim(items.len() as u64) {
                Ok(Some(first)) => self.publish_batch(batch, first, &items),
                Ok(None) => break,
                Err(e) => batch.fail(e),
            }
            items.clear();
            drop(items);
            pending.pop_front();
        }
        st.pending_len.store(pending.len(), Ordering::SeqCst);
    }

    fn publish_batch(&self, batch: &Batch<K>, first: u64, items: &[Item<K::Request>]) {
        let cell = Arc::new(ReplyCell::new(first, items.len()));
        // Futures that waited for room wait on the cell from now on, without a wake-up. They
        // move before any entry is published (the cell may complete at once), and the lock is
        // held until the batch is `SUBMITTED`, so no future registers on the batch in between.
        let mut waiters = batch.waiters.lock().unwrap_or_else(|e| e.into_inner());
        cell.adopt(std::mem::take(&mut *waiters));
        // One reference for the whole run, dropped when its last entry completes.
        let raw = Arc::into_raw(cell.clone());
        for (i, item) in items.iter().enumerate() {
            // Checked after the claim, as in `try_submit`.
            let wire = if self.slots.status(item.slot) == SlotStatus::Active {
                item.slot.0
            } else {
                INVALID_SLOT
            };
            self.queue
                .publish(first + i as u64, wire, item.hlc, &item.request, raw);
        }
        self.wake_consumer();
        let _ = batch.cell.set(cell);
        batch.state.store(SUBMITTED, Ordering::SeqCst);
        drop(waiters);
        if batch.readers.load(Ordering::SeqCst) == 0
            && let Some(cell) = batch.cell.get()
        {
            cell.mark_consumed();
        }
    }
}

/// The future of a staged message: see [`Ring::stage`](crate::Ring::stage).
#[must_use = "a staged message is submitted when its future is polled, or soon after"]
pub struct StagedReply<K: Kernel> {
    inner: Inner<K>,
}

enum Inner<K: Kernel> {
    Staged {
        batch: Arc<Batch<K>>,
        index: u32,
        slot: SlotId,
        registered: Option<Waker>,
        high: u64,
        /// Resolved: its reader count was released.
        read: bool,
    },
    Refused(Option<RingError>),
}

impl<K: Kernel> StagedReply<K> {
    pub(crate) fn new(staged: Result<(Arc<Batch<K>>, u32), RingError>, slot: SlotId) -> Self {
        let inner = match staged {
            Ok((batch, index)) => Inner::Staged {
                batch,
                index,
                slot,
                registered: None,
                high: 0,
                read: false,
            },
            Err(e) => Inner::Refused(Some(e)),
        };
        Self { inner }
    }

    /// The highest HLC stamp among the responses of the run this message went in with (at
    /// least its own), once it resolved; a caller merging device stamps into its clock needs
    /// only this one per run. `None` before it resolves or if the backend records none.
    pub fn run_high_stamp(&self) -> Option<HlcStamp> {
        match &self.inner {
            Inner::Staged { batch, high, .. } if *high != 0 => {
                Some(HlcStamp::new(*high, batch.shared.clock.node()))
            }
            _ => None,
        }
    }

    fn poll_staged(&mut self, cx: &mut Context<'_>) -> Poll<Outcome<K::Response>> {
        let (batch, index, slot, registered, high) = match &mut self.inner {
            Inner::Refused(e) => return Poll::Ready(Err(e.take().unwrap_or(RingError::ShutDown))),
            Inner::Staged { read: true, .. } => panic!("StagedReply polled after completion"),
            Inner::Staged {
                batch,
                index,
                slot,
                registered,
                high,
                ..
            } => (batch, index, slot, registered, high),
        };
        let shared = &batch.shared;
        loop {
            match batch.state.load(Ordering::Acquire) {
                OPEN => shared.flush_shard(batch.home, Some(batch.id)),
                PENDING => {
                    shared.drain_pending();
                    if batch.wait_pending(*index, cx.waker()) {
                        *registered = None;
                        return Poll::Pending;
                    }
                }
                FAILED => {
                    let error = batch.error.get().cloned().unwrap_or(RingError::ShutDown);
                    return Poll::Ready(Err(error));
                }
                _ => break,
            }
        }
        let cell = batch.cell.get().expect("a submitted batch has its cell");
        if !cell.is_done() {
            if registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                return Poll::Pending;
            }
            *registered = Some(cx.waker().clone());
            if !cell.register(*index, cx.waker()) {
                return Poll::Pending;
            }
        }
        cell.fan_out();
        let outcome = cell.take_one(*index as usize, |t| shared.k2h_outcome(t));
        let outcome = match outcome {
            Err(RingError::SlotNotActive(_)) => Err(RingError::SlotNotActive(*slot)),
            Ok(reply) => {
                *high = cell.high().max(reply.stamp.hlc);
                Ok(reply)
            }
            other => other,
        };
        Poll::Ready(outcome)
    }
}

impl<K: Kernel> Unpin for StagedReply<K> {}

impl<K: Kernel> Future for StagedReply<K> {
    type Output = Result<Reply<K::Response>, RingError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let out = self.poll_staged(cx);
        if out.is_ready()
            && let Inner::Staged {
                batch,
                registered,
                read,
                ..
            } = &mut self.inner
        {
            *read = true;
            *registered = None;
            batch.release_reader();
        }
        out
    }
}

impl<K: Kernel> Drop for StagedReply<K> {
    fn drop(&mut self) {
        if let Inner::Staged {
            batch,
            index,
            read: false,
            ..
        } = &self.inner
        {
            if batch.state.load(Ordering::Acquire) == SUBMITTED
                && let Some(cell) = batch.cell.get()
            {
                cell.unregister(*index);
            }
            batch.release_reader();
        }
    }
}
