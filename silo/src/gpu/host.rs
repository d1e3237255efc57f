//! Hosting one GPU variant on a silo: [`HostCore`] keeps its rings, its activations (grain id ->
//! slot) and its stateless-worker pools; [`GpuHost`] adds the typed dispatch and implements
//! [`GpuRoute`], the erased face the call path and the silo's lifecycle see.
//!
//! Activations are created on the first call under the catalog shard's lock, so racing first
//! calls agree on one slot, and one racing shutdown is either listed by it or refused. An idle
//! or shut-down activation is first marked `Closing` (calls wait for it to go), then its slot is
//! deactivated and its state saved, then it is removed; so the next activation always loads
//! the state the last one saved. An idle one has no call
//! running; at shutdown, the calls still running are waited for (up to the grace period).

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use silica_client::Envelope;
use silica_clocks::HlcTimestamp;
use silica_gpu::{HlcStamp, Kernel};
use silica_grains::{
    BoxFuture, CallError, DeactivationReason, GrainId, GrainOptions, GrainType, InterfaceDispatch,
    RejectCode,
};
use tokio_util::task::TaskTracker;

use super::activation::{RingSettings, Slotted};
use super::config::GpuConfig;
use super::grain::{GpuActivation, GpuGrain, GpuStateStore, StateLost};
use super::memo::ActivationMemo;
use super::recent::{self, Epoch};
use super::rings::RingSet;
use super::status::{GpuDeviceStatus, GpuTypeStatus};
use super::turn::GpuTurn;
use crate::activation::{Answered, panic_message};
use crate::runtime::SiloInner;

/// What a GPU variant needs from the silo when it starts.
pub(crate) struct HostStart<'a> {
    pub(crate) config: &'a GpuConfig,
    pub(crate) choices: &'a [silica_gpu::BackendChoice],
    pub(crate) no_devices: Option<String>,
    pub(crate) clock: Arc<silica_clocks::HybridClock>,
    pub(crate) max_result_bytes: usize,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) tracker: TaskTracker,
}

#[cfg(test)]
thread_local! {
    /// Test hook: runs once where a first call has checked `closed` but not yet locked its
    /// catalog shard, so a test can begin shutdown exactly there.
    static BEFORE_ENTRY_LOCK: std::cell::Cell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::Cell::new(None) };
}

/// A GPU variant as the silo sees it, whatever its type.
pub(crate) trait GpuRoute: Send + Sync + 'static {
    /// Starts the variant's rings (failures leave it serving from the CPU implementation).
    fn start(&self, start: HostStart<'_>);
    /// Routes a checked call to a GPU activation; `None` when no device can take it and the
    /// CPU implementation serves instead.
    fn route(&self, silo: &Arc<SiloInner>, envelope: &Envelope) -> Option<Answered>;
    /// A memo for one reference's calls to grains of this variant (see `memo`), or `None`
    /// when its calls cannot use one (stateless workers).
    fn new_memo(&self) -> Option<Box<dyn Any + Send + Sync>>;
    /// [`Self::route`] for a checked call to `id` through a reference's memo (made by
    /// `new_memo`): the remembered activation while it is current, else the catalog's, then
    /// remembered. `None` when the call must take the envelope path instead: no device can
    /// take it, or its activation is being deactivated or was lost in a device fault.
    fn route_memo(
        &self,
        silo: &SiloInner,
        id: &GrainId,
        call: GpuCallParts<'_>,
        memo: &(dyn Any + Send + Sync),
    ) -> Option<Answered>;
    /// One idle-collection sweep `period` after the last.
    fn sweep(&self, period: Duration);
    /// Deactivates every activation (saving its state) once the calls running on it have
    /// finished, or at `deadline` (the end of the silo's shutdown grace period), then stops
    /// the rings.
    fn shutdown(&self, deadline: tokio::time::Instant) -> BoxFuture<'_, ()>;
    /// Which devices serve the variant, and why some do not.
    fn status(&self) -> GpuTypeStatus;
    /// Test hook: injects `fault` into every ring; resolves once each ring that supports it
    /// has recorded a fault, with how many did.
    fn inject_fault(&self, fault: silica_gpu::FaultInjection) -> BoxFuture<'_, usize>;
}

/// What the method dispatch of one checked call needs: the envelope's fields, borrowed.
#[derive(Clone, Copy)]
pub(crate) struct GpuCallParts<'a> {
    pub(crate) method: &'a str,
    pub(crate) args: &'a [u8],
    pub(crate) hlc: HlcTimestamp,
    pub(crate) timeout: Duration,
}

impl<'a> GpuCallParts<'a> {
    pub(crate) fn of(envelope: &'a Envelope) -> Self {
        Self {
            method: &envelope.method,
            args: &envelope.args,
            hlc: envelope.hlc,
            timeout: envelope.timeout,
        }
    }
}

/// Everything about one GPU variant but its method dispatch.
pub(crate) struct HostCore<K: Kernel> {
    grain_type: GrainType,
    options: GrainOptions,
    store: Arc<dyn GpuStateStore<K>>,
    rings: OnceLock<RingSet<K>>,
    catalog: DashMap<Arc<GrainId>, Entry<K>, foldhash::fast::RandomState>,
    /// Advanced before any activation is retired: invalidates the threads' caches of
    /// activations (`recent`).
    epoch: Epoch,
    /// Stateless workers: per ring, the pool of worker slots.
    workers: RwLock<Vec<Vec<Arc<Slotted<K>>>>>,
    tasks: OnceLock<(tokio::runtime::Handle, TaskTracker)>,
    /// Rotates stateless calls over a ring's worker slots.
    next_worker: std::sync::atomic::AtomicUsize,
    /// Set at shutdown: no new activations.
    closed: std::sync::atomic::AtomicBool,
}

enum Entry<K: Kernel> {
    Active(Arc<Slotted<K>>),
    /// Being deactivated; calls wait until it is gone.
    Closing,
}

impl<K: Kernel> HostCore<K> {
    fn rings(&self) -> Option<&RingSet<K>> {
        self.rings.get()
    }

    /// Whether the silo's shutdown has begun for this variant.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Retires an activation whose slot failed: removes it (if it is still the current one)
    /// and frees its slot, reporting the state as lost.
    pub(crate) fn retire_failed(self: &Arc<Self>, slotted: &Arc<Slotted<K>>, why: &str) {
        slotted.ring.refresh_usable();
        if let Some((ring, index)) = slotted.worker {
            self.replace_worker(ring, index, slotted);
            return;
        }
        // The epoch moves under the catalog entry's write lock, as in `close`: a thread that
        // read the old epoch and then found this activation caches it as stale, and one that
        // reads the new epoch no longer finds it.
        let removed = self
            .catalog
            .remove_if(&slotted.grain, |_, e| {
                let this = matches!(e, Entry::Active(a) if Arc::ptr_eq(a, slotted));
                if this {
                    self.epoch.advance();
                    slotted.retiring.store(true, Ordering::SeqCst);
                }
                this
            })
            .is_some();
        if removed {
            let lost = StateLost(why.to_string());
            self.spawn_deactivation(
                slotted.clone(),
                DeactivationReason::Requested,
                Some(lost),
                false,
            );
        }
    }

    /// Gives back a failed worker slot and puts a fresh one in its pool entry. Every call in
    /// flight on the slot sees the failure, but only the first, while the pool still holds
    /// it, replaces it: a second replacement would give the slot back again (by then perhaps
    /// the replacement's, reused) and leak one of the two fresh slots.
    fn replace_worker(self: &Arc<Self>, ring: usize, index: usize, failed: &Arc<Slotted<K>>) {
        let pooled = {
            let pools = self.workers.read().unwrap_or_else(|e| e.into_inner());
            let entry = pools.get(ring).and_then(|pool| pool.get(index));
            entry.is_some_and(|w| Arc::ptr_eq(w, failed))
        };
        if !pooled || failed.retiring.swap(true, Ordering::SeqCst) {
            return;
        }
        let host = self.clone();
        let failed = failed.clone();
        self.spawn(async move {
            let _ = failed.ring.deactivate(failed.slot).await;
            let Some(rings) = host.rings() else { return };
            let device = &rings.rings[ring];
            if !device.is_usable() {
                return;
            }
            let fresh = host.load(&failed.grain).ok().and_then(|state| {
                let slot = device.activate(&state).ok()?;
                Some(host.slotted(failed.grain.clone(), ring, slot, Some((ring, index))))
            });
            match fresh {
                Some(fresh) => {
                    // Still `failed` there: only this task replaces it.
                    let mut pools = host.workers.write().unwrap_or_else(|e| e.into_inner());
                    pools[ring][index] = fresh;
                }
                // No state (`load` panicked) or no free slot: the pool keeps the failed
                // entry; clearing its flag lets the next call that fails on it try again
                // (else none ever would).
                None => failed.retiring.store(false, Ordering::SeqCst),
            }
        });
    }

    /// `GpuStateStore::load` for `grain`. The store is the user's code: a panic there is
    /// caught and logged, and `Err` holds its message, so it fails one activation (or worker
    /// slot replacement), not the caller's task.
    fn load(&self, grain: &GrainId) -> Result<K::State, String> {
        std::panic::catch_unwind(AssertUnwindSafe(|| self.store.load(grain))).map_err(|payload| {
            let message = panic_message(payload.as_ref());
            tracing::error!(%grain, %message, "GpuStateStore::load panicked; the activation failed");
            message
        })
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        if let Some((runtime, tracker)) = self.tasks.get() {
            runtime.spawn(tracker.track_future(task));
        }
    }

    /// Deactivates `slotted` in the background: waits for its messages, reads the state back,
    /// saves it (or reports `lost`), then removes its `Closing` entry when `remove_entry`.
    fn spawn_deactivation(
        self: &Arc<Self>,
        slotted: Arc<Slotted<K>>,
        reason: DeactivationReason,
        lost: Option<StateLost>,
        remove_entry: bool,
    ) {
        let host = self.clone();
        self.spawn(async move { host.deactivate(slotted, reason, lost, remove_entry).await });
    }

    async fn deactivate(
        &self,
        slotted: Arc<Slotted<K>>,
        reason: DeactivationReason,
        lost: Option<StateLost>,
        remove_entry: bool,
    ) {
        let state = slotted.ring.deactivate(slotted.slot).await;
        let state = match lost {
            Some(lost) => Err(lost),
            None => state.map_err(|e| StateLost(e.to_string())),
        };
        // The store is the user's code: a panic there must still remove the `Closing` entry
        // (calls wait for it to go) and must not end the silo's shutdown, which runs this.
        let saved = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.store.save(&slotted.grain, state, reason)
        }));
        if let Err(payload) = saved {
            let message = panic_message(payload.as_ref());
            tracing::error!(grain = %slotted.grain, %message, "GpuStateStore::save panicked; the final state is dropped");
        }
        if remove_entry {
            self.catalog
                .remove_if(&slotted.grain, |_, e| matches!(e, Entry::Closing));
        }
    }

    fn slotted(
        self: &Arc<Self>,
        grain: Arc<GrainId>,
        ring: usize,
        slot: silica_gpu::SlotId,
        worker: Option<(usize, usize)>,
    ) -> Arc<Slotted<K>> {
        let rings = self.rings().expect("rings start before the first call");
        Arc::new(Slotted {
            grain,
            ring: rings.rings[ring].clone(),
            slot,
            in_flight: Default::default(),
            mark: Default::default(),
            used: Default::default(),
            idle_sweeps: Default::default(),
            retiring: Default::default(),
            worker,
            host: Arc::downgrade(self),
        })
    }

    /// The activation a call to `id` goes to, activated on first call, with the call entered
    /// (under the catalog lock, or checked against the epoch when found in the thread's cache,
    /// so an idle sweep cannot close it in between). `Ok(None)`: it is being deactivated, wait
    /// and retry, or it was lost and is retired now (`unless_lost`), route again. `Err`: no
    /// device can take it.
    fn activation_for(
        self: &Arc<Self>,
        id: &GrainId,
    ) -> Result<Option<Arc<Slotted<K>>>, CallError> {
        // Checked here, with every lookup's guard dropped: retiring takes the catalog's lock.
        Ok(self.entered(id)?.and_then(|a| self.unless_lost(a)))
    }

    /// `slotted` (entered) unless a device fault lost its slot. A fault marks every active
    /// slot lost, but the silo hears of it only through the calls then in flight: an
    /// activation that had none stays in the catalog. A call that finds it here has sent
    /// nothing yet, so rather than fail at staging with `GpuFault` it leaves, retires the
    /// activation (`save` gets `StateLost`, as for a fault seen by a call) and returns `None`:
    /// the caller routes the call again, to a fresh activation, or to the CPU implementation if
    /// the device is gone.
    fn unless_lost(self: &Arc<Self>, slotted: Arc<Slotted<K>>) -> Option<Arc<Slotted<K>>> {
        if !slotted.is_lost() {
            return Some(slotted);
        }
        slotted.exit();
        let why = match slotted.ring.ring.health().last_fault {
            Some(fault) => silica_gpu::RingError::Fault(fault).to_string(),
            None => silica_gpu::RingError::SlotLost(slotted.slot).to_string(),
        };
        self.retire_failed(&slotted, &why);
        None
    }

    /// [`Self::activation_for`] before the check for a lost slot.
    fn entered(self: &Arc<Self>, id: &GrainId) -> Result<Option<Arc<Slotted<K>>>, CallError> {
        use std::hash::BuildHasher;
        let hash = self.catalog.hasher().hash_one(id);
        if let Some(cached) = recent::entered(self, &self.epoch, id, hash) {
            return Ok(Some(cached));
        }
        let filled = self.epoch.current();
        let entered = |entry: &Entry<K>| match entry {
            Entry::Active(a) => {
                a.enter();
                recent::remember(a, hash, filled);
                Some(a.clone())
            }
            Entry::Closing => None,
        };
        if let Some(entry) = self.catalog.get(id) {
            return Ok(entered(&entry));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(CallError::ShuttingDown);
        }
        #[cfg(test)]
        if let Some(hook) = BEFORE_ENTRY_LOCK.take() {
            hook();
        }
        let rings = self.rings().expect("rings start before the first call");
        match self.catalog.entry(Arc::new(id.clone())) {
            dashmap::mapref::entry::Entry::Occupied(o) => Ok(entered(o.get())),
            dashmap::mapref::entry::Entry::Vacant(v) => {
                // Checked again under the shard's lock, before anything is taken: shutdown
                // sets `closed`, then lists the catalog shard by shard under each shard's
                // lock, so either it lists this activation or this sees `closed`. The check
                // above alone let a call that passed it just before shutdown insert an
                // activation after the listing, whose state was then never saved.
                if self.closed.load(Ordering::Acquire) {
                    return Err(CallError::ShuttingDown);
                }
                let overloaded = |e: String| CallError::rejected(RejectCode::Overloaded, e);
                let ring = rings
                    .place(self.grain_type.as_str(), id.stable_hash())
                    .map_err(|e| overloaded(e.to_string()))?;
                // Nothing is taken yet: a failed load leaves no entry and no slot behind.
                let state = self.load(id).map_err(|message| {
                    let message = format!("GpuStateStore::load panicked: {message}");
                    CallError::rejected(RejectCode::ActivationFailed, message)
                })?;
                let slot = rings.rings[ring]
                    .activate(&state)
                    .map_err(|e| overloaded(e.to_string()))?;
                let slotted = self.slotted(v.key().clone(), ring, slot, None);
                slotted.enter();
                recent::remember(&slotted, hash, filled);
                v.insert(Entry::Active(slotted.clone()));
                Ok(Some(slotted))
            }
        }
    }

    /// Begins shutdown: refuses new activations from now on, marks every activation closing
    /// (`take_for_shutdown`) and returns them, to deactivate once their calls have finished.
    fn begin_shutdown(&self) -> Vec<Arc<Slotted<K>>> {
        self.closed.store(true, Ordering::Release);
        let ids: Vec<Arc<GrainId>> = self.catalog.iter().map(|e| e.key().clone()).collect();
        ids.iter()
            .filter_map(|id| take_for_shutdown(self, id))
            .collect()
    }

    /// A stateless worker slot on the least loaded ring.
    fn worker(&self) -> Option<Arc<Slotted<K>>> {
        let rings = self.rings()?;
        let ring = rings.least_loaded()?;
        let pools = self.workers.read().unwrap_or_else(|e| e.into_inner());
        let pool = pools.get(ring)?;
        if pool.is_empty() {
            return None;
        }
        let i = self.next_worker.fetch_add(1, Ordering::Relaxed) % pool.len();
        pool[i].enter();
        Some(pool[i].clone())
    }
}

/// A registered GPU variant `G`.
pub(crate) struct GpuHost<G: GpuGrain> {
    core: Arc<HostCore<G::Kernel>>,
}

impl<G: GpuGrain> GpuHost<G> {
    pub(crate) fn new(grain_type: GrainType, store: Arc<dyn GpuStateStore<G::Kernel>>) -> Self {
        Self {
            core: Arc::new(HostCore {
                grain_type,
                options: G::options(),
                store,
                rings: OnceLock::new(),
                catalog: DashMap::with_hasher_and_shard_amount(Default::default(), 64),
                epoch: Epoch::default(),
                workers: RwLock::new(Vec::new()),
                tasks: OnceLock::new(),
                next_worker: Default::default(),
                closed: Default::default(),
            }),
        }
    }

    /// Runs the method on a per-call value; `slotted` has the call entered already.
    fn dispatch(
        &self,
        silo: &SiloInner,
        slotted: Arc<Slotted<G::Kernel>>,
        call: GpuCallParts<'_>,
    ) -> Answered {
        let activation = GpuActivation {
            entry: slotted.clone(),
            stamp: HlcStamp::from(call.hlc),
        };
        match <G::Interface as InterfaceDispatch<G>>::dispatch_consumed(
            G::create(activation),
            call.method,
            call.args,
        ) {
            Err(error) => {
                slotted.exit();
                Answered::Ready(Err(error))
            }
            Ok(turn) => GpuTurn::start(turn, slotted, silo, call.timeout),
        }
    }
}

impl<G: GpuGrain> GpuRoute for GpuHost<G> {
    fn start(&self, start: HostStart<'_>) {
        let settings = Arc::new(RingSettings {
            clock: start.clock,
            max_result_bytes: start.max_result_bytes,
            reply_spin: start.config.reply_spin,
        });
        let core = &self.core;
        let _ = core.tasks.set((start.runtime, start.tracker));
        let rings =
            RingSet::<G::Kernel>::start(start.choices, start.no_devices, start.config, settings);
        let _ = core.rings.set(rings);
        let Some(pool) = core.options.stateless_worker else {
            return;
        };
        let rings = core.rings().expect("just set");
        let worker_id = Arc::new(GrainId::new(core.grain_type.clone(), "worker"));
        let mut pools = Vec::new();
        for (r, device) in rings.rings.iter().enumerate() {
            let mut slots = Vec::new();
            for w in 0..pool.max(1) {
                match device.activate(&core.store.load(&worker_id)) {
                    Ok(slot) => slots.push(core.slotted(worker_id.clone(), r, slot, Some((r, w)))),
                    Err(e) => {
                        tracing::warn!("stateless GPU worker slot on {}: {e}", device.description);
                        break;
                    }
                }
            }
            pools.push(slots);
        }
        *core.workers.write().unwrap_or_else(|e| e.into_inner()) = pools;
    }

    fn route(&self, silo: &Arc<SiloInner>, envelope: &Envelope) -> Option<Answered> {
        let core = &self.core;
        if !core.rings()?.any_usable() {
            return None;
        }
        let call = GpuCallParts::of(envelope);
        if core.options.stateless_worker.is_some() {
            return core.worker().map(|w| self.dispatch(silo, w, call));
        }
        match core.activation_for(&envelope.target) {
            Ok(Some(slotted)) => Some(self.dispatch(silo, slotted, call)),
            Ok(None) => Some(Answered::Running(wait_then_resend(
                core.clone(),
                silo.clone(),
                envelope.clone(),
            ))),
            Err(error) => Some(Answered::Ready(Err(error))),
        }
    }

    fn new_memo(&self) -> Option<Box<dyn Any + Send + Sync>> {
        let stateless = self.core.options.stateless_worker.is_some();
        (!stateless).then(|| Box::new(ActivationMemo::<G::Kernel>::default()) as Box<_>)
    }

    fn route_memo(
        &self,
        silo: &SiloInner,
        id: &GrainId,
        call: GpuCallParts<'_>,
        memo: &(dyn Any + Send + Sync),
    ) -> Option<Answered> {
        let core = &self.core;
        let memo = memo.downcast_ref::<ActivationMemo<G::Kernel>>()?;
        if !core.rings()?.any_usable() {
            return None;
        }
        let slotted = match memo.entered() {
            // Lost: retired now; the envelope path routes the call again.
            Some(slotted) => core.unless_lost(slotted)?,
            None => match core.activation_for(id) {
                Ok(Some(slotted)) => {
                    memo.remember(&slotted);
                    slotted
                }
                Ok(None) => return None,
                Err(error) => return Some(Answered::Ready(Err(error))),
            },
        };
        Some(self.dispatch(silo, slotted, call))
    }

    fn sweep(&self, period: Duration) {
        let core = &self.core;
        let idle_after = core.options.idle_after;
        let mut idle = Vec::new();
        for entry in core.catalog.iter() {
            let Entry::Active(a) = entry.value() else {
                continue;
            };
            if a.used.swap(false, Ordering::Relaxed) || a.in_flight.load(Ordering::Acquire) > 0 {
                a.idle_sweeps.store(0, Ordering::Relaxed);
                continue;
            }
            let sweeps = a.idle_sweeps.fetch_add(1, Ordering::Relaxed) + 1;
            if period * sweeps >= idle_after {
                idle.push(entry.key().clone());
            }
        }
        for id in idle {
            close(core, &id, DeactivationReason::Idle);
        }
        if let Some(rings) = core.rings() {
            rings.refresh_usable();
        }
    }

    fn shutdown(&self, deadline: tokio::time::Instant) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let core = &self.core;
            let closing = core.begin_shutdown().into_iter().map(|slotted| async move {
                calls_finished(&slotted, deadline).await;
                core.deactivate(slotted, DeactivationReason::Shutdown, None, true)
                    .await
            });
            futures_util::future::join_all(closing).await;
            if let Some(rings) = core.rings() {
                for ring in &rings.rings {
                    ring.ring.drain().await;
                    ring.ring.shutdown();
                }
            }
        })
    }

    fn status(&self) -> GpuTypeStatus {
        let core = &self.core;
        let Some(rings) = core.rings() else {
            return GpuTypeStatus::not_started(core.grain_type.clone());
        };
        let loads = rings.loads();
        GpuTypeStatus {
            grain_type: core.grain_type.clone(),
            devices: rings
                .rings
                .iter()
                .zip(loads)
                .map(|(r, load)| GpuDeviceStatus {
                    device: r.device,
                    backend: r.backend,
                    description: r.description.clone(),
                    usable: r.is_usable(),
                    activations: r.active(),
                    messages: r.ring.health().completed,
                    load,
                    ring_stats: r.ring.backend_stats(),
                })
                .collect(),
            problems: rings.problems.clone(),
            activations: core.catalog.len(),
        }
    }

    fn inject_fault(&self, fault: silica_gpu::FaultInjection) -> BoxFuture<'_, usize> {
        Box::pin(async move {
            let Some(rings) = self.core.rings() else {
                return 0;
            };
            let mut taken = Vec::new();
            for ring in &rings.rings {
                let before = ring.ring.health().faults;
                if ring.ring.inject_fault(fault) {
                    taken.push((ring, before));
                }
            }
            // The backends fault on their own threads (see `FaultInjection`).
            for (ring, before) in &taken {
                while ring.ring.health().faults == *before {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            taken.len()
        })
    }
}

/// Marks `id` closing if idle and starts its deactivation.
fn close<K: Kernel>(core: &Arc<HostCore<K>>, id: &Arc<GrainId>, reason: DeactivationReason) {
    let Some(mut entry) = core.catalog.get_mut(id) else {
        return;
    };
    let Entry::Active(a) = &*entry else { return };
    // Epoch and flag first, then the check: a call entering through a thread's cache or a
    // reference's memo meanwhile either sees them or is seen here (see `recent`, `memo`).
    core.epoch.advance();
    a.retiring.store(true, Ordering::SeqCst);
    if a.in_flight.load(Ordering::SeqCst) > 0 {
        a.retiring.store(false, Ordering::SeqCst);
        return;
    }
    let slotted = a.clone();
    *entry = Entry::Closing;
    drop(entry);
    core.spawn_deactivation(slotted, reason, None, true);
}

/// Marks `id` closing for shutdown: no call enters it from then on (see `close`); the calls
/// already running are waited for by `calls_finished`.
fn take_for_shutdown<K: Kernel>(core: &HostCore<K>, id: &Arc<GrainId>) -> Option<Arc<Slotted<K>>> {
    let mut entry = core.catalog.get_mut(id)?;
    let Entry::Active(a) = &*entry else {
        return None;
    };
    let slotted = a.clone();
    core.epoch.advance();
    slotted.retiring.store(true, Ordering::SeqCst);
    *entry = Entry::Closing;
    Some(slotted)
}

/// Waits until no call runs on `slotted`, which takes no new ones (it is closing), or until
/// `deadline`. The ring finishing the messages already sent is not enough: a running call's
/// method may send more, and those need the slot active.
async fn calls_finished<K: Kernel>(slotted: &Slotted<K>, deadline: tokio::time::Instant) {
    while slotted.in_flight.load(Ordering::SeqCst) > 0 {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(grain = %slotted.grain, "shutdown grace period over; deactivating a GPU activation under its running calls");
            return;
        }
        // Polled, not woken: `exit` is on every call's path, and this runs once, at shutdown.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A call that found its activation closing: waits for it to go, then sends again (to a fresh
/// activation that starts from the state the old one saved). Also a call that found its
/// activation lost, retired already: it sends again at once.
fn wait_then_resend<K: Kernel>(
    core: Arc<HostCore<K>>,
    silo: Arc<SiloInner>,
    envelope: Envelope,
) -> BoxFuture<'static, Result<silica_grains::Payload, CallError>> {
    Box::pin(async move {
        // Deactivation is one state read-back: yielding a few times is cheaper than a waker.
        loop {
            tokio::task::yield_now().await;
            let closing = core
                .catalog
                .get(&envelope.target)
                .is_some_and(|e| matches!(*e, Entry::Closing));
            if !closing {
                break;
            }
        }
        silo.send(envelope).await
    })
}

#[cfg(test)]
#[path = "host_tests.rs"]
mod tests;
