//! The staging workloads of `ring_staging` on the persistent CUDA ring with
//! `Tuning::decode_on_completion` off: a finished run's first reader decodes it, and the
//! completion thread rescues unread entries into their cells when the ring fills. The default
//! decodes every run as it completes, so only this binary runs those paths; the tuning is
//! process-wide, hence a binary of its own.
#![cfg(feature = "cuda")]

mod common;
mod staging;
use silica_gpu::cuda::{Tuning, set_tuning};
use silica_gpu::{BackendKind, RingConfig};
use staging::*;
use std::sync::Once;

/// The persistent ring's test config, with callers decoding their own replies.
fn reader_decode() -> RingConfig {
    static TUNING: Once = Once::new();
    TUNING.call_once(|| {
        set_tuning(Tuning {
            decode_on_completion: false,
            ..Tuning::default()
        });
    });
    common::config(BackendKind::CudaPersistent)
}

macro_rules! reader_decode_tests {
    ($($name:ident: $workload:ident;)*) => {
        $(
            #[test]
            #[ignore = "needs a CUDA GPU"]
            fn $name() {
                $workload(reader_decode());
            }
        )*
    };
}

reader_decode_tests! {
    burst: burst_then_await;
    across_threads: order_across_threads;
    marked_across_threads: marked_order_across_threads;
    unpolled: unpolled_message_runs;
    dropped: dropped_futures_free_the_ring;
    full_ring: full_ring_keeps_order;
    many_producers: many_producers_keep_slot_order;
    quiet_flush: nothing_stays_staged;
    dropped_open: dropped_in_open_batches;
}

// Pins: with callers decoding their own replies, unread replies that fill the ring are
// rescued into their cells (the rescue counter moves), and their futures still read them.
#[test]
#[ignore = "needs a CUDA GPU"]
fn unread_replies_are_rescued() {
    let ring = unread_replies_do_not_hold_the_ring(reader_decode());
    let rescued = ring
        .backend_stats()
        .into_iter()
        .find(|(name, _)| *name == "completion_rescued_entries")
        .map(|(_, n)| n);
    assert!(rescued.is_some_and(|n| n > 0), "no rescue ran: {rescued:?}");
}
