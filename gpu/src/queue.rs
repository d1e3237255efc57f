//! The submission ring: host-to-kernel (H2K) entries in host memory, claimed lock-free by any
//! number of producers, and the matching kernel-to-host (K2H) entries (encoding: `wire`).
//!
//! Three counters, each on its own cache line: `tail` (next entry to claim; producers CAS it),
//! `ready` (entries below it are finished: their outcomes are known; `drain` and `deactivate`
//! wait on it) and `head` (entries below it may be reused). The batch backends move `ready`
//! and `head` together. The persistent ring leaves outcomes in K2H for the callers to decode,
//! so its `head` trails `ready` until the callers have read their entries.

use crate::error::RingError;
use crate::kernel::as_bytes;
use crate::reply::{Outcome, ReplyCell};
use crate::wire::{
    HostMem, h2k_data_stride, k2h_data_stride, read_wire, seq_of, word_at, write_wire,
};
#[cfg(feature = "cuda")]
use crate::wire::{stream_fence, wire_complete, write_wire_streaming};
use silica_grains::gpu::GpuType;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::task::Waker;

/// The slot value of an entry whose producer found its slot inactive after claiming.
pub(crate) const INVALID_SLOT: u32 = u32::MAX;
/// K2H status: handled.
pub(crate) const STATUS_OK: u32 = 0;

#[repr(align(128))]
struct Padded<T>(T);

#[cfg_attr(not(feature = "cuda"), allow(dead_code))] // K2H is read by the persistent ring
pub(crate) struct SubmitRing<R> {
    pub(crate) h2k: HostMem,
    pub(crate) k2h: HostMem,
    pub(crate) cap: u64,
    /// Data bytes per H2K entry (the device staging copy's stride).
    pub(crate) h2k_stride: usize,
    /// Data bytes per K2H entry.
    pub(crate) k2h_stride: usize,
    tail: Padded<AtomicU64>,
    ready: Padded<AtomicU64>,
    head: Padded<AtomicU64>,
    cells: Box<[AtomicPtr<ReplyCell<R>>]>,
    waiters: Mutex<Vec<Waker>>,
    waiting: AtomicUsize,
    closed: AtomicBool,
    paused: AtomicBool,
    callers_read_k2h: AtomicBool,
    /// H2K entries are written with non-temporal stores (persistent ring, see
    /// `wire::write_wire_streaming`).
    stream_h2k: AtomicBool,
}

impl<R: GpuType> SubmitRing<R> {
    /// Data words of a K2H entry (`k2h_stride / 4`), a constant so that the completion
    /// thread's per-entry tag check compiles to straight-line code.
    #[cfg(feature = "cuda")]
    const K2H_WORDS: usize = k2h_data_stride(size_of::<R>()) / 4;

    pub(crate) fn new(cap: u32, request_size: usize) -> Self {
        let cap = u64::from(cap.max(2).next_power_of_two());
        let h2k_stride = h2k_data_stride(request_size);
        let k2h_stride = k2h_data_stride(size_of::<R>());
        Self {
            h2k: HostMem::zeroed(2 * h2k_stride * cap as usize),
            k2h: HostMem::zeroed(2 * k2h_stride * cap as usize),
            cap,
            h2k_stride,
            k2h_stride,
            tail: Padded(AtomicU64::new(0)),
            ready: Padded(AtomicU64::new(0)),
            head: Padded(AtomicU64::new(0)),
            cells: (0..cap)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            waiters: Mutex::new(Vec::new()),
            waiting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            callers_read_k2h: AtomicBool::new(false),
            stream_h2k: AtomicBool::new(false),
        }
    }

    /// Entries below it may be reused.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // used by the persistent ring
    pub(crate) fn head(&self) -> u64 {
        self.head.0.load(Ordering::Acquire)
    }

    /// Entries below it are finished (their outcomes known to their callers).
    pub(crate) fn ready(&self) -> u64 {
        self.ready.0.load(Ordering::Acquire)
    }

    /// `ready`, loaded SeqCst: for checks that pair with a SeqCst store made by another
    /// thread before it reads something this thread wrote (the staging Nagle handshake).
    pub(crate) fn ready_seqcst(&self) -> u64 {
        self.ready.0.load(Ordering::SeqCst)
    }

    /// Whether producers or `drain`/`deactivate` are waiting on a release.
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) != 0
    }

    pub(crate) fn tail(&self) -> u64 {
        self.tail.0.load(Ordering::SeqCst)
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// While paused (a restart), producers wait as if the ring were full.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // used by the CUDA backends
    pub(crate) fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        if !paused {
            self.wake_waiters();
        }
    }

    /// Claims `n` consecutive entries; `Ok(None)` when there is no room now.
    pub(crate) fn claim(&self, n: u64) -> Result<Option<u64>, RingError> {
        if n > self.cap {
            return Err(RingError::BatchTooLarge(n as usize));
        }
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return Err(RingError::ShutDown);
            }
            if self.paused.load(Ordering::SeqCst) {
                return Ok(None);
            }
            let t = self.tail.0.load(Ordering::Acquire);
            if t + n - self.head.0.load(Ordering::SeqCst) > self.cap {
                return Ok(None);
            }
            let won =
                self.tail
                    .0
                    .compare_exchange_weak(t, t + n, Ordering::SeqCst, Ordering::Relaxed);
            if won.is_ok() {
                return Ok(Some(t));
            }
        }
    }

    fn h2k_entry(&self, t: u64) -> *mut u8 {
        // SAFETY: the position is below `cap`, so the offset stays inside the allocation.
        unsafe {
            self.h2k
                .ptr()
                .add((t & (self.cap - 1)) as usize * 2 * self.h2k_stride)
        }
    }

    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // used by the CUDA backends
    fn k2h_entry(&self, t: u64) -> *mut u8 {
        // SAFETY: the position is below `cap`, so the offset stays inside the allocation.
        unsafe {
            self.k2h
                .ptr()
                .add((t & (self.cap - 1)) as usize * 2 * self.k2h_stride)
        }
    }

    /// Writes claimed entry `t` and publishes it; `cell` (a pointer from `Arc::into_raw`, one
    /// reference for the whole run of entries it covers) receives its outcome.
    pub(crate) fn publish<Q: GpuType>(
        &self,
        t: u64,
        slot: u32,
        hlc: u64,
        req: &Q,
        cell: *const ReplyCell<R>,
    ) {
        let at = &self.cells[(t & (self.cap - 1)) as usize];
        // The completing thread cleared it before `head` passed this position; a plain store
        // (not a locked swap) is enough on the per-message path.
        debug_assert!(at.load(Ordering::Relaxed).is_null());
        at.store(cell.cast_mut(), Ordering::Release);
        let payload = as_bytes(req);
        let words = self.h2k_stride / 4;
        let data = |i| match i {
            0 => 0,
            1 => slot,
            2 => hlc as u32,
            3 => (hlc >> 32) as u32,
            _ => word_at(payload, i - 4),
        };
        #[cfg(feature = "cuda")]
        if self.stream_h2k.load(Ordering::Relaxed) {
            // SAFETY: as below; only the kernel reads these entries, and it checks every tag.
            unsafe { write_wire_streaming(self.h2k_entry(t), seq_of(t), words, data) };
            return;
        }
        // SAFETY: entry `t` was claimed by this producer and its previous use finished (head
        // passed it), so nobody else writes it; the entry is 2 * h2k_stride bytes, aligned.
        unsafe { write_wire(self.h2k_entry(t), seq_of(t), words, data) };
    }

    /// Ends a run of [`SubmitRing::publish`]es: drains streaming stores, if any, so the
    /// kernel sees the entries now rather than when the write-combining buffers are evicted.
    pub(crate) fn published(&self) {
        #[cfg(feature = "cuda")]
        if self.stream_h2k.load(Ordering::Relaxed) {
            stream_fence();
        }
    }

    /// From now on H2K entries are written with non-temporal stores: only for a reader that
    /// checks every word's tag (the persistent kernel), never the host readers.
    #[cfg(feature = "cuda")]
    pub(crate) fn set_stream_h2k(&self, on: bool) {
        self.stream_h2k.store(on, Ordering::SeqCst);
    }

    /// Whether H2K entry `t` is published (host readers: the last word, acquired).
    pub(crate) fn h2k_ready(&self, t: u64) -> bool {
        let last = self.h2k_stride / 4 - 1;
        // SAFETY: the word is inside the entry and 8-byte aligned.
        let w = unsafe { &*self.h2k_entry(t).add(8 * last).cast::<AtomicU64>() };
        (w.load(Ordering::Acquire) >> 32) as u32 == seq_of(t)
    }

    /// Reads published H2K entry `t`: slot, hlc, request.
    pub(crate) fn h2k_read<Q: GpuType>(&self, t: u64) -> (u32, u64, Q) {
        // SAFETY: the entry is inside the allocation and aligned, and its data stride covers
        // the request; it was published (checked by the caller) and is not rewritten until
        // `head` passes it.
        unsafe { read_wire(self.h2k_entry(t), seq_of(t), self.h2k_stride / 4) }
            .expect("h2k_read of an unpublished entry")
    }

    /// Whether the kernel has written all of K2H entry `t` (every word carries its tag): the
    /// completion thread's check; the caller decodes the entry later ([`SubmitRing::k2h_read`]).
    #[cfg(feature = "cuda")]
    pub(crate) fn k2h_complete(&self, t: u64) -> bool {
        // SAFETY: the entry is inside the allocation and 8-byte aligned.
        unsafe { wire_complete(self.k2h_entry(t), seq_of(t), Self::K2H_WORDS) }
    }

    /// Reads K2H entry `t` if the kernel has written all of it: status, hlc, response.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // used by the CUDA backends
    pub(crate) fn k2h_read(&self, t: u64) -> Option<(u32, u64, R)> {
        // SAFETY: the entry is inside the allocation and aligned, its data stride covers the
        // response; words carrying this lap's tag were written by the kernel for entry `t` and
        // are not rewritten this lap.
        unsafe { read_wire(self.k2h_entry(t), seq_of(t), self.k2h_stride / 4) }
    }

    /// Hints the CPU to fetch K2H entry `t`'s lines ahead of [`SubmitRing::k2h_read`]: the
    /// completion thread's scan is bound by the latency of lines the GPU just wrote.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // used by the CUDA backends
    pub(crate) fn k2h_prefetch(&self, t: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let entry = self.k2h_entry(t);
            for off in (0..2 * self.k2h_stride).step_by(64) {
                // SAFETY: a prefetch hint has no memory effects; the address is inside the
                // entry (in bounds of the allocation); SSE is baseline on x86_64.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        entry.add(off).cast::<i8>(),
                    )
                };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = t;
    }

    /// The HLC stamp of complete K2H entry `t` (words 2 and 3 of its data).
    #[cfg(feature = "cuda")]
    pub(crate) fn k2h_hlc(&self, t: u64) -> u64 {
        // SAFETY: words 2 and 3 are inside the entry and 8-byte aligned; the caller checked
        // that every word of the entry carries this lap's tag.
        unsafe {
            let e = self.k2h_entry(t);
            let lo = (*e.add(16).cast::<AtomicU64>()).load(Ordering::Relaxed) as u32;
            let hi = (*e.add(24).cast::<AtomicU64>()).load(Ordering::Relaxed) as u32;
            u64::from(lo) | (u64::from(hi) << 32)
        }
    }

    /// Whether K2H entry `t`'s last word is written (a cheap check before parking).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // used by the CUDA backends
    pub(crate) fn k2h_ready(&self, t: u64) -> bool {
        let last = self.k2h_stride / 4 - 1;
        // SAFETY: the word is inside the entry and 8-byte aligned.
        let w = unsafe { &*self.k2h_entry(t).add(8 * last).cast::<AtomicU64>() };
        (w.load(Ordering::Acquire) >> 32) as u32 == seq_of(t)
    }

    /// Test hook: writes K2H entry `t` as the kernel would.
    #[cfg(test)]
    fn k2h_write_for_test(&self, t: u64, status: u32, hlc: u64, resp: &R) {
        let payload = as_bytes(resp);
        // SAFETY: test-only, single-threaded; the entry is in bounds and aligned.
        unsafe {
            write_wire(
                self.k2h_entry(t),
                seq_of(t),
                self.k2h_stride / 4,
                |i| match i {
                    0 => 0,
                    1 => status,
                    2 => hlc as u32,
                    3 => (hlc >> 32) as u32,
                    _ => word_at(payload, i - 4),
                },
            )
        };
    }

    /// Takes entry `t`'s cell pointer, waiting out a producer between claim and publish.
    pub(crate) fn take_cell(&self, t: u64) -> *const ReplyCell<R> {
        let at = &self.cells[(t & (self.cap - 1)) as usize];
        loop {
            let ptr = at.load(Ordering::Acquire);
            if !ptr.is_null() {
                // Only this (the one completing) thread clears it; a plain store suffices.
                at.store(std::ptr::null_mut(), Ordering::Relaxed);
                return ptr;
            }
            // The producer claimed `t` and is between claim and publish; it never blocks there.
            std::thread::yield_now();
        }
    }

    /// Clears the cell pointers of entries `from..to`, which belong to a cell already taken at
    /// an earlier entry (their outcomes are counted by the caller, not stored).
    #[cfg(feature = "cuda")]
    pub(crate) fn clear_cells(&self, from: u64, to: u64) {
        for t in from..to {
            let at = &self.cells[(t & (self.cap - 1)) as usize];
            // Published before the kernel could write the entry; only this thread clears it.
            debug_assert!(!at.load(Ordering::Relaxed).is_null());
            at.store(std::ptr::null_mut(), Ordering::Relaxed);
        }
    }

    /// Completes entries `from..to` in order with `outcome(t)`, one counter update and at most
    /// one wake-up per reply cell rather than per entry.
    pub(crate) fn complete_run(
        &self,
        from: u64,
        to: u64,
        mut outcome: impl FnMut(u64) -> Outcome<R>,
    ) {
        let mut t = from;
        while t < to {
            let cell = self.take_cell(t);
            let mut n = 0;
            // SAFETY: as in `complete`; the cell covers `first..first + len` and every entry of
            // it taken here is completed once, by this thread, before `finish`.
            unsafe {
                let end = to.min((*cell).first + (*cell).len() as u64);
                loop {
                    (*cell).set(t, outcome(t));
                    n += 1;
                    t += 1;
                    if t >= end {
                        break;
                    }
                    let next = self.take_cell(t);
                    debug_assert_eq!(next, cell);
                }
                ReplyCell::finish(cell, n, false);
            }
        }
    }

    /// Entries below `upto` are finished and their positions may be reused (batch backends).
    pub(crate) fn release(&self, upto: u64) {
        self.ready.0.store(upto, Ordering::SeqCst);
        self.head.0.store(upto, Ordering::SeqCst);
        self.wake_waiters();
    }

    /// Entries below `ready` are finished (persistent ring; positions still in use).
    #[cfg(feature = "cuda")]
    pub(crate) fn set_ready(&self, ready: u64) {
        self.ready.0.store(ready, Ordering::SeqCst);
        self.wake_waiters();
    }

    /// Positions of entries below `head` may be reused (persistent ring; `head <= ready`).
    #[cfg(feature = "cuda")]
    pub(crate) fn set_head(&self, head: u64) {
        self.head.0.store(head, Ordering::SeqCst);
        self.wake_waiters();
    }

    /// From now on callers read their outcomes from K2H, and the consumer moves `head` only
    /// past entries they have read (persistent ring).
    #[cfg(feature = "cuda")]
    pub(crate) fn set_callers_read_k2h(&self) {
        self.callers_read_k2h.store(true, Ordering::SeqCst);
    }

    /// Fails every claimed entry from `ready` to `tail`. Their positions (and everything below)
    /// may be reused at once unless callers read K2H (the persistent ring's consumer then moves
    /// `head`: callers may still be reading entries below `ready`).
    pub(crate) fn fail_pending(&self, err: &RingError) {
        let ready = self.ready();
        let tail = self.tail();
        self.complete_run(ready, tail, |_| Err(err.clone()));
        self.ready.0.store(tail, Ordering::SeqCst);
        if !self.callers_read_k2h.load(Ordering::SeqCst) {
            self.head.0.store(tail, Ordering::SeqCst);
        }
        self.wake_waiters();
    }

    /// Registers a waker run at the next release, close or unpause.
    pub(crate) fn wait(&self, waker: &Waker) {
        let mut list = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if !list.iter().any(|w| w.will_wake(waker)) {
            list.push(waker.clone());
        }
        self.waiting.store(list.len(), Ordering::SeqCst);
    }

    fn wake_waiters(&self) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let list = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|e| e.into_inner()));
        self.waiting.store(0, Ordering::SeqCst);
        list.into_iter().for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::ReplyCell;
    use crate::samples::{Add, Totals};
    use std::sync::Arc;

    // Pins the wire encoding: what a producer publishes reads back whole, a word still holding
    // an old tag (a write not yet landed) hides the entry, K2H entries decode to their fields,
    // and completing a run drops the ring's reference to the reply cell.
    #[test]
    fn wire_round_trip_and_torn_entries() {
        let q = SubmitRing::<Totals>::new(4, size_of::<Add>());
        let cell = Arc::new(ReplyCell::<Totals>::new(0, 1));
        let raw = Arc::into_raw(cell.clone());
        assert_eq!(q.claim(1).unwrap(), Some(0));
        assert!(!q.h2k_ready(0));
        q.publish(0, 7, 0x1234_5678_9abc, &Add { amount: 42 }, raw);
        assert!(q.h2k_ready(0));
        let (slot, hlc, req) = q.h2k_read::<Add>(0);
        assert_eq!((slot, hlc, req.amount), (7, 0x1234_5678_9abc, 42));
        assert!(q.k2h_read(0).is_none());
        let totals = Totals {
            total: 1 << 40,
            count: 3,
            pad: 0,
        };
        q.k2h_write_for_test(0, 0, 99, &totals);
        // SAFETY: test-only; word 0 of entry 0 is in bounds and aligned.
        let w0 = unsafe { &*q.k2h.ptr().cast::<AtomicU64>() };
        let good = w0.load(Ordering::Relaxed);
        w0.store(good & 0xffff_ffff, Ordering::Relaxed);
        assert!(q.k2h_read(0).is_none());
        w0.store(good, Ordering::Relaxed);
        assert_eq!(q.k2h_read(0), Some((0, 99, totals)));
        q.complete_run(0, 1, |_| Err(RingError::ShutDown));
        assert_eq!(Arc::strong_count(&cell), 1);
    }

    // Pins the persistent ring's split of `ready` and `head`: a fault fails the entries in
    // flight and moves `ready` past them, but their positions stay unclaimable until the
    // consumer moves `head` (callers may still be reading K2H entries); the completion
    // thread's tag check accepts a whole K2H entry and rejects a torn one.
    #[cfg(feature = "cuda")]
    #[test]
    fn ready_head_split_and_tag_check() {
        let q = SubmitRing::<Totals>::new(4, size_of::<Add>());
        q.set_callers_read_k2h();
        let cell = Arc::new(ReplyCell::<Totals>::new(0, 4));
        let raw = Arc::into_raw(cell.clone());
        assert_eq!(q.claim(4).unwrap(), Some(0));
        for t in 0..4 {
            q.publish(t, 1, 0, &Add { amount: 1 }, raw);
        }
        q.k2h_write_for_test(0, 0, 7, &Totals::default());
        assert!(q.k2h_complete(0));
        assert!(!q.k2h_complete(1));
        // SAFETY: test-only; word 1 of entry 0 is in bounds and aligned.
        let w1 = unsafe { &*q.k2h.ptr().add(8).cast::<AtomicU64>() };
        w1.store(w1.load(Ordering::Relaxed) & 0xffff_ffff, Ordering::Relaxed);
        assert!(!q.k2h_complete(0));
        q.fail_pending(&RingError::ShutDown);
        assert_eq!((q.ready(), q.head()), (4, 0));
        assert_eq!(q.claim(1).unwrap(), None);
        q.set_head(4);
        assert_eq!(q.claim(1).unwrap(), Some(4));
        assert_eq!(Arc::strong_count(&cell), 1);
    }

    // Pins that streaming (non-temporal) H2K stores write the same wire bytes as plain ones,
    // over a second lap of the ring too (the kernel tells laps apart by the tags alone).
    #[cfg(feature = "cuda")]
    #[test]
    fn streaming_stores_write_the_same_wire() {
        let plain = SubmitRing::<Totals>::new(2, size_of::<Add>());
        let streamed = SubmitRing::<Totals>::new(2, size_of::<Add>());
        streamed.set_stream_h2k(true);
        let cell = Arc::new(ReplyCell::<Totals>::new(0, 4));
        for t in 0..4u64 {
            for q in [&plain, &streamed] {
                let raw = Arc::into_raw(cell.clone());
                q.publish(
                    t,
                    3 + t as u32,
                    1 << (40 + t),
                    &Add {
                        amount: 10 * t as u32,
                    },
                    raw,
                );
                q.published();
                // As the completion thread would: take the cell back, drop its reference.
                let taken = q.take_cell(t);
                // SAFETY: test-only; `taken` is the reference handed to `publish` above.
                drop(unsafe { Arc::from_raw(taken) });
            }
            let wire = |q: &SubmitRing<Totals>| {
                // SAFETY: test-only; the entry's wire bytes are in bounds.
                unsafe { std::slice::from_raw_parts(q.h2k_entry(t), 2 * q.h2k_stride) }.to_vec()
            };
            assert_eq!(wire(&plain), wire(&streamed), "entry {t}");
            let (slot, hlc, req) = streamed.h2k_read::<Add>(t);
            assert_eq!(
                (slot, hlc, req.amount),
                (3 + t as u32, 1 << (40 + t), 10 * t as u32)
            );
        }
        assert_eq!(Arc::strong_count(&cell), 1);
    }
}
