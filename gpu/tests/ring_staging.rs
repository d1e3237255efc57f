//! Coalesced submission (`Ring::stage`) on every backend: a burst staged on one thread goes as
//! one run and every caller reads its own reply; order per slot holds across threads; a staged
//! message nobody polls still runs (the consumer's sweep); dropped staged futures never wedge
//! the ring; a full ring keeps staged batches in order.

mod common;
use common::{block_on, config};
use silica_gpu::samples::{Accumulator, Add, Totals};
use silica_gpu::{BackendKind, HlcStamp, Ring, RingConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn burst_then_await(cfg: RingConfig) {
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

fn order_across_threads(cfg: RingConfig) {
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

fn unpolled_message_runs(cfg: RingConfig) {
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

fn dropped_futures_free_the_ring(cfg: RingConfig) {
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

fn full_ring_keeps_order(cfg: RingConfig) {
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

macro_rules! suite {
    ($modname:ident, $kind:expr $(, $ignore:meta)?) => {
        mod $modname {
            use super::*;
            // Pins: a staged burst runs in per-slot order and each caller reads its own reply.
            #[test] $(#[$ignore])? fn burst() { if common::skip($kind) { return; } burst_then_await(config($kind)) }
            // Pins: a later message staged on another thread never overtakes an earlier one.
            #[test] $(#[$ignore])? fn across_threads() { if common::skip($kind) { return; } order_across_threads(config($kind)) }
            // Pins: a staged message whose future is never polled is still submitted.
            #[test] $(#[$ignore])? fn unpolled() { if common::skip($kind) { return; } unpolled_message_runs(config($kind)) }
            // Pins: futures dropped unread give their ring positions back.
            #[test] $(#[$ignore])? fn dropped() { if common::skip($kind) { return; } dropped_futures_free_the_ring(config($kind)) }
            // Pins: with the ring full, staged batches wait and keep each thread's order.
            #[test] $(#[$ignore])? fn full_ring() { if common::skip($kind) { return; } full_ring_keeps_order(config($kind)) }
        }
    };
}

suite!(cpu, BackendKind::Cpu);
#[cfg(feature = "wgpu")]
suite!(wgpu, BackendKind::Wgpu);
#[cfg(feature = "cuda")]
suite!(
    cuda_persistent,
    BackendKind::CudaPersistent,
    ignore = "needs a CUDA GPU"
);
#[cfg(feature = "cuda")]
suite!(
    cuda_batch,
    BackendKind::CudaBatch,
    ignore = "needs a CUDA GPU"
);
