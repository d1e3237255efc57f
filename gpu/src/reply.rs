//! Where responses land: one cell per submitted message (or batch), completed by the consumer
//! and awaited by the caller, who spins briefly before registering a waker (DESIGN §3 rule 10).
//!
//! A cell's outcomes are either stored in it (batch backends, errors) or, for a leading run of
//! its entries, left in the K2H ring for the caller to decode (persistent ring): the completion
//! thread then only checks that those entries are whole and counts them, and the caller marks
//! the cell consumed once it has read them, which lets the ring reuse their positions.
//!
//! A staged batch (`stage.rs`) is one cell awaited by one future per entry: each registers its
//! own waker under its entry index. The persistent ring's completion thread decodes every K2H
//! entry of the run into the cell before the cell is done ([`ReplyCell::decode_finished`],
//! `Tuning::decode_on_completion`, on by default), which frees the positions; with that off,
//! the first future to read the done cell does it ([`ReplyCell::decode_run`]). Each future then
//! takes its own outcome from the cell, with loads only. The persistent ring's
//! completion thread wakes only one of them (the lead, [`ReplyCell::finish`] with `lead_only`,
//! `Tuning::lead_only_wake`, on by default): the first future polled after completion wakes
//! the rest from its own (runtime) thread, and the completion thread wakes one more if nobody
//! did by its next pass of entries or its next sweep, and so on
//! ([`ReplyCell::fan_out_if_stale`]). So one thread does not make every wake-up of a busy
//! ring: with 62-message batches on H200 machines, G2 (64 callers x 256 calls in flight) gained
//! 18-79% in same-run comparisons. The batch backends wake every future.

use crate::clock::HlcStamp;
use crate::error::RingError;
use crate::slots::SlotId;
use smallvec::SmallVec;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A response and the HLC stamp the device gave it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reply<R> {
    /// The handler's response.
    pub response: R,
    /// The responding clock's stamp, merged from the request's.
    pub stamp: HlcStamp,
}

/// What one message ends with.
pub type Outcome<R> = Result<Reply<R>, RingError>;

/// One entry's result as the completion thread leaves it: compact (a reply or a code), so the
/// per-message write on the completion thread stays small; errors shared by many entries
/// (shutdown, a fault) are stored once per cell.
enum Stored<R> {
    Empty,
    Ok(Reply<R>),
    NotActive(SlotId),
    Failed,
}

/// `ReplyCell::k2h_readers` flags: a rescue is decoding the cell's K2H entries / has done so.
const RESCUING: u32 = 1 << 30;
const RESCUED: u32 = 1 << 31;

/// Results of a run of consecutive ring entries, starting at ring index `first`.
pub(crate) struct ReplyCell<R> {
    pub(crate) first: u64,
    results: Box<[UnsafeCell<Stored<R>>]>,
    /// The error of entries stored as `Failed`.
    error: Mutex<Option<RingError>>,
    remaining: AtomicUsize,
    done: AtomicBool,
    /// Leading entries whose outcome is in the K2H ring (written before they are counted).
    in_k2h: AtomicUsize,
    /// The caller has read the K2H entries, or will never read them (dropped).
    consumed: AtomicBool,
    /// Callers decoding K2H entries right now (low bits) and the rescue flags (see
    /// [`ReplyCell::rescue`]): a rescue starts only while nobody decodes, and nobody starts
    /// decoding once it has.
    k2h_readers: AtomicU32,
    /// Waiting futures by entry index (one entry, index 0, for a single future's cell).
    /// Inline for one: a heap list allocated by the caller and freed by the completion thread
    /// put a cross-thread `free` on every single-message completion.
    wakers: Mutex<SmallVec<[(u32, Waker); 1]>>,
    /// Completed with `lead_only`: the other waiting futures still need their wake-up.
    fan_out: AtomicBool,
    /// The completion thread saw `fan_out` pending at its last sweep.
    fan_out_seen: AtomicBool,
    /// Highest HLC among the cell's K2H entries (0 when not recorded).
    high: AtomicU64,
    /// A staged run: one future per entry (`stage.rs`), rather than one future reading the
    /// whole batch (`Ring::submit_batch`), which decodes its entries on its own thread.
    staged: bool,
}

// SAFETY: each result is written once by the single consumer that owns its ring entry, before
// the release decrement of `remaining`; it is read only after `done` is observed with acquire.
unsafe impl<R: Send> Sync for ReplyCell<R> {}
// SAFETY: as above; the cell owns `R`s, which are `Send`.
unsafe impl<R: Send> Send for ReplyCell<R> {}

impl<R> ReplyCell<R> {
    /// The cell of a batch that one future reads (`Ring::submit_batch`).
    pub(crate) fn new(first: u64, len: usize) -> Self {
        Self::with_readers(first, len, false)
    }

    /// The cell of a staged run, read by one future per entry.
    pub(crate) fn new_staged(first: u64, len: usize) -> Self {
        Self::with_readers(first, len, true)
    }

    fn with_readers(first: u64, len: usize, staged: bool) -> Self {
        Self {
            first,
            results: (0..len).map(|_| UnsafeCell::new(Stored::Empty)).collect(),
            error: Mutex::new(None),
            remaining: AtomicUsize::new(len),
            done: AtomicBool::new(false),
            in_k2h: AtomicUsize::new(0),
            consumed: AtomicBool::new(false),
            k2h_readers: AtomicU32::new(0),
            wakers: Mutex::new(SmallVec::new()),
            fan_out: AtomicBool::new(false),
            fan_out_seen: AtomicBool::new(false),
            high: AtomicU64::new(0),
            staged,
        }
    }

    /// Whether it is a staged run's cell (see `new_staged`).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // used by the persistent ring
    pub(crate) fn is_staged(&self) -> bool {
        self.staged
    }

    /// Ring entries the cell covers.
    pub(crate) fn len(&self) -> usize {
        self.results.len()
    }

    /// Stores the outcome of ring entry `index`.
    ///
    /// # Safety
    /// Called at most once per entry of this cell, by the one thread that completes that
    /// entry, before that entry is counted in [`ReplyCell::finish`].
    pub(crate) unsafe fn set(&self, index: u64, outcome: Outcome<R>) {
        let at = (index - self.first) as usize;
        let stored = match outcome {
            Ok(reply) => Stored::Ok(reply),
            Err(RingError::SlotNotActive(slot)) => Stored::NotActive(slot),
            Err(e) => {
                *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                Stored::Failed
            }
        };
        // SAFETY: the caller guarantees exclusive, single write access to this entry.
        unsafe { *self.results[at].get() = stored };
    }

    /// Records that the cell's first `n` entries have their outcome in the K2H ring.
    ///
    /// # Safety
    /// Called only by the thread that completes the cell's entries, before those entries are
    /// counted in [`ReplyCell::finish`]; `n` never shrinks.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // used by the persistent ring
    pub(crate) unsafe fn set_in_k2h(&self, n: usize) {
        self.in_k2h.store(n, Ordering::Relaxed);
    }

    /// Marks the cell's K2H entries read (or abandoned): their ring positions may be reused.
    pub(crate) fn mark_consumed(&self) {
        self.consumed.store(true, Ordering::Release);
    }

    /// Whether the cell's K2H entries may be reused: its callers have read them (or never
    /// will), or a rescue moved them into the cell.
    pub(crate) fn is_consumed(&self) -> bool {
        self.consumed.load(Ordering::Acquire)
            || self.k2h_readers.load(Ordering::Acquire) & RESCUED != 0
    }

    /// The completion thread's way out of a full ring whose oldest entries are done but unread
    /// (their callers have not polled them, e.g. a task awaiting a later call first, whose
    /// message waits for the room these entries hold): decodes the cell's K2H entries into the
    /// cell (`decode(t)`), after which callers read them there and the positions are free.
    /// Returns whether it did; not while a caller is decoding (the next try will).
    ///
    /// # Safety
    /// Called only after the cell is done (observed with acquire: the completing thread has
    /// finished with every entry). One call at a time decodes (the flags say which).
    pub(crate) unsafe fn rescue(&self, decode: impl FnMut(u64) -> Option<Outcome<R>>) -> bool {
        debug_assert!(self.is_done());
        // SAFETY: as this function's.
        unsafe { self.move_out(decode) }
    }

    /// Decodes the cell's K2H entries into the cell before it is done, on the completion
    /// thread (`Tuning::decode_on_completion`): its callers then read their outcomes from the
    /// cell with loads only, and its ring positions are free as soon as the cell is done,
    /// whenever its callers come.
    ///
    /// # Safety
    /// Called only by the thread that completes the cell's entries, after every one of them
    /// finished and was recorded as K2H-resident, and before the `finish` that makes it done
    /// (so no caller reads it yet).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // used by the persistent ring
    pub(crate) unsafe fn decode_finished(&self, decode: impl FnMut(u64) -> Option<Outcome<R>>) {
        debug_assert!(!self.is_done());
        // SAFETY: as this function's; no caller has entered the cell, so the flags are clear.
        let moved = unsafe { self.move_out(decode) };
        debug_assert!(moved);
    }

    /// Moves the K2H entries into the cell unless a caller is decoding them; see `rescue`.
    ///
    /// # Safety
    /// Every entry below `in_k2h` has finished, and only the completing thread or a caller
    /// that saw the cell done calls this.
    unsafe fn move_out(&self, mut decode: impl FnMut(u64) -> Option<Outcome<R>>) -> bool {
        if self
            .k2h_readers
            .compare_exchange(0, RESCUING, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        for i in 0..self.in_k2h.load(Ordering::Relaxed) {
            let outcome = decode(self.first + i as u64).unwrap_or(Err(RingError::ShutDown));
            // SAFETY: no caller reads entries below `in_k2h` from the cell until `RESCUED` is
            // published below, and none decodes from K2H any more (`RESCUING` keeps them out).
            unsafe { self.set(self.first + i as u64, outcome) };
        }
        // An OR, not a store: callers entering meanwhile add and remove their count in the
        // low bits (a store could erase one of them and leave a negative count behind).
        self.k2h_readers.fetch_or(RESCUED, Ordering::AcqRel);
        true
    }

    /// Decodes the cell's K2H entries into the cell, once, for all of its futures, unless the
    /// completion thread did already (`decode_finished`, the persistent ring's default): the
    /// first future to read a done staged run does it (a [`ReplyCell::rescue`] on its own thread),
    /// and every other future then reads its outcome from the cell with loads only. Readers
    /// decoding their own entries each wrote the cell's shared reader count twice (and their
    /// batch's once), so every core reading the run fought over the same lines; an H200
    /// profile put those writes at 6% of all the worker threads' time. Returns whether this
    /// call moved the entries (their ring positions may be reused now: a rescued cell counts as
    /// consumed). Call only after [`ReplyCell::is_done`].
    pub(crate) fn decode_run(&self, mut decode: impl FnMut(u64) -> Option<Outcome<R>>) -> bool {
        debug_assert!(self.is_done());
        if self.in_k2h.load(Ordering::Relaxed) == 0 {
            return false;
        }
        loop {
            let flags = self.k2h_readers.load(Ordering::Acquire);
            if flags & RESCUED != 0 {
                return false;
            }
            // SAFETY: the cell is done (checked by the caller); `rescue` lets one call decode.
            if flags & RESCUING == 0 && unsafe { self.rescue(&mut decode) } {
                return true;
            }
            // Another thread is decoding the run (at most one run's entries): wait for it.
            std::hint::spin_loop();
        }
    }

    /// Enters the cell's K2H entries for reading: `false` once a rescue has moved them (the
    /// caller then reads the cell, after [`ReplyCell::wait_rescued`]).
    fn enter_k2h(&self) -> bool {
        if self.k2h_readers.fetch_add(1, Ordering::AcqRel) & (RESCUING | RESCUED) == 0 {
            return true;
        }
        self.k2h_readers.fetch_sub(1, Ordering::Release);
        false
    }

    fn leave_k2h(&self) {
        self.k2h_readers.fetch_sub(1, Ordering::Release);
    }

    /// Waits out a rescue in progress (it decodes at most one cell's entries).
    fn wait_rescued(&self) {
        while self.k2h_readers.load(Ordering::Acquire) & RESCUED == 0 {
            std::hint::spin_loop();
        }
    }

    /// Raises the highest HLC recorded for the cell's K2H entries.
    ///
    /// # Safety
    /// Called only by the thread that completes the cell's entries, before it counts them.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // used by the persistent ring
    pub(crate) unsafe fn raise_high(&self, hlc: u64) {
        if hlc > self.high.load(Ordering::Relaxed) {
            self.high.store(hlc, Ordering::Relaxed);
        }
    }

    /// Highest HLC among the cell's K2H entries, 0 if not recorded; read after `is_done`.
    pub(crate) fn high(&self) -> u64 {
        self.high.load(Ordering::Relaxed)
    }

    /// Counts `n` entries finished; the last one marks the cell done, wakes its waiting
    /// futures (with `lead_only`, one of them, which wakes the rest: see the module docs) and
    /// drops the ring's reference.
    ///
    /// # Safety
    /// `this` came from `Arc::into_raw` (the ring's one reference to the cell), and across all
    /// calls the counts add up to the cell's length exactly.
    pub(crate) unsafe fn finish(this: *const Self, n: usize, lead_only: bool) {
        // SAFETY: the ring's reference keeps the cell alive until the count reaches zero.
        let cell = unsafe { &*this };
        if cell.remaining.fetch_sub(n, Ordering::AcqRel) == n {
            cell.done.store(true, Ordering::SeqCst);
            let mut list = cell.wakers.lock().unwrap_or_else(|e| e.into_inner());
            if lead_only && list.len() > 1 {
                let lead = list.pop().map(|(_, w)| w);
                cell.fan_out.store(true, Ordering::SeqCst);
                drop(list);
                lead.into_iter().for_each(Waker::wake);
            } else {
                let all = std::mem::take(&mut *list);
                drop(list);
                all.into_iter().for_each(|(_, w)| w.wake());
            }
            // SAFETY: the count reached zero exactly once, here; this is the ring's reference.
            drop(unsafe { Arc::from_raw(this) });
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Wakes every future still registered if a lead-only completion left them waiting.
    pub(crate) fn fan_out(&self) {
        if self.fan_out.load(Ordering::Relaxed) && self.fan_out.swap(false, Ordering::SeqCst) {
            let all = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
            all.into_iter().for_each(|(_, w)| w.wake());
        }
    }

    /// Whether a lead-only completion still waits for its fan-out.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // used by the persistent ring
    pub(crate) fn fan_out_pending(&self) -> bool {
        self.fan_out.load(Ordering::Relaxed)
    }

    /// Completion-thread fallback for a lead-only completion that was already pending at the
    /// previous check (a pass of entries or a sweep; no woken future has polled it since, or
    /// the lead had already read its entry): wakes one more of its futures, which fans out the
    /// rest from its own thread when polled (as any reader of a done cell does). One wake-up a
    /// check, not the whole run's: waking every future of late runs from the completion thread
    /// slowed it enough that runs were late more often (G2 rows at half speed, the thread's
    /// sweeps taking over half of its time).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // used by the persistent ring
    pub(crate) fn fan_out_if_stale(&self) {
        if !(self.fan_out.load(Ordering::Relaxed)
            && self.fan_out_seen.swap(true, Ordering::Relaxed))
        {
            return;
        }
        let next = {
            let mut list = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            let next = list.pop();
            if list.is_empty() {
                // Nobody left after this one: no fan-out is pending any more.
                self.fan_out.store(false, Ordering::SeqCst);
            }
            next
        };
        // The next check looks again before it wakes another.
        self.fan_out_seen.store(false, Ordering::Relaxed);
        if let Some((_, waker)) = next {
            waker.wake();
        }
    }

    /// Registers (or replaces) the waker of the future reading entry `index`; returns whether
    /// the cell is done (checked after registering, so a completion is never missed). `first`:
    /// the future has no waker on this cell or its batch yet, so there is none to replace (a
    /// search of the list per registration made a run's registrations cost its length squared).
    pub(crate) fn register(&self, index: u32, waker: &Waker, first: bool) -> bool {
        {
            let mut list = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            list.replace_or_push(index, waker, first);
        }
        self.done.load(Ordering::SeqCst)
    }

    /// Takes over the wakers of futures that waited before the cell existed (a new cell has
    /// none yet: the list is taken over without copying).
    pub(crate) fn adopt(&self, wakers: Vec<(u32, Waker)>) {
        if !wakers.is_empty() {
            let mut list = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            if list.is_empty() {
                *list = SmallVec::from_vec(wakers);
            } else {
                list.extend(wakers);
            }
        }
    }

    /// Forgets the waker of entry `index` (its future is gone); if the cell is done, wakes the
    /// others when a lead-only completion picked this one.
    pub(crate) fn unregister(&self, index: u32) {
        self.wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(i, _)| *i != index);
        if self.done.load(Ordering::SeqCst) {
            self.fan_out();
        }
    }

    /// The outcome of entry `index`, once done: decoded from K2H (`decode(t)`) if the entry
    /// is K2H-resident, else the stored one. Each entry is taken by its one future, once.
    pub(crate) fn take_one(
        &self,
        index: usize,
        decode: impl FnOnce(u64) -> Option<Outcome<R>>,
    ) -> Outcome<R> {
        if index < self.in_k2h.load(Ordering::Relaxed)
            && self.k2h_readers.load(Ordering::Acquire) & RESCUED == 0
        {
            if self.enter_k2h() {
                let outcome = decode(self.first + index as u64).unwrap_or(Err(RingError::ShutDown));
                self.leave_k2h();
                return outcome;
            }
            self.wait_rescued();
        }
        // SAFETY: `done` was observed with acquire, so the writer has finished with this
        // entry; only the future that owns entry `index` reads it, once.
        let stored = unsafe { &mut *self.results[index].get() };
        match std::mem::replace(stored, Stored::Empty) {
            Stored::Ok(reply) => Ok(reply),
            Stored::NotActive(slot) => Err(RingError::SlotNotActive(slot)),
            Stored::Failed | Stored::Empty => Err(self
                .error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or(RingError::ShutDown)),
        }
    }

    /// Takes every outcome (`decode(t)` reads K2H entry `t`), then marks the cell consumed;
    /// call only after `is_done`, from the cell's one future.
    fn take_all(&self, mut decode: impl FnMut(u64) -> Option<Outcome<R>>) -> Vec<Outcome<R>> {
        let error = self
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or(RingError::ShutDown);
        let mut in_k2h = self.in_k2h.load(Ordering::Relaxed);
        let mut out = Vec::with_capacity(self.results.len());
        if in_k2h > 0 {
            if self.enter_k2h() {
                out.extend(
                    (0..in_k2h as u64).map(|i| {
                        decode(self.first + i).unwrap_or_else(|| Err(RingError::ShutDown))
                    }),
                );
                self.leave_k2h();
            } else {
                // Rescued: every outcome is in the cell.
                self.wait_rescued();
                in_k2h = 0;
            }
        }
        self.mark_consumed();
        out.extend(self.results[in_k2h..].iter().map(|c| {
            // SAFETY: `done` was observed with acquire, so every writer has finished with
            // its entry; only the single future that owns this cell reads the entries.
            let stored = unsafe { &mut *c.get() };
            match std::mem::replace(stored, Stored::Empty) {
                Stored::Ok(reply) => Ok(reply),
                Stored::NotActive(slot) => Err(RingError::SlotNotActive(slot)),
                Stored::Failed | Stored::Empty => Err(error.clone()),
            }
        }));
        out
    }

    fn poll_done(&self, cx: &mut Context<'_>, spin: Duration) -> bool {
        if self.is_done() {
            return true;
        }
        if !spin.is_zero() {
            let start = Instant::now();
            while start.elapsed() < spin {
                for _ in 0..64 {
                    if self.is_done() {
                        return true;
                    }
                    std::hint::spin_loop();
                }
            }
        }
        self.register(0, cx.waker(), false)
    }
}

/// A list of (entry, waker) pairs: a batch's waiters before it is submitted, its cell's after.
pub(crate) trait Waiters: AsMut<[(u32, Waker)]> {
    fn push_waiter(&mut self, waiter: (u32, Waker));

    /// Sets the waker of entry `index`: replaces the one there, or adds it. `first`: the
    /// entry's future has registered nowhere yet, so there is none to search for.
    fn replace_or_push(&mut self, index: u32, waker: &Waker, first: bool) {
        let kept = if first {
            None
        } else {
            self.as_mut().iter_mut().find(|(i, _)| *i == index)
        };
        match kept {
            Some((_, w)) => w.clone_from(waker),
            None => self.push_waiter((index, waker.clone())),
        }
    }
}

impl Waiters for Vec<(u32, Waker)> {
    fn push_waiter(&mut self, waiter: (u32, Waker)) {
        self.push(waiter);
    }
}

impl Waiters for SmallVec<[(u32, Waker); 1]> {
    fn push_waiter(&mut self, waiter: (u32, Waker)) {
        self.push(waiter);
    }
}

/// Waits for a submitted cell to complete.
pub(crate) struct CellWait<R> {
    pub(crate) cell: Arc<ReplyCell<R>>,
    pub(crate) spin: Duration,
}

impl<R> CellWait<R> {
    /// The outcomes once the cell is done; `decode(t)` reads K2H entry `t`.
    pub(crate) fn poll_all(
        &mut self,
        cx: &mut Context<'_>,
        decode: impl FnMut(u64) -> Option<Outcome<R>>,
    ) -> Poll<Vec<Outcome<R>>> {
        if !self.cell.poll_done(cx, self.spin) {
            return Poll::Pending;
        }
        Poll::Ready(self.cell.take_all(decode))
    }
}

impl<R> Drop for CellWait<R> {
    fn drop(&mut self) {
        // A caller that stops waiting never reads its K2H entries: release them.
        self.cell.mark_consumed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::HlcStamp;

    fn reply(v: u32) -> Outcome<u32> {
        Ok(Reply {
            response: v,
            stamp: HlcStamp::new(u64::from(v), 1),
        })
    }

    fn value(outcome: Outcome<u32>) -> u32 {
        outcome.expect("a reply").response
    }

    /// A done cell of `len` entries, all K2H-resident, as the completion thread leaves it.
    fn done_cell(len: usize) -> Arc<ReplyCell<u32>> {
        let cell = Arc::new(ReplyCell::new(100, len));
        let raw = Arc::into_raw(cell.clone());
        // SAFETY: test-only, this thread plays the completing thread.
        unsafe {
            cell.set_in_k2h(len);
            ReplyCell::finish(raw, len, false);
        }
        cell
    }

    /// Counts its wake-ups.
    struct Count(AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counters(n: usize) -> Vec<(Arc<Count>, Waker)> {
        (0..n)
            .map(|_| {
                let count = Arc::new(Count(AtomicUsize::new(0)));
                (count.clone(), Waker::from(count))
            })
            .collect()
    }

    fn woken(counters: &[(Arc<Count>, Waker)]) -> Vec<usize> {
        counters
            .iter()
            .map(|(c, _)| c.0.load(Ordering::SeqCst))
            .collect()
    }

    // Pins lead-only completion: finishing a run wakes one of its waiting futures; the others
    // are woken once, when the lead is polled (`fan_out`); if nobody polls, every second check
    // of the completion thread (pass or sweep) wakes one more (`fan_out_if_stale`), whose poll
    // fans out the rest; none lost, none woken twice.
    #[test]
    fn lead_only_completion_fans_out_once() {
        for lead_polls in [true, false] {
            let cell = Arc::new(ReplyCell::<u32>::new(0, 3));
            let wakers = counters(3);
            for (i, (_, w)) in wakers.iter().enumerate() {
                assert!(!cell.register(i as u32, w, true));
            }
            let raw = Arc::into_raw(cell.clone());
            // SAFETY: test-only, this thread plays the completing thread.
            unsafe { ReplyCell::finish(raw, 3, true) };
            assert_eq!(woken(&wakers).iter().sum::<usize>(), 1, "one lead woken");
            if lead_polls {
                cell.fan_out();
            } else {
                cell.fan_out_if_stale();
                assert_eq!(
                    woken(&wakers).iter().sum::<usize>(),
                    1,
                    "the first check only looks"
                );
                cell.fan_out_if_stale();
                assert_eq!(
                    woken(&wakers).iter().sum::<usize>(),
                    2,
                    "the second check wakes one more"
                );
                assert!(cell.fan_out_pending(), "the rest wait for its poll");
                // That future's poll, as `StagedReply::poll` does for a done cell.
                cell.fan_out();
            }
            assert_eq!(woken(&wakers), [1, 1, 1]);
            cell.fan_out();
            cell.fan_out_if_stale();
            assert_eq!(woken(&wakers), [1, 1, 1], "nobody woken twice");
        }
    }

    // Pins the fallback's escalation when no woken future ever polls (each had already read its
    // entry, say): every second check wakes one more, until all were woken once and no fan-out
    // is pending.
    #[test]
    fn stale_fan_out_wakes_one_more_each_second_check() {
        let cell = Arc::new(ReplyCell::<u32>::new(0, 4));
        let wakers = counters(4);
        for (i, (_, w)) in wakers.iter().enumerate() {
            assert!(!cell.register(i as u32, w, true));
        }
        let raw = Arc::into_raw(cell.clone());
        // SAFETY: test-only, this thread plays the completing thread.
        unsafe { ReplyCell::finish(raw, 4, true) };
        for woken_so_far in 2..=4 {
            cell.fan_out_if_stale();
            cell.fan_out_if_stale();
            assert_eq!(woken(&wakers).iter().sum::<usize>(), woken_so_far);
        }
        assert!(!cell.fan_out_pending());
        cell.fan_out_if_stale();
        cell.fan_out_if_stale();
        assert_eq!(woken(&wakers), [1, 1, 1, 1], "nobody woken twice");
    }

    // Pins the rescue: a done cell nobody has read gives up its K2H entries (the ring may reuse
    // them) and its callers read the same outcomes from the cell; a caller that already took
    // its entry from K2H is unaffected.
    #[test]
    fn rescued_cells_answer_from_the_cell() {
        let cell = done_cell(3);
        let k2h = |t: u64| Some(reply(t as u32));
        assert_eq!(value(cell.take_one(0, k2h)), 100);
        assert!(!cell.is_consumed());
        // SAFETY: test-only; the cell is done and this thread plays the completing thread.
        assert!(unsafe { cell.rescue(k2h) });
        assert!(cell.is_consumed());
        let gone = |_: u64| -> Option<Outcome<u32>> { panic!("K2H read after a rescue") };
        assert_eq!(value(cell.take_one(1, gone)), 101);
        assert_eq!(value(cell.take_one(2, gone)), 102);
        let batch = done_cell(2);
        // SAFETY: as above.
        assert!(unsafe { batch.rescue(k2h) });
        let all: Vec<u32> = batch.take_all(gone).into_iter().map(value).collect();
        assert_eq!(all, [100, 101]);
    }

    // Pins the staged run's read path: the first reader decodes the whole run into the cell
    // (which is then consumed), once; every reader, the first included, then takes its outcome
    // from the cell, and racing first readers all get theirs.
    #[test]
    fn first_reader_decodes_the_run_for_all() {
        let cell = done_cell(3);
        let k2h = |t: u64| Some(reply(t as u32));
        let gone = |_: u64| -> Option<Outcome<u32>> { panic!("K2H read after the run's decode") };
        assert!(!cell.is_consumed());
        assert!(cell.decode_run(k2h));
        assert!(cell.is_consumed());
        assert!(!cell.decode_run(gone), "decoded once");
        let all: Vec<u32> = (0..3).map(|i| value(cell.take_one(i, gone))).collect();
        assert_eq!(all, [100, 101, 102]);

        let cells: Arc<Vec<_>> = Arc::new((0..500).map(|_| done_cell(4)).collect());
        let readers: Vec<_> = (0..4)
            .map(|i| {
                let cells = cells.clone();
                std::thread::spawn(move || {
                    for cell in cells.iter() {
                        cell.decode_run(|t| Some(reply(t as u32)));
                        assert_eq!(value(cell.take_one(i, |_| None)), 100 + i as u32);
                    }
                })
            })
            .collect();
        readers.into_iter().for_each(|r| r.join().unwrap());
    }

    // Pins the completion thread's decode (`decode_finished`): a run decoded before it is done
    // is consumed the moment it is done, and its readers find every outcome in the cell
    // (their K2H entries are never read again).
    #[test]
    fn run_decoded_on_completion_is_read_from_the_cell() {
        let cell = Arc::new(ReplyCell::new_staged(100, 3));
        let raw = Arc::into_raw(cell.clone());
        let gone = |_: u64| -> Option<Outcome<u32>> { panic!("K2H read after the run's decode") };
        // SAFETY: test-only; this thread plays the completing thread, every entry finished.
        unsafe {
            cell.set_in_k2h(3);
            cell.decode_finished(|t| Some(reply(t as u32)));
            assert!(!cell.is_done());
            ReplyCell::finish(raw, 3, false);
        }
        assert!(cell.is_consumed(), "its positions are free once done");
        assert!(
            !cell.decode_run(gone),
            "nothing left for a reader to decode"
        );
        let all: Vec<u32> = (0..3).map(|i| value(cell.take_one(i, gone))).collect();
        assert_eq!(all, [100, 101, 102]);
    }

    // Pins the handshake: no rescue while a caller is decoding K2H entries (it would let the
    // ring overwrite them mid-read); the next try succeeds once the caller is out.
    #[test]
    fn no_rescue_while_a_caller_reads_k2h() {
        let cell = done_cell(2);
        assert!(cell.enter_k2h());
        // SAFETY: test-only; the cell is done and this thread plays the completing thread.
        assert!(!unsafe { cell.rescue(|t| Some(reply(t as u32))) });
        cell.leave_k2h();
        // SAFETY: as above.
        assert!(unsafe { cell.rescue(|t| Some(reply(t as u32 + 1))) });
        assert!(!cell.enter_k2h());
        assert!(
            cell.is_consumed(),
            "a caller's turned-away entry left the rescue flag intact"
        );
        assert_eq!(value(cell.take_one(0, |_| None)), 101);
    }

    // Pins the flag arithmetic under a race: callers entering and leaving while the rescue
    // runs never erase its flag (every cell ends rescued, and no caller gets in afterwards).
    #[test]
    fn rescue_races_with_readers() {
        let cells: Arc<Vec<_>> = Arc::new((0..2000).map(|_| done_cell(1)).collect());
        let reader = {
            let cells = cells.clone();
            std::thread::spawn(move || {
                for cell in cells.iter() {
                    while cell.enter_k2h() {
                        cell.leave_k2h();
                    }
                }
            })
        };
        for cell in cells.iter() {
            // SAFETY: test-only; each cell is done and this thread plays the completing thread.
            while !unsafe { cell.rescue(|t| Some(reply(t as u32))) } {
                std::hint::spin_loop();
            }
        }
        reader.join().unwrap();
        for cell in cells.iter() {
            assert!(cell.is_consumed());
            assert!(!cell.enter_k2h());
            assert_eq!(value(cell.take_one(0, |_| None)), 100);
        }
    }
}
