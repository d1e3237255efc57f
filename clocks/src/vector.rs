//! Sparse vector clocks for causal tracking along call chains.

use crate::varint::{self, Reader, malformed};
use crate::{ClockError, NodeId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::fmt;

/// How two vector clocks relate causally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CausalOrder {
    /// The left clock happened before the right one.
    Before,
    /// The left clock happened after the right one.
    After,
    /// Both clocks are the same.
    Equal,
    /// Neither happened before the other.
    Concurrent,
}

impl CausalOrder {
    /// The same relation seen from the other side (`Before` <-> `After`).
    pub fn reverse(self) -> Self {
        match self {
            CausalOrder::Before => CausalOrder::After,
            CausalOrder::After => CausalOrder::Before,
            other => other,
        }
    }
}

/// A sparse vector clock: `(node, counter)` entries sorted by node, no zero counters.
///
/// A node with no entry has counter 0, so a clock that travels with a call chain only
/// grows with the nodes that chain touched. Serialized (serde) as the sequence of pairs;
/// [`VectorClock::encode`] gives a compact varint form for envelopes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct VectorClock {
    entries: Vec<(NodeId, u64)>,
}

impl VectorClock {
    /// An empty clock: every counter 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter of `node` (0 if absent).
    pub fn get(&self, node: NodeId) -> u64 {
        match self.find(node) {
            Ok(i) => self.entries[i].1,
            Err(_) => 0,
        }
    }

    /// Records an event on `node` and returns its new counter. Saturates at `u64::MAX`.
    pub fn increment(&mut self, node: NodeId) -> u64 {
        match self.find(node) {
            Ok(i) => {
                let counter = &mut self.entries[i].1;
                *counter = counter.saturating_add(1);
                *counter
            }
            Err(i) => {
                self.entries.insert(i, (node, 1));
                1
            }
        }
    }

    /// Pointwise maximum with `other`, in place.
    pub fn merge(&mut self, other: &VectorClock) {
        if other.entries.is_empty() {
            return;
        }
        // Same node set is the common case on a call chain; avoid reallocating.
        if self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|(a, b)| a.0 == b.0)
        {
            for (mine, theirs) in self.entries.iter_mut().zip(&other.entries) {
                mine.1 = mine.1.max(theirs.1);
            }
            return;
        }
        self.entries = self.merged(other).entries;
    }

    /// Pointwise maximum of `self` and `other`.
    pub fn merged(&self, other: &VectorClock) -> VectorClock {
        let (a, b) = (&self.entries, &other.entries);
        let mut entries = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            match a[i].0.cmp(&b[j].0) {
                Ordering::Less => {
                    entries.push(a[i]);
                    i += 1;
                }
                Ordering::Greater => {
                    entries.push(b[j]);
                    j += 1;
                }
                Ordering::Equal => {
                    entries.push((a[i].0, a[i].1.max(b[j].1)));
                    i += 1;
                    j += 1;
                }
            }
        }
        entries.extend_from_slice(&a[i..]);
        entries.extend_from_slice(&b[j..]);
        VectorClock { entries }
    }

    /// How `self` relates causally to `other`.
    pub fn compare(&self, other: &VectorClock) -> CausalOrder {
        let (a, b) = (&self.entries, &other.entries);
        // `less`: some counter of self is below other's; `greater`: some is above.
        let (mut less, mut greater) = (false, false);
        let (mut i, mut j) = (0, 0);
        while (i < a.len() || j < b.len()) && !(less && greater) {
            let order = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.0.cmp(&y.0),
                (Some(_), None) => Ordering::Less,
                (None, _) => Ordering::Greater,
            };
            match order {
                // Node only in self: self has a non-zero counter where other has 0.
                Ordering::Less => {
                    greater = true;
                    i += 1;
                }
                Ordering::Greater => {
                    less = true;
                    j += 1;
                }
                Ordering::Equal => {
                    match a[i].1.cmp(&b[j].1) {
                        Ordering::Less => less = true,
                        Ordering::Greater => greater = true,
                        Ordering::Equal => {}
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        match (less, greater) {
            (false, false) => CausalOrder::Equal,
            (true, false) => CausalOrder::Before,
            (false, true) => CausalOrder::After,
            (true, true) => CausalOrder::Concurrent,
        }
    }

    /// Whether `self` happened strictly before `other`.
    pub fn happened_before(&self, other: &VectorClock) -> bool {
        self.compare(other) == CausalOrder::Before
    }

    /// Number of nodes with a non-zero counter.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether every counter is 0.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The non-zero entries, sorted by node.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (NodeId, u64)> + DoubleEndedIterator + '_ {
        self.entries.iter().copied()
    }

    /// The non-zero entries as a slice, sorted by node.
    pub fn as_slice(&self) -> &[(NodeId, u64)] {
        &self.entries
    }

    /// Compact encoding: varint count, then per entry a varint node delta (the first node
    /// as is, then the gap to the previous node) and a varint counter.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Appends [`Self::encode`]'s bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        varint::write(out, self.entries.len() as u64);
        let mut prev = 0;
        for &(node, counter) in &self.entries {
            varint::write(out, u64::from(node.0 - prev));
            varint::write(out, counter);
            prev = node.0;
        }
    }

    /// Length of [`Self::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        let mut prev = 0;
        let mut len = varint::len(self.entries.len() as u64);
        for &(node, counter) in &self.entries {
            len += varint::len(u64::from(node.0 - prev)) + varint::len(counter);
            prev = node.0;
        }
        len
    }

    /// Inverse of [`Self::encode`]; the input must be exactly one encoded clock.
    pub fn decode(bytes: &[u8]) -> Result<VectorClock, ClockError> {
        let (clock, used) = Self::decode_prefix(bytes)?;
        if used != bytes.len() {
            return Err(malformed(used, "trailing bytes"));
        }
        Ok(clock)
    }

    /// Decodes one clock from the start of `bytes`; returns it and the bytes consumed.
    pub fn decode_prefix(bytes: &[u8]) -> Result<(VectorClock, usize), ClockError> {
        let mut r = Reader::new(bytes);
        let count = r.read()?;
        // Each entry takes at least two bytes; checking first bounds the allocation.
        if count > (r.remaining() / 2) as u64 {
            return Err(malformed(0, "entry count exceeds input"));
        }
        let mut entries = Vec::with_capacity(count as usize);
        let mut prev: Option<u32> = None;
        for _ in 0..count {
            let at = r.pos();
            let delta = r.read()?;
            let node = match prev {
                None => u32::try_from(delta).map_err(|_| malformed(at, "node id overflows u32"))?,
                Some(_) if delta == 0 => return Err(malformed(at, "duplicate node")),
                Some(p) => u64::from(p)
                    .checked_add(delta)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| malformed(at, "node id overflows u32"))?,
            };
            let at = r.pos();
            let counter = r.read()?;
            if counter == 0 {
                return Err(malformed(at, "zero counter"));
            }
            entries.push((NodeId(node), counter));
            prev = Some(node);
        }
        Ok((VectorClock { entries }, r.pos()))
    }

    fn find(&self, node: NodeId) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&node, |e| e.0)
    }
}

impl TryFrom<Vec<(NodeId, u64)>> for VectorClock {
    type Error = ClockError;

    /// Accepts entries only in canonical form: strictly increasing nodes, no zero counter.
    /// `offset` in the error is the entry index.
    fn try_from(entries: Vec<(NodeId, u64)>) -> Result<Self, Self::Error> {
        for (i, &(node, counter)) in entries.iter().enumerate() {
            if counter == 0 {
                return Err(malformed(i, "zero counter"));
            }
            if i > 0 && entries[i - 1].0 >= node {
                return Err(malformed(i, "nodes not strictly increasing"));
            }
        }
        Ok(VectorClock { entries })
    }
}

impl FromIterator<(NodeId, u64)> for VectorClock {
    /// Normalizes any entries: sorts them, keeps the maximum of duplicates, drops zeros.
    fn from_iter<I: IntoIterator<Item = (NodeId, u64)>>(iter: I) -> Self {
        let mut entries: Vec<_> = iter.into_iter().filter(|e| e.1 != 0).collect();
        entries.sort_unstable();
        // After sorting, the last of each run of equal nodes holds the maximum.
        entries.reverse();
        entries.dedup_by_key(|e| e.0);
        entries.reverse();
        VectorClock { entries }
    }
}

impl<'a> IntoIterator for &'a VectorClock {
    type Item = (NodeId, u64);
    type IntoIter = std::iter::Copied<std::slice::Iter<'a, (NodeId, u64)>>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().copied()
    }
}

impl fmt::Display for VectorClock {
    /// `{node:counter, ...}`, e.g. `{1:3, 4:1}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (node, counter)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{node}:{counter}")?;
        }
        f.write_str("}")
    }
}

impl Serialize for VectorClock {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(&self.entries)
    }
}

impl<'de> Deserialize<'de> for VectorClock {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = Vec::<(NodeId, u64)>::deserialize(deserializer)?;
        VectorClock::try_from(entries).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vc(pairs: &[(u32, u64)]) -> VectorClock {
        pairs.iter().map(|&(n, c)| (NodeId(n), c)).collect()
    }

    #[test]
    fn increment_and_get() {
        // Pins sparse storage: absent nodes read 0, increment inserts in sorted position.
        let mut c = VectorClock::new();
        assert_eq!(c.get(NodeId(5)), 0);
        assert_eq!(c.increment(NodeId(5)), 1);
        assert_eq!(c.increment(NodeId(2)), 1);
        assert_eq!(c.increment(NodeId(5)), 2);
        assert_eq!(c.as_slice(), &[(NodeId(2), 1), (NodeId(5), 2)]);
        assert_eq!(c.len(), 2);
        assert!(!c.is_empty());
    }

    #[test]
    fn merge_is_pointwise_max() {
        // Pins merge over disjoint, shared, and same-node-set clocks.
        let mut a = vc(&[(1, 3), (3, 1)]);
        a.merge(&vc(&[(1, 1), (2, 4), (3, 2)]));
        assert_eq!(a, vc(&[(1, 3), (2, 4), (3, 2)]));
        a.merge(&vc(&[(1, 9), (2, 1), (3, 1)]));
        assert_eq!(a, vc(&[(1, 9), (2, 4), (3, 2)]));
        a.merge(&VectorClock::new());
        assert_eq!(a, vc(&[(1, 9), (2, 4), (3, 2)]));
    }

    #[test]
    fn compare_covers_all_orders() {
        // Pins each CausalOrder outcome, including absent-as-zero entries.
        let a = vc(&[(1, 1)]);
        let b = vc(&[(1, 1), (2, 1)]);
        let c = vc(&[(1, 2)]);
        assert_eq!(a.compare(&a), CausalOrder::Equal);
        assert_eq!(a.compare(&b), CausalOrder::Before);
        assert_eq!(b.compare(&a), CausalOrder::After);
        assert_eq!(b.compare(&c), CausalOrder::Concurrent);
        assert_eq!(VectorClock::new().compare(&a), CausalOrder::Before);
        assert!(a.happened_before(&b) && !b.happened_before(&a) && !a.happened_before(&a));
    }

    #[test]
    fn from_iter_normalizes() {
        // Pins that collecting sorts, keeps the max of duplicates, and drops zeros.
        let c: VectorClock = [
            (NodeId(3), 1),
            (NodeId(1), 2),
            (NodeId(3), 5),
            (NodeId(2), 0),
        ]
        .into_iter()
        .collect();
        assert_eq!(c.as_slice(), &[(NodeId(1), 2), (NodeId(3), 5)]);
    }

    #[test]
    fn encoding_is_compact_and_round_trips() {
        // Pins the byte format: count, then node delta and counter varints.
        let c = vc(&[(0, 1), (2, 300), (u32::MAX, u64::MAX)]);
        let bytes = c.encode();
        assert_eq!(&bytes[..6], &[3, 0, 1, 2, 0xAC, 0x02]);
        assert_eq!(bytes.len(), c.encoded_len());
        assert_eq!(VectorClock::decode(&bytes).unwrap(), c);
        assert_eq!(VectorClock::new().encode(), vec![0]);
    }

    #[test]
    fn decode_rejects_malformed_input() {
        // Pins a typed error for each kind of malformed input.
        let cases: [(&[u8], &str); 7] = [
            (&[], "truncated varint"),
            (&[1, 5], "entry count exceeds input"),
            (&[2, 1, 1, 0, 1], "duplicate node"),
            (&[1, 1, 0], "zero counter"),
            (&[0, 0], "trailing bytes"),
            (
                &[1, 0xFF, 0xFF, 0xFF, 0xFF, 0x10, 1],
                "node id overflows u32",
            ),
            (
                &[2, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 1, 1, 1],
                "node id overflows u32",
            ),
        ];
        for (bytes, want) in cases {
            match VectorClock::decode(bytes) {
                Err(ClockError::MalformedVectorClock { reason, .. }) => {
                    assert_eq!(reason, want, "{bytes:?}")
                }
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn decode_prefix_reports_consumed() {
        // Pins that a clock embedded in a larger frame can be decoded in place.
        let mut buf = vc(&[(7, 2)]).encode();
        buf.extend_from_slice(&[0xAA, 0xBB]);
        let (c, used) = VectorClock::decode_prefix(&buf).unwrap();
        assert_eq!((c, used), (vc(&[(7, 2)]), buf.len() - 2));
    }

    #[test]
    fn serde_is_strict_pairs() {
        // Pins the serde form (sorted pairs) and that non-canonical pairs are rejected.
        let c = vc(&[(1, 2), (4, 1)]);
        let bytes = postcard::to_allocvec(&c).unwrap();
        assert_eq!(
            bytes,
            postcard::to_allocvec(&vec![(1u32, 2u64), (4, 1)]).unwrap()
        );
        assert_eq!(postcard::from_bytes::<VectorClock>(&bytes).unwrap(), c);
        let unsorted = postcard::to_allocvec(&vec![(4u32, 1u64), (1, 2)]).unwrap();
        assert!(postcard::from_bytes::<VectorClock>(&unsorted).is_err());
        let zero = postcard::to_allocvec(&vec![(4u32, 0u64)]).unwrap();
        assert!(postcard::from_bytes::<VectorClock>(&zero).is_err());
    }

    #[test]
    fn display_lists_entries() {
        // Pins the log format of a vector clock.
        assert_eq!(vc(&[(1, 3), (4, 1)]).to_string(), "{1:3, 4:1}");
        assert_eq!(VectorClock::new().to_string(), "{}");
    }
}
