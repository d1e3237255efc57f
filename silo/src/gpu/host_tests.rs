//! `HostCore` driven directly, on one CPU reference ring: what a failure of a stateless worker
//! slot does to its pool and to the ring's slot count.

use std::sync::atomic::{AtomicBool, AtomicUsize};

use silica_gpu::samples::{Empty, VectorAdd};
use silica_gpu::{BackendChoice, BackendKind, RingError};

use super::*;

/// A store that counts its loads (each replacement of a worker slot loads its state once) and
/// panics in `load` while `down` is set.
#[derive(Default)]
struct Loads {
    count: AtomicUsize,
    down: AtomicBool,
}

impl GpuStateStore<VectorAdd> for Loads {
    fn load(&self, _: &GrainId) -> Empty {
        if self.down.load(Ordering::SeqCst) {
            panic!("the state store is down");
        }
        self.count.fetch_add(1, Ordering::SeqCst);
        Empty::default()
    }
    fn save(&self, _: &GrainId, _: Result<Empty, StateLost>, _: DeactivationReason) {}
}

/// A stateless host on one CPU reference ring with a pool of one worker slot, its tasks on the
/// current runtime and `tracker`.
fn one_worker(store: Arc<Loads>, tracker: &TaskTracker) -> Arc<HostCore<VectorAdd>> {
    let options = GrainOptions {
        stateless_worker: Some(1),
        ..GrainOptions::DEFAULT
    };
    let core = on_one_ring(options, store, tracker);
    let id = Arc::new(GrainId::new(core.grain_type.clone(), "worker"));
    let slot = core.rings().unwrap().rings[0]
        .activate(&Empty::default())
        .unwrap();
    let worker = core.slotted(id, 0, slot, Some((0, 0)));
    *core.workers.write().unwrap() = vec![vec![worker]];
    core
}

/// A host with `options` on one CPU reference ring of 8 slots, its tasks on the current runtime
/// and `tracker`.
fn on_one_ring(
    options: GrainOptions,
    store: Arc<Loads>,
    tracker: &TaskTracker,
) -> Arc<HostCore<VectorAdd>> {
    let core = Arc::new(HostCore::<VectorAdd> {
        grain_type: GrainType::new("adder"),
        options,
        store,
        rings: OnceLock::new(),
        catalog: DashMap::with_hasher_and_shard_amount(Default::default(), 64),
        epoch: Epoch::default(),
        workers: RwLock::new(Vec::new()),
        tasks: OnceLock::new(),
        next_worker: Default::default(),
        closed: Default::default(),
    });
    let config = GpuConfig {
        slots_per_device: 8,
        ..GpuConfig::default()
    };
    let choices = [BackendChoice::Exact {
        kind: BackendKind::Cpu,
        device: 0,
    }];
    let settings = Arc::new(RingSettings {
        clock: Arc::new(silica_clocks::HybridClock::new(
            silica_clocks::NodeId(1),
            Default::default(),
        )),
        max_result_bytes: 1 << 20,
        reply_spin: Duration::ZERO,
    });
    let _ = core
        .tasks
        .set((tokio::runtime::Handle::current(), tracker.clone()));
    let _ = core
        .rings
        .set(RingSet::start(&choices, None, &config, settings));
    core
}

// Pins that a worker slot seen failing by two calls is replaced once: one fresh slot in the
// pool, the failed one given back once, and the ring's count of slots in use still right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_failures_of_one_worker_replace_it_once() {
    let store = Arc::new(Loads::default());
    let tracker = TaskTracker::new();
    let core = one_worker(store.clone(), &tracker);
    let failed = core.workers.read().unwrap()[0][0].clone();
    // Two calls in flight on the slot both see it fail.
    let _ = failed.fail(RingError::SlotLost(failed.slot));
    let _ = failed.fail(RingError::SlotLost(failed.slot));
    tracker.close();
    tracker.wait().await;
    assert_eq!(store.count.load(Ordering::SeqCst), 1, "replacements");
    let pool = core.workers.read().unwrap()[0].clone();
    assert_eq!(pool.len(), 1);
    assert!(
        !Arc::ptr_eq(&pool[0], &failed),
        "the pool holds the replacement"
    );
    let ring = &core.rings().unwrap().rings[0];
    assert_eq!(
        ring.ring.slot_status(pool[0].slot),
        silica_gpu::SlotStatus::Active
    );
    assert_eq!(ring.ring.active_slots(), 1, "slots the ring holds");
    assert_eq!(ring.active(), 1, "slots DeviceRing counts in use");
    ring.ring.shutdown();
}

// Pins that a worker slot whose replacement found `load` panicking is not left failed for good:
// the next failure seen on it replaces it, without leaking or double-freeing a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_replacement_load_panicked_is_replaced_later() {
    let store = Arc::new(Loads::default());
    let tracker = TaskTracker::new();
    let core = one_worker(store.clone(), &tracker);
    tracker.close();
    let failed = core.workers.read().unwrap()[0][0].clone();
    store.down.store(true, Ordering::SeqCst);
    let _ = failed.fail(RingError::SlotLost(failed.slot));
    tracker.wait().await;
    assert!(Arc::ptr_eq(&core.workers.read().unwrap()[0][0], &failed));
    store.down.store(false, Ordering::SeqCst);
    // A later call on it finds its slot given back.
    let _ = failed.fail(RingError::SlotNotActive(failed.slot));
    tracker.wait().await;
    let pool = core.workers.read().unwrap()[0].clone();
    assert!(
        !Arc::ptr_eq(&pool[0], &failed),
        "the pool holds the replacement"
    );
    let ring = &core.rings().unwrap().rings[0];
    assert_eq!(
        ring.ring.slot_status(pool[0].slot),
        silica_gpu::SlotStatus::Active
    );
    assert_eq!(ring.ring.active_slots(), 1, "slots the ring holds");
    assert_eq!(ring.active(), 1, "slots DeviceRing counts in use");
    ring.ring.shutdown();
}

// Pins that a first call still on its way to the catalog when shutdown lists the activations is
// refused with `ShuttingDown` and takes no slot, rather than adding one that shutdown never saves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_call_racing_shutdown_is_refused() {
    let tracker = TaskTracker::new();
    let core = on_one_ring(GrainOptions::DEFAULT, Arc::default(), &tracker);
    let listed = Arc::new(std::sync::Mutex::new(None));
    let (shutting, seen) = (core.clone(), listed.clone());
    BEFORE_ENTRY_LOCK.set(Some(Box::new(move || {
        *seen.lock().unwrap() = Some(shutting.begin_shutdown().len());
    })));
    let result = core.activation_for(&GrainId::new(core.grain_type.clone(), "a"));
    assert_eq!(
        *listed.lock().unwrap(),
        Some(0),
        "shutdown began in between"
    );
    assert!(
        matches!(result, Err(CallError::ShuttingDown)),
        "{:?}",
        result.map(|a| a.is_some())
    );
    assert!(core.catalog.is_empty(), "no activation shutdown missed");
    let ring = &core.rings().unwrap().rings[0];
    assert_eq!(ring.ring.active_slots(), 0, "no slot taken");
    assert_eq!(ring.active(), 0);
    ring.ring.shutdown();
}
