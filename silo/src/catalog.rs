//! The catalog: which activations this silo hosts, keyed by grain id (Orleans' `Catalog`).
//!
//! A grain has at most one entry; creating it is atomic per dashmap shard, so racing first calls
//! agree on one activation. Stateless workers have a pool of activations under one entry.

use std::sync::Arc;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use silica_grains::GrainId;
use tokio::sync::Notify;

use crate::activation::ActivationHandle;
use crate::registry::Registration;
use crate::runtime::SiloInner;

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
}

impl Catalog {
    pub(crate) fn new() -> Self {
        Self {
            // More shards than dashmap's default (4 x cores) keep two cores off each other's locks.
            entries: DashMap::with_hasher_and_shard_amount(Default::default(), 64),
            changed: Notify::new(),
        }
    }

    /// The activation a call to `id` should go to, started if there is none (or, for a stateless
    /// worker, if every pooled one is busy and the pool has room).
    pub(crate) fn activation_for(
        &self,
        id: &GrainId,
        silo: &Arc<SiloInner>,
        registration: &Arc<Registration>,
    ) -> Arc<ActivationHandle> {
        let max_workers = registration.options.stateless_worker;
        if let Some(mut entry) = self.entries.get_mut(id) {
            let (key, value) = entry.pair_mut();
            match value {
                CatalogEntry::Single(handle) => return handle.clone(),
                CatalogEntry::Pool(pool) => {
                    let picked = pick_worker(pool, max_workers.unwrap_or(1));
                    return picked.unwrap_or_else(|| {
                        let handle =
                            registration
                                .handler
                                .spawn(key.clone(), silo, registration.clone());
                        pool.push(handle.clone());
                        handle
                    });
                }
            }
        }
        // The key is shared with the activation and its context: one allocation per grain id.
        match self.entries.entry(Arc::new(id.clone())) {
            Entry::Occupied(occupied) => {
                drop(occupied);
                self.activation_for(id, silo, registration)
            }
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
                handle
            }
        }
    }

    /// Removes `handle` from `id`'s entry (the activation has ended).
    pub(crate) fn remove(&self, id: &GrainId, handle: &Arc<ActivationHandle>) {
        let removed = self.entries.remove_if_mut(id, |_, entry| match entry {
            CatalogEntry::Single(current) => Arc::ptr_eq(current, handle),
            CatalogEntry::Pool(pool) => {
                pool.retain(|worker| !Arc::ptr_eq(worker, handle));
                pool.is_empty()
            }
        });
        if removed.is_some() && self.entries.is_empty() {
            self.changed.notify_waiters();
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
