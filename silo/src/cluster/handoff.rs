//! Moving directory entries between partitions when the view changes.
//!
//! On a new view every silo (1) drops entries whose activation's silo is dead, (2) sets aside
//! the entries it no longer owns, and (3) sends every other active silo a [`HandOff`] tagged with
//! the view version: the set-aside entries that silo now owns, plus this silo's own hosted
//! activations that silo owns (so entries held by a partition that died are rebuilt from the
//! activations themselves). Every active or leaving silo sends one to every active silo, even
//! when empty, so a receiver knows when it has everything.
//!
//! A receiver takes a hand-off only at its own view version (otherwise the older side refreshes
//! and the sender sends again), merges it first-wins, and acknowledges; the sender deletes the
//! set-aside entries on the acknowledgement. Until every hand-off into its view arrived, a
//! partition refuses requests for grains it did not own throughout ([`DirectoryError::HandOffPending`]),
//! so no entry is in transit while its new owner registers a second activation.

use silica_grains::placement::SiloAddress;
use silica_grains::{GrainId, GrainKey};

use super::address::ActivationAddress;
use super::directory_error::DirectoryError;
use super::partition::DirectoryPartition;
use super::ring::DirectoryRing;
use super::snapshot::{MembershipSnapshot, SiloStatus, TableVersion};

/// Directory entries one silo hands another on entering view `version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandOff {
    /// The sender.
    pub from: SiloAddress,
    /// The receiver (the entries' owner in `version`).
    pub to: SiloAddress,
    /// The view both must be at.
    pub version: TableVersion,
    /// The entries, each owned by `to` in `version`.
    pub entries: Vec<(GrainId, ActivationAddress)>,
    /// Whether this is the sender's last part for `version` (see [`HandOff::into_parts`]): the
    /// receiver counts the sender's hand-off as arrived only then.
    pub last: bool,
}

/// About how many bytes of entries one hand-off part carries at most: a part travels in one
/// frame (16 MiB by default), and one silo's hand-off to another can hold a whole partition.
pub const HANDOFF_PART_BYTES: usize = 4 << 20;

impl HandOff {
    /// This hand-off as parts of about `max_bytes` of entries each, in order; only the final
    /// part has `last` set (an empty hand-off is one part). The receiver merges every part (a
    /// merge is first-wins, so a part sent twice changes nothing) and counts the sender as
    /// arrived at the last one, so a sender sends each part only once the one before it was
    /// acknowledged: no entry is still in transit when the receiver settles.
    pub fn into_parts(self, max_bytes: usize) -> Vec<HandOff> {
        let mut parts = vec![Vec::new()];
        let mut bytes = 0;
        for entry in self.entries {
            let size = entry_bytes(&entry.0);
            if bytes + size > max_bytes && parts.last().is_some_and(|p| !p.is_empty()) {
                parts.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            parts.last_mut().expect("one part at least").push(entry);
        }
        let count = parts.len();
        parts
            .into_iter()
            .enumerate()
            .map(|(i, entries)| HandOff {
                from: self.from,
                to: self.to,
                version: self.version,
                entries,
                last: i + 1 == count,
            })
            .collect()
    }
}

/// An entry's size as encoded, from above: its grain type and key, an activation address, and
/// postcard's lengths and tags.
fn entry_bytes(grain: &GrainId) -> usize {
    let key = match &grain.key {
        GrainKey::String(s) => s.len(),
        GrainKey::IntegerCompound(_, s) => 10 + s.len(),
        _ => 17,
    };
    grain.grain_type.as_str().len() + key + 64
}

/// An activation that lost to an entry already held when entries merged: it escaped the
/// directory, and its silo deactivates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicate {
    /// The grain.
    pub grain: GrainId,
    /// The activation to deactivate.
    pub loser: ActivationAddress,
    /// The registered activation.
    pub winner: ActivationAddress,
}

/// A receiver's answer to a [`HandOff`] it took in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandOffAck {
    /// The receiver.
    pub from: SiloAddress,
    /// The view version of the hand-off.
    pub version: TableVersion,
    /// Entries that lost to an entry already held.
    pub duplicates: Vec<Duplicate>,
}

impl DirectoryPartition {
    /// Enters `view`; `None` (and nothing changes) unless it is newer than the partition's.
    ///
    /// `hosted` are this silo's own activations (from its catalog): those it owns in `view` are
    /// registered here, as other silos' are sent here in their hand-offs, so entries lost with
    /// a dead partition are rebuilt. Returns the hosted activations that lost to a held entry.
    /// The silo then sends [`Self::handoffs`] and retries each until it is acknowledged.
    pub fn handle_view_change<'a>(
        &mut self,
        view: &MembershipSnapshot,
        hosted: impl IntoIterator<Item = (&'a GrainId, &'a ActivationAddress)>,
    ) -> Option<Vec<Duplicate>> {
        if view.version <= self.version() || self.stopped {
            return None;
        }
        if view.is_dead(&self.me) {
            self.handle_stop();
            return Some(Vec::new());
        }
        let ring = DirectoryRing::new(view, self.virtual_nodes);
        let live = |a: &ActivationAddress| !view.is_dead(&a.silo);
        self.entries.retain(|_, a| live(a));
        self.outgoing.retain(|_, a| live(a));
        let moved: Vec<GrainId> = self
            .entries
            .keys()
            .filter(|g| ring.owner(g) != Some(self.me))
            .cloned()
            .collect();
        for grain in moved {
            if let Some(address) = self.entries.remove(&grain) {
                self.outgoing.insert(grain, address);
            }
        }
        // Entries set aside earlier may come back home in this view.
        let back: Vec<GrainId> = self
            .outgoing
            .keys()
            .filter(|g| ring.owner(g) == Some(self.me))
            .cloned()
            .collect();
        for grain in back {
            if let Some(address) = self.outgoing.remove(&grain) {
                self.entries.entry(grain).or_insert(address);
            }
        }
        let others = |keep: fn(SiloStatus) -> bool| {
            view.entries
                .values()
                .filter(|e| e.silo != self.me && keep(e.status))
                .map(|e| e.silo)
                .collect()
        };
        // Only an active silo owns entries, so only it waits for hand-offs (and gets them).
        self.awaiting = if view.status(&self.me) == Some(SiloStatus::Active) {
            others(|s| matches!(s, SiloStatus::Active | SiloStatus::ShuttingDown))
        } else {
            Default::default()
        };
        self.unacked = others(|s| s == SiloStatus::Active);
        self.view = view.clone();
        self.since_settled.push(ring.clone());
        self.ring = ring;
        let duplicates = self.merge(hosted.into_iter().map(|(g, a)| (g.clone(), *a)));
        self.settle_if_complete();
        Some(duplicates)
    }

    /// The hand-offs still unacknowledged in the current view, one per receiver: its set-aside
    /// entries, plus the silo's `hosted` activations (from its catalog) that the receiver owns.
    pub fn handoffs<'a>(
        &self,
        hosted: impl IntoIterator<Item = (&'a GrainId, &'a ActivationAddress)>,
    ) -> Vec<HandOff> {
        let mut out: Vec<HandOff> = self
            .unacked
            .iter()
            .map(|&to| HandOff {
                from: self.me,
                to,
                version: self.version(),
                entries: Vec::new(),
                last: true,
            })
            .collect();
        let hosted = hosted.into_iter().map(|(g, a)| (g, *a));
        for (grain, address) in self.outgoing.iter().map(|(g, a)| (g, *a)).chain(hosted) {
            let owner = self.ring.owner(grain);
            if let Some(h) = out.iter_mut().find(|h| Some(h.to) == owner) {
                h.entries.push((grain.clone(), address));
            }
        }
        out
    }

    /// Takes in a hand-off addressed to this silo at its own view version, first-wins.
    pub fn handle_handoff(&mut self, handoff: HandOff) -> Result<HandOffAck, DirectoryError> {
        let partition = self.version();
        if self.stopped {
            return Err(DirectoryError::NotServing);
        }
        if handoff.version < partition {
            return Err(DirectoryError::StaleView {
                request: handoff.version,
                partition,
            });
        }
        if handoff.version > partition {
            return Err(DirectoryError::PartitionBehind {
                request: handoff.version,
                partition,
            });
        }
        let duplicates = self.merge(handoff.entries);
        if handoff.last {
            self.awaiting.remove(&handoff.from);
            self.settle_if_complete();
        }
        Ok(HandOffAck {
            from: self.me,
            version: partition,
            duplicates,
        })
    }

    /// Takes in a receiver's acknowledgement: the entries it now owns are deleted here. Acks
    /// for another view are ignored (the hand-off of this view is still owed).
    pub fn handle_handoff_ack(&mut self, ack: &HandOffAck) {
        if ack.version != self.version() || !self.unacked.remove(&ack.from) {
            return;
        }
        let ring = &self.ring;
        self.outgoing.retain(|g, _| ring.owner(g) != Some(ack.from));
    }

    /// Silos whose hand-off into the current view has not arrived.
    pub fn awaiting(&self) -> impl Iterator<Item = &SiloAddress> {
        self.awaiting.iter()
    }

    // First-wins merge of entries this partition owns; entries on dead silos are dropped.
    fn merge(
        &mut self,
        entries: impl IntoIterator<Item = (GrainId, ActivationAddress)>,
    ) -> Vec<Duplicate> {
        let mut duplicates = Vec::new();
        for (grain, address) in entries {
            if self.view.is_dead(&address.silo) || self.ring.owner(&grain) != Some(self.me) {
                continue;
            }
            let winner = *self.entries.entry(grain.clone()).or_insert(address);
            if winner != address {
                duplicates.push(Duplicate {
                    grain,
                    loser: address,
                    winner,
                });
            }
        }
        duplicates
    }

    fn settle_if_complete(&mut self) {
        if self.awaiting.is_empty() {
            self.since_settled = vec![self.ring.clone()];
        }
    }
}
