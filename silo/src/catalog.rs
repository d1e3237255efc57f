//! The catalog: which activations this silo hosts, keyed by grain id (Orleans' `Catalog`).
//!
//! A grain has at most one entry; creating it is atomic per dashmap shard, so racing first calls
//! agree on one activation. Stateless workers have a pool of activations under one entry.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use silica_grains::GrainId;
use tokio::sync::Notify;

use std::collections::VecDeque;

use silica_grains::{CallError, DeactivationReason};

use crate::activation::{ActivationHandle, Call, Message};
use crate::registry::Registration;
use crate::runtime::{Lifecycle, SiloInner};

enum CatalogEntry {
    Single(Arc<ActivationHandle>),
    /// A stateless worker's local activations.
    Pool(Vec<Arc<ActivationHandle>>),
}

/// The activations of one silo.
pub(crate) struct Catalog {
    entries: DashMap<Arc<GrainId>, CatalogEntry, foldhash::fast::RandomState>,
    /// Notified whenever an entry is added or the catalog becomes empty (shutdown waits on it).
    changed: Notify,
    /// Set when shutdown's grace period is over and it aborts the turns still running: from
    /// then on an ended activation's held-back calls are refused, not given to a successor
    /// (nothing would deactivate it, and shutdown would wait for it forever).
    no_successors: AtomicBool,
}

impl Catalog {
    pub(crate) fn new() -> Self {
        Self {
            // More shards than dashmap's default (4 x cores) keep two cores off each other's locks.
            entries: DashMap::with_hasher_and_shard_amount(Default::default(), 64),
            changed: Notify::new(),
            no_successors: AtomicBool::new(false),
        }
    }

    /// The activation a call to `id` should go to, started if there is none (or, for a stateless
    /// worker, if every pooled one is busy and the pool has room). A new single activation is
    /// started only if `may_create` says so under the entry's lock (in a cluster: the grain is
    /// hosted here), else `None`.
    pub(crate) fn activation_for(
        &self,
        id: &GrainId,
        silo: &Arc<SiloInner>,
        registration: &Arc<Registration>,
        may_create: &dyn Fn() -> bool,
    ) -> Option<Arc<ActivationHandle>> {
        let max_workers = registration.options.stateless_worker;
        // The common case takes the shard's read lock only, so cores do not serialize on it.
        if max_workers.is_none()
            && let Some(entry) = self.entries.get(id)
            && let CatalogEntry::Single(handle) = &*entry
        {
            return Some(handle.clone());
        }
        if let Some(mut entry) = self.entries.get_mut(id) {
            let (key, value) = entry.pair_mut();
            match value {
                CatalogEntry::Single(handle) => return Some(handle.clone()),
                CatalogEntry::Pool(pool) => {
                    let picked = pick_worker(pool, max_workers.unwrap_or(1));
                    return Some(picked.unwrap_or_else(|| {
                        // Shutdown must hear of pool growth to deactivate the new worker too.
                        self.changed.notify_waiters();
                        let handle =
                            registration
                                .handler
                                .spawn(key.clone(), silo, registration.clone());
                        pool.push(handle.clone());
                        handle
                    }));
                }
            }
        }
        // The key is shared with the activation and its context: one allocation per grain id.
        match self.entries.entry(Arc::new(id.clone())) {
            Entry::Occupied(occupied) => {
                drop(occupied);
                self.activation_for(id, silo, registration, may_create)
            }
            Entry::Vacant(_) if max_workers.is_none() && !may_create() => None,
            Entry::Vacant(vacant) => {
                let handle =
                    registration
                        .handler
                        .spawn(vacant.key().clone(), silo, registration.clone());
                let entry = match max_workers {
                    Some(_) => CatalogEntry::Pool(vec![handle.clone()]),
                    None => CatalogEntry::Single(handle.clone()),
                };
                vacant.insert(entry);
                self.changed.notify_waiters();
                Some(handle)
            }
        }
    }

    /// Shutdown's grace period is over: activations that end from now on start no successor
    /// (their held-back calls are refused with `ShuttingDown`).
    pub(crate) fn stop_successors(&self) {
        self.no_successors.store(true, Ordering::SeqCst);
    }

    /// Takes an ended activation out of the catalog. Calls that arrived while it was
    /// deactivating go, in order, to a successor that takes its place under the same entry lock,
    /// so no later call can overtake them; once the silo has stopped they are refused instead.
    pub(crate) fn retire(
        &self,
        id: &Arc<GrainId>,
        handle: &Arc<ActivationHandle>,
        silo: &Arc<SiloInner>,
        registration: &Arc<Registration>,
    ) {
        let Entry::Occupied(mut entry) = self.entries.entry(id.clone()) else {
            refuse(handle.mailbox.seal());
            return;
        };
        let held_back = handle.mailbox.seal();
        let stopped =
            silo.lifecycle() == Lifecycle::Stopped || self.no_successors.load(Ordering::SeqCst);
        let successor = (!held_back.is_empty() && !stopped).then(|| {
            registration
                .handler
                .spawn(id.clone(), silo, registration.clone())
        });
        let emptied = match entry.get_mut() {
            CatalogEntry::Single(current) if Arc::ptr_eq(current, handle) => match &successor {
                Some(successor) => {
                    *current = successor.clone();
                    false
                }
                None => true,
            },
            CatalogEntry::Single(_) => false,
            CatalogEntry::Pool(pool) => {
                pool.retain(|worker| !Arc::ptr_eq(worker, handle));
                pool.extend(successor.clone());
                pool.is_empty()
            }
        };
        if emptied {
            // Under the entry's lock, so no call can start a new activation here in between.
            if let Some(cluster) = silo.cluster.get() {
                cluster.on_deactivated(id);
            }
            entry.remove();
        }
        match successor {
            Some(successor) => {
                for message in held_back {
                    if let Message::Call(call) = message
                        && let Err(call) = successor.send(call)
                    {
                        refuse_call(call);
                    }
                }
                self.changed.notify_waiters();
            }
            None => refuse(held_back),
        }
        if emptied && self.entries.is_empty() {
            self.changed.notify_waiters();
        }
    }

    /// Asks `id`'s activation(s) to deactivate (a duplicate found by the directory).
    pub(crate) fn deactivate(&self, id: &GrainId) {
        if let Some(entry) = self.entries.get(id) {
            match &*entry {
                CatalogEntry::Single(handle) => {
                    handle.request_deactivation(DeactivationReason::Requested)
                }
                CatalogEntry::Pool(pool) => pool
                    .iter()
                    .for_each(|h| h.request_deactivation(DeactivationReason::Requested)),
            }
        }
    }

    /// Number of activations hosted now.
    pub(crate) fn activation_count(&self) -> usize {
        self.entries
            .iter()
            .map(|entry| match &*entry {
                CatalogEntry::Single(_) => 1,
                CatalogEntry::Pool(pool) => pool.len(),
            })
            .sum()
    }

    /// Calls `f` on every activation.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Arc<ActivationHandle>)) {
        for entry in self.entries.iter() {
            match &*entry {
                CatalogEntry::Single(handle) => f(handle),
                CatalogEntry::Pool(pool) => pool.iter().for_each(&mut f),
            }
        }
    }

    /// Resolves the next time an entry is added or the catalog empties (create it before
    /// checking the condition it guards, so no change is missed).
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The least busy pooled worker, unless all are busy and the pool may grow.
fn pick_worker(pool: &[Arc<ActivationHandle>], max: usize) -> Option<Arc<ActivationHandle>> {
    let least = pool.iter().min_by_key(|worker| worker.queue_depth())?;
    if least.queue_depth() > 0 && pool.len() < max {
        return None;
    }
    Some(least.clone())
}

/// Answers calls that can no longer be delivered: the silo has stopped.
fn refuse(held_back: VecDeque<Message>) {
    for message in held_back {
        if let Message::Call(call) = message {
            refuse_call(call);
        }
    }
}

#[allow(clippy::boxed_local)] // calls travel boxed; unboxing just to answer would copy
fn refuse_call(call: Box<Call>) {
    let _ = call.reply.send(Err(CallError::ShuttingDown));
}
