//! The batch driver shared by the CPU, CUDA launch-per-batch and wgpu backends: a consumer
//! thread takes published entries in order, splits them into rounds in which no slot appears
//! twice (so one slot's messages run one at a time, in FIFO order), runs each round on an
//! executor and completes the callers.

use crate::clock::HlcStamp;
use crate::error::{FaultKind, RingError};
use crate::kernel::Kernel;
use crate::queue::{INVALID_SLOT, STATUS_OK};
use crate::reply::Reply;
use crate::ring::RingShared;
use crate::slots::SlotId;
use std::collections::HashMap;
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
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<K: Kernel, E: BatchExecutor<K>> BatchDriver<K, E> {
    pub(crate) fn start(shared: Arc<RingShared<K>>, executor: E) -> Self {
        let executor = Arc::new(Mutex::new(executor));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, e, st) = (shared.clone(), executor.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("silica-gpu-{}", K::NAME))
            .spawn(move || run(&s, &e, &st))
            .expect("spawn ring consumer thread");
        Self {
            shared,
            executor,
            stop,
            thread: Mutex::new(Some(thread)),
        }
    }

    pub(crate) fn write_state(&self, slot: SlotId, state: &K::State) -> Result<(), RingError> {
        self.lock()
            .write_state(slot.0, state)
            .map_err(|e| self.device_fault(e))
    }

    pub(crate) fn read_state(&self, slot: SlotId) -> Result<K::State, RingError> {
        self.lock()
            .read_state(slot.0)
            .map_err(|e| self.device_fault(e))
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

    pub(crate) fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.thread().unpark();
            let _ = t.join();
        }
        let _ = &self.shared;
    }
}

fn run<K: Kernel, E: BatchExecutor<K>>(
    shared: &RingShared<K>,
    executor: &Mutex<E>,
    stop: &AtomicBool,
) {
    shared.set_consumer();
    let max = u64::from(shared.config.max_batch.max(1));
    let mut idle_since = Instant::now();
    let mut batch = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let head = shared.queue.head();
        let mut end = head;
        while end - head < max && shared.queue.h2k_ready(end) {
            end += 1;
        }
        if end == head {
            if idle_since.elapsed() < shared.config.consumer_spin {
                std::hint::spin_loop();
            } else {
                shared.park_consumer(
                    || shared.queue.h2k_ready(head) || stop.load(Ordering::SeqCst),
                    Duration::from_millis(5),
                );
            }
            continue;
        }
        batch.clear();
        batch.extend((head..end).map(|t| {
            let (slot, hlc, request) = shared.queue.h2k_read::<K::Request>(t);
            (t, Incoming { slot, hlc, request })
        }));
        if let Err(detail) = run_batch(shared, executor, &mut batch) {
            shared.fault(FaultKind::BackendError, detail);
        } else {
            shared.queue.release(end);
        }
        idle_since = Instant::now();
    }
}

/// Runs one batch in rounds and completes every entry of it (unless a device call fails).
fn run_batch<K: Kernel, E: BatchExecutor<K>>(
    shared: &RingShared<K>,
    executor: &Mutex<E>,
    batch: &mut Vec<(u64, Incoming<K::Request>)>,
) -> Result<(), String> {
    let capacity = shared.slots.capacity();
    let mut seen: HashMap<u32, usize> = HashMap::new();
    let mut rounds: Vec<Vec<(u64, Incoming<K::Request>)>> = Vec::new();
    for (t, msg) in batch.drain(..) {
        if msg.slot == INVALID_SLOT || msg.slot >= capacity {
            shared
                .queue
                .complete(t, Err(RingError::SlotNotActive(SlotId(msg.slot))));
            continue;
        }
        let round = seen.entry(msg.slot).or_insert(0);
        if rounds.len() <= *round {
            rounds.push(Vec::new());
        }
        rounds[*round].push((t, msg));
        *round += 1;
    }
    let mut out = Vec::new();
    for round in rounds {
        let (index, msgs): (Vec<u64>, Vec<Incoming<K::Request>>) = round.into_iter().unzip();
        out.clear();
        executor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .execute(&msgs, &mut out)?;
        let max_in = msgs.iter().map(|m| m.hlc).max().unwrap_or(0);
        let first = shared.clock.reserve(max_in, msgs.len() as u64);
        for (i, (t, (response, status, hlc))) in index.into_iter().zip(out.drain(..)).enumerate() {
            let hlc = if hlc == 0 { first + i as u64 } else { hlc };
            let stamp = HlcStamp::new(hlc, shared.clock.node());
            let outcome = if status == STATUS_OK {
                Ok(Reply { response, stamp })
            } else {
                Err(RingError::SlotNotActive(SlotId(INVALID_SLOT)))
            };
            shared.queue.complete(t, outcome);
        }
    }
    Ok(())
}
