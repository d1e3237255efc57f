//! Leaving the cluster: the graceful leave `Silo::shutdown` runs in two halves around the
//! deactivation of the silo's grains, and the crash tests simulate.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use silica_clocks::wall_clock_ms;

use super::{ClusterNode, Phase, lock};
use crate::cluster::{SiloStatus, driver};

impl ClusterNode {
    /// First half of a graceful leave: the table says `ShuttingDown`, so the directory moves
    /// this silo's partition to the others and no silo places new activations here.
    pub(crate) async fn begin_leave(self: &Arc<Self>) {
        if self.phase() != Phase::Active {
            return;
        }
        let mut oracle = self.oracle.lock().await;
        let now = wall_clock_ms();
        match driver::set_status(
            &self.config.table,
            &mut oracle,
            SiloStatus::ShuttingDown,
            now,
        )
        .await
        {
            Ok(()) => self.apply_view(oracle.view()),
            Err(e) => tracing::warn!(error = %e, "could not mark this silo as leaving"),
        }
    }

    /// Second half, after the activations were deactivated: waits (at most `leave_timeout`)
    /// for their entries to be unregistered and the partition's hand-offs acknowledged, then
    /// marks the row `Dead`, gives the lease back and stops the membership task.
    pub(crate) async fn finish_leave(self: &Arc<Self>) {
        let joined = self.phase() == Phase::Active;
        // GPU activations are not retired through the catalog: their entries go now.
        let left: Vec<_> = self.hosted_snapshot();
        for (grain, _) in left {
            self.on_deactivated(&grain);
        }
        let deadline = tokio::time::Instant::now() + self.config.leave_timeout;
        while joined && tokio::time::Instant::now() < deadline {
            let handed_off = lock(&self.partition)
                .handoffs(std::iter::empty())
                .is_empty();
            if self.hosted.is_empty()
                && self.unregistering.load(Ordering::Acquire) == 0
                && handed_off
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if joined {
            let mut oracle = self.oracle.lock().await;
            let now = wall_clock_ms();
            if let Err(e) =
                driver::set_status(&self.config.table, &mut oracle, SiloStatus::Dead, now).await
            {
                tracing::warn!(error = %e, "could not mark this silo as left");
            }
            if let Some(lease) = self.lease.lock().await.take()
                && let Err(e) = lease.revoke().await
            {
                tracing::warn!(error = %e, "could not revoke the store lease");
            }
        }
        self.set_phase(Phase::Ended("left the cluster".into()));
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if joined {
            // Keep the links up (refusing calls with `ShuttingDown`) until the others have
            // read the new view and dropped their cached entries here, so no call finds a
            // closed link to this silo.
            tokio::time::sleep(self.config.refresh_period * 2).await;
        }
    }

    /// Stops the membership task without telling anyone (a crash, for tests).
    pub(crate) async fn crash(&self) {
        self.set_phase(Phase::Ended("crashed".into()));
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}
