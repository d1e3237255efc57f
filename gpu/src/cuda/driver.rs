//! Thin, checked wrappers over the CUDA driver API (cudarc's `sys`/`result` layers), a ring's
//! own context, and device enumeration. Nothing here touches the driver before
//! [`ensure_driver`] has confirmed that libcuda loads (cudarc panics otherwise).

use crate::devices::CudaDeviceInfo;
use crate::error::DeviceError;
use cudarc::driver::sys::{self, CUdevice_attribute as Attr};
use cudarc::driver::{DriverError, result};
use std::ffi::c_void;
use std::sync::OnceLock;

/// Maps a driver error of `call` to a [`DeviceError`].
pub(crate) fn check(call: &'static str) -> impl Fn(DriverError) -> DeviceError {
    move |e| DeviceError::Driver {
        call,
        message: format!("{e:?}"),
    }
}

/// Confirms libcuda loads and `cuInit` succeeds (once per process).
pub(crate) fn ensure_driver() -> Result<(), DeviceError> {
    static INIT: OnceLock<Result<(), DeviceError>> = OnceLock::new();
    INIT.get_or_init(|| {
        // SAFETY: only probes whether the library can be opened.
        if !unsafe { sys::is_culib_present() } {
            return Err(DeviceError::NoDriver);
        }
        result::init().map_err(check("cuInit"))
    })
    .clone()
}

/// Confirms NVRTC loads.
pub(crate) fn ensure_nvrtc() -> Result<(), DeviceError> {
    // SAFETY: only probes whether the library can be opened.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(DeviceError::NoNvrtc)
    }
}

fn attr(dev: sys::CUdevice, a: Attr) -> Result<i32, DeviceError> {
    // SAFETY: `dev` came from `cuDeviceGet`.
    unsafe { result::device::get_attribute(dev, a) }.map_err(check("cuDeviceGetAttribute"))
}

/// Properties of device `ordinal`.
pub(crate) fn device_info(ordinal: usize) -> Result<CudaDeviceInfo, DeviceError> {
    ensure_driver()?;
    let count = result::device::get_count().map_err(check("cuDeviceGetCount"))? as usize;
    if ordinal >= count {
        return Err(DeviceError::NoSuchDevice(ordinal));
    }
    let dev = result::device::get(ordinal as i32).map_err(check("cuDeviceGet"))?;
    Ok(CudaDeviceInfo {
        ordinal,
        name: result::device::get_name(dev).map_err(check("cuDeviceGetName"))?,
        compute_capability: (
            attr(dev, Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            attr(dev, Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        ),
        multiprocessors: attr(dev, Attr::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
        // SAFETY: `dev` came from `cuDeviceGet`.
        total_memory: unsafe { result::device::total_mem(dev) }
            .map_err(check("cuDeviceTotalMem"))?,
        can_map_host_memory: attr(dev, Attr::CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY)? != 0,
        host_native_atomics: attr(dev, Attr::CU_DEVICE_ATTRIBUTE_HOST_NATIVE_ATOMIC_SUPPORTED)?
            != 0,
        cooperative_launch: attr(dev, Attr::CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH)? != 0,
        kernel_timeout: attr(dev, Attr::CU_DEVICE_ATTRIBUTE_KERNEL_EXEC_TIMEOUT)? != 0,
    })
}

/// Every CUDA device.
pub(crate) fn devices() -> Result<Vec<CudaDeviceInfo>, DeviceError> {
    ensure_driver()?;
    let count = result::device::get_count().map_err(check("cuDeviceGetCount"))? as usize;
    (0..count).map(device_info).collect()
}

/// A context of its own for one ring, so that a sticky fault (illegal address) in one ring's
/// kernel is cleared by destroying this context alone.
pub(crate) struct Context {
    ctx: sys::CUcontext,
}

// SAFETY: a CUcontext handle may be used from any thread once made current there.
unsafe impl Send for Context {}
// SAFETY: as above; the driver API is thread-safe.
unsafe impl Sync for Context {}

impl Context {
    pub(crate) fn new(ordinal: usize) -> Result<Self, DeviceError> {
        ensure_driver()?;
        let dev =
            result::device::get(ordinal as i32).map_err(|_| DeviceError::NoSuchDevice(ordinal))?;
        // SAFETY: `dev` is valid; null creation parameters are allowed.
        let ctx = unsafe { result::ctx::create_v4(std::ptr::null_mut(), 0, dev) }
            .map_err(check("cuCtxCreate"))?;
        Ok(Self { ctx })
    }

    /// Makes the context current on the calling thread.
    pub(crate) fn bind(&self) -> Result<(), DeviceError> {
        // SAFETY: the context is alive until `self` drops.
        unsafe { result::ctx::set_current(self.ctx) }.map_err(check("cuCtxSetCurrent"))
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once; this frees its allocations and host
        // registrations, so nothing may use them afterwards (owners drop before the context).
        unsafe {
            let _ = sys::cuCtxDestroy_v2(self.ctx);
        }
    }
}

/// Registers host memory as pinned and mapped (`DEVICEMAP`, cacheable: the host reads K2H),
/// returning its device address. Registered rather than `cuMemHostAlloc`ed so the memory
/// outlives a context torn down by a fault.
///
/// # Safety
/// `ptr..ptr+len` is a live allocation that outlives the registration (the context).
pub(crate) unsafe fn register_host(ptr: *mut u8, len: usize) -> Result<u64, DeviceError> {
    let flags = sys::CU_MEMHOSTREGISTER_DEVICEMAP | sys::CU_MEMHOSTREGISTER_PORTABLE;
    // SAFETY: the caller guarantees the range is live.
    unsafe { sys::cuMemHostRegister_v2(ptr.cast::<c_void>(), len, flags) }
        .result()
        .map_err(check("cuMemHostRegister"))?;
    let mut dptr: sys::CUdeviceptr = 0;
    // SAFETY: `ptr` was registered with DEVICEMAP just above.
    unsafe { sys::cuMemHostGetDevicePointer_v2(&mut dptr, ptr.cast::<c_void>(), 0) }
        .result()
        .map_err(check("cuMemHostGetDevicePointer"))?;
    Ok(dptr)
}

/// A zeroed device allocation (plain `cuMemAlloc`, no managed memory).
pub(crate) struct DeviceBuffer {
    pub(crate) ptr: sys::CUdeviceptr,
    pub(crate) len: usize,
}

impl DeviceBuffer {
    pub(crate) fn zeroed(len: usize) -> Result<Self, DeviceError> {
        let len = len.max(16);
        // SAFETY: the ring's context is current on this thread (callers bind first).
        let ptr = unsafe { result::malloc_sync(len) }.map_err(check("cuMemAlloc"))?;
        // SAFETY: `ptr` is a fresh allocation of `len` bytes.
        unsafe { result::memset_d8_sync(ptr, 0, len) }.map_err(check("cuMemsetD8"))?;
        Ok(Self { ptr, len })
    }

    /// Copies `bytes` to `offset` (synchronous: it may run beside the persistent kernel,
    /// because the context's streams are non-blocking and nothing uses the NULL stream).
    pub(crate) fn write(
        &self,
        offset: usize,
        bytes: &[u8],
        stream: sys::CUstream,
    ) -> Result<(), DeviceError> {
        assert!(offset + bytes.len() <= self.len);
        // SAFETY: the range is inside the allocation; the stream belongs to this context.
        unsafe {
            result::memcpy_htod_async(self.ptr + offset as u64, bytes, stream)
                .map_err(check("cuMemcpyHtoDAsync"))?;
            result::stream::synchronize(stream).map_err(check("cuStreamSynchronize"))
        }
    }

    /// Copies `out.len()` bytes from `offset`.
    pub(crate) fn read(
        &self,
        offset: usize,
        out: &mut [u8],
        stream: sys::CUstream,
    ) -> Result<(), DeviceError> {
        assert!(offset + out.len() <= self.len);
        // SAFETY: the range is inside the allocation; the stream belongs to this context.
        unsafe {
            result::memcpy_dtoh_async(out, self.ptr + offset as u64, stream)
                .map_err(check("cuMemcpyDtoHAsync"))?;
            result::stream::synchronize(stream).map_err(check("cuStreamSynchronize"))
        }
    }
}

/// A non-blocking stream (never the NULL stream).
pub(crate) fn new_stream() -> Result<sys::CUstream, DeviceError> {
    result::stream::create(result::stream::StreamKind::NonBlocking).map_err(check("cuStreamCreate"))
}

/// Whether a stream's work finished: `Ok(true)` done, `Ok(false)` running, `Err` faulted.
pub(crate) fn stream_done(stream: sys::CUstream) -> Result<bool, DeviceError> {
    // SAFETY: the stream belongs to the current context.
    match unsafe { sys::cuStreamQuery(stream) } {
        sys::CUresult::CUDA_SUCCESS => Ok(true),
        sys::CUresult::CUDA_ERROR_NOT_READY => Ok(false),
        e => Err(DeviceError::Driver {
            call: "cuStreamQuery",
            message: format!("{e:?}"),
        }),
    }
}

/// A loaded module's functions.
pub(crate) struct Module {
    pub(crate) ring: sys::CUfunction,
    pub(crate) batch: sys::CUfunction,
    pub(crate) probe: sys::CUfunction,
    pub(crate) hlc_bench: sys::CUfunction,
}

impl Module {
    pub(crate) fn load(ptx: &std::ffi::CStr) -> Result<Self, DeviceError> {
        // SAFETY: `ptx` is NUL-terminated PTX text; the context is current.
        let module = unsafe { result::module::load_data(ptx.as_ptr().cast::<c_void>()) }
            .map_err(check("cuModuleLoadData"))?;
        let get = |name: &str| {
            let name = std::ffi::CString::new(name).expect("static name");
            // SAFETY: the module was just loaded; it lives as long as the context.
            unsafe { result::module::get_function(module, name) }
                .map_err(check("cuModuleGetFunction"))
        };
        Ok(Self {
            ring: get("silica_ring")?,
            batch: get("silica_batch")?,
            probe: get("silica_clock_probe")?,
            hlc_bench: get("silica_hlc_bench")?,
        })
    }
}

/// Launches `f`.
///
/// # Safety
/// `params` point to values matching the kernel's parameter list, valid until the launch
/// has read them (the driver copies them before returning).
pub(crate) unsafe fn launch(
    f: sys::CUfunction,
    grid: u32,
    block: u32,
    stream: sys::CUstream,
    params: &mut [*mut c_void],
) -> Result<(), DeviceError> {
    // SAFETY: forwarded from the caller.
    unsafe { result::launch_kernel(f, (grid, 1, 1), (block, 1, 1), 0, stream, params) }
        .map_err(check("cuLaunchKernel"))
}
