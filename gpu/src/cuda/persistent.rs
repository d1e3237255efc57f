//! The persistent ring backend: one resident kernel per ring polls the mapped H2K ring with
//! one warp and hands batches to worker warps; a completion thread polls K2H (spin, then
//! park), completes callers and watches the kernel (stream status, heartbeat), restarting it
//! after a fault.

use super::driver::{
    Context, DeviceBuffer, Module, launch, new_stream, register_host, stream_done,
};
use crate::backend::{FaultInjection, RingBackend};
use crate::clock::{HlcStamp, wall_ns};
use crate::error::{DeviceError, FaultKind, RingError};
use crate::kernel::{Kernel, as_bytes, from_bytes};
use crate::queue::{HostMem, STATUS_OK};
use crate::reply::Reply;
use crate::ring::{BackendKind, RingShared};
use crate::slots::SlotId;
use cudarc::driver::sys;
use std::ffi::{CString, c_void};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const TERMINATE: usize = 0;
const HEARTBEAT: usize = 64;
const TEST_EXIT: usize = 128;
/// Kernel diagnostics in the control block (written by the polling warp).
const STAT_PUBLISHES: usize = 256;
const STAT_ENTRIES: usize = 264;

/// Completion-thread diagnostics: polls that found finished entries, polls that found none,
/// entries completed.
#[derive(Default)]
struct Stats {
    busy: AtomicU64,
    idle: AtomicU64,
    entries: AtomicU64,
    /// Time in busy polls finding and decoding finished entries, and completing them.
    scan_ns: AtomicU64,
    complete_ns: AtomicU64,
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
}

/// One launch of the ring kernel and the resources of its context.
pub(crate) struct Run {
    stream: sys::CUstream,
    copy: sys::CUstream,
    states: DeviceBuffer,
    // Declared last: dropping the context frees everything above.
    ctx: Context,
}

// SAFETY: the raw handles belong to `ctx`, which is bound on whichever thread uses them.
unsafe impl Send for Run {}

/// Host memory shared with the kernel: the control block.
struct Ctrl(HostMem);

impl Ctrl {
    fn word(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: offsets are inside the 4 KiB block and 4-byte aligned.
        unsafe { &*self.0.ptr().add(offset).cast::<AtomicU32>() }
    }
    fn heartbeat(&self) -> u64 {
        // SAFETY: inside the block, 8-byte aligned; written by the kernel.
        unsafe { (*self.0.ptr().add(HEARTBEAT).cast::<AtomicU64>()).load(Ordering::Acquire) }
    }
    fn reset(&self) {
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
    let workers = shared.config.worker_warps.clamp(1, 31);
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
    };
    let mut args = [(&mut params as *mut RingParams).cast::<c_void>()];
    // SAFETY: one argument matching `SilicaRing` by value; every pointer in it stays valid
    // while the kernel runs (device buffers live in `ctx`, host memory outlives the run).
    unsafe { launch(module.ring, 1, 32 * (1 + workers), stream, &mut args)? };
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
        };
        let thread = std::thread::Builder::new()
            .name(format!("silica-k2h-{}", K::NAME))
            .spawn(move || watcher.run())
            .map_err(|e| DeviceError::Driver {
                call: "spawn completion thread",
                message: e.to_string(),
            })?;
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
        vec![
            ("completion_busy_polls", s.busy.load(Ordering::Relaxed)),
            ("completion_idle_polls", s.idle.load(Ordering::Relaxed)),
            ("completion_entries", s.entries.load(Ordering::Relaxed)),
            ("completion_scan_ns", s.scan_ns.load(Ordering::Relaxed)),
            (
                "completion_complete_ns",
                s.complete_ns.load(Ordering::Relaxed),
            ),
            ("kernel_publishes", ctrl(STAT_PUBLISHES)),
            ("kernel_published_entries", ctrl(STAT_ENTRIES)),
        ]
    }

    fn inject_fault(&self, fault: FaultInjection) -> bool {
        match fault {
            FaultInjection::KernelExit => self.ctrl.word(TEST_EXIT).store(1, Ordering::SeqCst),
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

/// The completion thread: K2H polling, watchdog, restarts.
struct Watcher<K: Kernel> {
    shared: Arc<RingShared<K>>,
    run: Arc<Mutex<Option<Run>>>,
    ctrl: Arc<Ctrl>,
    stop: Arc<AtomicBool>,
    last_beat: Arc<Mutex<Instant>>,
    stats: Arc<Stats>,
    ordinal: usize,
    ptx: Arc<CString>,
}

impl<K: Kernel> Watcher<K> {
    fn stream(&self) -> Option<sys::CUstream> {
        let guard = self.run.lock().unwrap_or_else(|e| e.into_inner());
        let run = guard.as_ref()?;
        run.ctx.bind().ok()?;
        Some(run.stream)
    }

    fn run(self) {
        self.shared.set_consumer();
        let Some(mut stream) = self.stream() else {
            return;
        };
        let q = &self.shared.queue;
        let mut head = q.head();
        let mut idle_since = Instant::now();
        let mut last_check = Instant::now();
        let mut beat = (self.ctrl.heartbeat(), Instant::now());
        let mut stop_deadline: Option<Instant> = None;
        let mut done = Vec::with_capacity(4096);
        loop {
            let start = head;
            // Find the run of finished entries first, then complete it with one counter
            // update and wake-up per reply cell.
            let t0 = Instant::now();
            let mut end = head;
            done.clear();
            while end - head < 4096
                && let Some(entry) = q.k2h_read(end)
            {
                q.k2h_prefetch(end + 8);
                done.push(entry);
                end += 1;
            }
            let t1 = Instant::now();
            let node = self.shared.clock.node();
            q.complete_run(head, end, |t| match done[(t - head) as usize] {
                (STATUS_OK, hlc, response) => Ok(Reply {
                    response,
                    stamp: HlcStamp::new(hlc, node),
                }),
                _ => Err(RingError::SlotNotActive(SlotId(u32::MAX))),
            });
            head = end;
            if head != start {
                let t2 = Instant::now();
                let ns = |d: Duration| d.as_nanos() as u64;
                self.stats.scan_ns.fetch_add(ns(t1 - t0), Ordering::Relaxed);
                self.stats
                    .complete_ns
                    .fetch_add(ns(t2 - t1), Ordering::Relaxed);
                self.stats.busy.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .entries
                    .fetch_add(head - start, Ordering::Relaxed);
                q.release(head);
                idle_since = Instant::now();
                continue;
            }
            if last_check.elapsed() >= Duration::from_micros(500) {
                last_check = Instant::now();
                let stopping = self.stop.load(Ordering::SeqCst);
                let deadline = *stop_deadline
                    .get_or_insert_with(|| Instant::now() + self.shared.config.stall_timeout);
                let fault = match stream_done(stream) {
                    Ok(false) => None,
                    Ok(true) if stopping => break,
                    Ok(true) => Some((
                        FaultKind::KernelExited,
                        "the ring kernel exited without being asked to".to_owned(),
                    )),
                    Err(e) => Some((FaultKind::CudaError, e.to_string())),
                };
                if stopping && Instant::now() > deadline {
                    break;
                }
                if !stopping {
                    stop_deadline = None;
                }
                let hb = self.ctrl.heartbeat();
                if hb != beat.0 {
                    beat = (hb, Instant::now());
                    *self.last_beat.lock().unwrap_or_else(|e| e.into_inner()) = beat.1;
                }
                let stalled = beat.1.elapsed() > self.shared.config.stall_timeout;
                let fault = fault.or_else(|| {
                    stalled.then(|| {
                        (
                            FaultKind::HeartbeatStall,
                            format!("no heartbeat for {:?}", beat.1.elapsed()),
                        )
                    })
                });
                if let (Some((kind, detail)), false) = (fault, stopping) {
                    match self.restart(kind, detail, stream) {
                        Some(s) => stream = s,
                        None => return,
                    }
                    head = q.head();
                    beat = (self.ctrl.heartbeat(), Instant::now());
                    continue;
                }
            }
            self.stats.idle.fetch_add(1, Ordering::Relaxed);
            if idle_since.elapsed() < self.shared.config.consumer_spin {
                std::hint::spin_loop();
            } else {
                self.shared
                    .park_consumer(|| q.k2h_ready(head), Duration::from_millis(1));
            }
        }
    }

    /// Fails everything in flight, marks slots lost, relaunches on a fresh context.
    fn restart(
        &self,
        kind: FaultKind,
        detail: String,
        stream: sys::CUstream,
    ) -> Option<sys::CUstream> {
        let q = &self.shared.queue;
        q.set_paused(true);
        self.ctrl.word(TERMINATE).store(1, Ordering::SeqCst);
        let wait = Instant::now();
        while matches!(stream_done(stream), Ok(false)) && wait.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.shared.fault(kind, detail);
        if kind == FaultKind::CudaError {
            // A sticky CUDA error (illegal address, trap) poisons the whole process's use of
            // the device: every later driver call, new contexts included, returns it. The ring
            // stays failed; the host process must restart to use the device again.
            q.close();
            q.fail_pending(&RingError::ShutDown);
            return None;
        }
        let mut guard = self.run.lock().unwrap_or_else(|e| e.into_inner());
        guard.take();
        self.ctrl.reset();
        match launch_run(
            &self.shared,
            self.ordinal,
            &self.ptx,
            &self.ctrl.0,
            q.head(),
        ) {
            Ok(run) => {
                let s = run.stream;
                *guard = Some(run);
                drop(guard);
                q.set_paused(false);
                Some(s)
            }
            Err(e) => {
                drop(guard);
                q.close();
                self.shared
                    .fault(FaultKind::BackendError, format!("restart failed: {e}"));
                None
            }
        }
    }
}
