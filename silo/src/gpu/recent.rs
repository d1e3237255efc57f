//! Each thread's cache of the GPU activations its calls went to lately, so that a call finds
//! its activation without the catalog's shard lock.
//!
//! A catalog read takes a shard's read lock: two atomic writes on a cache line that every core
//! calling grains of that shard shares. At tens of millions of calls a second over 16 cores that
//! line bounces on every call. The cache is thread-local and holds weak references, so a hit
//! writes only the activation's own counters.
//!
//! Validity: every entry remembers the host's `epoch` when it was filled. Whatever retires an
//! activation (closing it when idle, shutdown, a fault) first increments the epoch, then (for an
//! idle close) checks that no call is in flight. A call taken from the cache first enters the
//! activation, then checks the epoch is unchanged. Both sides use `SeqCst`, so either the call
//! sees the new epoch (it leaves and asks the catalog) or the closer sees the call (and keeps the
//! activation): no call ever enters an activation that is being deactivated.

use std::any::Any;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use silica_gpu::Kernel;
use silica_grains::GrainId;

use super::activation::Slotted;
use super::host::HostCore;

/// Entries per thread (direct-mapped by grain hash): 256 KiB of pointers. Tokio moves caller
/// tasks between worker threads, so each thread sees most of the grains in use: with 4,096
/// entries and G2's 16,384 grains the catalog reads behind the misses (`DashMap::get`) were 4%
/// of an H200 profile.
const ENTRIES: usize = 16384;

thread_local! {
    static RECENT: RefCell<Vec<Option<Box<dyn Any>>>> = const { RefCell::new(Vec::new()) };
}

/// One cached activation.
struct Recent<K: Kernel> {
    slotted: Weak<Slotted<K>>,
    epoch: u64,
}

/// The epoch of one host's activations: see the module docs.
#[derive(Default)]
pub(crate) struct Epoch(AtomicU64);

impl Epoch {
    /// The epoch now, to store with an activation found in the catalog after this read.
    pub(crate) fn current(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Invalidates every cached activation of the host; call before retiring one.
    pub(crate) fn advance(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn index(hash: u64) -> usize {
    (hash as usize) % ENTRIES
}

/// The cached activation of `id` on `host`, entered, if the cache has a valid one.
pub(crate) fn entered<K: Kernel>(
    host: &Arc<HostCore<K>>,
    epoch: &Epoch,
    id: &GrainId,
    hash: u64,
) -> Option<Arc<Slotted<K>>> {
    let (slotted, filled) = RECENT.with_borrow(|recent| {
        let entry = recent.get(index(hash))?.as_ref()?;
        let entry = entry.downcast_ref::<Recent<K>>()?;
        Some((entry.slotted.upgrade()?, entry.epoch))
    })?;
    // The host is recognised by address, and that cannot be an ABA: `slotted` is alive, so its
    // weak handle keeps its host's allocation from being freed, and `host` is alive too; two
    // allocations that are both still there never share an address.
    if filled != epoch.current()
        || !std::ptr::eq(slotted.host.as_ptr(), Arc::as_ptr(host))
        || *slotted.grain != *id
    {
        return None;
    }
    slotted.enter();
    if epoch.current() != filled {
        slotted.exit();
        return None;
    }
    Some(slotted)
}

/// Remembers `slotted` (found in the catalog at `filled`) for this thread's next calls.
pub(crate) fn remember<K: Kernel>(slotted: &Arc<Slotted<K>>, hash: u64, filled: u64) {
    RECENT.with_borrow_mut(|recent| {
        if recent.is_empty() {
            recent.resize_with(ENTRIES, || None);
        }
        let entry = &mut recent[index(hash)];
        let fresh = Recent {
            slotted: Arc::downgrade(slotted),
            epoch: filled,
        };
        match entry.as_mut().and_then(|e| e.downcast_mut::<Recent<K>>()) {
            Some(kept) => *kept = fresh,
            None => *entry = Some(Box::new(fresh)),
        }
    });
}
