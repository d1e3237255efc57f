//! The invariants the sims check on [`SimCluster`] between steps.

use std::collections::BTreeMap;

use silica_grains::GrainId;
use silica_silo::cluster::{ActivationAddress, MembershipTable};

use super::host::SimCluster;
use super::ready;

impl SimCluster {
    /// Single activation: among up silos not declared dead in the table, no grain has two
    /// activations; and no hand-off ever found two.
    pub(crate) fn check_single_activation(&mut self) -> Result<(), String> {
        let table = ready(self.world.table.read_all()).map_err(|e| e.to_string())?;
        for node in self.world.nodes.borrow().values() {
            if let Some(d) = node.borrow().duplicates.first() {
                return Err(format!("duplicate activation found by the directory: {d}"));
            }
        }
        let mut seen: BTreeMap<GrainId, ActivationAddress> = BTreeMap::new();
        for node in self.up_nodes() {
            let node = node.borrow();
            if table.is_dead(&node.me) {
                continue; // the Orleans window: declared dead, has not read it yet
            }
            for (grain, address) in &node.hosted {
                if let Some(other) = seen.insert(grain.clone(), *address) {
                    return Err(format!(
                        "{grain} has two activations: {other} and {address}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Convergence: every host runs an up silo; all hold the table's version, are `Active`,
    /// settled, with every hand-off acknowledged and no first call pending; and the directory
    /// is exact: each hosted activation has one entry, at its grain's ring owner, and every
    /// entry names a hosted activation.
    pub(crate) fn check_converged(&mut self) -> Result<(), String> {
        let table = ready(self.world.table.read_all()).map_err(|e| e.to_string())?;
        let down: Vec<usize> = (0..self.names.len()).filter(|&i| !self.is_up(i)).collect();
        if !down.is_empty() {
            return Err(format!("hosts not serving (by index): {down:?}"));
        }
        let nodes = self.up_nodes();
        let mut hosted: BTreeMap<GrainId, ActivationAddress> = BTreeMap::new();
        let mut entries: BTreeMap<GrainId, Vec<(String, ActivationAddress)>> = BTreeMap::new();
        for node in &nodes {
            let n = node.borrow();
            let me = n.me;
            if n.oracle.view().version != table.version || n.partition.version() != table.version {
                return Err(format!(
                    "{me} at view {} / partition {}, table at {}",
                    n.oracle.view().version,
                    n.partition.version(),
                    table.version
                ));
            }
            if !n.oracle.is_serving() || !n.partition.is_settled() {
                return Err(format!("{me} not serving or not settled"));
            }
            if !n.partition.handoffs(&n.hosted).is_empty() || n.has_pending_calls() {
                return Err(format!(
                    "{me} has unacknowledged hand-offs or pending calls"
                ));
            }
            hosted.extend(n.hosted.iter().map(|(g, a)| (g.clone(), *a)));
            for (grain, address) in n.partition.entries() {
                if n.partition.ring().owner(grain) != Some(me) {
                    return Err(format!("{me} holds {grain} but does not own it"));
                }
                entries
                    .entry(grain.clone())
                    .or_default()
                    .push((me.to_string(), *address));
            }
        }
        for (grain, held) in &entries {
            if held.len() != 1 {
                return Err(format!(
                    "{grain} has {} directory entries: {held:?}",
                    held.len()
                ));
            }
            if hosted.get(grain) != Some(&held[0].1) {
                return Err(format!(
                    "{grain}'s entry {held:?} names no hosted activation"
                ));
            }
        }
        if let Some((grain, address)) = hosted.iter().find(|(g, _)| !entries.contains_key(*g)) {
            return Err(format!(
                "{grain}'s activation {address} has no directory entry"
            ));
        }
        Ok(())
    }
}
