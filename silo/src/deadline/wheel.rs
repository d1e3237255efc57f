//! [`DeadlineWheel`]: where waiting calls register for their timeout, so that no call arms a
//! Tokio timer of its own.
//!
//! A Tokio timer per call cost an allocation, a clone of the runtime handle (one reference
//! count that every core writes), a clock read (with `test-util`, a lock on the runtime's clock)
//! and two locked wheel updates. Here a call registers its waker and timeout in one shard of the
//! wheel (one lock, rarely contended: a thread keeps the shard it was given first; threads
//! beyond the shard count, one per core up to 64, share) and removes it when
//! answered; it reads no clock. Each shard's sweeper task reads the time for all of them: at its
//! next sweep it stamps every new entry with `sweep time + timeout` and wakes the entries whose
//! deadline has passed, which then end with `Timeout`.
//!
//! A registration happens before the sweep that stamps it, so no call times out early; it may
//! time out later by up to one sweep period, which is 1/16 of the shortest timeout registered,
//! between 1 ms and 250 ms. While a shard has no entries its sweeper sleeps with no timer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The shortest and longest sweep periods.
const MIN_TICK: Duration = Duration::from_millis(1);
const MAX_TICK: Duration = Duration::from_millis(250);
/// How often a stopped wheel's sweeper checks whether calls still hold its shard.
const STOPPED_TICK: Duration = Duration::from_secs(1);
/// Slots a shard keeps allocated once all its calls are gone.
const KEPT_SLOTS: usize = 1024;
/// The deadline of a timeout too long to add to an instant.
const FAR_FUTURE: Duration = Duration::from_secs(60 * 60 * 24 * 365);

/// `now + timeout`, or a year from now for a timeout too long to add (`Duration::MAX`).
pub(crate) fn instant_after(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout).unwrap_or_else(|| now + FAR_FUTURE)
}

/// One silo's call deadlines: a shard per thread (up to 64), each with a sweeper task on the
/// silo's runtime.
pub(crate) struct DeadlineWheel {
    shards: Box<[Arc<Shard>]>,
    stop: CancellationToken,
}

impl DeadlineWheel {
    /// A wheel whose sweepers run on `runtime`.
    pub(crate) fn start(runtime: &tokio::runtime::Handle) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let stop = CancellationToken::new();
        let shards = (0..threads.clamp(1, 64))
            .map(|_| {
                let shard = Arc::new(Shard::default());
                runtime.spawn(sweep(shard.clone(), stop.clone()));
                shard
            })
            .collect();
        Self { shards, stop }
    }

    /// The shard of the calling thread.
    pub(crate) fn shard(&self) -> &Arc<Shard> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static THREAD_INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
        }
        let index = THREAD_INDEX.with(|i| *i);
        &self.shards[index % self.shards.len()]
    }
}

impl Drop for DeadlineWheel {
    fn drop(&mut self) {
        // Sweepers still finish the calls registered with them (see `sweep`).
        self.stop.cancel();
    }
}

/// One shard: its entries, and the sweeper's wake-up. Aligned so that two shards never share a
/// cache line.
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct Shard {
    entries: Mutex<Entries>,
    /// Wakes the sweeper for its first entry after idling, or for a timeout shorter than the
    /// period it sweeps with.
    wake_sweeper: Notify,
}

#[derive(Default)]
struct Entries {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Registered calls not yet removed (waiting or fired). At zero the slots are dropped, so
    /// a burst of waiting calls leaves neither memory nor a longer sweep behind.
    live: usize,
    /// The sweeper's period while it has entries; `None` while it idles.
    tick: Option<Duration>,
}

#[derive(Default)]
enum Slot {
    #[default]
    Free,
    Waiting {
        waker: Waker,
        timeout: Duration,
        /// Set by the first sweep after registration.
        deadline: Option<Instant>,
    },
    /// The deadline passed; the call ends with `Timeout` when it is next polled.
    Fired,
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a call that times out `timeout` from now; returns its key.
    pub(crate) fn register(&self, timeout: Duration, waker: &Waker) -> u32 {
        let mut entries = self.lock();
        entries.live += 1;
        let slot = Slot::Waiting {
            waker: waker.clone(),
            timeout,
            deadline: None,
        };
        let key = match entries.free.pop() {
            Some(key) => {
                entries.slots[key as usize] = slot;
                key
            }
            None => {
                entries.slots.push(slot);
                u32::try_from(entries.slots.len() - 1).expect("fewer than 2^32 waiting calls")
            }
        };
        let wanted = tick_for(timeout);
        let sooner = entries.tick.is_none_or(|tick| wanted < tick);
        if sooner {
            entries.tick = Some(wanted);
        }
        drop(entries);
        if sooner {
            self.wake_sweeper.notify_one();
        }
        key
    }

    /// Whether the call `key` is still waiting (its deadline has not passed); keeps `waker` to
    /// wake it when it does.
    pub(crate) fn still_waiting(&self, key: u32, waker: &Waker) -> bool {
        let mut entries = self.lock();
        match &mut entries.slots[key as usize] {
            Slot::Waiting { waker: kept, .. } => {
                if !kept.will_wake(waker) {
                    kept.clone_from(waker);
                }
                true
            }
            Slot::Fired => false,
            Slot::Free => unreachable!("a key is freed only by its own call"),
        }
    }

    /// Forgets the call `key` (answered, timed out, or dropped).
    pub(crate) fn remove(&self, key: u32) {
        let mut entries = self.lock();
        entries.slots[key as usize] = Slot::Free;
        entries.live -= 1;
        if entries.live == 0 {
            // Every key is free: start over (keeping a modest allocation for the next calls).
            entries.slots.clear();
            entries.free.clear();
            entries.slots.shrink_to(KEPT_SLOTS);
            entries.free.shrink_to(KEPT_SLOTS);
        } else {
            entries.free.push(key);
        }
    }

    /// One sweep at `now`: stamps new entries, moves the wakers of those past their deadline to
    /// `due`, and returns how long to sleep (`None`: no entries, sleep until one comes).
    fn sweep(&self, now: Instant, due: &mut Vec<Waker>) -> Option<Duration> {
        let mut entries = self.lock();
        if entries.live == 0 {
            entries.tick = None;
            return None;
        }
        let mut tick: Option<Duration> = None;
        let mut next: Option<Instant> = None;
        for slot in entries.slots.iter_mut() {
            let Slot::Waiting {
                timeout, deadline, ..
            } = slot
            else {
                continue;
            };
            let timeout = *timeout;
            let deadline = *deadline.get_or_insert_with(|| instant_after(now, timeout));
            if deadline <= now {
                if let Slot::Waiting { waker, .. } = std::mem::replace(slot, Slot::Fired) {
                    due.push(waker);
                }
                continue;
            }
            let wanted = tick_for(timeout);
            tick = Some(tick.map_or(wanted, |t| t.min(wanted)));
            next = Some(next.map_or(deadline, |n| n.min(deadline)));
        }
        entries.tick = tick;
        Some(tick?.min(next? - now))
    }
}

/// The sweep period for a timeout: 1/16 of it, between 1 ms and 250 ms.
fn tick_for(timeout: Duration) -> Duration {
    (timeout / 16).clamp(MIN_TICK, MAX_TICK)
}

/// A shard's sweeper. After the wheel stops it goes on until no call holds the shard.
async fn sweep(shard: Arc<Shard>, stop: CancellationToken) {
    let mut due = Vec::new();
    loop {
        let sleep = shard.sweep(Instant::now(), &mut due);
        for waker in due.drain(..) {
            waker.wake();
        }
        let stopped = stop.is_cancelled();
        if stopped && sleep.is_none() && Arc::strong_count(&shard) == 1 {
            return;
        }
        let sleep = match (sleep, stopped) {
            (Some(sleep), _) => sleep,
            (None, true) => STOPPED_TICK,
            (None, false) => {
                tokio::select! {
                    () = shard.wake_sweeper.notified() => {}
                    () = stop.cancelled() => {}
                }
                continue;
            }
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = shard.wake_sweeper.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pins that an entry is stamped by the sweep after its registration and fires only once
    // that sweep time plus its timeout has passed.
    #[test]
    fn entry_fires_a_full_timeout_after_the_sweep_that_stamps_it() {
        let shard = Shard::default();
        let key = shard.register(Duration::from_secs(2), Waker::noop());
        let start = Instant::now();
        let mut due = Vec::new();
        // 1/16 of the timeout.
        assert_eq!(
            shard.sweep(start, &mut due),
            Some(Duration::from_millis(125))
        );
        assert!(due.is_empty());
        shard.sweep(start + Duration::from_millis(1999), &mut due);
        assert!(due.is_empty());
        assert!(shard.still_waiting(key, Waker::noop()));
        shard.sweep(start + Duration::from_secs(2), &mut due);
        assert_eq!(due.len(), 1);
        assert!(!shard.still_waiting(key, Waker::noop()));
        shard.remove(key);
        assert_eq!(
            shard.sweep(start, &mut due),
            None,
            "no entries: the sweeper idles"
        );
    }

    // Pins that a burst of waiting calls leaves nothing behind: once the last one is removed
    // the shard drops its slots (keys start over, the sweep has nothing to walk).
    #[test]
    fn an_emptied_shard_drops_its_slots() {
        let shard = Shard::default();
        let keys: Vec<u32> = (0..5000)
            .map(|_| shard.register(Duration::from_secs(30), Waker::noop()))
            .collect();
        assert!(shard.sweep(Instant::now(), &mut Vec::new()).is_some());
        keys.into_iter().for_each(|k| shard.remove(k));
        {
            let entries = shard.lock();
            assert!(entries.slots.is_empty() && entries.free.is_empty());
            assert!(entries.slots.capacity() <= KEPT_SLOTS);
        }
        assert_eq!(shard.sweep(Instant::now(), &mut Vec::new()), None);
        assert_eq!(shard.register(Duration::from_secs(1), Waker::noop()), 0);
    }

    // Pins that the sweep period follows the shortest timeout and that freed keys are reused.
    #[test]
    fn period_follows_the_shortest_timeout_and_keys_are_reused() {
        let shard = Shard::default();
        let long = shard.register(Duration::from_secs(30), Waker::noop());
        let short = shard.register(Duration::from_millis(160), Waker::noop());
        let now = Instant::now();
        assert_eq!(
            shard.sweep(now, &mut Vec::new()),
            Some(Duration::from_millis(10))
        );
        shard.remove(short);
        assert_eq!(shard.sweep(now, &mut Vec::new()), Some(MAX_TICK));
        assert_eq!(
            shard.register(Duration::from_secs(1), Waker::noop()),
            short,
            "a freed key is reused"
        );
        shard.remove(long);
    }
}
