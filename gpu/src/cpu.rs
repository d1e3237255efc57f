//! The CPU reference backend: the kernel's Rust handler, run by the batch driver.

use crate::backend::RingBackend;
use crate::dispatch::{BatchDriver, BatchExecutor, Incoming};
use crate::kernel::{Kernel, zeroed};
use crate::queue::STATUS_OK;
use crate::ring::{BackendKind, RingShared};
use std::sync::Arc;

struct CpuExecutor<K: Kernel> {
    states: Vec<K::State>,
}

impl<K: Kernel> BatchExecutor<K> for CpuExecutor<K> {
    const KIND: BackendKind = BackendKind::Cpu;
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

pub(crate) fn start<K: Kernel>(shared: Arc<RingShared<K>>) -> Box<dyn RingBackend<K>> {
    let states = vec![zeroed::<K::State>(); shared.slots.capacity() as usize];
    Box::new(BatchDriver::start(shared, CpuExecutor::<K> { states }))
}
