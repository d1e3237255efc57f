//! GPU variants on real backends: wgpu (Mesa lavapipe in CI) and CUDA (`#[ignore]`d without a
//! GPU; run on the GPU machine with `--include-ignored`). The device-lost test lives in
//! `gpu_cuda_device_lost.rs`: a sticky CUDA error poisons the whole process.

#![cfg(any(feature = "wgpu", feature = "cuda"))]

mod gpu_support;

use gpu_support::*;
use silica_gpu::{BackendChoice, BackendKind};
use silica_silo::Silo;

/// Exactly one ring of `kind`, on device 0.
fn on(kind: BackendKind) -> Vec<BackendChoice> {
    vec![BackendChoice::Exact { kind, device: 0 }]
}

#[cfg(feature = "wgpu")]
mod wgpu {
    use super::*;

    // Pins the GPU variant on wgpu: the same reference reaches the kernel's WGSL handler.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gpu_variant_runs_on_wgpu() {
        if silica_gpu::devices::wgpu_adapters().is_empty() {
            eprintln!("no wgpu adapter on this machine (install mesa-vulkan-drivers)");
            return;
        }
        let silo = Silo::builder()
            .config(devices(on(BackendKind::Wgpu), 16))
            .register_gpu_variant::<TallyCpu, TallyGpu>()
            .start()
            .unwrap();
        let tally: TallyRef = silo.grain_factory().get("w");
        assert_eq!(tally.add(3).await.unwrap(), (3, 1));
        assert_eq!(tally.add(4).await.unwrap(), (7, 2));
        assert!(tally.served_by().await.unwrap().starts_with("wgpu on "));
        silo.shutdown().await;
    }

    // Pins the compile-failure fallback: a GPU variant whose WGSL does not compile leaves the
    // CPU implementation serving, and the status carries naga's error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_kernel_that_does_not_compile_leaves_the_cpu_implementation_serving() {
        let silo = Silo::builder()
            .config(devices(on(BackendKind::Wgpu), 16))
            .register_gpu_variant::<TallyCpu, TallyBroken>()
            .start()
            .unwrap();
        let tally: TallyRef = silo.grain_factory().get("b");
        assert_eq!(tally.add(5).await.unwrap(), (5, 1));
        assert_eq!(tally.served_by().await.unwrap(), "cpu");
        let status = &silo.gpu_status()[0];
        assert!(!status.on_device());
        let problems = status.problems.join("\n");
        assert!(problems.contains("no_such_field"), "{problems}");
        silo.shutdown().await;
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::time::Duration;

    use silica_grains::CallError;
    use silica_silo::SiloConfig;
    use silica_silo::gpu::{GpuConfig, GpuDevices};

    use super::*;

    // Pins the GPU variant on the persistent CUDA ring and on launch-per-batch: same answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a CUDA GPU"]
    async fn gpu_variant_runs_on_cuda() {
        for kind in [BackendKind::CudaPersistent, BackendKind::CudaBatch] {
            let silo = Silo::builder()
                .config(devices(on(kind), 1024))
                .register_gpu_variant::<TallyCpu, TallyGpu>()
                .start()
                .unwrap();
            let tally: TallyRef = silo.grain_factory().get("c");
            let calls: Vec<_> = (0..100).map(|_| tally.add(2)).collect();
            let results = futures_util::future::join_all(calls).await;
            for (i, result) in results.into_iter().enumerate() {
                let n = i as u32 + 1;
                assert_eq!(result.unwrap(), (u64::from(2 * n), n), "{kind:?}");
            }
            let served_by = tally.served_by().await.unwrap();
            assert!(served_by.starts_with("CUDA "), "{served_by}");
            silo.shutdown().await;
        }
    }

    // Pins the NVRTC compile-failure fallback: the CPU implementation serves and the status
    // carries NVRTC's log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a CUDA GPU"]
    async fn a_cuda_kernel_that_does_not_compile_leaves_the_cpu_implementation_serving() {
        let silo = Silo::builder()
            .config(devices(on(BackendKind::CudaPersistent), 16))
            .register_gpu_variant::<TallyCpu, TallyBroken>()
            .start()
            .unwrap();
        let tally: TallyRef = silo.grain_factory().get("b");
        assert_eq!(tally.add(5).await.unwrap(), (5, 1));
        assert_eq!(tally.served_by().await.unwrap(), "cpu");
        let problems = silo.gpu_status()[0].problems.join("\n");
        assert!(problems.contains("no_such_field"), "{problems}");
        silo.shutdown().await;
    }

    // Pins a heartbeat stall: the call in flight ends with `GpuFault`, the ring restarts, and
    // the next call to the same grain gets a fresh activation on the device.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a CUDA GPU"]
    async fn a_stalled_kernel_fails_the_call_in_flight_and_recovers() {
        let mut gpu = GpuConfig {
            devices: GpuDevices::Exact(on(BackendKind::CudaPersistent)),
            slots_per_device: 16,
            ..GpuConfig::default()
        };
        gpu.ring.stall_timeout = Duration::from_millis(300);
        let config = SiloConfig {
            gpu,
            ..SiloConfig::default()
        };
        let silo = Silo::builder()
            .config(config)
            .register_gpu_variant::<HazardCpu, HazardGpu>()
            .start()
            .unwrap();
        let hazard: HazardRef = silo.grain_factory().get("h");
        assert_eq!(hazard.run(0, 7).await.unwrap(), 7);
        let error = hazard.run(1, 3_000).await.unwrap_err();
        assert!(matches!(error, CallError::GpuFault { .. }), "{error}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match hazard.run(0, 9).await {
                Ok(answer) => {
                    assert_eq!(answer, 9);
                    break;
                }
                Err(e) => assert!(std::time::Instant::now() < deadline, "no recovery: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(hazard.served_by().await.unwrap().starts_with("CUDA "));
        silo.shutdown().await;
    }
}
