//! The task-local record of which grain turn is running, so calls made from inside a handler
//! carry the call chain without the grain passing anything.

use std::sync::Arc;

use silica_client::{CallChain, ChainLink};
use silica_grains::{GrainId, Interleave};

/// The turn a handler future runs in.
#[derive(Clone, Debug)]
pub(crate) struct TurnScope {
    /// The chain of the call that started this turn.
    pub(crate) parent: CallChain,
    /// The grain running the turn.
    pub(crate) grain: Arc<GrainId>,
    /// How the turn interleaves.
    pub(crate) turn: Interleave,
}

tokio::task_local! {
    static TURN: TurnScope;
}

/// Runs `future` as part of the turn `scope`.
pub(crate) fn in_turn<F: std::future::Future>(
    scope: TurnScope,
    future: F,
) -> impl std::future::Future<Output = F::Output> {
    TURN.scope(scope, future)
}

/// Runs `f` (a synchronous poll of a turn) as part of the turn `scope`.
pub(crate) fn in_turn_sync<R>(scope: TurnScope, f: impl FnOnce() -> R) -> R {
    TURN.sync_scope(scope, f)
}

/// The chain for a call made now: empty outside any turn; the running turn's chain extended
/// with the running grain inside one. Built only when a grain calls out, not on every turn.
pub(crate) fn chain_for_outgoing_call() -> CallChain {
    TURN.try_with(|scope| {
        scope.parent.extended(ChainLink {
            grain: (*scope.grain).clone(),
            turn: scope.turn,
        })
    })
    .unwrap_or_default()
}
