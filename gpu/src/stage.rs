//! Coalesced submission ([`Ring::stage`](crate::Ring::stage)): messages one thread issues close
//! together go to the ring as one run of entries (one claim of `tail`, one reply cell, one
//! wake-up from the completion thread, each caller decoding its own K2H entry), instead of one
//! claim, cell and wake-up each.
//!
//! Each thread stages into one of [`SHARDS`] shards of the ring (a thread keeps its shard for
//! life). A shard's open batch is submitted, under the shard's lock, when
//! - a future of the batch is awaited while the ring is quiet (nothing submitted is unfinished,
//!   nothing waits for room, see "Flush policy"),
//! - it is full (`SILICA_GPU_STAGE_MAX`, default 128 messages),
//! - a message for a slot whose previous message sits in another shard's open batch is staged
//!   (that batch is submitted first; see "Order"),
//! - a future waits on it and the ring's consumer thread finishes a pass of entries
//!   ([`RingShared::flush_after_completion`]),
//! - the consumer's fallback sweep finds it open at two sweeps in a row (~100 us apart while
//!   the consumer spins, up to its park timeout when it sleeps),
//! - or `drain`, `deactivate` or `shutdown` run.
//!
//! # Flush policy (Nagle)
//! Flushing a batch on its first awaited future made every batch hold one message under load
//! (a caller that keeps N calls in flight issues one call per completion and awaits it at
//! once). So, as TCP's Nagle algorithm holds small segments while data is unacknowledged, an
//! awaited future flushes its open batch at once only when the ring is quiet: then a lone call
//! costs no waiting. On a busy ring it registers its waker on the batch, marks the shard in
//! `awaited_mask` and leaves the batch open to collect more messages; the consumer submits
//! every marked shard's batch right after each completion pass (the "ack"), with `try_lock` so
//! that it never waits behind a stager (a shard it skips goes at its next pass, or, if none
//! comes, from its idle loop). Batches nobody awaits yet are left to gather their thread's
//! burst; the fallback sweep covers those never awaited. The consumer reads only
//! `awaited_mask`, which only a loaded ring writes: a lone caller's path stays as it was.
//! A future awaited at position `SILICA_GPU_STAGE_AWAIT_MIN` or later in its open batch
//! (default: half the batch maximum, 64) submits the batch at once even on a busy ring: a batch
//! that size gains little by waiting for the ack, and the consumer, which otherwise submits it
//! (writing every entry), completes entries meanwhile instead. With 64 callers x 64 calls in
//! flight, the consumer had submitted 80% of the batches and was the limit (G2 8.2-8.9 M
//! calls/s on an H200, against 10-12 with the threshold; docs/BENCHMARKS.md). 0 turns it off.
//! Waiters of an open or waiting batch move to its reply cell when it is published, so none
//! is lost (`RingShared::await_open` says why none is left open).
//! `SILICA_GPU_STAGE_FLUSH=await` restores flushing on the first await (for comparisons).
//!
//! A batch of one is an ordinary single-message cell (decoded by the completion thread).
//!
//! # Order
//! Messages to one slot keep their staging order. Per slot, a mark holds the id of the batch
//! that took the slot's latest staged message (the ring's `marks`, or a [`StageMark`] the caller
//! keeps with its activation); staging for a slot first submits that batch if
//! it is another shard's and still open, then swaps in its own batch's id (a failed swap means
//! a concurrent stager: the own batch is submitted at once). So every earlier message of the
//! slot is on the ring, or in the batch that takes the new one, or in the `pending` queue,
//! which keeps submission order when the ring is full: once one batch waits there for room,
//! every later batch queues behind it. Who submits a batch (a future, the consumer, a sweep)
//! does not change this.
//!
//! # Statistics
//! [`RingShared::staging_stats`] counts submitted batches, their messages and what submitted
//! them (shown by `Ring::backend_stats`), so a benchmark shows how well calls coalesce.

use crate::clock::HlcStamp;
use crate::error::RingError;
use crate::kernel::Kernel;
use crate::queue::INVALID_SLOT;
use crate::reply::{Outcome, Reply, ReplyCell, Waiters};
use crate::ring::RingShared;
use crate::slots::{SlotId, SlotStatus};
use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

/// Staging shards per ring; threads are spread over them round-robin. At most 64: one bit
/// each in [`Stager::open_mask`].
pub(crate) const SHARDS: usize = 64;

/// Messages in a batch before it goes by itself. 128 rather than 64: fewer runs (claims,
/// cells, kernel publishes, lead wake-ups) for the same calls; G2 on an H200 went 15.5-15.8 ->
/// 17.8 M calls/s (64 callers x 256 in flight) and 16.1-16.8 -> 19.9 (16 x 256, spinning) in
/// one run, and gained with 131,072- and 262,144-entry rings on another; 256 was slower again
/// (more entries held per run, so the ring filled). docs/BENCHMARKS.md has the runs.
const DEFAULT_MAX: usize = 128;

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

#[repr(align(128))]
struct Padded<T>(T);

/// What submitted a batch (counted in [`StageStats`]).
#[derive(Clone, Copy)]
enum Flush {
    /// A future was awaited while the ring was quiet, or far enough into its batch (or
    /// `SILICA_GPU_STAGE_FLUSH=await`).
    Await,
    /// The batch reached its maximum size.
    Full,
    /// A message for a slot whose previous message was in this batch was staged elsewhere.
    Order,
    /// The consumer, after a completion pass.
    Completion,
    /// The consumer while idle, retrying an awaited batch whose shard a completion pass
    /// found locked.
    Idle,
    /// The consumer's fallback sweep (open at two sweeps in a row).
    Sweep,
    /// `drain`, `deactivate` or `shutdown`.
    Drain,
}

const FLUSH_NAMES: [&str; 7] = [
    "stage_flush_await",
    "stage_flush_full",
    "stage_flush_order",
    "stage_flush_completion",
    "stage_flush_idle",
    "stage_flush_sweep",
    "stage_flush_drain",
];

/// Counters of staged submissions, on their own cache line: updated once per batch.
#[repr(align(128))]
#[derive(Default)]
struct StageStats {
    /// Batches published on the ring, and their messages.
    batches: AtomicU64,
    messages: AtomicU64,
    /// Batches taken out of their shard, by [`Flush`] cause.
    flushes: [AtomicU64; 7],
}

/// Where the order of one slot's staged messages is kept (see "Order" in the module docs),
/// for a caller that keeps it next to its own per-activation data: see
/// [`Ring::stage_marked`](crate::Ring::stage_marked). The ring's own marks sit 8 to a cache
/// line, so callers of different slots on different cores write the same line; a mark kept
/// with data the caller touches anyway costs no extra line.
#[derive(Debug, Default)]
pub struct StageMark(AtomicU64);

/// Which mark keeps a staged message in order with its slot's others.
pub(crate) enum Order<'a> {
    /// The ring's mark of the slot.
    Ring,
    /// The caller's mark of the slot.
    Mark(&'a StageMark),
    /// None: the slot's messages have no order to keep.
    Unordered,
}

/// A ring's staging area.
pub(crate) struct Stager<K: Kernel> {
    shards: Box<[ShardCell<K>]>,
    /// The sweeper's view of each shard's open batch at its last sweep.
    seen: Box<[AtomicU64]>,
    /// Per slot: id of the batch that took its latest staged message (0: none yet).
    marks: Box<[AtomicU64]>,
    /// Bit `i` set while shard `i` has an open batch. Its own cache line: every stager writes
    /// it once per batch, and the fields read per message (`marks`) must not share its line.
    open_mask: Padded<AtomicU64>,
    /// Bit `i` set once a future waits on shard `i`'s open batch (the ring was busy): the
    /// batches the consumer submits after a completion pass. Its own cache line, written only
    /// under load, so a consumer checking it costs a lone caller nothing.
    awaited_mask: Padded<AtomicU64>,
    /// Nagle flushing (see the module docs); off: a batch goes on its first awaited future.
    nagle: bool,
    /// An awaited future whose message is at least this far into its open batch submits the
    /// batch at once, busy ring or not (see "Flush policy"; 0: never).
    await_min: u32,
    stats: StageStats,
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
            .unwrap_or(DEFAULT_MAX)
            .clamp(1, (capacity / 4).max(1) as usize);
        let nagle = std::env::var("SILICA_GPU_STAGE_FLUSH").map_or(true, |v| v != "await");
        let await_min = std::env::var("SILICA_GPU_STAGE_AWAIT_MIN")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(max as u32 / 2);
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
            open_mask: Padded(AtomicU64::new(0)),
            awaited_mask: Padded(AtomicU64::new(0)),
            nagle,
            await_min,
            stats: StageStats::default(),
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

    /// The shard's lock if nobody holds it (the consumer never waits behind a stager).
    fn try_lock(&self, shard: usize) -> Option<MutexGuard<'_, Shard<K>>> {
        match self.shards[shard].shard.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    fn count(&self, cause: Flush) {
        self.stats.flushes[cause as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// One staged run of messages, shared by the futures of its messages. Aligned so that the
/// `Arc`'s reference count, which every future of the run writes when it goes, has a line of
/// its own, apart from the fields each future reads when polled.
#[repr(align(128))]
pub(crate) struct Batch<K: Kernel> {
    shared: Arc<RingShared<K>>,
    id: u64,
    home: usize,
    state: AtomicU8,
    cell: OnceLock<Arc<ReplyCell<K::Response>>>,
    error: OnceLock<RingError>,
    /// The messages of a batch waiting in `pending` for ring room.
    waiting: Mutex<Vec<Item<K::Request>>>,
    /// Futures waiting on an open or pending batch, by entry index; moved to the reply cell
    /// when it is published (so a published batch costs no extra wake-up), woken if it fails.
    /// `state` leaves `OPEN`/`PENDING` only under this lock.
    waiters: Mutex<Vec<(u32, Waker)>>,
    /// Futures that have not read (or dropped) their outcome yet, counted without an atomic
    /// write per staged message: the batch's length is added when it is published, and each
    /// future subtracts one when done (so the count can go below zero while the batch is open,
    /// if futures are dropped before it is sent).
    readers: AtomicIsize,
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

    /// Registers the waker of entry `index` while the batch is open or waits for room;
    /// `false` if it was submitted (or failed) meanwhile.
    fn wait_unsubmitted(&self, index: u32, waker: &Waker, first: bool) -> bool {
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(self.state.load(Ordering::SeqCst), OPEN | PENDING) {
            return false;
        }
        w.replace_or_push(index, waker, first);
        true
    }

    /// Forgets the waker of entry `index` (its future is gone), wherever it waits now.
    fn forget_waiter(&self, index: u32) {
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        match self.state.load(Ordering::SeqCst) {
            OPEN | PENDING => w.retain(|(i, _)| *i != index),
            SUBMITTED => {
                drop(w);
                if let Some(cell) = self.cell.get() {
                    cell.unregister(index);
                }
            }
            _ => {}
        }
    }

    /// One future is done with its entry; the last one lets the ring reuse the positions.
    fn release_reader(&self) {
        // Before the batch is published the count is at most zero, so only a release after the
        // publish (which adds the length) can bring it from one to zero.
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
        order: Order<'_>,
    ) -> Result<(Arc<Batch<K>>, u32), RingError> {
        if let Some(err) = self.status_error(slot) {
            return Err(err);
        }
        let st = &self.stager;
        let home = shard_index();
        let mark_at = match order {
            Order::Ring => Some(&st.marks[slot.0 as usize]),
            Order::Mark(mark) => Some(&mark.0),
            Order::Unordered => None,
        };
        let mark = mark_at.map_or(0, |m| m.load(Ordering::Acquire));
        if mark != 0 && (mark as usize) % SHARDS != home {
            self.flush_shard((mark as usize) % SHARDS, Some(mark), Flush::Order);
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
                    readers: AtomicIsize::new(0),
                });
                st.shards[home].open.store(id, Ordering::Relaxed);
                st.open_mask.0.fetch_or(1 << home, Ordering::SeqCst);
                shard.batch = Some(b.clone());
                b
            }
        };
        let index = shard.items.len() as u32;
        shard.items.push(Item { slot, hlc, request });
        let raced = mark_at.is_some_and(|m| {
            mark != batch.id
                && m.compare_exchange(mark, batch.id, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
        });
        if raced {
            self.submit_locked(home, &mut shard, Flush::Order);
        } else if shard.items.len() >= st.max {
            self.submit_locked(home, &mut shard, Flush::Full);
        }
        Ok((batch, index))
    }

    /// Submits shard `home`'s open batch (only if its id is `only`, when given).
    fn flush_shard(&self, home: usize, only: Option<u64>, cause: Flush) {
        let mut shard = self.stager.lock(home);
        if shard
            .batch
            .as_ref()
            .is_some_and(|b| only.is_none_or(|id| b.id == id))
        {
            self.submit_locked(home, &mut shard, cause);
        }
    }

    /// Submits every open batch and whatever waits for room (drain, deactivate, shutdown).
    pub(crate) fn flush_all(&self) {
        let mut mask = self.stager.open_mask.0.load(Ordering::SeqCst);
        while mask != 0 {
            let home = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            self.flush_shard(home, None, Flush::Drain);
        }
        self.drain_pending();
    }

    /// Whether staged batches wait for ring room.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // the persistent ring's rescue
    pub(crate) fn waits_for_room(&self) -> bool {
        self.stager.pending_len.load(Ordering::SeqCst) != 0
    }

    /// Whether staged messages wait for a flush or for ring room.
    pub(crate) fn has_staged(&self) -> bool {
        self.stager.open_mask.0.load(Ordering::SeqCst) != 0
            || self.stager.pending_len.load(Ordering::SeqCst) != 0
    }

    /// Whether an awaited future should submit its open batch now: the ring is quiet (every
    /// submitted entry finished, no batch waits for room) or closed, or Nagle is off.
    fn flush_now(&self) -> bool {
        let st = &self.stager;
        !st.nagle
            || (st.pending_len.load(Ordering::SeqCst) == 0
                && self.queue.tail() == self.queue.ready_seqcst())
            || self.queue.is_closed()
    }

    /// A future waits on its open batch in shard `home`: marks the shard for the consumer,
    /// then checks again whether the ring went quiet meanwhile (`true`: flush it now).
    ///
    /// Why no batch is left behind: the future saw an entry unfinished. Either the consumer's
    /// pass that finishes the last such entry moves `ready` after the mark (all SeqCst), and
    /// so `flush_after_completion` sees the mark, or the check here sees that pass and finds
    /// the ring quiet (or still busy with a later entry, whose pass then sees the mark).
    fn await_open(&self, home: usize) -> bool {
        let mask = &self.stager.awaited_mask.0;
        if mask.load(Ordering::SeqCst) & (1 << home) == 0 {
            mask.fetch_or(1 << home, Ordering::SeqCst);
        }
        self.flush_now()
    }

    /// The consumer finished a pass of entries (Nagle's "ack"): submits every open batch a
    /// future waits on, if it can lock the batch's shard without waiting. Returns whether it
    /// skipped one (the consumer then calls again when idle). One load when nobody waits.
    pub(crate) fn flush_after_completion(&self) -> bool {
        self.flush_awaited(Flush::Completion)
    }

    /// [`RingShared::flush_after_completion`] for a consumer that skipped a shard and found
    /// no more entries to finish; returns whether it skipped one again.
    pub(crate) fn flush_awaited_when_idle(&self) -> bool {
        self.flush_awaited(Flush::Idle)
    }

    fn flush_awaited(&self, cause: Flush) -> bool {
        let st = &self.stager;
        let mut mask = st.awaited_mask.0.load(Ordering::SeqCst);
        let mut skipped = false;
        while mask != 0 {
            let home = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            match st.try_lock(home) {
                Some(mut shard) if shard.batch.is_some() => {
                    self.submit_locked(home, &mut shard, cause)
                }
                // A mark left by a future of a batch already submitted.
                Some(_) => {
                    st.awaited_mask.0.fetch_and(!(1 << home), Ordering::SeqCst);
                }
                None => skipped = true,
            }
        }
        skipped
    }

    /// The consumer thread's fallback: submits batches found open at the previous sweep too,
    /// and moves waiting batches onto the ring if it has room.
    pub(crate) fn sweep_staged(&self) {
        let st = &self.stager;
        // Batch ids never repeat within a shard, so a stale `seen` never matches a new batch.
        let mut mask = st.open_mask.0.load(Ordering::Relaxed);
        while mask != 0 {
            let home = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let id = st.shards[home].open.load(Ordering::Relaxed);
            let seen = st.seen[home].load(Ordering::Relaxed);
            if id != 0 && id == seen {
                self.flush_shard(home, Some(id), Flush::Sweep);
            } else if id != seen {
                st.seen[home].store(id, Ordering::Relaxed);
            }
        }
        self.drain_pending();
    }

    /// Staging counters (name, value), for `Ring::backend_stats`.
    pub(crate) fn staging_stats(&self) -> Vec<(&'static str, u64)> {
        let s = &self.stager.stats;
        let mut out = vec![
            ("stage_batches", s.batches.load(Ordering::Relaxed)),
            ("stage_messages", s.messages.load(Ordering::Relaxed)),
        ];
        out.extend(
            FLUSH_NAMES
                .iter()
                .zip(&s.flushes)
                .map(|(name, n)| (*name, n.load(Ordering::Relaxed))),
        );
        out
    }

    fn submit_locked(&self, home: usize, shard: &mut Shard<K>, cause: Flush) {
        let Some(batch) = shard.batch.take() else {
            return;
        };
        let st = &self.stager;
        st.count(cause);
        st.shards[home].open.store(0, Ordering::Relaxed);
        st.open_mask.0.fetch_and(!(1 << home), Ordering::SeqCst);
        if st.awaited_mask.0.load(Ordering::Relaxed) & (1 << home) != 0 {
            st.awaited_mask.0.fetch_and(!(1 << home), Ordering::SeqCst);
        }
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
        let stats = &self.stager.stats;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .messages
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        let cell = Arc::new(ReplyCell::new_staged(first, items.len()));
        // Futures that waited (open or for room) wait on the cell from now on, no wake-up. They
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
        self.queue.published();
        self.wake_consumer();
        let _ = batch.cell.set(cell);
        batch.state.store(SUBMITTED, Ordering::SeqCst);
        drop(waiters);
        // Every staged message has its future: the run's readers are its length, less those
        // already gone. If none is left, the run is consumed now.
        let readers = items.len() as isize;
        if batch.readers.fetch_add(readers, Ordering::SeqCst) + readers == 0
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
        /// Whether this future left a waker on its batch or cell. Not the waker itself: a
        /// clone and its drop were two more atomic writes a call, and a pending future is
        /// polled again only when woken (or spuriously), which re-registers by search.
        registered: bool,
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
                registered: false,
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
        // `registered`: this future left a waker on the batch or its cell (a batch moves its
        // waiters to the cell when published, so the registration carries over); a later
        // registration replaces it.
        loop {
            match batch.state.load(Ordering::Acquire) {
                // Far enough into its batch: little is gained by waiting (see "Flush policy").
                OPEN if shared.stager.await_min != 0 && *index + 1 >= shared.stager.await_min => {
                    shared.flush_shard(batch.home, Some(batch.id), Flush::Await)
                }
                OPEN if shared.flush_now() => {
                    shared.flush_shard(batch.home, Some(batch.id), Flush::Await)
                }
                OPEN => {
                    // Busy ring: the batch stays open to collect more (see "Flush policy").
                    if batch.wait_unsubmitted(*index, cx.waker(), !*registered) {
                        *registered = true;
                        if shared.await_open(batch.home) {
                            // Quiet after all: send it (its waker moves to the cell).
                            shared.flush_shard(batch.home, Some(batch.id), Flush::Await);
                            continue;
                        }
                        return Poll::Pending;
                    }
                }
                PENDING => {
                    // Woken for new ring room (or polled again): move waiting batches first.
                    shared.drain_pending();
                    if batch.wait_unsubmitted(*index, cx.waker(), !*registered) {
                        *registered = true;
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
            let first = !std::mem::replace(registered, true);
            if !cell.register(*index, cx.waker(), first) {
                return Poll::Pending;
            }
        }
        // The first reader decodes the whole run into the cell before it wakes the others, so
        // they find it there (see `ReplyCell::decode_run`).
        if cell.decode_run(|t| shared.k2h_outcome(t)) {
            shared.after_consume();
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
            && let Inner::Staged { batch, read, .. } = &mut self.inner
        {
            *read = true;
            // A run decoded into its cell is consumed already: its readers need not count down
            // (one more write to a line every core reading the run shares).
            if !batch.cell.get().is_some_and(|c| c.is_consumed()) {
                batch.release_reader();
            }
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
            // Its message still goes (or went) to the ring; only the future is gone.
            batch.forget_waiter(*index);
            batch.release_reader();
        }
    }
}

#[cfg(test)]
#[path = "stage_tests.rs"]
mod tests;
