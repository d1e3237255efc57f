//! Coalesced submission (`Ring::stage`) on every backend: a burst staged on one thread goes as
//! one run and every caller reads its own reply; order per slot holds across threads; a staged
//! message nobody polls still runs (the consumer's sweep); dropped staged futures never wedge
//! the ring; a full ring keeps staged batches in order. Under load (the Nagle flush policy:
//! awaited messages wait in open batches while the ring is busy) every awaited future is
//! woken, order per slot holds across many producers, nothing stays staged once the ring goes
//! quiet, and futures dropped in open batches lose nothing else. Replies kept unread do not
//! hold the ring. The workloads are in `staging/`.

mod common;
mod staging;
use common::config;
use silica_gpu::BackendKind;
use staging::*;

macro_rules! suite {
    ($modname:ident, $kind:expr $(, $ignore:meta)?) => {
        mod $modname {
            use super::*;
            // Pins: a staged burst runs in per-slot order and each caller reads its own reply.
            #[test] $(#[$ignore])? fn burst() { if common::skip($kind) { return; } burst_then_await(config($kind)) }
            // Pins: a later message staged on another thread never overtakes an earlier one.
            #[test] $(#[$ignore])? fn across_threads() { if common::skip($kind) { return; } order_across_threads(config($kind)) }
            // Pins: the same with the slot's order kept in the caller's `StageMark`.
            #[test] $(#[$ignore])? fn marked_across_threads() { if common::skip($kind) { return; } marked_order_across_threads(config($kind)) }
            // Pins: a staged message whose future is never polled is still submitted.
            #[test] $(#[$ignore])? fn unpolled() { if common::skip($kind) { return; } unpolled_message_runs(config($kind)) }
            // Pins: futures dropped unread give their ring positions back.
            #[test] $(#[$ignore])? fn dropped() { if common::skip($kind) { return; } dropped_futures_free_the_ring(config($kind)) }
            // Pins: with the ring full, staged batches wait and keep each thread's order.
            #[test] $(#[$ignore])? fn full_ring() { if common::skip($kind) { return; } full_ring_keeps_order(config($kind)) }
            // Pins: under load every awaited future is woken, and per-slot order holds.
            #[test] $(#[$ignore])? fn many_producers() { if common::skip($kind) { return; } many_producers_keep_slot_order(config($kind)) }
            // Pins: once the load stops, staged messages nobody awaits still run.
            #[test] $(#[$ignore])? fn quiet_flush() { if common::skip($kind) { return; } nothing_stays_staged(config($kind)) }
            // Pins: futures dropped while waiting in open batches lose nothing else.
            #[test] $(#[$ignore])? fn dropped_open() { if common::skip($kind) { return; } dropped_in_open_batches(config($kind)) }
            // Pins: futures kept unread do not keep other callers out of a full ring.
            #[test] $(#[$ignore])? fn unread_replies() { if common::skip($kind) { return; } unread_replies_do_not_hold_the_ring(config($kind)); }
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
