//! CUDA backends: NVRTC-compiled kernels, the persistent ring, and launch-per-batch.
//!
//! libcuda and NVRTC are loaded at run time; without them every entry point returns
//! [`crate::DeviceError::NoDriver`] / [`crate::DeviceError::NoNvrtc`] rather than panicking.

mod batch;
mod compile;
pub(crate) mod driver;
mod persistent;
mod source;
mod watcher;

use crate::backend::RingBackend;
use crate::error::{DeviceError, RingError};
use crate::kernel::Kernel;
use crate::ring::RingShared;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

/// Knobs of the persistent ring that the `ring` benchmark varies (unstable). Rings started
/// after [`set_tuning`] use them; the defaults are the measured best (docs/BENCHMARKS.md).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Groups of 32 published entries a worker warp examines per pass (1 to 16): it picks out
    /// the entries of its slots and runs them 32 at a time, instead of one pass per 32.
    pub worker_window: u32,
    /// K2H entries the completion thread prefetches ahead of its scan (0: none).
    pub k2h_prefetch: u32,
    /// Whether the completion thread wakes only one future of a finished multi-message run
    /// (it wakes the rest from its own thread) instead of every one of them.
    pub lead_only_wake: bool,
    /// Whether a worker warp takes a short code path when one entry is published.
    pub lone_path: bool,
    /// Whether producers write H2K entries with non-temporal stores (x86_64), so the kernel's
    /// reads find them in memory rather than modified in a producer core's cache.
    pub h2k_streaming: bool,
    /// How often the completion thread sweeps for staged batches nobody sent (a batch goes at
    /// the second sweep that finds it open) and for lead-only wake-ups nobody fanned out.
    pub staged_sweep: std::time::Duration,
    /// Whether the completion thread decodes every finished staged run (`Ring::stage`, one
    /// future per message; not `Ring::submit_batch` batches) into its reply cell before it
    /// wakes the run's futures: they then read with loads only, and the run's ring positions
    /// are free at once. Off: the run's first reader decodes it (and rescues free the ring
    /// when it fills while a run waits for its readers).
    pub decode_on_completion: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            worker_window: 16,
            k2h_prefetch: 8,
            // Lead-only: G2 64 x 256 on 14 workers +18% to +79% in same-run A/Bs on H200
            // machines; callers spinning on replies lose up to 19% (docs/BENCHMARKS.md).
            lead_only_wake: true,
            lone_path: true,
            // Non-temporal H2K stores: the kernel's busy rounds 18.5-19.5 -> 15-16 ns a
            // message on H200 machines (docs/BENCHMARKS.md, 2026-12-02, third session).
            h2k_streaming: true,
            staged_sweep: std::time::Duration::from_micros(100),
            // G2 on one H200 machine, same-run A/Bs: 64 x 256 +5% and +5%, 16 x 256 spinning
            // +6% and +6%, a task per call unchanged, and no rescues (docs/BENCHMARKS.md).
            decode_on_completion: true,
        }
    }
}

static TUNING: Mutex<Option<Tuning>> = Mutex::new(None);

/// Sets the knobs of rings started from now on (benchmarks; unstable).
#[doc(hidden)]
pub fn set_tuning(tuning: Tuning) {
    *TUNING.lock().unwrap_or_else(|e| e.into_inner()) = Some(tuning);
}

fn tuning() -> Tuning {
    TUNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or_default()
}

pub(crate) fn start<K: Kernel>(
    shared: Arc<RingShared<K>>,
    ordinal: usize,
    persistent: Option<bool>,
) -> Result<Box<dyn RingBackend<K>>, RingError> {
    let info = driver::device_info(ordinal)?;
    let shape = source::Shape::new(shared.config.loader_warps, shared.config.worker_warps);
    let ptx = kernel_ptx::<K>(ordinal, info.compute_capability, shape)?;
    let usable = info.can_map_host_memory && !info.kernel_timeout;
    let why = "the device cannot map host memory or has a kernel execution timeout";
    match persistent {
        Some(true) if !usable => Err(DeviceError::PersistentUnusable(why.into()).into()),
        Some(true) => Ok(Box::new(persistent::PersistentBackend::start(
            shared, ordinal, ptx,
        )?)),
        Some(false) => batch::start(shared, ordinal, &ptx),
        None if usable => {
            match persistent::PersistentBackend::start(shared.clone(), ordinal, ptx.clone()) {
                Ok(b) => Ok(Box::new(b)),
                Err(RingError::Device(_)) => batch::start(shared, ordinal, &ptx),
                Err(e) => Err(e),
            }
        }
        None => batch::start(shared, ordinal, &ptx),
    }
}

/// PTX of kernel `K` for a ring kernel of `shape`.
fn kernel_ptx<K: Kernel>(
    ordinal: usize,
    cc: (i32, i32),
    shape: source::Shape,
) -> Result<Arc<std::ffi::CString>, RingError> {
    let (src, _) = source::generate_for::<K>(shape);
    compile::ptx(K::NAME, &src, ordinal, cc)
}

/// The generated CUDA source of kernel `K` for a ring of the default shape (`RingConfig`'s
/// loader and worker warps) and the line its handler starts on.
pub fn generated_source<K: Kernel>() -> (String, usize) {
    source::generate::<K>()
}

/// Compiles kernel `K` for device `ordinal` (NVRTC), returning compile errors with the
/// generated source's line numbers.
pub fn compile<K: Kernel>(ordinal: usize) -> Result<(), RingError> {
    let info = driver::device_info(ordinal)?;
    kernel_ptx::<K>(
        ordinal,
        info.compute_capability,
        source::Shape::of_default_ring(),
    )
    .map(|_| ())
}

/// Measures the GPU HLC stamp: every thread of `blocks` x 256 stamps `iters` times (one
/// reservation, a max and an add, per warp per round). Returns nanoseconds per stamp,
/// amortized over all stamps.
pub fn bench_hlc_stamp<K: Kernel>(
    ordinal: usize,
    blocks: u32,
    iters: u32,
) -> Result<f64, RingError> {
    let info = driver::device_info(ordinal)?;
    let ptx = kernel_ptx::<K>(
        ordinal,
        info.compute_capability,
        source::Shape::of_default_ring(),
    )?;
    let ctx = driver::Context::new(ordinal)?;
    ctx.bind()?;
    let module = driver::Module::load(&ptx)?;
    let stream = driver::new_stream()?;
    let word = driver::DeviceBuffer::zeroed(16)?;
    let mut best = f64::MAX;
    for _ in 0..3 {
        let (mut w, mut off, mut it, mut sink) = (word.ptr, 0i64, iters, word.ptr + 8);
        let mut args: [*mut c_void; 4] = [
            (&mut w as *mut u64).cast(),
            (&mut off as *mut i64).cast(),
            (&mut it as *mut u32).cast(),
            (&mut sink as *mut u64).cast(),
        ];
        let start = std::time::Instant::now();
        // SAFETY: arguments match `silica_hlc_bench`; the buffers live in `ctx`.
        unsafe {
            driver::launch(module.hlc_bench, blocks, 256, stream, &mut args)?;
            cudarc::driver::result::stream::synchronize(stream)
                .map_err(driver::check("cuStreamSynchronize"))?;
        }
        let stamps = f64::from(blocks) * 256.0 * f64::from(iters);
        best = best.min(start.elapsed().as_nanos() as f64 / stamps);
    }
    drop(ctx);
    Ok(best)
}
