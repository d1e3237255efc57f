//! Pure decisions on a view: the row a vote, a join or a supersession writes.
//!
//! Each function reads one [`MembershipSnapshot`] and returns the rows to write; the driver
//! writes them conditional on that snapshot's version, so a decision taken from a stale view is
//! never applied (it is re-taken from a fresh read instead).

use silica_grains::placement::SiloAddress;

use super::config::MembershipConfig;
use super::snapshot::{MembershipEntry, MembershipSnapshot, SiloStatus, SuspicionVote};

/// The fresh votes needed to declare `suspect` dead in `view`: the configured number, or every
/// other active silo when fewer are active (at least one, so a lone survivor can still decide).
pub fn votes_required(
    view: &MembershipSnapshot,
    suspect: &SiloAddress,
    config: &MembershipConfig,
) -> usize {
    let others = view.active_silos().iter().filter(|s| *s != suspect).count();
    config.num_votes_for_death_declaration.min(others).max(1)
}

/// The row that records `voter`'s vote against `suspect` at `now_ms`: expired votes pruned, the
/// voter's older vote replaced, and the status set to `Dead` when enough fresh votes are in.
///
/// `None` when there is nothing to write: the suspect has no row or is already dead, or the
/// voter is not an active member of `view` (a joining or dead silo's opinion does not count).
pub fn plan_suspicion(
    view: &MembershipSnapshot,
    voter: SiloAddress,
    suspect: SiloAddress,
    now_ms: u64,
    config: &MembershipConfig,
) -> Option<MembershipEntry> {
    if voter == suspect || view.status(&voter) != Some(SiloStatus::Active) {
        return None;
    }
    let row = view.entry(&suspect)?;
    if row.status == SiloStatus::Dead {
        return None;
    }
    let mut row = row.clone();
    let expiry = config.death_vote_expiration_ms;
    row.suspicions
        .retain(|v| v.voter != voter && now_ms.saturating_sub(v.at_ms) <= expiry);
    row.suspicions.push(SuspicionVote {
        voter,
        at_ms: now_ms,
    });
    if row.suspicions.len() >= votes_required(view, &suspect, config) {
        row.status = SiloStatus::Dead;
    }
    Some(row)
}

/// The rows a new incarnation `me` must mark dead before it joins: every live row at the same
/// endpoint with an older generation (the process restarted; its old activations are gone).
///
/// `Err(newer)` when a row at the same endpoint has a *newer* generation: `me` is itself
/// superseded and must not join.
pub fn plan_supersession(
    view: &MembershipSnapshot,
    me: SiloAddress,
) -> Result<Vec<MembershipEntry>, SiloAddress> {
    let mut superseded = Vec::new();
    for row in view.entries.values() {
        if row.silo.endpoint != me.endpoint || row.silo == me {
            continue;
        }
        if row.silo.generation > me.generation {
            return Err(row.silo);
        }
        if row.status != SiloStatus::Dead {
            let mut dead = row.clone();
            dead.status = SiloStatus::Dead;
            superseded.push(dead);
        }
    }
    Ok(superseded)
}

/// The newer incarnation at `me`'s endpoint in `view`, if one exists.
pub fn superseded_by(view: &MembershipSnapshot, me: &SiloAddress) -> Option<SiloAddress> {
    view.entries
        .keys()
        .find(|s| s.endpoint == me.endpoint && s.generation > me.generation)
        .copied()
}
