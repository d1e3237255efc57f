//! wgpu: adapter enumeration. Batched compute dispatch is not implemented yet; starting a wgpu
//! ring returns [`DeviceError::Wgpu`] saying so.

use crate::backend::RingBackend;
use crate::devices::WgpuAdapterInfo;
use crate::error::{DeviceError, RingError};
use crate::kernel::Kernel;
use crate::ring::RingShared;
use std::sync::Arc;

/// Every adapter wgpu finds (Vulkan, GL; lavapipe shows as device type Cpu).
pub(crate) fn adapters() -> Vec<WgpuAdapterInfo> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .into_iter()
        .enumerate()
        .map(|(index, adapter)| {
            let info = adapter.get_info();
            let features = adapter.features();
            WgpuAdapterInfo {
                index,
                name: info.name,
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                driver: format!("{} {}", info.driver, info.driver_info),
                int64_atomics: features.contains(wgpu::Features::SHADER_INT64_ATOMIC_ALL_OPS),
                timestamp_queries: features.contains(wgpu::Features::TIMESTAMP_QUERY),
                max_storage_buffer_binding_size: adapter.limits().max_storage_buffer_binding_size,
            }
        })
        .collect()
}

pub(crate) fn start<K: Kernel>(
    _: Arc<RingShared<K>>,
    device: usize,
) -> Result<Box<dyn RingBackend<K>>, RingError> {
    if adapters().get(device).is_none() {
        return Err(DeviceError::NoAdapter.into());
    }
    Err(DeviceError::Wgpu("batched dispatch is not implemented yet".into()).into())
}
