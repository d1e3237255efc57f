//! The staging workloads (`Ring::stage`) that `ring_staging` runs on every backend and
//! `ring_staging_reader_decode` runs on the persistent CUDA ring with its callers decoding their
//! own replies; each takes the ring's config and panics on what it pins.

use crate::common::{block_on, block_on_woken};
use silica_gpu::samples::{Accumulator, Add, Totals};
use silica_gpu::{HlcStamp, Ring, RingConfig, StageMark};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

pub(crate) fn burst_then_await(cfg: RingConfig) {
    let ring = Ring::<Accumulator>::start(cfg).unwrap();
    let slots: Vec<_> = (0..40)
        .map(|_| ring.activate(&Totals::default()).unwrap())
        .collect();
    let stamp = HlcStamp::new(1 << 40, 9);
    // 3 messages per slot, staged back to back on this thread, awaited last to first.
    let staged: Vec<_> = (0..3u32)
        .flat_map(|round| slots.iter().map(move |s| (*s, round)).collect::<Vec<_>>())
        .map(|(s, round)| (round, ring.stage(s, Add { amount: round + 1 }, stamp)))
        .collect();
    for (round, mut f) in staged.into_iter().rev() {
        let reply = block_on(&mut f).unwrap();
        assert_eq!(
            reply.response.count,
            round + 1,
            "per-slot FIFO inside the run"
        );
        assert!(
            reply.stamp.hlc > stamp.hlc,
            "stamps merge the request's HLC"
        );
        let high = f.run_high_stamp().expect("resolved");
        assert!(
            high.hlc >= reply.stamp.hlc,
            "the run's high stamp covers each reply"
        );
    }
    for s in slots {
        assert_eq!(block_on(ring.deactivate(s)).unwrap().total, 6);
    }
}

pub(crate) fn order_across_threads(cfg: RingConfig) {
    let ring = Arc::new(Ring::<Accumulator>::start(cfg).unwrap());
    let slot = ring.activate(&Totals::default()).unwrap();
    for _ in 0..20 {
        // Staged on one thread and not polled; a later message to the slot, staged and
        // awaited on another thread (another shard), must still run after it.
        let first = {
            let ring = ring.clone();
            std::thread::spawn(move || ring.stage(slot, Add { amount: 1 }, HlcStamp::default()))
                .join()
                .unwrap()
        };
        let second = {
            let ring = ring.clone();
            std::thread::spawn(move || {
                block_on(ring.stage(slot, Add { amount: 1 }, HlcStamp::default())).unwrap()
            })
            .join()
            .unwrap()
        };
        let first = block_on(first).unwrap();
        assert_eq!(first.response.count + 1, second.response.count);
    }
}

/// `order_across_threads` with the slot's order kept in a caller's mark, not the ring's.
pub(crate) fn marked_order_across_threads(cfg: RingConfig) {
    let ring = Arc::new(Ring::<Accumulator>::start(cfg).unwrap());
    let slot = ring.activate(&Totals::default()).unwrap();
    let mark = Arc::new(StageMark::default());
    for _ in 0..20 {
        let first = {
            let (ring, mark) = (ring.clone(), mark.clone());
            std::thread::spawn(move || {
                ring.stage_marked(slot, &mark, Add { amount: 1 }, HlcStamp::default())
            })
            .join()
            .unwrap()
        };
        let second = {
            let (ring, mark) = (ring.clone(), mark.clone());
            std::thread::spawn(move || {
                let staged = ring.stage_marked(slot, &mark, Add { amount: 1 }, HlcStamp::default());
                block_on(staged).unwrap()
            })
            .join()
            .unwrap()
        };
        let first = block_on(first).unwrap();
        assert_eq!(first.response.count + 1, second.response.count);
    }
    assert_eq!(block_on(ring.deactivate(slot)).unwrap().count, 40);
}

pub(crate) fn unpolled_message_runs(cfg: RingConfig) {
    let ring = Ring::<Accumulator>::start(cfg).unwrap();
    let slot = ring.activate(&Totals::default()).unwrap();
    let mut staged = ring.stage(slot, Add { amount: 7 }, HlcStamp::default());
    // Never polled: the consumer's sweep submits it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ring.completed() < 1 {
        assert!(
            Instant::now() < deadline,
            "a staged message was never submitted"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(block_on(&mut staged).unwrap().response.total, 7);
}

pub(crate) fn dropped_futures_free_the_ring(cfg: RingConfig) {
    let ring = Ring::<Accumulator>::start(RingConfig {
        capacity: 64,
        ..cfg
    })
    .unwrap();
    let slot = ring.activate(&Totals::default()).unwrap();
    for round in 0..40u32 {
        // Some dropped while staged, some after their batch went out, never read.
        let staged: Vec<_> = (0..30)
            .map(|_| ring.stage(slot, Add { amount: 1 }, HlcStamp::default()))
            .collect();
        if round % 2 == 0 {
            let mut last = staged.into_iter().last().unwrap();
            block_on(&mut last).unwrap();
        }
    }
    // 1200 messages through a 64-entry ring: positions came back although nobody read them.
    block_on(ring.drain());
    assert_eq!(block_on(ring.deactivate(slot)).unwrap().total, 1200);
}

pub(crate) fn full_ring_keeps_order(cfg: RingConfig) {
    let ring = Arc::new(
        Ring::<Accumulator>::start(RingConfig {
            capacity: 16,
            ..cfg
        })
        .unwrap(),
    );
    let slot = ring.activate(&Totals::default()).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let ring = ring.clone();
            std::thread::spawn(move || {
                let mut last = 0;
                for _ in 0..50 {
                    let staged: Vec<_> = (0..6)
                        .map(|_| ring.stage(slot, Add { amount: 1 }, HlcStamp::default()))
                        .collect();
                    for f in staged {
                        let count = block_on(f).unwrap().response.count;
                        assert!(count > last, "this thread's messages ran out of order");
                        last = count;
                    }
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(block_on(ring.deactivate(slot)).unwrap().total, 1200);
}

/// Threads that keep a window of staged messages in flight to shared slots, awaiting the
/// oldest (woken only by their wakers) before staging the next: the ring stays busy, so most
/// awaited messages wait in open batches. Each thread's messages to a slot must run in order.
pub(crate) fn many_producers_keep_slot_order(cfg: RingConfig) {
    let ring = Arc::new(Ring::<Accumulator>::start(cfg).unwrap());
    let slots: Vec<_> = (0..8)
        .map(|_| ring.activate(&Totals::default()).unwrap())
        .collect();
    let (threads, per_thread, window) = (6, 600, 24);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (ring, slots) = (ring.clone(), slots.clone());
            std::thread::spawn(move || {
                let mut last = vec![0u32; slots.len()];
                let mut in_flight = std::collections::VecDeque::new();
                for i in 0..per_thread + window {
                    if i < per_thread {
                        let s = (i * 7 + t) % slots.len();
                        in_flight.push_back((
                            s,
                            ring.stage(slots[s], Add { amount: 1 }, HlcStamp::default()),
                        ));
                    }
                    if in_flight.len() >= window || i >= per_thread {
                        let Some((s, f)) = in_flight.pop_front() else {
                            break;
                        };
                        let count = block_on_woken(f).unwrap().response.count;
                        assert!(
                            count > last[s],
                            "a thread's messages to a slot ran out of order"
                        );
                        last[s] = count;
                    }
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    let mut total = 0;
    for s in slots {
        total += block_on(ring.deactivate(s)).unwrap().total;
    }
    assert_eq!(total, (threads * per_thread) as u64);
    let stats = ring.backend_stats();
    let get = |name: &str| stats.iter().find(|(n, _)| *n == name).map_or(0, |s| s.1);
    println!("staging counters: {stats:?}");
    assert_eq!(
        get("stage_messages"),
        (threads * per_thread) as u64,
        "every message went once"
    );
}

/// Threads stage bursts and await only each burst's last message (the others are never
/// polled), while the ring is busy with the other threads' bursts; once they stop, every
/// staged message still runs without `drain` (the consumer's passes, idle flush and sweep).
pub(crate) fn nothing_stays_staged(cfg: RingConfig) {
    let ring = Arc::new(Ring::<Accumulator>::start(cfg).unwrap());
    let slots: Vec<_> = (0..4)
        .map(|_| ring.activate(&Totals::default()).unwrap())
        .collect();
    let (threads, bursts, burst) = (4, 50, 9);
    let kept: Vec<_> = (0..threads)
        .map(|t| {
            let (ring, slot) = (ring.clone(), slots[t]);
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                for _ in 0..bursts {
                    let mut staged: Vec<_> = (0..burst)
                        .map(|_| ring.stage(slot, Add { amount: 1 }, HlcStamp::default()))
                        .collect();
                    let last = staged.pop().unwrap();
                    assert!(block_on_woken(last).is_ok());
                    kept.extend(staged);
                }
                kept
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let sent = (threads * bursts * burst) as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while ring.completed() < sent {
        assert!(
            Instant::now() < deadline,
            "staged messages stayed staged on a quiet ring"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(ring.queue_depth(), 0);
    for f in kept {
        assert!(block_on_woken(f).is_ok());
    }
    for s in slots {
        assert_eq!(
            block_on(ring.deactivate(s)).unwrap().count,
            (bursts * burst) as u32
        );
    }
}

/// Futures waiting in open batches on a busy ring, half of them dropped before their batch
/// goes: the others still get their own replies, and every message runs once.
pub(crate) fn dropped_in_open_batches(cfg: RingConfig) {
    let ring = Arc::new(Ring::<Accumulator>::start(cfg).unwrap());
    let slots: Vec<_> = (0..4)
        .map(|_| ring.activate(&Totals::default()).unwrap())
        .collect();
    let rounds = 200;
    let handles: Vec<_> = slots
        .iter()
        .map(|&slot| {
            let ring = ring.clone();
            std::thread::spawn(move || {
                let noop = Waker::noop();
                let mut cx = Context::from_waker(noop);
                let mut last = 0;
                for _ in 0..rounds {
                    let mut staged: Vec<_> = (0..6)
                        .map(|_| ring.stage(slot, Add { amount: 1 }, HlcStamp::default()))
                        .collect();
                    // Polled once (waiting in the open batch if the ring is busy), then every
                    // other one dropped.
                    let mut ready = Vec::new();
                    for f in &mut staged {
                        ready.push(std::pin::Pin::new(f).poll(&mut cx).is_ready());
                    }
                    for (i, f) in staged.into_iter().enumerate() {
                        if i % 2 == 1 {
                            continue;
                        }
                        let count = if ready[i] {
                            // Already resolved on its first poll: nothing more to read.
                            continue;
                        } else {
                            block_on_woken(f).unwrap().response.count
                        };
                        assert!(count > last, "replies out of order: another entry was read");
                        last = count;
                    }
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    block_on(ring.drain());
    for s in slots {
        assert_eq!(block_on(ring.deactivate(s)).unwrap().count, rounds * 6);
    }
}

/// Replies kept unread do not hold the ring: a whole ring's worth of staged messages runs and
/// their futures are kept, not read; another thread's calls still find room (with callers
/// decoding their own replies, the persistent ring rescues the unread entries into their
/// cells), and the kept futures then read their own replies. Returns the ring for its stats.
pub(crate) fn unread_replies_do_not_hold_the_ring(cfg: RingConfig) -> Arc<Ring<Accumulator>> {
    const CAPACITY: u32 = 16;
    let ring = Arc::new(
        Ring::<Accumulator>::start(RingConfig {
            capacity: CAPACITY,
            ..cfg
        })
        .unwrap(),
    );
    let kept_slot = ring.activate(&Totals::default()).unwrap();
    let busy_slot = ring.activate(&Totals::default()).unwrap();
    // Never polled: with a 16-entry ring they go as four full batches of 4 (the stage maximum
    // is a quarter of the capacity), and the ring is then exactly full.
    let kept: Vec<_> = (0..CAPACITY)
        .map(|_| ring.stage(kept_slot, Add { amount: 1 }, HlcStamp::default()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ring.completed() < u64::from(CAPACITY) {
        assert!(Instant::now() < deadline, "the kept messages never ran");
        std::thread::sleep(Duration::from_millis(1));
    }
    let busy = {
        let ring = ring.clone();
        std::thread::spawn(move || {
            for count in 1..=200 {
                let reply = block_on(ring.stage(busy_slot, Add { amount: 1 }, HlcStamp::default()));
                assert_eq!(reply.unwrap().response.count, count);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !busy.is_finished() {
        assert!(
            Instant::now() < deadline,
            "calls found no room while unread replies filled the ring"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    busy.join().unwrap();
    for (count, f) in (1..).zip(kept) {
        assert_eq!(block_on(f).unwrap().response.count, count);
    }
    ring
}
