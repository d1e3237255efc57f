//! The persistent ring's completion thread: finds the run of K2H entries the kernel has
//! finished, counts them into their reply cells (it does not decode them: each caller decodes
//! its own entries on its own thread), moves `ready` and, once callers have read their entries,
//! `head`; and watches the kernel (stream status, heartbeat), restarting it after a fault.
//!
//! Why the split: with one thread decoding every K2H entry the host side capped the ring at
//! 13-17 M msg/s (44 ns a message finding and decoding, 18 ns completing; BENCHMARKS.md).
//! Checking an entry's tags is a few loads of lines the prefetcher has already fetched; the
//! decode, the reply construction and the writes into reply cells now run on the callers.

use super::driver::stream_done;
use super::persistent::{Ctrl, Run, Stats, TERMINATE, launch_run};
use crate::error::{FaultKind, RingError};
use crate::kernel::Kernel;
use crate::reply::{Outcome, ReplyCell};
use crate::ring::RingShared;
use cudarc::driver::sys;
use std::collections::VecDeque;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most entries one busy poll takes before completing them.
const RUN: u64 = 4096;

/// The completion thread's state: K2H polling, watchdog, restarts.
pub(super) struct Watcher<K: Kernel> {
    pub(super) shared: Arc<RingShared<K>>,
    pub(super) run: Arc<Mutex<Option<Run>>>,
    pub(super) ctrl: Arc<Ctrl>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) last_beat: Arc<Mutex<Instant>>,
    pub(super) stats: Arc<Stats>,
    pub(super) ordinal: usize,
    pub(super) ptx: Arc<CString>,
    /// K2H entries the scan prefetches ahead of itself.
    pub(super) prefetch: Arc<AtomicU32>,
    /// Whether a finished run wakes only one of its futures (`Tuning::lead_only_wake`).
    pub(super) lead_only: bool,
    /// Whether this thread decodes each finished run into its cell before it wakes the run's
    /// futures (`Tuning::decode_on_completion`).
    pub(super) decode: bool,
    /// How often the thread sweeps staged batches and stale fan-outs (see `stage.rs`;
    /// `Tuning::staged_sweep`); staged batches normally go when full, right after a completion
    /// pass, or when the ring is quiet.
    pub(super) sweep: Duration,
}

/// Reply cells the thread has started completing, in ring order, kept until their callers
/// have read their K2H entries; `head` is the first entry of the oldest one still unread.
struct Open<R> {
    cells: VecDeque<Arc<ReplyCell<R>>>,
    /// The cell being completed and the end of its run of entries.
    current: *const ReplyCell<R>,
    current_end: u64,
    /// Done cells whose lead-only fan-out was pending at their completion: the ones the
    /// passes and sweeps check (`fan_out_stale`), rather than every open cell, which a slow
    /// reader's backlog can make thousands.
    fanning: Vec<Arc<ReplyCell<R>>>,
    /// Entries decoded into their cells by `complete` (see `Watcher::decode`).
    decoded: u64,
    /// The highest HLC stamp of the entries completed so far: a relaunched kernel's clock word
    /// starts above it, so the ring's stamps keep increasing across a restart.
    high_seen: u64,
}

impl<R: silica_grains::gpu::GpuType> Open<R> {
    /// Counts finished entries `from..to` into their cells (taking each new cell's pointer at
    /// its first entry) and wakes the callers whose cells are now done. A single-message cell
    /// (the round-trip case) is decoded here instead, `decode(t)`, and stored in its cell: its
    /// caller reads one ready reply and its entry is reusable at once.
    fn complete(
        &mut self,
        q: &crate::queue::SubmitRing<R>,
        from: u64,
        to: u64,
        (lead_only, decode_runs): (bool, bool),
        decode: impl Fn(u64) -> Option<Outcome<R>>,
    ) {
        let mut t = from;
        while t < to {
            let mut clear_from = t;
            if t >= self.current_end {
                let ptr = q.take_cell(t);
                // SAFETY: the ring's reference keeps the cell alive until its entry is counted.
                if unsafe { (*ptr).len() } == 1 {
                    self.high_seen = self.high_seen.max(q.k2h_hlc(t));
                    let outcome = decode(t).unwrap_or(Err(RingError::ShutDown));
                    // SAFETY: this thread completes the cell's one entry, once; `finish` then
                    // drops the ring's reference.
                    unsafe {
                        (*ptr).set(t, outcome);
                        ReplyCell::finish(ptr, 1, false);
                    }
                    self.current_end = t + 1;
                    t += 1;
                    continue;
                }
                // SAFETY: `ptr` came from `Arc::into_raw` (the ring's one reference to the cell,
                // live until its last entry is counted); this clone keeps it until consumed.
                let cell = unsafe {
                    Arc::increment_strong_count(ptr);
                    Arc::from_raw(ptr)
                };
                self.current_end = cell.first + cell.len() as u64;
                self.cells.push_back(cell);
                self.current = ptr;
                clear_from = t + 1;
            }
            let stop = to.min(self.current_end);
            q.clear_cells(clear_from, stop);
            // Held across `finish`, which drops the ring's reference once the cell is done.
            let held = self
                .cells
                .back()
                .filter(|c| Arc::as_ptr(c) == self.current)
                .cloned();
            // SAFETY: `current` is live (`cells` holds it or its count is not yet zero); only
            // this thread completes its entries, each once, and records them as K2H-resident
            // before counting them.
            unsafe {
                let first = (*self.current).first;
                let high = (t..stop).map(|e| q.k2h_hlc(e)).max().unwrap_or(0);
                self.high_seen = self.high_seen.max(high);
                (*self.current).raise_high(high);
                (*self.current).set_in_k2h((stop - first) as usize);
                // Staged runs only: a batch's one future decodes its entries on its own thread
                // (decoding 1,024-entry batches here made this thread the ring's bottleneck).
                if decode_runs && stop == self.current_end && (*self.current).is_staged() {
                    // Every entry of the run has finished; none is counted done yet.
                    (*self.current).decode_finished(&decode);
                    self.decoded += stop - first;
                }
                ReplyCell::finish(self.current, (stop - t) as usize, lead_only);
            }
            if let Some(cell) = held.filter(|c| c.is_done() && c.fan_out_pending()) {
                self.fanning.push(cell);
            }
            t = stop;
        }
    }

    /// Wakes one more future of each lead-only completion still pending since the previous
    /// check (see `ReplyCell::fan_out_if_stale`) and forgets the ones done.
    fn fan_out_stale(&mut self) {
        self.fanning.retain(|c| {
            c.fan_out_if_stale();
            c.fan_out_pending()
        });
    }

    /// Drops the cells whose callers have read them (or whose entries a rescue moved); returns
    /// the new `head`.
    fn release(&mut self, ready: u64) -> u64 {
        while self.cells.front().is_some_and(|c| c.is_consumed()) {
            // A done cell whose lead-only fan-out is pending is in `fanning` (see `complete`),
            // which keeps it until its lead fans out or a later check does (a lead that had
            // already read its entry, or a rescued cell). Fanning out here instead woke every
            // future of a run from this thread whenever its lead had not polled yet; with runs
            // decoded (so consumed) as they finish, under load that was most runs.
            self.cells.pop_front();
        }
        self.cells.front().map_or(ready, |c| c.first)
    }

    /// Moves the K2H entries of the oldest done-but-unread cells into the cells themselves
    /// (see [`ReplyCell::rescue`]) so their positions can be reused; used only while someone
    /// waits for ring room. Returns how many entries it moved.
    fn rescue_front(&mut self, decode: impl Fn(u64) -> Option<Outcome<R>>) -> u64 {
        let mut moved = 0;
        for cell in &self.cells {
            if !cell.is_done() {
                break;
            }
            if cell.is_consumed() {
                continue;
            }
            // SAFETY: this is the completing thread and the cell is done.
            if !unsafe { cell.rescue(&decode) } {
                break;
            }
            moved += cell.len() as u64;
        }
        moved
    }

    fn front_consumed(&self) -> bool {
        self.cells.front().is_some_and(|c| c.is_consumed())
    }
}

impl<K: Kernel> Watcher<K> {
    fn stream(&self) -> Option<sys::CUstream> {
        let guard = self.run.lock().unwrap_or_else(|e| e.into_inner());
        let run = guard.as_ref()?;
        run.ctx.bind().ok()?;
        Some(run.stream)
    }

    pub(super) fn run(self) {
        self.shared.set_consumer();
        let Some(mut stream) = self.stream() else {
            return;
        };
        let q = &self.shared.queue;
        let mut ready = q.ready();
        let mut head = q.head();
        let mut open = Open {
            cells: VecDeque::new(),
            current: std::ptr::null(),
            current_end: ready,
            fanning: Vec::new(),
            decoded: 0,
            high_seen: 0,
        };
        let prefetch = u64::from(self.prefetch.load(Ordering::Relaxed));
        let mut idle_since = Instant::now();
        let mut last_check = Instant::now();
        let mut beat = (self.ctrl.heartbeat(), Instant::now());
        let mut stop_deadline: Option<Instant> = None;
        let mut last_sweep = Instant::now();
        let mut flush_skipped = false;
        loop {
            // Find the run of whole entries (every word tagged), then count it into its cells.
            let t0 = Instant::now();
            if t0 - last_sweep >= self.sweep {
                // Fallbacks: staged batches nobody flushed, lead-only wake-ups nobody fanned out.
                last_sweep = t0;
                self.shared.sweep_staged();
                open.fan_out_stale();
                self.stats
                    .sweep_ns
                    .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            let mut end = ready;
            while end - ready < RUN && q.k2h_complete(end) {
                if prefetch > 0 {
                    q.k2h_prefetch(end + prefetch);
                }
                end += 1;
            }
            let found = end != ready;
            if found {
                let t1 = Instant::now();
                open.complete(q, ready, end, (self.lead_only, self.decode), |t| {
                    self.shared.k2h_outcome(t)
                });
                let decoded = std::mem::take(&mut open.decoded);
                self.stats.decoded.fetch_add(decoded, Ordering::Relaxed);
                let n = end - ready;
                ready = end;
                q.set_ready(ready);
                if self.lead_only {
                    // Runs whose lead has not been polled since the previous pass: wake one more
                    // of their futures from here (a pass, not a sweep, of delay under load).
                    open.fan_out_stale();
                }
                // Nagle's "ack": batches awaited while these ran go out now (see `stage.rs`).
                flush_skipped = self.shared.flush_after_completion();
                let t2 = Instant::now();
                let ns = |d: Duration| d.as_nanos() as u64;
                self.stats.scan_ns.fetch_add(ns(t1 - t0), Ordering::Relaxed);
                self.stats
                    .complete_ns
                    .fetch_add(ns(t2 - t1), Ordering::Relaxed);
                self.stats.busy.fetch_add(1, Ordering::Relaxed);
                self.stats.entries.fetch_add(n, Ordering::Relaxed);
                idle_since = Instant::now();
            }
            if q.has_waiters() || self.shared.waits_for_room() {
                // The ring is full (or nearly): free entries whose callers have not read them.
                let moved = open.rescue_front(|t| self.shared.k2h_outcome(t));
                self.stats.rescued.fetch_add(moved, Ordering::Relaxed);
            }
            let h = open.release(ready);
            if h != head {
                head = h;
                q.set_head(head);
                self.shared.room_for_staged();
            }
            if found {
                continue;
            }
            if last_check.elapsed() >= Duration::from_micros(500) {
                last_check = Instant::now();
                let check_started = last_check;
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
                self.stats
                    .check_ns
                    .fetch_add(check_started.elapsed().as_nanos() as u64, Ordering::Relaxed);
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
                    match self.restart(kind, detail, stream, open.high_seen) {
                        Some(s) => stream = s,
                        None => return,
                    }
                    // Everything in flight was failed (the open cell's rest included); the
                    // relaunched kernel starts at the new `ready`.
                    ready = q.ready();
                    open.current_end = ready;
                    beat = (self.ctrl.heartbeat(), Instant::now());
                    continue;
                }
            }
            self.stats.idle.fetch_add(1, Ordering::Relaxed);
            if flush_skipped {
                // A pass skipped a locked shard and no pass came since: retry it here.
                flush_skipped = self.shared.flush_awaited_when_idle();
            }
            if idle_since.elapsed() < self.shared.config.consumer_spin {
                std::hint::spin_loop();
            } else {
                let parked = Instant::now();
                self.shared.park_consumer(
                    || q.k2h_ready(ready) || open.front_consumed() || self.shared.has_staged(),
                    Duration::from_millis(1),
                );
                self.stats
                    .park_ns
                    .fetch_add(parked.elapsed().as_nanos() as u64, Ordering::Relaxed);
                self.stats.parks.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Fails everything in flight, marks slots lost, relaunches on a fresh context whose clock
    /// word starts above `high_seen`, the highest stamp completed so far.
    fn restart(
        &self,
        kind: FaultKind,
        detail: String,
        stream: sys::CUstream,
        high_seen: u64,
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
            // Staged batches (open, or waiting for room) fail to claim now: their futures
            // answer `ShutDown` instead of waiting on a consumer that is gone.
            self.shared.flush_all();
            q.fail_pending(&RingError::ShutDown);
            return None;
        }
        let mut guard = self.run.lock().unwrap_or_else(|e| e.into_inner());
        guard.take();
        self.ctrl.reset();
        self.shared.clock.observe(high_seen);
        match launch_run(
            &self.shared,
            self.ordinal,
            &self.ptx,
            &self.ctrl.0,
            q.ready(),
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
                self.shared.flush_all();
                self.shared
                    .fault(FaultKind::BackendError, format!("restart failed: {e}"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A cell of `len` entries, each awaited by a future with a counting waker, finished with
    /// a lead-only wake-up (its entries recorded as K2H-resident).
    fn finished_lead_only(len: usize) -> (Arc<ReplyCell<u32>>, Vec<Arc<Count>>) {
        let cell = Arc::new(ReplyCell::<u32>::new(0, len));
        let counts: Vec<_> = (0..len)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect();
        for (i, c) in counts.iter().enumerate() {
            assert!(!cell.register(i as u32, &Waker::from(c.clone()), true));
        }
        let raw = Arc::into_raw(cell.clone());
        // SAFETY: test-only; this thread plays the completing thread.
        unsafe {
            cell.set_in_k2h(len);
            ReplyCell::finish(raw, len, true);
        }
        (cell, counts)
    }

    fn woken(counts: &[Arc<Count>]) -> Vec<usize> {
        counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect()
    }

    // Pins that a cell leaves `cells` without waking anyone, its pending lead-only fan-out left
    // to the checks of `fanning` (where `complete` put it): a lead woken in vain (its future had
    // read already) and a rescue that consumed the cell must not leave the other futures asleep
    // until their timeout, and the thread must not wake the whole run at once either.
    #[test]
    fn released_cells_leave_pending_fan_outs_to_the_checks() {
        let (cell, counts) = finished_lead_only(3);
        assert_eq!(woken(&counts).iter().sum::<usize>(), 1, "one lead woken");
        // SAFETY: test-only; the cell is done and this thread plays the completing thread.
        assert!(unsafe {
            cell.rescue(|t| {
                Some(Ok(crate::reply::Reply {
                    response: t as u32,
                    stamp: crate::clock::HlcStamp::default(),
                }))
            })
        });
        let mut open = Open {
            cells: VecDeque::from([cell.clone()]),
            current: std::ptr::null(),
            current_end: 3,
            fanning: vec![cell],
            decoded: 0,
            high_seen: 0,
        };
        assert_eq!(open.release(3), 3);
        assert!(open.cells.is_empty());
        assert_eq!(
            woken(&counts).iter().sum::<usize>(),
            1,
            "release wakes nobody"
        );
        // Nobody polls: every second check wakes one more, until all were woken.
        for _ in 0..4 {
            open.fan_out_stale();
        }
        assert_eq!(woken(&counts), [1, 1, 1]);
        assert!(open.fanning.is_empty());
    }

    // Pins the passes' fallback: a lead-only completion nobody fanned out wakes one more future
    // at the second check (here the last one), once, and then leaves the list the passes walk.
    #[test]
    fn stale_fan_outs_go_at_the_second_check() {
        let (cell, counts) = finished_lead_only(2);
        assert!(cell.fan_out_pending());
        let total = || woken(&counts).iter().sum::<usize>();
        let mut open = Open {
            cells: VecDeque::from([cell.clone()]),
            current: std::ptr::null(),
            current_end: 2,
            fanning: vec![cell],
            decoded: 0,
            high_seen: 0,
        };
        open.fan_out_stale();
        assert_eq!(
            (total(), open.fanning.len()),
            (1, 1),
            "the first check only looks"
        );
        open.fan_out_stale();
        assert_eq!((total(), open.fanning.len()), (2, 0));
        open.fan_out_stale();
        assert_eq!(total(), 2, "nobody woken twice");
    }
}
