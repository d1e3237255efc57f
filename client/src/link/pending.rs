//! Calls sent on one connection and waiting for their responses, by call id.
//!
//! When the connection ends, `fail_all` answers every waiting call with `SiloUnavailable`, and a
//! call registered after that is refused at once: no call can be left waiting on a dead
//! connection. (`closed` is set before the table is drained and checked after an insert, both
//! `SeqCst`, so either the drain sees the entry or the inserting call sees the flag.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dashmap::DashMap;
use silica_grains::{CallError, Payload};
use tokio::sync::oneshot;

type Answer = oneshot::Sender<Result<Payload, CallError>>;

/// The waiting calls of one connection.
#[derive(Default)]
pub(crate) struct Pending {
    calls: DashMap<u64, Answer, foldhash::fast::RandomState>,
    next_id: AtomicU64,
    closed: AtomicBool,
}

impl Pending {
    /// Registers a call; its id, and the receiver of its answer. `None` once the connection has
    /// ended.
    pub(crate) fn register(&self) -> Option<(u64, oneshot::Receiver<Result<Payload, CallError>>)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, receiver) = oneshot::channel();
        self.calls.insert(id, answer);
        if self.closed.load(Ordering::SeqCst) && self.calls.remove(&id).is_some() {
            return None;
        }
        Some((id, receiver))
    }

    /// Answers call `id`, if it still waits (it may have timed out).
    pub(crate) fn answer(&self, id: u64, result: Result<Payload, CallError>) {
        if let Some((_, answer)) = self.calls.remove(&id) {
            let _ = answer.send(result);
        }
    }

    /// Forgets call `id` (its caller gave up).
    pub(crate) fn forget(&self, id: u64) {
        self.calls.remove(&id);
    }

    /// Calls waiting now.
    pub(crate) fn len(&self) -> usize {
        self.calls.len()
    }

    /// Ends the connection's calls: each waiting one fails with `SiloUnavailable(reason)`.
    pub(crate) fn fail_all(&self, reason: &str) {
        self.closed.store(true, Ordering::SeqCst);
        let ids: Vec<u64> = self.calls.iter().map(|entry| *entry.key()).collect();
        for id in ids {
            self.answer(id, Err(CallError::SiloUnavailable(reason.to_owned())));
        }
    }
}
