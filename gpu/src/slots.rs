//! The table of state slots: one per activation, allocated and freed by the host.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

/// An activation's index in a ring's state table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(pub u32);

/// What the host knows about a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotStatus {
    /// Not allocated.
    Free,
    /// Activated: accepts messages.
    Active,
    /// Its state was lost in a fault; calls fail until it is deactivated.
    Lost,
    /// Being deactivated: accepts no new messages.
    Closing,
}

const FREE: u8 = 0;
const ACTIVE: u8 = 1;
const LOST: u8 = 2;
const CLOSING: u8 = 3;

#[derive(Debug)]
pub(crate) struct SlotTable {
    status: Box<[AtomicU8]>,
    free: Mutex<Vec<u32>>,
}

impl SlotTable {
    pub(crate) fn new(capacity: u32) -> Self {
        Self {
            status: (0..capacity).map(|_| AtomicU8::new(FREE)).collect(),
            free: Mutex::new((0..capacity).rev().collect()),
        }
    }

    pub(crate) fn capacity(&self) -> u32 {
        self.status.len() as u32
    }

    /// Takes a free slot (not yet active: call [`SlotTable::set_active`] once its state is set).
    pub(crate) fn allocate(&self) -> Option<SlotId> {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .map(SlotId)
    }

    pub(crate) fn set_active(&self, slot: SlotId) {
        self.status[slot.0 as usize].store(ACTIVE, Ordering::SeqCst);
    }

    pub(crate) fn release(&self, slot: SlotId) {
        self.status[slot.0 as usize].store(FREE, Ordering::SeqCst);
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(slot.0);
    }

    pub(crate) fn status(&self, slot: SlotId) -> SlotStatus {
        match self
            .status
            .get(slot.0 as usize)
            .map(|s| s.load(Ordering::SeqCst))
        {
            Some(ACTIVE) => SlotStatus::Active,
            Some(LOST) => SlotStatus::Lost,
            Some(CLOSING) => SlotStatus::Closing,
            _ => SlotStatus::Free,
        }
    }

    /// Moves an active or lost slot to closing; returns its previous status.
    pub(crate) fn close(&self, slot: SlotId) -> SlotStatus {
        let Some(cell) = self.status.get(slot.0 as usize) else {
            return SlotStatus::Free;
        };
        for from in [ACTIVE, LOST] {
            if cell
                .compare_exchange(from, CLOSING, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return if from == ACTIVE {
                    SlotStatus::Active
                } else {
                    SlotStatus::Lost
                };
            }
        }
        self.status(slot)
    }

    /// Marks every active slot lost; returns them.
    pub(crate) fn lose_all(&self) -> Vec<SlotId> {
        let mut lost = Vec::new();
        for (i, cell) in self.status.iter().enumerate() {
            if cell
                .compare_exchange(ACTIVE, LOST, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                lost.push(SlotId(i as u32));
            }
        }
        lost
    }

    pub(crate) fn active_count(&self) -> usize {
        self.status
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) == ACTIVE)
            .count()
    }
}
