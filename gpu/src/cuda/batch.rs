//! The CUDA launch-per-batch backend: each round is copied to the device, handled by one
//! kernel launch (one thread per message) and copied back.

use super::driver::{Context, DeviceBuffer, Module, launch, new_stream};
use crate::backend::RingBackend;
use crate::clock::wall_ns;
use crate::dispatch::{BatchDriver, BatchExecutor, Incoming};
use crate::error::{DeviceError, RingError};
use crate::kernel::{Kernel, as_bytes, from_bytes};
use crate::ring::{BackendKind, RingShared};
use crate::wire::HEADER;
use cudarc::driver::{result, sys};
use std::ffi::{CString, c_void};
use std::sync::Arc;

struct Exec {
    stream: sys::CUstream,
    module: Module,
    states: DeviceBuffer,
    msgs: DeviceBuffer,
    out: DeviceBuffer,
    hlc: DeviceBuffer,
    offset_ns: i64,
    host_in: Vec<u8>,
    host_out: Vec<u8>,
    h2k_stride: usize,
    k2h_stride: usize,
    slots: u32,
    ctx: Context,
}

// SAFETY: the raw handles belong to `ctx`, bound on the dispatcher thread before each use.
unsafe impl Send for Exec {}

impl<K: Kernel> BatchExecutor<K> for Exec {
    const KIND: BackendKind = BackendKind::CudaBatch;
    fn execute(
        &mut self,
        round: &[Incoming<K::Request>],
        out: &mut Vec<(K::Response, u32, u64)>,
    ) -> Result<(), String> {
        self.run::<K>(round, out).map_err(|e| e.to_string())
    }
    fn write_state(&mut self, slot: u32, state: &K::State) -> Result<(), String> {
        self.ctx.bind().map_err(|e| e.to_string())?;
        self.states
            .write(
                slot as usize * size_of::<K::State>(),
                as_bytes(state),
                self.stream,
            )
            .map_err(|e| e.to_string())
    }
    fn read_state(&mut self, slot: u32) -> Result<K::State, String> {
        self.ctx.bind().map_err(|e| e.to_string())?;
        let mut bytes = vec![0u8; size_of::<K::State>()];
        self.states
            .read(
                slot as usize * size_of::<K::State>(),
                &mut bytes,
                self.stream,
            )
            .map_err(|e| e.to_string())?;
        Ok(from_bytes(&bytes))
    }
}

impl Exec {
    fn run<K: Kernel>(
        &mut self,
        round: &[Incoming<K::Request>],
        out: &mut Vec<(K::Response, u32, u64)>,
    ) -> Result<(), DeviceError> {
        self.ctx.bind()?;
        let n = round.len();
        self.host_in.resize(n * self.h2k_stride, 0);
        for (i, m) in round.iter().enumerate() {
            let e = &mut self.host_in[i * self.h2k_stride..(i + 1) * self.h2k_stride];
            e[4..8].copy_from_slice(&m.slot.to_le_bytes());
            e[8..16].copy_from_slice(&m.hlc.to_le_bytes());
            e[HEADER..HEADER + size_of::<K::Request>()].copy_from_slice(as_bytes(&m.request));
        }
        self.host_out.resize(n * self.k2h_stride, 0);
        let (mut states, mut msgs, mut outp, mut hlc) =
            (self.states.ptr, self.msgs.ptr, self.out.ptr, self.hlc.ptr);
        let (mut count, mut hs, mut ks, mut slots, mut off) = (
            n as u32,
            self.h2k_stride as u32,
            self.k2h_stride as u32,
            self.slots,
            self.offset_ns,
        );
        let mut args: [*mut c_void; 9] = [
            (&mut states as *mut u64).cast(),
            (&mut msgs as *mut u64).cast(),
            (&mut outp as *mut u64).cast(),
            (&mut count as *mut u32).cast(),
            (&mut hs as *mut u32).cast(),
            (&mut ks as *mut u32).cast(),
            (&mut slots as *mut u32).cast(),
            (&mut hlc as *mut u64).cast(),
            (&mut off as *mut i64).cast(),
        ];
        // SAFETY: buffers are sized for `max_batch` entries and rounds never exceed it; the
        // arguments match `silica_batch`'s parameter list; one sync at the end orders it all.
        unsafe {
            result::memcpy_htod_async(self.msgs.ptr, &self.host_in[..], self.stream)
                .map_err(super::driver::check("cuMemcpyHtoDAsync"))?;
            launch(
                self.module.batch,
                (n as u32).div_ceil(128),
                128,
                self.stream,
                &mut args,
            )?;
            result::memcpy_dtoh_async(&mut self.host_out[..], self.out.ptr, self.stream)
                .map_err(super::driver::check("cuMemcpyDtoHAsync"))?;
            result::stream::synchronize(self.stream)
                .map_err(super::driver::check("cuStreamSynchronize"))?;
        }
        for i in 0..n {
            let e = &self.host_out[i * self.k2h_stride..(i + 1) * self.k2h_stride];
            let status = u32::from_le_bytes(e[4..8].try_into().expect("4 bytes"));
            let hlc = u64::from_le_bytes(e[8..16].try_into().expect("8 bytes"));
            out.push((from_bytes(&e[HEADER..]), status, hlc));
        }
        Ok(())
    }
}

pub(crate) fn start<K: Kernel>(
    shared: Arc<RingShared<K>>,
    ordinal: usize,
    ptx: &CString,
) -> Result<Box<dyn RingBackend<K>>, RingError> {
    let ctx = Context::new(ordinal)?;
    ctx.bind()?;
    let module = Module::load(ptx)?;
    let stream = new_stream()?;
    let q = &shared.queue;
    let max = shared.config.max_batch.max(1) as usize;
    let hlc = DeviceBuffer::zeroed(16)?;
    hlc.write(0, &shared.clock.last().to_le_bytes(), stream)?;
    let offset_ns = {
        let out = DeviceBuffer::zeroed(8)?;
        let mut p = out.ptr;
        let mut args = [(&mut p as *mut u64).cast::<c_void>()];
        let before = wall_ns();
        // SAFETY: one pointer argument to an 8-byte device buffer.
        unsafe { launch(module.probe, 1, 1, stream, &mut args)? };
        let mut b = [0u8; 8];
        out.read(0, &mut b, stream)?;
        ((before / 2 + wall_ns() / 2) as i64).wrapping_sub(u64::from_le_bytes(b) as i64)
    };
    let exec = Exec {
        stream,
        states: DeviceBuffer::zeroed(shared.slots.capacity() as usize * size_of::<K::State>())?,
        msgs: DeviceBuffer::zeroed(max * q.h2k_stride)?,
        out: DeviceBuffer::zeroed(max * q.k2h_stride)?,
        hlc,
        offset_ns,
        host_in: Vec::new(),
        host_out: Vec::new(),
        h2k_stride: q.h2k_stride,
        k2h_stride: q.k2h_stride,
        slots: shared.slots.capacity(),
        module,
        ctx,
    };
    Ok(Box::new(BatchDriver::start(shared, exec)))
}
