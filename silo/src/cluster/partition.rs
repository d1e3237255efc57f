//! [`DirectoryPartition`]: the grain directory entries one silo owns, fenced by view version.
//!
//! Requests carry the view version the caller routed with; the partition answers only when it
//! is at exactly that version and owns the grain in it, so a silo with a stale view can neither
//! register nor be asked to. Hand-offs between views live in [`super::handoff`].

use std::collections::{BTreeSet, HashMap};

use silica_grains::GrainId;
use silica_grains::placement::SiloAddress;

use super::address::ActivationAddress;
use super::directory_error::DirectoryError;
use super::ring::DirectoryRing;
use super::snapshot::{MembershipSnapshot, SiloStatus, TableVersion};

/// The outcome of a [`DirectoryPartition::register`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// The caller's activation is now the grain's activation.
    Registered(ActivationAddress),
    /// Another activation was registered first; the caller forwards to it and deactivates its
    /// own.
    Existing(ActivationAddress),
}

impl Registration {
    /// The grain's activation after the call, whoever won.
    pub fn winner(&self) -> ActivationAddress {
        match *self {
            Registration::Registered(a) | Registration::Existing(a) => a,
        }
    }
}

/// The directory entries one silo owns in its current view (Orleans' `GrainDirectoryPartition`).
#[derive(Clone, Debug)]
pub struct DirectoryPartition {
    pub(super) me: SiloAddress,
    pub(super) virtual_nodes: u32,
    pub(super) view: MembershipSnapshot,
    pub(super) ring: DirectoryRing,
    /// Rings of every view taken in since the last one whose hand-offs all arrived, oldest
    /// first, current last. A grain owned here in all of them never had another owner that
    /// could have registered it, so it is served before the hand-offs complete.
    pub(super) since_settled: Vec<DirectoryRing>,
    /// Silos whose hand-off into the current view has not arrived.
    pub(super) awaiting: BTreeSet<SiloAddress>,
    /// Silos that have not acknowledged this silo's hand-off into the current view.
    pub(super) unacked: BTreeSet<SiloAddress>,
    /// Entries owned here.
    pub(super) entries: HashMap<GrainId, ActivationAddress>,
    /// Entries owned elsewhere in the current view, kept until their new owner acknowledges.
    pub(super) outgoing: HashMap<GrainId, ActivationAddress>,
    pub(super) stopped: bool,
}

impl DirectoryPartition {
    /// The (empty) partition of silo `me`, with `virtual_nodes` ring points per silo.
    pub fn new(me: SiloAddress, virtual_nodes: u32) -> Self {
        let view = MembershipSnapshot::default();
        let ring = DirectoryRing::new(&view, virtual_nodes);
        Self {
            me,
            virtual_nodes,
            // The empty ring owns nothing: before its first settled view a silo serves no grain
            // until every hand-off arrived (it cannot know who registered what before it).
            since_settled: vec![ring.clone()],
            ring,
            view,
            awaiting: BTreeSet::new(),
            unacked: BTreeSet::new(),
            entries: HashMap::new(),
            outgoing: HashMap::new(),
            stopped: false,
        }
    }

    /// The view version the partition answers at.
    pub fn version(&self) -> TableVersion {
        self.ring.version()
    }

    /// The ring of the current view.
    pub fn ring(&self) -> &DirectoryRing {
        &self.ring
    }

    /// The entries owned here (for tests and diagnostics).
    pub fn entries(&self) -> impl Iterator<Item = (&GrainId, &ActivationAddress)> {
        self.entries.iter()
    }

    /// Whether every hand-off into the current view has arrived.
    pub fn is_settled(&self) -> bool {
        self.awaiting.is_empty()
    }

    /// Stops the partition for good (the silo was declared dead): every request is refused.
    pub fn handle_stop(&mut self) {
        self.stopped = true;
        self.entries.clear();
        self.outgoing.clear();
    }

    /// Registers `address` as `grain`'s activation unless one is registered: first wins.
    pub fn register(
        &mut self,
        version: TableVersion,
        grain: GrainId,
        address: ActivationAddress,
    ) -> Result<Registration, DirectoryError> {
        self.check(version, &grain)?;
        if self.view.status(&address.silo) != Some(SiloStatus::Active) {
            return Err(DirectoryError::SiloNotActive(address.silo));
        }
        Ok(match self.entries.entry(grain) {
            std::collections::hash_map::Entry::Occupied(e) => Registration::Existing(*e.get()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(address);
                Registration::Registered(address)
            }
        })
    }

    /// The registered activation of `grain`, if any.
    pub fn lookup(
        &self,
        version: TableVersion,
        grain: &GrainId,
    ) -> Result<Option<ActivationAddress>, DirectoryError> {
        self.check(version, grain)?;
        Ok(self.entries.get(grain).copied())
    }

    /// Removes `grain`'s entry if it still names `address` (a deactivation, or a caller that
    /// found `address` gone). Returns whether it removed anything.
    pub fn unregister(
        &mut self,
        version: TableVersion,
        grain: &GrainId,
        address: ActivationAddress,
    ) -> Result<bool, DirectoryError> {
        self.check(version, grain)?;
        if self.entries.get(grain) == Some(&address) {
            self.entries.remove(grain);
            return Ok(true);
        }
        Ok(false)
    }

    // The fence: exact view version, ownership, and completeness of this grain's entries.
    fn check(&self, version: TableVersion, grain: &GrainId) -> Result<(), DirectoryError> {
        let partition = self.version();
        if self.stopped {
            return Err(DirectoryError::NotServing);
        }
        if version < partition {
            return Err(DirectoryError::StaleView {
                request: version,
                partition,
            });
        }
        if version > partition {
            return Err(DirectoryError::PartitionBehind {
                request: version,
                partition,
            });
        }
        let owner = self.ring.owner(grain);
        if owner != Some(self.me) {
            return Err(DirectoryError::NotOwner {
                owner,
                version: partition,
            });
        }
        if !self.awaiting.is_empty()
            && !self
                .since_settled
                .iter()
                .all(|r| r.owner(grain) == Some(self.me))
        {
            return Err(DirectoryError::HandOffPending { version: partition });
        }
        Ok(())
    }
}
