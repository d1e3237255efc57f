//! Device enumeration: every CUDA device and every wgpu adapter, with their properties.

/// A CUDA device's properties.
#[derive(Clone, Debug)]
pub struct CudaDeviceInfo {
    /// Device ordinal.
    pub ordinal: usize,
    /// Marketing name.
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Streaming multiprocessors.
    pub multiprocessors: i32,
    /// Device memory in bytes.
    pub total_memory: usize,
    /// Can map pinned host memory (needed by the persistent ring).
    pub can_map_host_memory: bool,
    /// Atomics between device and host are native (not emulated).
    pub host_native_atomics: bool,
    /// Supports cooperative launches.
    pub cooperative_launch: bool,
    /// Has a kernel execution timeout (a display watchdog kills persistent kernels).
    pub kernel_timeout: bool,
}

/// A wgpu adapter's properties.
#[derive(Clone, Debug)]
pub struct WgpuAdapterInfo {
    /// Index in enumeration order (the `device` of a wgpu ring).
    pub index: usize,
    /// Adapter name (e.g. "llvmpipe").
    pub name: String,
    /// Backend (Vulkan, Gl, ...).
    pub backend: String,
    /// Device type (DiscreteGpu, Cpu, ...).
    pub device_type: String,
    /// Driver and its version.
    pub driver: String,
    /// 64-bit integer atomics in shaders.
    pub int64_atomics: bool,
    /// Timestamp queries.
    pub timestamp_queries: bool,
    /// Largest storage buffer binding in bytes.
    pub max_storage_buffer_binding_size: u64,
}

/// Every CUDA device; an error when there is no driver.
#[cfg(feature = "cuda")]
pub fn cuda_devices() -> Result<Vec<CudaDeviceInfo>, crate::DeviceError> {
    crate::cuda::driver::devices()
}

/// Every CUDA device; without the `cuda` feature, an error saying so.
#[cfg(not(feature = "cuda"))]
pub fn cuda_devices() -> Result<Vec<CudaDeviceInfo>, crate::DeviceError> {
    Err(crate::DeviceError::NotCompiled(
        crate::BackendKind::CudaPersistent,
    ))
}

/// Every wgpu adapter (empty when none).
#[cfg(feature = "wgpu")]
pub fn wgpu_adapters() -> Vec<WgpuAdapterInfo> {
    crate::wgpu_backend::adapters()
}

/// Every wgpu adapter; without the `wgpu` feature, none.
#[cfg(not(feature = "wgpu"))]
pub fn wgpu_adapters() -> Vec<WgpuAdapterInfo> {
    Vec::new()
}
