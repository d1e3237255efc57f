//! The batch driver shared by the CPU, CUDA launch-per-batch and wgpu backends: a consumer
//! thread takes published entries in order, splits them into rounds in which no slot appears
//! twice (so one slot's messages run one at a time, in FIFO order), runs each round on an
//! executor and completes the callers.

use crate::backend::{FaultInjection, RingBackend};
use crate::clock::HlcStamp;
use crate::error::{FaultKind, RingError};
use crate::kernel::Kernel;
use crate::queue::{INVALID_SLOT, STATUS_OK};
use crate::reply::{Outcome, Reply};
use crate::ring::{BackendKind, RingShared};
use crate::slots::SlotId;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One message of a round.
pub(crate) struct Incoming<Q> {
    pub(crate) slot: u32,
    pub(crate) hlc: u64,
    pub(crate) request: Q,
}

/// Runs rounds of messages on a device.
pub(crate) trait BatchExecutor<K: Kernel>: Send + 'static {
    /// Which backend a ring driven by this executor is.
    const KIND: BackendKind;
    /// Handles `round` (no slot twice); pushes one `(response, status, hlc)` per message.
    /// An `hlc` of 0 asks the driver to stamp with the host clock.
    fn execute(
        &mut self,
        round: &[Incoming<K::Request>],
        out: &mut Vec<(K::Response, u32, u64)>,
    ) -> Result<(), String>;
    fn write_state(&mut self, slot: u32, state: &K::State) -> Result<(), String>;
    fn read_state(&mut self, slot: u32) -> Result<K::State, String>;
}

pub(crate) struct BatchDriver<K: Kernel, E> {
    shared: Arc<RingShared<K>>,
    executor: Arc<Mutex<E>>,
    stop: Arc<AtomicBool>,
    /// Set by `inject_fault`: the consumer faults the ring on its next pass. On the consumer's
    /// thread, not the injector's, because a fault completes the entries in flight, which only
    /// the consumer may do.
    fail_next: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<K: Kernel, E: BatchExecutor<K>> BatchDriver<K, E> {
    pub(crate) fn start(shared: Arc<RingShared<K>>, executor: E) -> Self {
        let executor = Arc::new(Mutex::new(executor));
        let stop = Arc::new(AtomicBool::new(false));
        let fail_next = Arc::new(AtomicBool::new(false));
        let (s, e, st, f) = (
            shared.clone(),
            executor.clone(),
            stop.clone(),
            fail_next.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("silica-gpu-{}", K::NAME))
            .spawn(move || run(&s, &e, &st, &f))
            .expect("spawn ring consumer thread");
        Self {
            shared,
            executor,
            stop,
            fail_next,
            thread: Mutex::new(Some(thread)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, E> {
        self.executor.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn device_fault(&self, detail: String) -> RingError {
        RingError::Device(crate::error::DeviceError::Driver {
            call: "state copy",
            message: detail,
        })
    }
}

/// Every batch backend is its driver: the executor says which backend it is.
impl<K: Kernel, E: BatchExecutor<K>> RingBackend<K> for BatchDriver<K, E> {
    fn kind(&self) -> BackendKind {
        E::KIND
    }

    fn write_state(&self, slot: SlotId, state: &K::State) -> Result<(), RingError> {
        self.lock()
            .write_state(slot.0, state)
            .map_err(|e| self.device_fault(e))
    }

    fn read_state(&self, slot: SlotId) -> Result<K::State, RingError> {
        self.lock()
            .read_state(slot.0)
            .map_err(|e| self.device_fault(e))
    }

    fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.thread().unpark();
            let _ = t.join();
        }
        let _ = &self.shared;
    }

    fn inject_fault(&self, fault: FaultInjection) -> bool {
        match fault {
            FaultInjection::DeviceError => {
                self.fail_next.store(true, Ordering::SeqCst);
                self.shared.wake_consumer();
                true
            }
            FaultInjection::KernelExit => false,
        }
    }
}

/// Per-thread scratch of the batch driver, reused across batches (no per-batch allocation in
/// the steady state).
struct Scratch<K: Kernel> {
    /// Per slot: the epoch it was last seen in and its next round in that epoch.
    round_of: Vec<(u64, u32)>,
    epoch: u64,
    /// Ring index and message of every entry of the current batch, grouped by round.
    rounds: Vec<Vec<(u64, Incoming<K::Request>)>>,
    msgs: Vec<Incoming<K::Request>>,
    out: Vec<(K::Response, u32, u64)>,
    /// Outcomes by position in the batch.
    outcomes: Vec<Option<Outcome<K::Response>>>,
}

fn run<K: Kernel, E: BatchExecutor<K>>(
    shared: &RingShared<K>,
    executor: &Mutex<E>,
    stop: &AtomicBool,
    fail_next: &AtomicBool,
) {
    shared.set_consumer();
    let max = u64::from(shared.config.max_batch.max(1));
    let mut idle_since = Instant::now();
    let mut scratch = Scratch::<K> {
        round_of: vec![(0, 0); shared.slots.capacity() as usize],
        epoch: 0,
        rounds: Vec::new(),
        msgs: Vec::new(),
        out: Vec::new(),
        outcomes: Vec::new(),
    };
    let mut last_sweep = Instant::now();
    let mut flush_skipped = false;
    while !stop.load(Ordering::SeqCst) {
        // A load first: the swap is a write, and this runs every pass.
        if fail_next.load(Ordering::Relaxed) && fail_next.swap(false, Ordering::SeqCst) {
            shared.fault(FaultKind::BackendError, "injected device error".into());
        }
        if last_sweep.elapsed() >= Duration::from_micros(100) {
            // The fallback for staged batches nobody flushed (see `stage.rs`).
            shared.sweep_staged();
            last_sweep = Instant::now();
        }
        let head = shared.queue.ready();
        let mut end = head;
        while end - head < max && shared.queue.h2k_ready(end) {
            end += 1;
        }
        if end == head {
            if flush_skipped {
                // A pass skipped a locked shard and no further pass comes: retry it here.
                flush_skipped = shared.flush_awaited_when_idle();
            }
            if idle_since.elapsed() < shared.config.consumer_spin {
                std::hint::spin_loop();
            } else {
                shared.park_consumer(
                    || {
                        shared.queue.h2k_ready(head)
                            || stop.load(Ordering::SeqCst)
                            || fail_next.load(Ordering::SeqCst)
                            || shared.has_staged()
                    },
                    Duration::from_millis(5),
                );
            }
            continue;
        }
        if let Err(detail) = run_batch(shared, executor, &mut scratch, head, end) {
            shared.fault(FaultKind::BackendError, detail);
        } else {
            shared.queue.release(end);
            shared.room_for_staged();
            // Nagle's "ack": batches awaited while this one ran go out now (see `stage.rs`).
            flush_skipped = shared.flush_after_completion();
        }
        idle_since = Instant::now();
    }
}

/// Runs entries `head..end` in rounds in which no slot repeats and completes every one of
/// them (unless a device call fails).
fn run_batch<K: Kernel, E: BatchExecutor<K>>(
    shared: &RingShared<K>,
    executor: &Mutex<E>,
    sc: &mut Scratch<K>,
    head: u64,
    end: u64,
) -> Result<(), String> {
    let capacity = shared.slots.capacity();
    sc.epoch += 1;
    sc.outcomes.clear();
    sc.outcomes.resize_with((end - head) as usize, || None);
    for t in head..end {
        let (slot, hlc, request) = shared.queue.h2k_read::<K::Request>(t);
        if slot == INVALID_SLOT || slot >= capacity {
            sc.outcomes[(t - head) as usize] = Some(Err(RingError::SlotNotActive(SlotId(slot))));
            continue;
        }
        let seen = &mut sc.round_of[slot as usize];
        if seen.0 != sc.epoch {
            *seen = (sc.epoch, 0);
        }
        let round = seen.1 as usize;
        seen.1 += 1;
        if sc.rounds.len() <= round {
            sc.rounds.push(Vec::new());
        }
        sc.rounds[round].push((t, Incoming { slot, hlc, request }));
    }
    let node = shared.clock.node();
    let mut result = Ok(());
    for round in sc.rounds.iter_mut().filter(|r| !r.is_empty()) {
        if result.is_err() {
            round.clear();
            continue;
        }
        sc.msgs.clear();
        sc.msgs.extend(round.iter().map(|(_, m)| Incoming {
            slot: m.slot,
            hlc: m.hlc,
            request: m.request,
        }));
        sc.out.clear();
        if let Err(e) = executor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .execute(&sc.msgs, &mut sc.out)
        {
            result = Err(e);
            round.clear();
            continue;
        }
        let max_in = sc.msgs.iter().map(|m| m.hlc).max().unwrap_or(0);
        let first = shared.clock.reserve(max_in, sc.msgs.len() as u64);
        for (i, ((t, _), (response, status, hlc))) in
            round.drain(..).zip(sc.out.drain(..)).enumerate()
        {
            let hlc = if hlc == 0 { first + i as u64 } else { hlc };
            sc.outcomes[(t - head) as usize] = Some(if status == STATUS_OK {
                Ok(Reply {
                    response,
                    stamp: HlcStamp::new(hlc, node),
                })
            } else {
                Err(RingError::SlotNotActive(SlotId(INVALID_SLOT)))
            });
        }
    }
    result?;
    let outcomes = &mut sc.outcomes;
    shared.queue.complete_run(head, end, |t| {
        outcomes[(t - head) as usize]
            .take()
            .unwrap_or(Err(RingError::ShutDown))
    });
    Ok(())
}
