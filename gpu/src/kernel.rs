//! Kernel definitions: a state, request and response type and one handler per backend.

use silica_grains::gpu::{GpuType, TypeDecls};

/// A GPU grain kernel.
///
/// One ring serves every activation (state slot) of a kernel on a device. The three handlers
/// must compute the same function; the CPU one is the reference the others are tested against.
pub trait Kernel: Send + Sync + 'static {
    /// Per-activation state, resident in device memory.
    type State: GpuType;
    /// A message to an activation.
    type Request: GpuType;
    /// The answer to one request.
    type Response: GpuType;

    /// A C/WGSL identifier naming the kernel (used in sources and the module cache).
    const NAME: &'static str;

    /// CUDA C defining `__device__ void silica_handle(State* state, const Request* req,
    /// Response* resp)`, with the kernel's type names. `resp` arrives zeroed.
    const CUDA_HANDLER: &'static str;

    /// WGSL defining `fn silica_handle(state: ptr<function, State>, req: Request) -> Response`.
    const WGSL_HANDLER: &'static str;

    /// The CPU reference handler.
    fn handle(state: &mut Self::State, request: &Self::Request) -> Self::Response;
}

/// The declarations of a kernel's three types, in dependency order.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))] // used by compiled backends
pub(crate) fn type_decls<K: Kernel>() -> TypeDecls {
    let mut decls = TypeDecls::new();
    K::State::declare(&mut decls);
    K::Request::declare(&mut decls);
    K::Response::declare(&mut decls);
    decls
}

/// The value's bytes.
pub(crate) fn as_bytes<T: GpuType>(value: &T) -> &[u8] {
    // SAFETY: `GpuType` (derived) guarantees `#[repr(C)]`, no padding and only integer/float
    // fields, so every byte of the value is initialized.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

/// A value read from the first `size_of::<T>()` bytes of `bytes`.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))] // used by compiled backends
pub(crate) fn from_bytes<T: GpuType>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>(), "short GpuType buffer");
    // SAFETY: the length was checked; every bit pattern is a valid `GpuType` (integers and
    // floats only), and `read_unaligned` has no alignment requirement.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

/// The all-zero value of `T`.
pub(crate) fn zeroed<T: GpuType>() -> T {
    // SAFETY: all-zero bits are a valid value of a `GpuType` (integers and floats only).
    unsafe { std::mem::zeroed() }
}

/// `source` with every line prefixed by its 1-based number, for compile errors.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))] // used by compiled backends
pub(crate) fn numbered(source: &str) -> String {
    source
        .lines()
        .enumerate()
        .map(|(i, l)| format!("{:5} | {l}\n", i + 1))
        .collect()
}
