//! [`DirectoryCache`]: a silo's cache of other partitions' answers.

use std::collections::HashMap;

use silica_grains::GrainId;

use super::address::ActivationAddress;
use super::snapshot::MembershipSnapshot;

/// Grain -> activation answers this silo got from directory partitions, so most calls skip the
/// directory hop (Orleans' `GrainDirectoryCache`).
///
/// An entry can go stale (the activation was collected, or moved after a death), so it is only
/// a hint: a call forwarded on a cached address that finds no activation there
/// ([`Self::handle_forward_miss`]) drops the entry and the caller asks the directory again.
/// Entries on silos that died are dropped with each view.
#[derive(Clone, Debug, Default)]
pub struct DirectoryCache {
    entries: HashMap<GrainId, ActivationAddress>,
    capacity: usize,
}

impl DirectoryCache {
    /// An empty cache holding at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
        }
    }

    /// The cached activation of `grain`.
    pub fn get(&self, grain: &GrainId) -> Option<ActivationAddress> {
        self.entries.get(grain).copied()
    }

    /// Records a directory answer. When full, an arbitrary entry makes room (a cache miss costs
    /// one directory hop, so precise eviction is not worth its bookkeeping here).
    pub fn insert(&mut self, grain: GrainId, address: ActivationAddress) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity
            && !self.entries.contains_key(&grain)
            && let Some(victim) = self.entries.keys().next().cloned()
        {
            self.entries.remove(&victim);
        }
        self.entries.insert(grain, address);
    }

    /// A forward to `stale` found no activation: drop the entry if it still names `stale` (a
    /// newer answer cached meanwhile stays). Returns whether it dropped one.
    pub fn handle_forward_miss(&mut self, grain: &GrainId, stale: ActivationAddress) -> bool {
        if self.entries.get(grain) == Some(&stale) {
            self.entries.remove(grain);
            return true;
        }
        false
    }

    /// Drops every entry whose silo is dead in `view`.
    pub fn handle_view_change(&mut self, view: &MembershipSnapshot) {
        self.entries.retain(|_, a| !view.is_dead(&a.silo));
    }

    /// Number of cached entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
