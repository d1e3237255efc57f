//! A reference's memo of the GPU activation its calls go to ([`ActivationMemo`]), so that a call
//! skips hashing the grain id and the thread's cache of activations (`recent`).
//!
//! The memo lives in the caller's reference (`silica_grains::RouteMemo`, filled by the silo's
//! invoker, see `crate::remembered`): memory the calling core has anyway, where the thread's
//! cache is a 16,384-entry table that every thread fills with every grain its tasks called.
//!
//! Validity: the memo holds its activation weakly (it never keeps a retired one alive).
//! Whatever retires an activation first sets its `retiring` flag, then checks that no call is in
//! flight; a call taken from the memo first enters the activation, then checks the flag. Both
//! sides use `SeqCst`, so either the call sees the flag (it leaves and asks the catalog) or the
//! retirer sees the call (and keeps the activation): as with `recent`'s epoch, no call ever
//! enters an activation that is being deactivated. The flag is the activation's own, not the
//! host's epoch, so retiring other grains leaves this memo valid.
//!
//! When the grain is activated again, the memo remembers the new activation in its next
//! generation. Readers take no lock, so a generation is set once and never replaced: after
//! [`GENERATIONS`] activations of its grain, a reference's calls take the catalog path.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use silica_gpu::Kernel;

use super::activation::Slotted;

/// How many activations of its grain one reference remembers in turn.
pub(crate) const GENERATIONS: usize = 4;

/// One reference's memo of its grain's GPU activation; see the module docs.
pub(crate) struct ActivationMemo<K: Kernel> {
    generations: [OnceLock<Weak<Slotted<K>>>; GENERATIONS],
    /// The newest generation set (0 while none is).
    latest: AtomicUsize,
}

impl<K: Kernel> Default for ActivationMemo<K> {
    fn default() -> Self {
        Self {
            generations: Default::default(),
            latest: AtomicUsize::new(0),
        }
    }
}

impl<K: Kernel> ActivationMemo<K> {
    /// The remembered activation, entered, if it is still current.
    pub(crate) fn entered(&self) -> Option<Arc<Slotted<K>>> {
        let latest = self.latest.load(Ordering::Acquire);
        let slotted = self.generations[latest].get()?.upgrade()?;
        slotted.enter();
        if slotted.retiring.load(Ordering::SeqCst) {
            slotted.exit();
            return None;
        }
        Some(slotted)
    }

    /// Remembers `slotted` (found in the catalog) for the next calls, in the next generation
    /// if an older activation is remembered; nothing once every generation is used.
    pub(crate) fn remember(&self, slotted: &Arc<Slotted<K>>) {
        let latest = self.latest.load(Ordering::Acquire);
        let next = match self.generations[latest].get() {
            None => latest,
            Some(known) if std::ptr::eq(known.as_ptr(), Arc::as_ptr(slotted)) => return,
            Some(_) if latest + 1 == GENERATIONS => return,
            Some(_) => latest + 1,
        };
        // Two callers racing here: one sets the generation, the other's activation is the
        // same or, if not, found stale by its flag on the next call.
        let _ = self.generations[next].set(Arc::downgrade(slotted));
        self.latest.fetch_max(next, Ordering::AcqRel);
    }
}
