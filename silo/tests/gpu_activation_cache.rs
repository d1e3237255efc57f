//! The caches of GPU activations on the call path (each thread's, and each reference's memo): a
//! thread or reference that called an activation before it was collected (or retired) never
//! reaches the old one again; its next call goes to a fresh activation that resumes from the
//! saved state.

mod gpu_support;

use gpu_support::*;
use silica_silo::Silo;

// Pins that repeated idle collections on the caller's own thread (current-thread runtime, so
// every call after the first finds the activation in that thread's cache and in the reference's
// memo) each end the cached activation: every next call resumes from the state the last one
// saved. Six rounds: more activations than a reference's memo remembers (four), so the last
// rounds take the catalog path.
#[tokio::test(flavor = "current_thread")]
async fn collected_activation_is_not_reached_through_the_cache() {
    let saved = Saved::default();
    let silo = Silo::builder()
        .config(cpu_rings(1, 8))
        .register_gpu_variant_with_store::<TallyCpu, TallyGpu>(saved.clone())
        .start()
        .unwrap();
    let tally: TallyRef = silo.grain_factory().get("cached");
    for round in 1..=6u32 {
        let (total, _) = tally.add(1).await.unwrap();
        assert_eq!(
            total,
            u64::from(round),
            "round {round} resumed the saved total"
        );
        let (total, _) = tally.add(0).await.unwrap();
        assert_eq!(
            total,
            u64::from(round),
            "a cached call reaches the same activation"
        );
        eventually("the idle activation to be collected", || {
            silo.gpu_status()[0].activations == 0
        })
        .await;
    }
    silo.shutdown().await;
}
