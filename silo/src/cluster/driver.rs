//! Async steps that apply the oracle's decisions to a [`MembershipTable`].
//!
//! Each step is one read-decide-write cycle, retried from a fresh read when the table moved on
//! ([`MembershipTableError::VersionMismatch`]). The steps do no timing and no networking: the
//! silo's membership task (a later addition) calls them on its timers, and the test harness
//! calls them directly with a fake clock. With the in-memory table every step completes on its
//! first poll.

use silica_grains::placement::SiloAddress;

use super::oracle::{MembershipAction, MembershipOracle, StopReason};
use super::snapshot::{MembershipEntry, SiloStatus};
use super::table::{MembershipTable, MembershipTableError};
use super::votes::{plan_supersession, plan_suspicion};

/// Why a membership step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// The table failed.
    #[error(transparent)]
    Table(#[from] MembershipTableError),
    /// This silo must stop serving; it takes no further membership steps.
    #[error("silo stopped: {0:?}")]
    Stopped(StopReason),
    /// Other writers won every attempt; the step can be retried later.
    #[error("gave up after {0} conflicting writes")]
    Contention(u32),
}

/// Reads the table into the oracle. Returns whether the view changed.
pub async fn refresh(
    table: &impl MembershipTable,
    oracle: &mut MembershipOracle,
) -> Result<bool, MembershipError> {
    let snapshot = table.read_all().await?;
    Ok(oracle.handle_snapshot(snapshot))
}

// What one attempt of a step did.
enum Step {
    // Wrote its final row.
    Done,
    // Found nothing to write.
    Nothing,
    // Wrote one row of several; go on from a fresh read.
    More,
}

// Runs `step` on fresh reads until it is done, has nothing to write, or attempts run out.
// Returns whether it wrote anything.
async fn with_retries<T: MembershipTable>(
    table: &T,
    oracle: &mut MembershipOracle,
    mut step: impl AsyncFnMut(&T, &MembershipOracle) -> Result<Step, MembershipTableError>,
) -> Result<bool, MembershipError> {
    let mut wrote = false;
    let attempts = oracle.config().max_write_attempts;
    for _ in 0..attempts {
        refresh(table, oracle).await?;
        if let Some(reason) = oracle.stop_decision() {
            return Err(MembershipError::Stopped(reason));
        }
        match step(table, oracle).await {
            Ok(Step::More) => wrote = true,
            Ok(done) => {
                refresh(table, oracle).await?;
                return Ok(wrote || matches!(done, Step::Done));
            }
            Err(MembershipTableError::VersionMismatch { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(MembershipError::Contention(attempts))
}

/// Joins the cluster as `Joining`: first declares dead every older generation at this silo's
/// endpoint (supersession), then inserts this silo's row. A silo that finds a newer generation
/// at its endpoint stops instead.
pub async fn join(
    table: &impl MembershipTable,
    oracle: &mut MembershipOracle,
    now_ms: u64,
) -> Result<(), MembershipError> {
    let me = oracle.me();
    with_retries(table, oracle, async |table, oracle| {
        let view = oracle.view();
        if view.entry(&me).is_some() {
            return Ok(Step::Nothing);
        }
        // A newer generation is caught by the oracle on the retry's read (Superseded).
        let superseded = plan_supersession(view, me).unwrap_or_default();
        if let Some(old) = superseded.into_iter().next() {
            // One row per write (the trait has no multi-row transaction); the next attempt
            // re-reads and goes on with the rest.
            table.update_row(old, view.version).await?;
            return Ok(Step::More);
        }
        let row = MembershipEntry::new(me, SiloStatus::Joining, now_ms);
        table.insert_row(row, view.version).await?;
        Ok(Step::Done)
    })
    .await
    .map(drop)
}

/// Moves this silo's own row to `status` (Joining -> Active when ready to serve, Active ->
/// ShuttingDown -> Dead on a graceful leave).
pub async fn set_status(
    table: &impl MembershipTable,
    oracle: &mut MembershipOracle,
    status: SiloStatus,
    now_ms: u64,
) -> Result<(), MembershipError> {
    let me = oracle.me();
    with_retries(table, oracle, async |table, oracle| {
        let view = oracle.view();
        let Some(row) = view.entry(&me) else {
            return Err(MembershipTableError::NotFound(me));
        };
        if row.status == status {
            return Ok(Step::Nothing);
        }
        let mut row = row.clone();
        row.status = status;
        row.i_am_alive_ms = row.i_am_alive_ms.max(now_ms);
        table.update_row(row, view.version).await?;
        Ok(Step::Done)
    })
    .await
    .map(drop)
}

/// Casts this silo's vote against `suspect` (declaring it dead when the vote completes the
/// count). Returns whether the table now says `suspect` is dead.
pub async fn suspect(
    table: &impl MembershipTable,
    oracle: &mut MembershipOracle,
    suspect: SiloAddress,
    now_ms: u64,
) -> Result<bool, MembershipError> {
    let me = oracle.me();
    with_retries(table, oracle, async |table, oracle| {
        let view = oracle.view();
        let Some(row) = plan_suspicion(view, me, suspect, now_ms, oracle.config()) else {
            return Ok(Step::Nothing);
        };
        table.update_row(row, view.version).await?;
        Ok(Step::Done)
    })
    .await?;
    Ok(oracle.view().is_dead(&suspect))
}

/// Drains the oracle's actions: casts every requested vote. Returns the stop decision when one
/// is (or already was) taken, so the caller shuts the silo down.
pub async fn process_actions(
    table: &impl MembershipTable,
    oracle: &mut MembershipOracle,
) -> Result<Option<StopReason>, MembershipError> {
    while let Some(action) = oracle.poll_action() {
        match action {
            MembershipAction::Suspect { silo, at_ms } => {
                match suspect(table, oracle, silo, at_ms).await {
                    Ok(_) | Err(MembershipError::Stopped(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            MembershipAction::Stop(reason) => return Ok(Some(reason)),
        }
    }
    Ok(oracle.stop_decision())
}

/// Writes this silo's heartbeat (`i_am_alive_ms`).
pub async fn heartbeat(
    table: &impl MembershipTable,
    oracle: &MembershipOracle,
    now_ms: u64,
) -> Result<(), MembershipError> {
    if let Some(reason) = oracle.stop_decision() {
        return Err(MembershipError::Stopped(reason));
    }
    Ok(table.update_i_am_alive(oracle.me(), now_ms).await?)
}
