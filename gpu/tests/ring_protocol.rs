//! Ring protocol on every backend: many producers, a full ring, per-slot FIFO, one message
//! per slot at a time, shutdown with messages in flight, deactivation reading state back.

mod common;
use common::{block_on, config};
use silica_gpu::samples::{Accumulator, Add, Totals};
use silica_gpu::{BackendKind, HlcStamp, Ring, RingConfig, RingError};
use std::sync::Arc;

fn many_producers_fifo(cfg: RingConfig) {
    let ring = Arc::new(Ring::<Accumulator>::start(cfg).expect("start ring"));
    let slots: Vec<_> = (0..4)
        .map(|_| ring.activate(&Totals::default()).unwrap())
        .collect();
    let producers = 6;
    let per = 300u32;
    let handles: Vec<_> = (0..producers)
        .map(|p| {
            let (ring, slots) = (ring.clone(), slots.clone());
            std::thread::spawn(move || {
                let mut last = vec![0u32; slots.len()];
                let mut stamps = Vec::with_capacity(per as usize);
                for i in 0..per {
                    let s = (i as usize + p) % slots.len();
                    let reply =
                        block_on(ring.submit(slots[s], Add { amount: 1 }, HlcStamp::default()))
                            .unwrap();
                    // Per-caller FIFO: this producer's messages to a slot see growing counts.
                    assert!(reply.response.count > last[s], "count went backwards");
                    last[s] = reply.response.count;
                    stamps.push(reply.stamp.hlc);
                }
                stamps
            })
        })
        .collect();
    let mut stamps: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    // Slots are served by different workers (warps on CUDA), which stamp concurrently: every
    // response still gets its own stamp.
    stamps.sort_unstable();
    stamps.dedup();
    assert_eq!(
        stamps.len(),
        (per as usize) * producers,
        "a stamp was issued twice"
    );
    let total: u64 = slots
        .iter()
        .map(|s| block_on(ring.deactivate(*s)).unwrap().total)
        .sum();
    // One at a time: no increment was lost to a concurrent read-modify-write.
    assert_eq!(total, u64::from(per) * producers as u64);
}

fn full_ring_waits(cfg: RingConfig) {
    let ring = Ring::<Accumulator>::start(RingConfig { capacity: 4, ..cfg }).unwrap();
    let slot = ring.activate(&Totals::default()).unwrap();
    let futures: Vec<_> = (0..200)
        .map(|_| ring.submit(slot, Add { amount: 2 }, HlcStamp::default()))
        .collect();
    let counts: Vec<u32> = futures
        .into_iter()
        .map(|f| block_on(f).unwrap().response.count)
        .collect();
    // Submitted from one thread in order, awaited in order: FIFO means counts 1..=200.
    assert_eq!(counts, (1..=200).collect::<Vec<_>>());
    assert_eq!(block_on(ring.deactivate(slot)).unwrap().total, 400);
}

fn batch_fifo_and_stamps(cfg: RingConfig) {
    let ring = Ring::<Accumulator>::start(cfg).unwrap();
    let a = ring
        .activate(&Totals {
            total: 10,
            ..Totals::default()
        })
        .unwrap();
    let b = ring.activate(&Totals::default()).unwrap();
    let items: Vec<_> = (0..100)
        .map(|i| (if i % 3 == 0 { b } else { a }, Add { amount: i }))
        .collect();
    let sent = HlcStamp::new((u64::MAX >> 4) & !0xfffff, 1);
    let outs = block_on(ring.submit_batch(items.clone(), sent)).unwrap();
    let mut expect = [10u64, 0];
    let mut prev = 0;
    for ((slot, add), out) in items.iter().zip(outs) {
        let reply = out.unwrap();
        let e = &mut expect[usize::from(*slot == b)];
        *e += u64::from(add.amount);
        assert_eq!(reply.response.total, *e, "slot order broken");
        // Merge rule: every stamp is after the request's; stamps are unique.
        assert!(reply.stamp.hlc > sent.hlc);
        assert_ne!(reply.stamp.hlc, prev);
        prev = reply.stamp.hlc;
    }
}

fn shutdown_in_flight(cfg: RingConfig) {
    let ring = Ring::<Accumulator>::start(cfg).unwrap();
    let slot = ring.activate(&Totals::default()).unwrap();
    let futures: Vec<_> = (0..500)
        .map(|_| ring.submit(slot, Add { amount: 1 }, HlcStamp::default()))
        .collect();
    let mut futures = futures.into_iter();
    let first: Vec<_> = futures.by_ref().take(250).collect();
    // Polls the first half into the ring, then shuts down with them in flight.
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut first: Vec<_> = first.into_iter().map(Box::pin).collect();
    for f in &mut first {
        let _ = f.as_mut().poll(&mut cx);
    }
    ring.shutdown();
    let mut ok = 0;
    for f in first.into_iter().map(block_on).chain(futures.map(block_on)) {
        match f {
            Ok(_) => ok += 1,
            Err(RingError::ShutDown) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(ok <= 250);
    assert!(matches!(
        ring.activate(&Totals::default()),
        Err(RingError::ShutDown)
    ));
}

fn inactive_slot_rejected(cfg: RingConfig) {
    let ring = Ring::<Accumulator>::start(cfg).unwrap();
    let slot = ring.activate(&Totals::default()).unwrap();
    block_on(ring.deactivate(slot)).unwrap();
    let err = block_on(ring.submit(slot, Add { amount: 1 }, HlcStamp::default())).unwrap_err();
    assert!(matches!(err, RingError::SlotNotActive(s) if s == slot));
}

use std::future::Future;

macro_rules! suite {
    ($modname:ident, $kind:expr $(, $ignore:meta)?) => {
        mod $modname {
            use super::*;
            // Pins: many producers keep per-caller FIFO and lose no update.
            #[test] $(#[$ignore])? fn many_producers() { if common::skip($kind) { return; } many_producers_fifo(config($kind)) }
            // Pins: a full ring makes submitters wait, not fail, and keeps order.
            #[test] $(#[$ignore])? fn full_ring() { if common::skip($kind) { return; } full_ring_waits(config($kind)) }
            // Pins: a batch keeps per-slot order and stamps merge the request's HLC.
            #[test] $(#[$ignore])? fn batch_order() { if common::skip($kind) { return; } batch_fifo_and_stamps(config($kind)) }
            // Pins: shutdown resolves every in-flight call with a value or ShutDown.
            #[test] $(#[$ignore])? fn shutdown() { if common::skip($kind) { return; } shutdown_in_flight(config($kind)) }
            // Pins: calls to a deactivated slot fail with SlotNotActive.
            #[test] $(#[$ignore])? fn inactive_slot() { if common::skip($kind) { return; } inactive_slot_rejected(config($kind)) }
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
