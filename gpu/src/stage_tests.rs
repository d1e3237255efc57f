//! The Nagle flush policy of `stage.rs`, driven step by step: these tests play the ring's
//! consumer themselves (a `RingShared` with no backend thread), so "busy" and "quiet" are
//! exact rather than timed.

use super::*;
use crate::reply::Reply;
use crate::ring::RingConfig;
use crate::samples::{Accumulator, Add, Totals};
use std::sync::atomic::AtomicUsize;
use std::task::Wake;

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Count(AtomicUsize);
impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

struct Polled {
    count: Arc<Count>,
    waker: Waker,
}

impl Polled {
    fn new() -> Self {
        let count = Arc::new(Count::default());
        Self {
            waker: Waker::from(count.clone()),
            count,
        }
    }
    fn poll(&self, f: &mut StagedReply<Accumulator>) -> Poll<Outcome<Totals>> {
        Pin::new(f).poll(&mut Context::from_waker(&self.waker))
    }
    fn woken(&self) -> usize {
        self.count.0.load(Ordering::SeqCst)
    }
}

fn shared() -> (Arc<RingShared<Accumulator>>, SlotId) {
    let shared = Arc::new(RingShared::<Accumulator>::new(RingConfig::default()));
    let slot = shared.slots.allocate().unwrap();
    shared.slots.set_active(slot);
    (shared, slot)
}

fn stage(
    shared: &Arc<RingShared<Accumulator>>,
    slot: SlotId,
    amount: u32,
) -> StagedReply<Accumulator> {
    StagedReply::new(shared.stage(slot, Add { amount }, 0, Order::Ring), slot)
}

/// Plays the consumer: answers entries `ready..tail` (response `count` = the request's amount)
/// and moves `ready` and `head` past them.
fn complete_all(shared: &RingShared<Accumulator>) -> u64 {
    let (from, to) = (shared.queue.ready(), shared.queue.tail());
    shared.queue.complete_run(from, to, |t| {
        let (_, hlc, req) = shared.queue.h2k_read::<Add>(t);
        Ok(Reply {
            response: Totals {
                total: u64::from(req.amount),
                count: req.amount,
                pad: 0,
            },
            stamp: HlcStamp::new(hlc + 1, 0),
        })
    });
    shared.queue.release(to);
    to - from
}

fn stat(shared: &RingShared<Accumulator>, name: &str) -> u64 {
    shared
        .staging_stats()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, v)| v)
}

fn count_of(out: Poll<Outcome<Totals>>) -> u32 {
    match out {
        Poll::Ready(Ok(reply)) => reply.response.count,
        other => panic!(
            "expected a reply, got {:?}",
            other.map(|o| o.map(|r| r.response))
        ),
    }
}

// Pins the policy: on a quiet ring an awaited message goes at once (a batch of one); on a busy
// ring awaited messages wait in their open batch, which the completion pass submits as one run,
// and each waiting future is woken by the run's completion and reads its own reply.
#[test]
fn busy_ring_gathers_awaited_messages_into_one_run() {
    let (shared, slot) = shared();
    let p = Polled::new();
    let mut first = stage(&shared, slot, 1);
    assert!(
        p.poll(&mut first).is_pending(),
        "a quiet ring takes it at once"
    );
    assert_eq!(shared.queue.tail(), 1);
    let mut later: Vec<_> = (2..=5).map(|a| stage(&shared, slot, a)).collect();
    for f in &mut later {
        assert!(p.poll(f).is_pending(), "a busy ring leaves the batch open");
    }
    assert_eq!(shared.queue.tail(), 1, "nothing more was submitted");
    assert!(shared.has_staged());
    // The consumer finishes entry 0, then sends what gathered meanwhile.
    assert_eq!(complete_all(&shared), 1);
    shared.flush_after_completion();
    assert!(!shared.has_staged());
    assert_eq!(
        shared.queue.tail(),
        5,
        "the four waiting messages went as one run"
    );
    assert_eq!(count_of(p.poll(&mut first)), 1);
    let before = p.woken();
    assert_eq!(complete_all(&shared), 4);
    assert!(
        p.woken() > before,
        "the run's completion woke its waiting futures"
    );
    for (f, amount) in later.iter_mut().zip(2..) {
        assert_eq!(
            count_of(p.poll(f)),
            amount,
            "each future reads its own entry"
        );
    }
    assert_eq!(stat(&shared, "stage_batches"), 2);
    assert_eq!(stat(&shared, "stage_messages"), 5);
    assert_eq!(stat(&shared, "stage_flush_await"), 1);
    assert_eq!(stat(&shared, "stage_flush_completion"), 1);
}

// Pins the threshold: on a busy ring, futures early in their open batch leave it open for the
// completion pass, but the first one awaited at `await_min` or later sends the batch at once
// (from its own thread), with every message staged so far.
#[test]
fn a_future_far_enough_into_its_batch_sends_it_on_a_busy_ring() {
    let mut ring = RingShared::<Accumulator>::new(RingConfig::default());
    ring.stager.await_min = 3;
    let shared = Arc::new(ring);
    let slot = shared.slots.allocate().unwrap();
    shared.slots.set_active(slot);
    let p = Polled::new();
    let mut first = stage(&shared, slot, 1);
    assert!(p.poll(&mut first).is_pending());
    assert_eq!(
        shared.queue.tail(),
        1,
        "a quiet ring takes the first at once"
    );
    let mut later: Vec<_> = (2..=5).map(|a| stage(&shared, slot, a)).collect();
    for f in &mut later[..2] {
        assert!(p.poll(f).is_pending());
    }
    assert_eq!(
        shared.queue.tail(),
        1,
        "positions 1 and 2 leave the batch open"
    );
    assert!(p.poll(&mut later[2]).is_pending(), "sent, not yet answered");
    assert_eq!(
        shared.queue.tail(),
        5,
        "position 3 sent the batch, with the message staged after it"
    );
    assert!(!shared.has_staged());
    assert_eq!(stat(&shared, "stage_flush_await"), 2);
    assert_eq!(stat(&shared, "stage_flush_completion"), 0);
    assert_eq!(complete_all(&shared), 5);
    assert_eq!(count_of(p.poll(&mut first)), 1);
    for (f, amount) in later.iter_mut().zip(2..) {
        assert_eq!(
            count_of(p.poll(f)),
            amount,
            "each future reads its own entry"
        );
    }
}

// Pins the consumer's side: a completion pass sends the batches futures wait on and leaves a
// batch nobody awaits yet to gather its thread's burst; a shard it could not lock (a stager
// held it) is reported, and the idle retry sends it.
#[test]
fn completion_sends_awaited_batches_and_retries_locked_shards() {
    let (shared, slot) = shared();
    let p = Polled::new();
    let mut busy = stage(&shared, slot, 1);
    assert!(p.poll(&mut busy).is_pending());
    let mut awaited = stage(&shared, slot, 2);
    assert!(p.poll(&mut awaited).is_pending());
    let home = shard_index();
    // Another thread (shard) stages without awaiting.
    let (mut unawaited, _) = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            let other = shared.slots.allocate().unwrap();
            shared.slots.set_active(other);
            (stage(&shared, other, 3), other)
        })
        .join()
        .unwrap()
    };
    complete_all(&shared);
    {
        let _stager = shared.stager.lock(home);
        assert!(
            shared.flush_after_completion(),
            "the locked shard is reported"
        );
    }
    assert_eq!(shared.queue.tail(), 1);
    assert!(!shared.flush_awaited_when_idle(), "the retry took it");
    assert_eq!(shared.queue.tail(), 2, "only the awaited batch went");
    assert_eq!(stat(&shared, "stage_flush_idle"), 1);
    complete_all(&shared);
    assert_eq!(count_of(p.poll(&mut awaited)), 2);
    assert_eq!(count_of(p.poll(&mut busy)), 1);
    // Awaited on the quiet ring, the other thread's message goes at once.
    assert!(p.poll(&mut unawaited).is_pending());
    assert_eq!(shared.queue.tail(), 3);
    complete_all(&shared);
    assert_eq!(count_of(p.poll(&mut unawaited)), 3);
    assert!(!shared.has_staged());
}

// Pins that dropping a future whose batch is open loses nothing else: its message still runs,
// the others of the batch are woken and read their own replies, and the ring gets the
// positions back.
#[test]
fn dropped_future_in_open_batch() {
    let (shared, slot) = shared();
    let p = Polled::new();
    let mut busy = stage(&shared, slot, 1);
    assert!(p.poll(&mut busy).is_pending());
    let mut batch: Vec<_> = (2..=4).map(|a| stage(&shared, slot, a)).collect();
    for f in &mut batch {
        assert!(p.poll(f).is_pending());
    }
    let dropped = batch.remove(1);
    drop(dropped);
    complete_all(&shared);
    shared.flush_after_completion();
    assert_eq!(
        shared.queue.tail(),
        4,
        "the dropped future's message still went"
    );
    let before = p.woken();
    complete_all(&shared);
    assert!(p.woken() > before);
    assert_eq!(count_of(p.poll(&mut batch[0])), 2);
    assert_eq!(count_of(p.poll(&mut batch[1])), 4);
    assert_eq!(count_of(p.poll(&mut busy)), 1);
    assert_eq!(shared.queue.head(), 4);
}

// Pins the reader count of a run whose futures were dropped before it went (the count goes
// below zero while the batch is open; the publish adds the run's length): with none left the
// run is consumed as it is published (its positions are reusable once it ran); with one left,
// when that one reads its reply.
#[test]
fn readers_dropped_before_their_batch_goes() {
    let (shared, slot) = shared();
    let p = Polled::new();
    let mut busy = stage(&shared, slot, 1);
    assert!(p.poll(&mut busy).is_pending());
    let staged = |amount| {
        let (batch, index) = shared.stage(slot, Add { amount }, 0, Order::Ring).unwrap();
        (batch.clone(), StagedReply::new(Ok((batch, index)), slot))
    };
    let (batch, first) = staged(2);
    drop(first);
    drop(staged(3).1);
    complete_all(&shared);
    assert_eq!(count_of(p.poll(&mut busy)), 1);
    shared.flush_all();
    assert!(batch.cell.get().unwrap().is_consumed(), "no reader left");

    let (batch, mut kept) = staged(4);
    drop(staged(5).1);
    shared.flush_all();
    let cell = batch.cell.get().unwrap();
    assert!(!cell.is_consumed(), "one reader left");
    complete_all(&shared);
    assert_eq!(count_of(p.poll(&mut kept)), 4);
    assert!(cell.is_consumed(), "read by its last reader");
}

// Pins that a batch that fails to submit (the ring shut down) wakes the futures waiting on it
// while it was open, with the error.
#[test]
fn waiting_futures_learn_of_shutdown() {
    let (shared, slot) = shared();
    let p = Polled::new();
    let mut busy = stage(&shared, slot, 1);
    assert!(p.poll(&mut busy).is_pending());
    let mut waiting = stage(&shared, slot, 2);
    assert!(p.poll(&mut waiting).is_pending());
    let before = p.woken();
    shared.queue.close();
    shared.flush_all();
    shared.queue.fail_pending(&RingError::ShutDown);
    assert!(p.woken() > before);
    assert!(matches!(
        p.poll(&mut waiting),
        Poll::Ready(Err(RingError::ShutDown))
    ));
    assert!(matches!(
        p.poll(&mut busy),
        Poll::Ready(Err(RingError::ShutDown))
    ));
}
