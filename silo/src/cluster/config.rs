//! [`MembershipConfig`]: the failure detector's knobs (Orleans' `ClusterMembershipOptions`).

/// How fast silos suspect and declare each other dead. Times are milliseconds.
///
/// With the defaults a silo that stops answering is suspected after 3 missed probes by each of
/// its (up to 3) monitors and dead once 2 fresh votes are in, so a kill is declared after about
/// `num_missed_probes_limit` probe rounds (C2's budget is 5 s; Orleans' defaults take ~90 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MembershipConfig {
    /// How many other active silos each silo probes (its successors in address order).
    pub num_probed_silos: usize,
    /// Consecutive failed probes after which the prober casts a suspicion vote.
    pub num_missed_probes_limit: u32,
    /// Fresh votes that declare a silo dead; fewer suffice when fewer other silos are active
    /// (then every other active silo must vote).
    pub num_votes_for_death_declaration: usize,
    /// How long a vote counts; older votes are ignored and pruned on the next write.
    pub death_vote_expiration_ms: u64,
    /// How often a silo probes each target (for the driver; the state machine counts results).
    pub probe_period_ms: u64,
    /// How often a silo writes its `i_am_alive_ms` (for the driver).
    pub i_am_alive_period_ms: u64,
    /// Attempts of one read-decide-write cycle before giving up under contention.
    pub max_write_attempts: u32,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            num_probed_silos: 3,
            num_missed_probes_limit: 3,
            num_votes_for_death_declaration: 2,
            death_vote_expiration_ms: 30_000,
            probe_period_ms: 500,
            i_am_alive_period_ms: 5_000,
            max_write_attempts: 16,
        }
    }
}

impl MembershipConfig {
    /// Sets [`Self::num_probed_silos`] (at least 1).
    pub fn with_num_probed_silos(mut self, n: usize) -> Self {
        self.num_probed_silos = n.max(1);
        self
    }

    /// Sets [`Self::num_missed_probes_limit`] (at least 1).
    pub fn with_missed_probes_limit(mut self, n: u32) -> Self {
        self.num_missed_probes_limit = n.max(1);
        self
    }

    /// Sets [`Self::num_votes_for_death_declaration`] (at least 1).
    pub fn with_votes_for_death(mut self, n: usize) -> Self {
        self.num_votes_for_death_declaration = n.max(1);
        self
    }

    /// Sets [`Self::death_vote_expiration_ms`].
    pub fn with_vote_expiration_ms(mut self, ms: u64) -> Self {
        self.death_vote_expiration_ms = ms;
        self
    }
}
