//! The submission ring: host-to-kernel (H2K) entries in host memory, claimed lock-free by any
//! number of producers, and the matching kernel-to-host (K2H) entries.
//!
//! Entry `t` lives at position `t % cap`. H2K entry: `[seq u32][slot u32][hlc u64][request]`,
//! K2H entry: `[seq u32][status u32][hlc u64][response]`, each padded to 16 bytes. `seq` is
//! `t + 1` (wrapping) and is written last, with release, so one acquire load of it both detects
//! and orders the entry (DESIGN §3 rule 4). `tail` (next entry to claim) and `head` (entries
//! below it are finished and reusable) sit on their own cache lines and each has one writer
//! side: producers CAS `tail`, the consumer stores `head`.

use crate::error::RingError;
use crate::kernel::{as_bytes, from_bytes};
use crate::reply::{Outcome, ReplyCell};
use silica_grains::gpu::GpuType;
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

pub(crate) struct SubmitRing<R> {
    pub(crate) h2k: HostMem,
    pub(crate) k2h: HostMem,
    pub(crate) cap: u64,
    pub(crate) h2k_stride: usize,
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
        let h2k_stride = (HEADER + request_size).next_multiple_of(16);
        let k2h_stride = (HEADER + size_of::<R>()).next_multiple_of(16);
        Self {
            h2k: HostMem::zeroed(h2k_stride * cap as usize),
            k2h: HostMem::zeroed(k2h_stride * cap as usize),
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
                .add((t & (self.cap - 1)) as usize * self.h2k_stride)
        }
    }

    fn k2h_entry(&self, t: u64) -> *mut u8 {
        // SAFETY: the position is below `cap`, so the offset stays inside the allocation.
        unsafe {
            self.k2h
                .ptr()
                .add((t & (self.cap - 1)) as usize * self.k2h_stride)
        }
    }

    /// Writes claimed entry `t` and publishes it; `cell` receives its outcome.
    pub(crate) fn publish<Q: GpuType>(
        &self,
        t: u64,
        slot: u32,
        hlc: u64,
        req: &Q,
        cell: &Arc<ReplyCell<R>>,
    ) {
        let old = self.cells[(t & (self.cap - 1)) as usize]
            .swap(Arc::into_raw(cell.clone()).cast_mut(), Ordering::Release);
        debug_assert!(old.is_null());
        let entry = self.h2k_entry(t);
        let payload = as_bytes(req);
        // SAFETY: entry `t` was claimed by this producer and its previous use finished (head
        // passed it), so nobody else reads or writes it until seq is published below.
        unsafe {
            entry.add(4).cast::<u32>().write_volatile(slot);
            entry.add(8).cast::<u64>().write_volatile(hlc);
            std::ptr::copy_nonoverlapping(payload.as_ptr(), entry.add(HEADER), payload.len());
            (*entry.cast::<AtomicU32>()).store(seq_of(t), Ordering::Release);
        }
    }

    /// Whether H2K entry `t` is published.
    pub(crate) fn h2k_ready(&self, t: u64) -> bool {
        // SAFETY: the entry is inside the allocation and 4-byte aligned.
        unsafe { (*self.h2k_entry(t).cast::<AtomicU32>()).load(Ordering::Acquire) == seq_of(t) }
    }

    /// Reads published H2K entry `t`: slot, hlc, request.
    pub(crate) fn h2k_read<Q: GpuType>(&self, t: u64) -> (u32, u64, Q) {
        let entry = self.h2k_entry(t);
        // SAFETY: the entry was published (checked by the caller with acquire) and is not
        // rewritten until `head` passes it.
        unsafe {
            let bytes = std::slice::from_raw_parts(entry, self.h2k_stride);
            (
                entry.add(4).cast::<u32>().read_volatile(),
                entry.add(8).cast::<u64>().read_volatile(),
                from_bytes(&bytes[HEADER..]),
            )
        }
    }

    /// Reads K2H entry `t` if the kernel has written it: status, hlc, response.
    pub(crate) fn k2h_read(&self, t: u64) -> Option<(u32, u64, R)> {
        let entry = self.k2h_entry(t);
        // SAFETY: the entry is inside the allocation; once seq matches (acquire), the kernel
        // wrote the rest before it (release) and does not touch it again this lap.
        unsafe {
            if (*entry.cast::<AtomicU32>()).load(Ordering::Acquire) != seq_of(t) {
                return None;
            }
            let bytes = std::slice::from_raw_parts(entry, self.k2h_stride);
            Some((
                entry.add(4).cast::<u32>().read_volatile(),
                entry.add(8).cast::<u64>().read_volatile(),
                from_bytes(&bytes[HEADER..]),
            ))
        }
    }

    /// Delivers the outcome of entry `t` to its caller.
    pub(crate) fn complete(&self, t: u64, outcome: Outcome<R>) {
        let at = &self.cells[(t & (self.cap - 1)) as usize];
        let mut ptr = at.swap(std::ptr::null_mut(), Ordering::Acquire);
        while ptr.is_null() {
            // The producer claimed `t` and is between claim and publish; it never blocks there.
            std::thread::yield_now();
            ptr = at.swap(std::ptr::null_mut(), Ordering::Acquire);
        }
        // SAFETY: the pointer came from `Arc::into_raw` in `publish`, taken exactly once here.
        let cell = unsafe { Arc::from_raw(ptr) };
        // SAFETY: entry `t` is completed once, by the one consumer that owns it.
        unsafe { cell.complete(t, outcome) };
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
        for t in head..tail {
            self.complete(t, Err(err.clone()));
        }
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
