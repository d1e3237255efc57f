//! The submission ring: host-to-kernel (H2K) entries in host memory, claimed lock-free by any
//! number of producers, and the matching kernel-to-host (K2H) entries.
//!
//! Entry `t` lives at position `t % cap`. Its *data* is `[0 u32][slot u32][hlc u64][request]`
//! (H2K) or `[0 u32][status u32][hlc u64][response]` (K2H), padded to 16 bytes (H2K: to a power
//! of two, so whole entries map onto lanes of a warp). On the *wire* (the shared host memory)
//! every 32-bit data word travels in its own 64-bit word with the entry's seq tag, `t + 1`
//! (wrapping), in the high half: `(seq << 32) | data`. Aligned 8-byte stores and loads are
//! single-copy atomic on both sides, so a reader that sees the tag in every word has the whole
//! entry: one parallel read detects and fetches a message (DESIGN §3 rule 4), with no release
//! fence per message on the GPU. The host writes the last word with release and the host-side
//! readers acquire it, so host-only paths (CPU backend) need check just that word.
//! `tail` (next entry to claim) and `head` (entries below it are finished and reusable) sit on
//! their own cache lines and each has one writer side: producers CAS `tail`, the consumer stores
//! `head`.

use crate::error::RingError;
use crate::kernel::as_bytes;
use crate::reply::{Outcome, ReplyCell};
use silica_grains::gpu::GpuType;
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::task::Waker;

/// Bytes before an entry's payload.
pub(crate) const HEADER: usize = 16;
/// The slot value of an entry whose producer found its slot inactive after claiming.
pub(crate) const INVALID_SLOT: u32 = u32::MAX;
/// K2H status: handled.
pub(crate) const STATUS_OK: u32 = 0;

/// Page-aligned, zeroed host memory (registered with the CUDA driver by the CUDA backends).
pub(crate) struct HostMem {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: plain memory; all concurrent access goes through atomics or the ring protocol.
unsafe impl Send for HostMem {}
// SAFETY: as above.
unsafe impl Sync for HostMem {}

impl HostMem {
    pub(crate) fn zeroed(len: usize) -> Self {
        let layout = Layout::from_size_align(len.max(4096).next_multiple_of(4096), 4096)
            .expect("ring size overflows");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Self { ptr, layout }
    }

    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // used by the CUDA backends
    pub(crate) fn len(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for HostMem {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

#[repr(align(128))]
struct Padded<T>(T);

/// The seq tag of entry `t`.
pub(crate) fn seq_of(t: u64) -> u32 {
    (t as u32).wrapping_add(1)
}

/// Data bytes of an H2K entry carrying `request_size` bytes: a power of two, at least 16.
pub(crate) const fn h2k_data_stride(request_size: usize) -> usize {
    let n = (HEADER + request_size).next_power_of_two();
    if n < 16 { 16 } else { n }
}

/// Data bytes of a K2H entry carrying `response_size` bytes: a multiple of 16.
pub(crate) const fn k2h_data_stride(response_size: usize) -> usize {
    (HEADER + response_size).next_multiple_of(16)
}

/// Writes `data` (whole 32-bit words, zero-extended) as tagged wire words at `wire`; the last
/// word is stored with release so host readers may acquire just that one.
///
/// # Safety
/// `wire` must be 8-byte aligned and valid for `words * 8` bytes that no one else writes now.
#[inline]
unsafe fn write_wire(wire: *mut u8, seq: u32, words: usize, mut data: impl FnMut(usize) -> u32) {
    let tag = u64::from(seq) << 32;
    for i in 0..words {
        let w = tag | u64::from(data(i));
        // SAFETY: in bounds and aligned per the caller; atomics make each word single-copy.
        let at = unsafe { &*wire.add(8 * i).cast::<AtomicU64>() };
        let order = if i + 1 == words {
            Ordering::Release
        } else {
            Ordering::Relaxed
        };
        at.store(w, order);
    }
}

/// Reads an entry of `words` tagged wire words at `wire` (`[0][slot or status][hlc lo][hlc hi]
/// [payload...]`) straight into its values; `None` unless every word carries `seq`. Decodes in
/// place, with no intermediate buffer: this runs once per message on the completion thread.
///
/// # Safety
/// `wire` must be 8-byte aligned and valid for `words * 8` bytes, and
/// `4 * (words - 4) >= size_of::<T>()`.
unsafe fn read_wire<T: GpuType>(wire: *const u8, seq: u32, words: usize) -> Option<(u32, u64, T)> {
    let word = |i: usize| {
        // SAFETY: `i < words`, so the word is in bounds and aligned per the caller.
        unsafe { &*wire.add(8 * i).cast::<AtomicU64>() }
    };
    if (word(words - 1).load(Ordering::Acquire) >> 32) as u32 != seq {
        return None;
    }
    let mut head = [0u32; 4];
    let mut value = std::mem::MaybeUninit::<T>::uninit();
    let out = value.as_mut_ptr().cast::<u8>();
    let size = size_of::<T>();
    for i in 0..words {
        let w = word(i).load(Ordering::Relaxed);
        if (w >> 32) as u32 != seq {
            return None;
        }
        if let Some(h) = head.get_mut(i) {
            *h = w as u32;
            continue;
        }
        let at = 4 * (i - 4);
        if at < size {
            let bytes = (w as u32).to_le_bytes();
            let n = (size - at).min(4);
            // SAFETY: `at + n <= size`, inside `value`.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.add(at), n) };
        }
    }
    // SAFETY: the caller guarantees the words cover all `size` bytes, each written above, and
    // every bit pattern is a valid `GpuType` (integers and floats only).
    let value = unsafe { value.assume_init() };
    Some((
        head[1],
        u64::from(head[2]) | (u64::from(head[3]) << 32),
        value,
    ))
}

/// The 32-bit word `i` of `bytes`, zero-padded past the end (per message and per word on the
/// producer's path: the whole-word case is one unaligned load).
#[inline]
fn word_at(bytes: &[u8], i: usize) -> u32 {
    let at = 4 * i;
    if let Some(w) = bytes.get(at..at + 4) {
        return u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
    }
    let mut w = [0u8; 4];
    let tail = bytes.get(at..).unwrap_or_default();
    w[..tail.len()].copy_from_slice(tail);
    u32::from_le_bytes(w)
}

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
    head: Padded<AtomicU64>,
    cells: Box<[AtomicPtr<ReplyCell<R>>]>,
    waiters: Mutex<Vec<Waker>>,
    waiting: AtomicUsize,
    closed: AtomicBool,
    paused: AtomicBool,
}

impl<R: GpuType> SubmitRing<R> {
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
            head: Padded(AtomicU64::new(0)),
            cells: (0..cap)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            waiters: Mutex::new(Vec::new()),
            waiting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            paused: AtomicBool::new(false),
        }
    }

    pub(crate) fn head(&self) -> u64 {
        self.head.0.load(Ordering::Acquire)
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
        // SAFETY: entry `t` was claimed by this producer and its previous use finished (head
        // passed it), so nobody else writes it; the entry is 2 * h2k_stride bytes, aligned.
        unsafe {
            write_wire(self.h2k_entry(t), seq_of(t), words, |i| match i {
                0 => 0,
                1 => slot,
                2 => hlc as u32,
                3 => (hlc >> 32) as u32,
                _ => word_at(payload, i - 4),
            })
        };
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
    fn take_cell(&self, t: u64) -> *const ReplyCell<R> {
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
                ReplyCell::finish(cell, n);
            }
        }
    }

    /// Entries below `head` are finished; their positions may be reused.
    pub(crate) fn release(&self, head: u64) {
        self.head.0.store(head, Ordering::SeqCst);
        self.wake_waiters();
    }

    /// Fails every claimed entry from `head` to `tail`, and releases them.
    pub(crate) fn fail_pending(&self, err: &RingError) {
        let head = self.head();
        let tail = self.tail();
        self.complete_run(head, tail, |_| Err(err.clone()));
        self.release(tail);
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
}
