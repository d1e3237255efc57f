//! The persistent ring backend: one resident kernel per ring polls the mapped H2K ring with
//! one warp and hands batches to worker warps; a completion thread (`watcher`) polls K2H
//! (spin, then park), completes callers and watches the kernel (stream status, heartbeat),
//! restarting it after a fault.

use super::driver::{Context, DeviceBuffer, Module, launch, new_stream, register_host};
use super::watcher::Watcher;
use crate::backend::{FaultInjection, RingBackend};
use crate::clock::wall_ns;
use crate::error::{DeviceError, RingError};
use crate::kernel::{Kernel, as_bytes, from_bytes};
use crate::ring::{BackendKind, RingShared};
use crate::slots::SlotId;
use crate::wire::HostMem;
use cudarc::driver::sys;
use std::ffi::{CString, c_void};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(super) const TERMINATE: usize = 0;
const HEARTBEAT: usize = 64;
const TEST_EXIT: usize = 128;
/// Kernel diagnostics in the control block (written by the polling warp).
const STAT_PUBLISHES: usize = 256;
const STAT_ENTRIES: usize = 264;
const STAT_POLL_NS: usize = 272;
const STAT_WORKER_LAG: usize = 280;
/// Per worker warp (64 bytes each, 31 at most): sums over messages found on an idle ring of the
/// steps found -> worker pass -> chunk -> handlers done -> stamp -> K2H stores issued (ns),
/// and their count.
const STAT_IDLE_FINDS: usize = 512;

/// Completion-thread diagnostics: polls that found finished entries, polls that found none,
/// entries completed.
#[derive(Default)]
pub(super) struct Stats {
    pub(super) busy: AtomicU64,
    pub(super) idle: AtomicU64,
    pub(super) entries: AtomicU64,
    /// Time in busy polls finding finished entries, and counting them into reply cells.
    pub(super) scan_ns: AtomicU64,
    pub(super) complete_ns: AtomicU64,
    /// Entries of done-but-unread cells moved out of K2H while producers waited for room.
    pub(super) rescued: AtomicU64,
    /// Entries decoded into their cells as their runs finished (`Tuning::decode_on_completion`).
    pub(super) decoded: AtomicU64,
    /// Where the rest of the thread's time goes: fallback sweeps, the kernel checks (stream
    /// status, heartbeat), and sleeping (parks, and their count).
    pub(super) sweep_ns: AtomicU64,
    pub(super) check_ns: AtomicU64,
    pub(super) park_ns: AtomicU64,
    pub(super) parks: AtomicU64,
}

/// Kernel parameters; mirrors `struct SilicaRing` in the generated source.
#[repr(C)]
struct RingParams {
    h2k: u64,
    k2h: u64,
    ctrl: u64,
    states: u64,
    stage: u64,
    hlc_word: u64,
    start: u64,
    clock_offset_ns: i64,
    cap: u32,
    h2k_stride: u32,
    k2h_stride: u32,
    num_slots: u32,
    workers: u32,
    lookahead: u32,
    window: u32,
    lone_path: u32,
}

/// One launch of the ring kernel and the resources of its context.
pub(crate) struct Run {
    pub(super) stream: sys::CUstream,
    copy: sys::CUstream,
    states: DeviceBuffer,
    // Declared last: dropping the context frees everything above.
    pub(super) ctx: Context,
}

// SAFETY: the raw handles belong to `ctx`, which is bound on whichever thread uses them.
unsafe impl Send for Run {}

/// Host memory shared with the kernel: the control block.
pub(super) struct Ctrl(pub(super) HostMem);

impl Ctrl {
    pub(super) fn word(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: offsets are inside the 4 KiB block and 4-byte aligned.
        unsafe { &*self.0.ptr().add(offset).cast::<AtomicU32>() }
    }
    pub(super) fn heartbeat(&self) -> u64 {
        // SAFETY: inside the block, 8-byte aligned; written by the kernel.
        unsafe { (*self.0.ptr().add(HEARTBEAT).cast::<AtomicU64>()).load(Ordering::Acquire) }
    }
    pub(super) fn reset(&self) {
        for off in [TERMINATE, HEARTBEAT, HEARTBEAT + 4, TEST_EXIT, 192] {
            self.word(off).store(0, Ordering::SeqCst);
        }
    }
}

/// Starts the kernel on a fresh context of device `ordinal`, at ring entry `start`.
pub(crate) fn launch_run<K: Kernel>(
    shared: &RingShared<K>,
    ordinal: usize,
    ptx: &CString,
    ctrl: &HostMem,
    start: u64,
) -> Result<Run, RingError> {
    let ctx = Context::new(ordinal)?;
    ctx.bind()?;
    let module = Module::load(ptx)?;
    let (stream, copy) = (new_stream()?, new_stream()?);
    let q = &shared.queue;
    // SAFETY: the ring's host memory lives in `shared`, which outlives every run (the
    // backend joins its thread and drops the run before the ring's memory is freed).
    let (h2k, k2h, ctrl_d) = unsafe {
        (
            register_host(q.h2k.ptr(), q.h2k.len())?,
            register_host(q.k2h.ptr(), q.k2h.len())?,
            register_host(ctrl.ptr(), ctrl.len())?,
        )
    };
    let slots = shared.slots.capacity() as usize;
    let states = DeviceBuffer::zeroed(slots * size_of::<K::State>())?;
    let stage = DeviceBuffer::zeroed(q.cap as usize * q.h2k_stride)?;
    let hlc = DeviceBuffer::zeroed(16)?;
    hlc.write(0, &shared.clock.last().to_le_bytes(), copy)?;
    let clock_offset_ns = calibrate(&module, copy)?;
    let shape = super::source::Shape::new(shared.config.loader_warps, shared.config.worker_warps);
    let workers = shape.workers;
    let mut params = RingParams {
        h2k,
        k2h,
        ctrl: ctrl_d,
        states: states.ptr,
        stage: stage.ptr,
        hlc_word: hlc.ptr,
        start,
        clock_offset_ns,
        cap: q.cap as u32,
        h2k_stride: q.h2k_stride as u32,
        k2h_stride: q.k2h_stride as u32,
        num_slots: slots as u32,
        workers,
        lookahead: (shared.config.max_batch / 32).clamp(1, 16),
        window: super::tuning()
            .worker_window
            .clamp(1, super::source::MAX_WINDOW),
        lone_path: u32::from(super::tuning().lone_path),
    };
    let mut args = [(&mut params as *mut RingParams).cast::<c_void>()];
    // SAFETY: one argument matching `SilicaRing` by value; every pointer in it stays valid
    // while the kernel runs (device buffers live in `ctx`, host memory outlives the run).
    unsafe { launch(module.ring, 1, 32 * shape.warps(), stream, &mut args)? };
    Ok(Run {
        stream,
        copy,
        states,
        ctx,
    })
}

/// Offset from `%globaltimer` to host Unix-epoch nanoseconds, measured with one probe launch.
fn calibrate(module: &Module, stream: sys::CUstream) -> Result<i64, DeviceError> {
    let out = DeviceBuffer::zeroed(8)?;
    let mut ptr = out.ptr;
    let mut args = [(&mut ptr as *mut u64).cast::<c_void>()];
    let before = wall_ns();
    // SAFETY: one pointer argument to an 8-byte device buffer.
    unsafe { launch(module.probe, 1, 1, stream, &mut args)? };
    let mut bytes = [0u8; 8];
    out.read(0, &mut bytes, stream)?;
    let after = wall_ns();
    Ok(((before / 2 + after / 2) as i64).wrapping_sub(u64::from_le_bytes(bytes) as i64))
}

pub(crate) struct PersistentBackend<K: Kernel> {
    shared: Arc<RingShared<K>>,
    run: Arc<Mutex<Option<Run>>>,
    ctrl: Arc<Ctrl>,
    stop: Arc<AtomicBool>,
    last_beat: Arc<Mutex<Instant>>,
    stats: Arc<Stats>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<K: Kernel> PersistentBackend<K> {
    pub(crate) fn start(
        shared: Arc<RingShared<K>>,
        ordinal: usize,
        ptx: Arc<CString>,
    ) -> Result<Self, RingError> {
        let ctrl = Arc::new(Ctrl(HostMem::zeroed(4096)));
        let run = Arc::new(Mutex::new(Some(launch_run(
            &shared, ordinal, &ptx, &ctrl.0, 0,
        )?)));
        let stop = Arc::new(AtomicBool::new(false));
        let last_beat = Arc::new(Mutex::new(Instant::now()));
        let stats = Arc::new(Stats::default());
        let watcher = Watcher {
            shared: shared.clone(),
            run: run.clone(),
            ctrl: ctrl.clone(),
            stop: stop.clone(),
            last_beat: last_beat.clone(),
            stats: stats.clone(),
            ordinal,
            ptx,
            prefetch: Arc::new(AtomicU32::new(super::tuning().k2h_prefetch)),
            lead_only: super::tuning().lead_only_wake,
            decode: super::tuning().decode_on_completion,
            sweep: super::tuning().staged_sweep,
        };
        let thread = std::thread::Builder::new()
            .name(format!("silica-k2h-{}", K::NAME))
            .spawn(move || watcher.run())
            .map_err(|e| DeviceError::Driver {
                call: "spawn completion thread",
                message: e.to_string(),
            })?;
        // Set only once this backend is sure to serve the ring (a failed start falls back to
        // launch-per-batch on the same ring, whose host readers need neither). Nothing is
        // submitted before `Ring::start` returns.
        // Callers decode their own K2H entries; `head` moves once they have read them.
        shared.queue.set_callers_read_k2h();
        // Only the kernel reads H2K, checking every word's tag: producers may stream.
        shared.queue.set_stream_h2k(super::tuning().h2k_streaming);
        Ok(Self {
            shared,
            run,
            ctrl,
            stop,
            last_beat,
            stats,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn with_run<T>(&self, f: impl FnOnce(&Run) -> Result<T, DeviceError>) -> Result<T, RingError> {
        let guard = self.run.lock().unwrap_or_else(|e| e.into_inner());
        let run = guard.as_ref().ok_or(RingError::ShutDown)?;
        run.ctx.bind()?;
        Ok(f(run)?)
    }
}

impl<K: Kernel> RingBackend<K> for PersistentBackend<K> {
    fn kind(&self) -> BackendKind {
        BackendKind::CudaPersistent
    }

    fn write_state(&self, slot: SlotId, state: &K::State) -> Result<(), RingError> {
        self.with_run(|run| {
            run.states.write(
                slot.0 as usize * size_of::<K::State>(),
                as_bytes(state),
                run.copy,
            )
        })
    }

    fn read_state(&self, slot: SlotId) -> Result<K::State, RingError> {
        let mut bytes = vec![0u8; size_of::<K::State>()];
        self.with_run(|run| {
            run.states.read(
                slot.0 as usize * size_of::<K::State>(),
                &mut bytes,
                run.copy,
            )
        })?;
        Ok(from_bytes(&bytes))
    }

    fn heartbeat_age(&self) -> Option<Duration> {
        Some(
            self.last_beat
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed(),
        )
    }

    fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.ctrl.word(TERMINATE).store(1, Ordering::SeqCst);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.thread().unpark();
            let _ = t.join();
        }
        let _ = &self.shared;
    }

    fn stats(&self) -> Vec<(&'static str, u64)> {
        let s = &self.stats;
        let ctrl = |off: usize| {
            // SAFETY: inside the 4 KiB control block, 8-byte aligned; written by the kernel.
            unsafe { (*self.ctrl.0.ptr().add(off).cast::<AtomicU64>()).load(Ordering::Relaxed) }
        };
        let idle_finds = |field: usize| -> u64 {
            (0..31)
                .map(|w| ctrl(STAT_IDLE_FINDS + 64 * w + field))
                .sum()
        };
        vec![
            ("completion_busy_polls", s.busy.load(Ordering::Relaxed)),
            ("completion_idle_polls", s.idle.load(Ordering::Relaxed)),
            ("completion_entries", s.entries.load(Ordering::Relaxed)),
            ("completion_scan_ns", s.scan_ns.load(Ordering::Relaxed)),
            (
                "completion_complete_ns",
                s.complete_ns.load(Ordering::Relaxed),
            ),
            (
                "completion_rescued_entries",
                s.rescued.load(Ordering::Relaxed),
            ),
            (
                "completion_decoded_entries",
                s.decoded.load(Ordering::Relaxed),
            ),
            ("completion_sweep_ns", s.sweep_ns.load(Ordering::Relaxed)),
            ("completion_check_ns", s.check_ns.load(Ordering::Relaxed)),
            ("completion_park_ns", s.park_ns.load(Ordering::Relaxed)),
            ("completion_parks", s.parks.load(Ordering::Relaxed)),
            ("kernel_publishes", ctrl(STAT_PUBLISHES)),
            ("kernel_published_entries", ctrl(STAT_ENTRIES)),
            ("kernel_poll_busy_ns", ctrl(STAT_POLL_NS)),
            ("kernel_worker_lag_sum", ctrl(STAT_WORKER_LAG)),
            ("kernel_idle_handoff_ns", idle_finds(0)),
            ("kernel_idle_pick_ns", idle_finds(8)),
            ("kernel_idle_handler_ns", idle_finds(16)),
            ("kernel_idle_stamp_ns", idle_finds(24)),
            ("kernel_idle_write_ns", idle_finds(32)),
            ("kernel_idle_finds", idle_finds(40)),
            ("ring_tail", self.shared.queue.tail()),
            ("ring_ready", self.shared.queue.ready()),
            ("ring_head", self.shared.queue.head()),
        ]
    }

    fn inject_fault(&self, fault: FaultInjection) -> bool {
        match fault {
            FaultInjection::KernelExit => self.ctrl.word(TEST_EXIT).store(1, Ordering::SeqCst),
            FaultInjection::DeviceError => return false,
        }
        true
    }
}

impl<K: Kernel> Drop for PersistentBackend<K> {
    fn drop(&mut self) {
        self.shutdown();
        self.run.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}
