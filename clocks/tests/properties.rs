//! Property and concurrency tests of the public clock API.

use proptest::prelude::*;
use silica_clocks::{
    CausalOrder, ClockConfig, ClockError, HlcTimestamp, HybridClock, NodeId, VectorClock,
};
use std::sync::Arc;

const BASE_MS: u64 = 1_700_000_000_000;

fn vector_clock() -> impl Strategy<Value = VectorClock> {
    // Few nodes and small counters so that shared entries, ties and every order occur often.
    prop::collection::vec((0u32..8, 0u64..5), 0..8)
        .prop_map(|pairs| pairs.into_iter().map(|(n, c)| (NodeId(n), c)).collect())
}

fn wide_vector_clock() -> impl Strategy<Value = VectorClock> {
    prop::collection::vec((any::<u32>(), any::<u64>()), 0..16)
        .prop_map(|pairs| pairs.into_iter().map(|(n, c)| (NodeId(n), c)).collect())
}

#[derive(Debug, Clone)]
enum Op {
    Now {
        wall: u64,
    },
    Update {
        received_ms: u64,
        logical: u32,
        node: u32,
        wall: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    // Wall time wanders +-2 s around BASE_MS, so it stalls and goes backwards; received
    // stamps land both inside and outside the 500 ms forward window.
    let wall = BASE_MS - 2_000..BASE_MS + 2_000;
    prop_oneof![
        wall.clone().prop_map(|wall| Op::Now { wall }),
        (
            BASE_MS - 3_000..BASE_MS + 3_000,
            0u32..(1 << 20),
            0u32..4,
            wall
        )
            .prop_map(|(received_ms, logical, node, wall)| Op::Update {
                received_ms,
                logical,
                node,
                wall
            }),
    ]
}

proptest! {
    #[test]
    fn merge_is_commutative(a in vector_clock(), b in vector_clock()) {
        // Pins: a ∨ b == b ∨ a.
        prop_assert_eq!(a.merged(&b), b.merged(&a));
    }

    #[test]
    fn merge_is_associative(a in vector_clock(), b in vector_clock(), c in vector_clock()) {
        // Pins: (a ∨ b) ∨ c == a ∨ (b ∨ c).
        prop_assert_eq!(a.merged(&b).merged(&c), a.merged(&b.merged(&c)));
    }

    #[test]
    fn merge_is_idempotent(a in vector_clock(), b in vector_clock()) {
        // Pins: a ∨ a == a, and merging the same clock twice changes nothing more.
        prop_assert_eq!(a.merged(&a), a.clone());
        let once = a.merged(&b);
        prop_assert_eq!(once.merged(&b), once);
    }

    #[test]
    fn merge_in_place_matches_merged(a in vector_clock(), b in vector_clock()) {
        // Pins that the in-place fast path agrees with the allocating merge.
        let mut m = a.clone();
        m.merge(&b);
        prop_assert_eq!(m, a.merged(&b));
    }

    #[test]
    fn compare_is_mirrored(a in vector_clock(), b in vector_clock()) {
        // Pins: a.compare(b) is the reverse of b.compare(a); Equal iff the clocks are equal.
        prop_assert_eq!(a.compare(&b), b.compare(&a).reverse());
        prop_assert_eq!(a.compare(&b) == CausalOrder::Equal, a == b);
        prop_assert_eq!(a.happened_before(&b), b.compare(&a) == CausalOrder::After);
    }

    #[test]
    fn merged_dominates_inputs(a in vector_clock(), b in vector_clock()) {
        // Pins: the merge is After or Equal to each input, and pointwise the max.
        let m = a.merged(&b);
        prop_assert!(matches!(m.compare(&a), CausalOrder::After | CausalOrder::Equal));
        prop_assert!(matches!(m.compare(&b), CausalOrder::After | CausalOrder::Equal));
        for n in 0..8 {
            prop_assert_eq!(m.get(NodeId(n)), a.get(NodeId(n)).max(b.get(NodeId(n))));
        }
    }

    #[test]
    fn increment_moves_after(a in vector_clock(), n in 0u32..8) {
        // Pins: an increment makes the clock strictly later than before.
        let mut b = a.clone();
        b.increment(NodeId(n));
        prop_assert_eq!(b.compare(&a), CausalOrder::After);
    }

    #[test]
    fn encode_round_trips(a in wide_vector_clock()) {
        // Pins: decode(encode(a)) == a, and encoded_len is exact.
        let bytes = a.encode();
        prop_assert_eq!(bytes.len(), a.encoded_len());
        prop_assert_eq!(VectorClock::decode(&bytes).unwrap(), a);
    }

    #[test]
    fn truncated_encoding_is_rejected(a in wide_vector_clock()) {
        // Pins: every strict prefix of a valid encoding is an error, never a shorter clock.
        let bytes = a.encode();
        for cut in 0..bytes.len() {
            prop_assert!(VectorClock::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        // Pins: arbitrary bytes give a clock or a typed error, never a panic, and whatever
        // decodes re-encodes to the same bytes (the encoding is canonical).
        match VectorClock::decode(&bytes) {
            Ok(c) => prop_assert_eq!(c.encode(), bytes),
            Err(e) => prop_assert!(
                matches!(e, ClockError::MalformedVectorClock { .. }),
                "unexpected error {:?}",
                e
            ),
        }
    }

    #[test]
    fn hlc_never_goes_backwards(ops in prop::collection::vec(op(), 1..200)) {
        // Pins: every stamp is strictly above the previous one whatever the wall time does;
        // update results exceed what they received; rejections leave the clock unchanged.
        let clock = HybridClock::new(NodeId(9), ClockConfig::default());
        let mut prev = clock.last();
        for op in ops {
            match op {
                Op::Now { wall } => {
                    let ts = clock.now(wall);
                    prop_assert!(ts > prev);
                    prop_assert!(ts.physical_ms() >= wall);
                    prev = ts;
                }
                Op::Update { received_ms, logical, node, wall } => {
                    let received = HlcTimestamp::new(received_ms, logical, NodeId(node));
                    match clock.update(received, wall) {
                        Ok(ts) => {
                            prop_assert!(received_ms <= wall + 500);
                            prop_assert!(ts > prev && ts > received);
                            prop_assert!(ts.physical_ms() >= wall);
                            prev = ts;
                        }
                        Err(ClockError::TooFarAhead { received_ms: r, local_ms, max_offset_ms }) => {
                            prop_assert_eq!((r, local_ms, max_offset_ms), (received_ms, wall, 500));
                            prop_assert!(received_ms > wall + 500);
                            prop_assert_eq!(clock.last(), prev);
                        }
                        Err(e) => prop_assert!(false, "unexpected error {:?}", e),
                    }
                }
            }
            prop_assert_eq!(clock.last(), prev);
        }
    }

    #[test]
    fn timestamp_bytes_round_trip(hlc in any::<u64>(), node in any::<u32>()) {
        // Pins: from_bytes(to_bytes(t)) == t for every timestamp.
        let ts = HlcTimestamp::from_hlc(hlc, NodeId(node));
        prop_assert_eq!(HlcTimestamp::from_bytes(&ts.to_bytes()), ts);
    }

    #[test]
    fn timestamp_order_is_hlc_then_node(a in any::<(u64, u32)>(), b in any::<(u64, u32)>()) {
        // Pins: timestamp order equals lexicographic (hlc, node) order.
        let ta = HlcTimestamp::from_hlc(a.0, NodeId(a.1));
        let tb = HlcTimestamp::from_hlc(b.0, NodeId(b.1));
        prop_assert_eq!(ta.cmp(&tb), a.cmp(&b));
    }
}

#[test]
fn concurrent_now_is_unique_and_increasing() {
    // Pins lock-freedom correctness: 8 threads x 100k now() calls on one clock give
    // all-distinct stamps, strictly increasing within each thread.
    const THREADS: usize = 8;
    const PER_THREAD: usize = 100_000;
    let clock = Arc::new(HybridClock::new(NodeId(1), ClockConfig::default()));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let clock = Arc::clone(&clock);
            std::thread::spawn(move || {
                // Mixed wall times: some threads lag, so the counter does the ordering.
                let wall = BASE_MS + (t as u64 % 3);
                let mut out = Vec::with_capacity(PER_THREAD);
                for i in 0..PER_THREAD {
                    out.push(clock.now(wall + (i as u64 / 50_000)).hlc);
                }
                out
            })
        })
        .collect();
    let mut all = Vec::with_capacity(THREADS * PER_THREAD);
    for h in handles {
        let stamps = h.join().unwrap();
        assert!(
            stamps.windows(2).all(|w| w[0] < w[1]),
            "per-thread order broken"
        );
        all.extend(stamps);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), THREADS * PER_THREAD, "duplicate stamps");
    assert_eq!(clock.last().hlc, *all.last().unwrap());
}

#[test]
fn logical_overflow_carries_into_physical() {
    // Pins the documented carry: with a frozen wall clock, 2^20 + 5 stamps stay strictly
    // increasing and the 2^20-th overflow moves into the next millisecond.
    let clock = HybridClock::new(NodeId(1), ClockConfig::default());
    let mut prev = clock.now(BASE_MS);
    assert_eq!((prev.physical_ms(), prev.logical()), (BASE_MS, 0));
    for _ in 1..(1u64 << 20) + 5 {
        let ts = clock.now(BASE_MS);
        assert!(ts > prev);
        prev = ts;
    }
    assert_eq!((prev.physical_ms(), prev.logical()), (BASE_MS + 1, 4));
    // Wall time catching up does not reuse the carried millisecond.
    assert!(clock.now(BASE_MS + 1) > prev);
}
