//! The wire encoding of ring entries in shared host memory, and that memory itself.
//!
//! Entry `t`'s *data* is `[0 u32][slot u32][hlc u64][request]` (H2K) or `[0 u32][status u32]
//! [hlc u64][response]` (K2H), padded to 16 bytes (H2K: to a power of two, so whole entries map
//! onto lanes of a warp). On the *wire* every 32-bit data word travels in its own 64-bit word
//! with the entry's seq tag, `t + 1` (wrapping), in the high half: `(seq << 32) | data`. Aligned
//! 8-byte stores and loads are single-copy atomic on both sides, so a reader that sees the tag
//! in every word has the whole entry: one parallel read detects and fetches a message (DESIGN §3
//! rule 4), with no release fence per message on the GPU. The host writes an entry's last word
//! with release, so host-only readers (the batch backends) need acquire just that word.

use silica_grains::gpu::GpuType;
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes before an entry's payload.
pub(crate) const HEADER: usize = 16;

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
pub(crate) unsafe fn write_wire(
    wire: *mut u8,
    seq: u32,
    words: usize,
    mut data: impl FnMut(usize) -> u32,
) {
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

/// [`write_wire`] with non-temporal stores (x86_64; plain [`write_wire`] elsewhere): the
/// entry's lines go to memory instead of staying modified in the writing core's cache, from
/// where the GPU's reads would have to fetch them. The stores are weakly ordered, even
/// among the entry's own words: only readers that check every word's tag may use such entries,
/// and the writer calls [`stream_fence`] once its run of entries is written.
///
/// # Safety
/// As [`write_wire`].
#[cfg(feature = "cuda")]
#[inline]
pub(crate) unsafe fn write_wire_streaming(
    wire: *mut u8,
    seq: u32,
    words: usize,
    data: impl FnMut(usize) -> u32,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let mut data = data;
        let tag = u64::from(seq) << 32;
        for i in 0..words {
            let w = tag | u64::from(data(i));
            // SAFETY: in bounds and 8-byte aligned per the caller; an aligned 8-byte store is
            // single-copy atomic, non-temporal or not; SSE2 is baseline on x86_64.
            unsafe { std::arch::x86_64::_mm_stream_si64(wire.add(8 * i).cast::<i64>(), w as i64) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: forwarded from the caller.
    unsafe {
        write_wire(wire, seq, words, data)
    };
}

/// Orders and drains the non-temporal stores of [`write_wire_streaming`] (an `sfence`).
#[cfg(feature = "cuda")]
#[inline]
pub(crate) fn stream_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a fence has no preconditions; SSE is baseline on x86_64.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// The wire word `i` of the entry at `wire`.
///
/// # Safety
/// The word must be inside a live, 8-byte aligned wire entry.
#[inline(always)]
unsafe fn word<'a>(wire: *const u8, i: usize) -> &'a AtomicU64 {
    // SAFETY: per the caller.
    unsafe { &*wire.add(8 * i).cast::<AtomicU64>() }
}

/// Whether every one of the `words` wire words at `wire` carries `seq` (the last one acquired
/// first, so a reader that sees it also sees the host writer's earlier words). Branch-free over
/// the words: this is the completion thread's whole per-message check.
///
/// # Safety
/// `wire` must be 8-byte aligned and valid for `words * 8` bytes.
#[cfg(feature = "cuda")]
#[inline]
pub(crate) unsafe fn wire_complete(wire: *const u8, seq: u32, words: usize) -> bool {
    // SAFETY: `words - 1` is inside the entry per the caller.
    if (unsafe { word(wire, words - 1) }.load(Ordering::Acquire) >> 32) as u32 != seq {
        return false;
    }
    let mut bad = 0u32;
    for i in 0..words - 1 {
        // SAFETY: `i < words`.
        bad |= (unsafe { word(wire, i) }.load(Ordering::Relaxed) >> 32) as u32 ^ seq;
    }
    bad == 0
}

/// Reads an entry of `words` tagged wire words at `wire` (`[0][slot or status][hlc lo][hlc hi]
/// [payload...]`) straight into its values; `None` unless every word carries `seq`. Decodes in
/// place with whole-word stores (no per-word copy call, no intermediate buffer).
///
/// # Safety
/// `wire` must be 8-byte aligned and valid for `words * 8` bytes, and
/// `4 * (words - 4) >= size_of::<T>()`.
#[inline]
pub(crate) unsafe fn read_wire<T: GpuType>(
    wire: *const u8,
    seq: u32,
    words: usize,
) -> Option<(u32, u64, T)> {
    // SAFETY: `words - 1` is inside the entry per the caller.
    let last = unsafe { word(wire, words - 1) }.load(Ordering::Acquire);
    // SAFETY: words 1..4 are inside the entry (`words > 4` per the caller's size bound).
    let (w1, w2, w3) = unsafe {
        (
            word(wire, 1).load(Ordering::Relaxed),
            word(wire, 2).load(Ordering::Relaxed),
            word(wire, 3).load(Ordering::Relaxed),
        )
    };
    // SAFETY: word 0 is inside the entry.
    let w0 = unsafe { word(wire, 0) }.load(Ordering::Relaxed);
    let mut bad = [w0, w1, w2, w3, last]
        .iter()
        .fold(0u32, |b, w| b | ((w >> 32) as u32 ^ seq));
    let mut value = std::mem::MaybeUninit::<T>::uninit();
    let out = value.as_mut_ptr().cast::<u8>();
    let size = size_of::<T>();
    let whole = size / 4;
    for j in 0..whole {
        // SAFETY: `4 + j < words` per the caller's size bound.
        let w = unsafe { word(wire, 4 + j) }.load(Ordering::Relaxed);
        bad |= (w >> 32) as u32 ^ seq;
        // SAFETY: `4 * j + 4 <= size`, inside `value`; unaligned store of one word.
        unsafe { out.add(4 * j).cast::<u32>().write_unaligned(w as u32) };
    }
    if !size.is_multiple_of(4) {
        // SAFETY: `4 + whole < words` per the caller's size bound.
        let w = unsafe { word(wire, 4 + whole) }.load(Ordering::Relaxed);
        bad |= (w >> 32) as u32 ^ seq;
        let bytes = (w as u32).to_le_bytes();
        // SAFETY: the tail bytes `4 * whole..size` are inside `value`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.add(4 * whole), size % 4) };
    }
    if bad != 0 {
        return None;
    }
    // SAFETY: every byte of `value` was written above, and every bit pattern is a valid
    // `GpuType` (integers and floats only).
    let value = unsafe { value.assume_init() };
    Some((
        w1 as u32,
        u64::from(w2 as u32) | (u64::from(w3 as u32) << 32),
        value,
    ))
}

/// The 32-bit word `i` of `bytes`, zero-padded past the end (per message and per word on the
/// producer's path: the whole-word case is one unaligned load).
#[inline]
pub(crate) fn word_at(bytes: &[u8], i: usize) -> u32 {
    let at = 4 * i;
    if let Some(w) = bytes.get(at..at + 4) {
        return u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
    }
    let mut w = [0u8; 4];
    let tail = bytes.get(at..).unwrap_or_default();
    w[..tail.len()].copy_from_slice(tail);
    u32::from_le_bytes(w)
}
