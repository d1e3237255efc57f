//! The envelope every grain call travels in, in-process and (later) on the wire.
//!
//! It carries what a reference's `Request` has plus what the runtime adds: the caller's HLC
//! timestamp (every receiver merges it), the call chain (for cycle detection), and the timeout.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use silica_clocks::HlcTimestamp;
use silica_grains::Payload;
use silica_grains::{GrainId, Interleave};

/// The default call timeout, as in Orleans.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A request on its way to a grain.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// The grain called.
    pub target: GrainId,
    /// The interface the caller's reference was typed with.
    pub interface: Cow<'static, str>,
    /// The method name.
    pub method: Cow<'static, str>,
    /// The postcard-encoded argument tuple.
    pub args: Payload,
    /// The sender's HLC timestamp at send time.
    pub hlc: HlcTimestamp,
    /// The grains waiting on this call, outermost first.
    pub chain: CallChain,
    /// How long the caller waits for the response.
    pub timeout: Duration,
}

/// One grain waiting on the call: which one, and how its running turn interleaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainLink {
    /// The waiting grain.
    pub grain: GrainId,
    /// How the waiting turn interleaves, which decides whether a call back into it can run.
    pub turn: Interleave,
}

/// The grains (and their turns) that wait on a call: A's turn called B whose turn called C gives
/// C's request the chain [A, B]. Empty for calls from outside any grain. Cheap to clone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallChain(Option<Arc<[ChainLink]>>);

impl CallChain {
    /// The chain of a call from outside any grain.
    pub const EMPTY: CallChain = CallChain(None);

    /// The links, outermost caller first.
    pub fn links(&self) -> &[ChainLink] {
        self.0.as_deref().unwrap_or(&[])
    }

    /// Whether no grain waits on the call.
    pub fn is_empty(&self) -> bool {
        self.links().is_empty()
    }

    /// The link of `grain`, if it is waiting on this call.
    pub fn find(&self, grain: &GrainId) -> Option<&ChainLink> {
        self.links().iter().find(|link| &link.grain == grain)
    }

    /// The chain for calls made by `link`'s turn, which runs because of a call with this chain.
    pub fn extended(&self, link: ChainLink) -> CallChain {
        let links: Vec<ChainLink> = self
            .links()
            .iter()
            .cloned()
            .chain(std::iter::once(link))
            .collect();
        CallChain(Some(links.into()))
    }

    /// The grain ids on the chain followed by `last`, for error messages.
    pub fn ids_then(&self, last: &GrainId) -> Vec<GrainId> {
        self.links()
            .iter()
            .map(|link| link.grain.clone())
            .chain(std::iter::once(last.clone()))
            .collect()
    }
}

impl From<Vec<ChainLink>> for CallChain {
    /// The chain with these links, outermost caller first.
    fn from(links: Vec<ChainLink>) -> Self {
        if links.is_empty() {
            return CallChain::EMPTY;
        }
        CallChain(Some(links.into()))
    }
}
