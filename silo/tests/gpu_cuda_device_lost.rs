//! A device lost under a GPU variant (a kernel writing to an illegal address leaves a sticky
//! CUDA error: the device is unusable to this process). Alone in its file because the error
//! poisons every CUDA context of the process.

mod gpu_support;

#[cfg(feature = "cuda")]
mod cuda {
    use silica_grains::CallError;
    use silica_silo::Silo;

    use super::gpu_support::*;

    // Pins device loss: the call in flight fails with `GpuFault`, later calls to that type are
    // served by its CPU implementation, and other grain types never notice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a CUDA GPU"]
    async fn a_lost_device_fails_calls_in_flight_then_the_cpu_implementation_serves() {
        let silo = Silo::builder()
            .config(cuda_persistent(16))
            .register_gpu_variant::<HazardCpu, HazardGpu>()
            .register::<TallyCpu>()
            .start()
            .unwrap();
        let factory = silo.grain_factory();
        let hazard: HazardRef = factory.get("h");
        assert!(hazard.served_by().await.unwrap().starts_with("CUDA "));
        assert_eq!(hazard.run(0, 1).await.unwrap(), 1);
        let error = hazard.run(2, 0).await.unwrap_err();
        assert!(matches!(error, CallError::GpuFault { .. }), "{error}");
        let other: HazardRef = factory.get("other");
        assert_eq!(other.run(0, 5).await.unwrap(), 5);
        assert_eq!(other.served_by().await.unwrap(), "cpu");
        assert!(!silo.gpu_status()[0].on_device());
        let tally: TallyRef = factory.get("t");
        assert_eq!(tally.add(2).await.unwrap(), (2, 1));
        silo.shutdown().await;
    }
}
