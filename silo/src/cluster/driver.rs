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

// One conditional write a step decided on, and whether more writes follow it.
struct Write {
    row: MembershipEntry,
    insert: bool,
    more: bool,
}

impl Write {
    fn update(row: MembershipEntry) -> Self {
        Self {
            row,
            insert: false,
            more: false,
        }
    }
}

// Runs `plan` on fresh reads and applies its write, conditional on the read's version, until
// it has nothing more to write or attempts run out. Returns whether it wrote anything.
//
// The planner is a plain closure (decisions are pure) so the returned future stays `Send`;
// async closures would make it lifetime-generic and lose that.
async fn with_retries<T: MembershipTable>(
    table: &T,
    oracle: &mut MembershipOracle,
    mut plan: impl FnMut(&MembershipOracle) -> Result<Option<Write>, MembershipTableError>,
) -> Result<bool, MembershipError> {
    let attempts = oracle.config().max_write_attempts;
    let mut wrote = false;
    for _ in 0..attempts {
        refresh(table, oracle).await?;
        if let Some(reason) = oracle.stop_decision() {
            return Err(MembershipError::Stopped(reason));
        }
        let Some(write) = plan(oracle)? else {
            return Ok(wrote);
        };
        let expected = oracle.view().version;
        let result = if write.insert {
            table.insert_row(write.row, expected).await
        } else {
            table.update_row(write.row, expected).await
        };
        match result {
            Ok(_) => {
                wrote = true;
                if !write.more {
                    refresh(table, oracle).await?;
                    return Ok(true);
                }
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
    with_retries(table, oracle, |oracle| {
        let view = oracle.view();
        if view.entry(&me).is_some() {
            return Ok(None);
        }
        // A newer generation is caught by the oracle on the next read (Superseded).
        let superseded = plan_supersession(view, me).unwrap_or_default();
        // One row per write (the trait has no multi-row transaction); the next attempt
        // re-reads and goes on with the rest, then inserts.
        Ok(Some(match superseded.into_iter().next() {
            Some(old) => Write {
                row: old,
                insert: false,
                more: true,
            },
            None => Write {
                row: MembershipEntry::new(me, SiloStatus::Joining, now_ms),
                insert: true,
                more: false,
            },
        }))
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
    with_retries(table, oracle, |oracle| {
        let row = oracle
            .view()
            .entry(&me)
            .ok_or(MembershipTableError::NotFound(me))?;
        if row.status == status {
            return Ok(None);
        }
        let mut row = row.clone();
        row.status = status;
        row.i_am_alive_ms = row.i_am_alive_ms.max(now_ms);
        Ok(Some(Write::update(row)))
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
    with_retries(table, oracle, |oracle| {
        let row = plan_suspicion(oracle.view(), me, suspect, now_ms, oracle.config());
        Ok(row.map(Write::update))
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
