//! The CPU reference backend: the kernel's Rust handler, run by the batch driver.

use crate::backend::RingBackend;
use crate::dispatch::{BatchDriver, BatchExecutor, Incoming};
use crate::error::RingError;
use crate::kernel::{Kernel, zeroed};
use crate::queue::STATUS_OK;
use crate::ring::{BackendKind, RingShared};
use crate::slots::SlotId;
use std::sync::Arc;

struct CpuExecutor<K: Kernel> {
    states: Vec<K::State>,
}

impl<K: Kernel> BatchExecutor<K> for CpuExecutor<K> {
    fn execute(
        &mut self,
        round: &[Incoming<K::Request>],
        out: &mut Vec<(K::Response, u32, u64)>,
    ) -> Result<(), String> {
        for msg in round {
            out.push((
                K::handle(&mut self.states[msg.slot as usize], &msg.request),
                STATUS_OK,
                0,
            ));
        }
        Ok(())
    }

    fn write_state(&mut self, slot: u32, state: &K::State) -> Result<(), String> {
        self.states[slot as usize] = *state;
        Ok(())
    }

    fn read_state(&mut self, slot: u32) -> Result<K::State, String> {
        Ok(self.states[slot as usize])
    }
}

struct CpuBackend<K: Kernel>(BatchDriver<K, CpuExecutor<K>>);

impl<K: Kernel> RingBackend<K> for CpuBackend<K> {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }
    fn write_state(&self, slot: SlotId, state: &K::State) -> Result<(), RingError> {
        self.0.write_state(slot, state)
    }
    fn read_state(&self, slot: SlotId) -> Result<K::State, RingError> {
        self.0.read_state(slot)
    }
    fn shutdown(&self) {
        self.0.shutdown();
    }
}

pub(crate) fn start<K: Kernel>(shared: Arc<RingShared<K>>) -> Box<dyn RingBackend<K>> {
    let states = vec![zeroed::<K::State>(); shared.slots.capacity() as usize];
    Box::new(CpuBackend(BatchDriver::start(
        shared,
        CpuExecutor::<K> { states },
    )))
}
