//! Grain references: the untyped `RawGrainRef`, the `GrainReference` trait that generated typed
//! references implement, the `Invoker` that carries calls, and the `GrainFactory` that makes
//! references.
//!
//! A reference is an id plus an invoker. Inside a silo the invoker is the silo itself; an external
//! client's invoker sends calls to a gateway. References are cheap to clone, `Send + Sync`, and
//! usable from any task. Each reference also keeps a [`RouteMemo`]: what its invoker learned
//! about where the calls go, so that the next calls skip the lookups.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::codec::Payload;
use crate::grain::{GrainOptions, MethodInfo};
use crate::{BoxFuture, CallError, GrainId, GrainKey, GrainType};

/// Per-call options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// Overrides the invoker's default timeout (30 s) for this call.
    pub timeout: Option<Duration>,
}

/// One call as a reference hands it to an invoker.
#[derive(Clone, Debug)]
pub struct Request {
    /// The grain called.
    pub target: GrainId,
    /// The interface the reference was typed with.
    pub interface: &'static str,
    /// The method name.
    pub method: &'static str,
    /// The postcard-encoded argument tuple.
    pub args: Payload,
    /// Per-call options.
    pub options: CallOptions,
}

/// One call as a reference hands it to [`Invoker::invoke_memo`]: a [`Request`] whose target is
/// borrowed from the reference, so a call that needs no owned request copies no id.
#[derive(Clone, Copy, Debug)]
pub struct CallRequest<'a> {
    /// The grain called.
    pub target: &'a GrainId,
    /// The interface the reference was typed with.
    pub interface: &'static str,
    /// The method name.
    pub method: &'static str,
    /// Per-call options.
    pub options: CallOptions,
}

impl CallRequest<'_> {
    /// The owned request, with the postcard-encoded argument tuple `args`.
    pub fn into_request(self, args: Payload) -> Request {
        Request {
            target: self.target.clone(),
            interface: self.interface,
            method: self.method,
            args,
            options: self.options,
        }
    }
}

/// Carries calls from references to grains: the silo in-process, a gateway connection outside.
pub trait Invoker: Send + Sync + 'static {
    /// Sends the request now (calls issued in order are delivered in order, whenever their
    /// futures are polled) and returns the future of the encoded return value or typed error.
    fn invoke(&self, request: Request) -> PendingCall;

    /// [`Self::invoke`] for a call made through a reference whose memo is `memo`: an invoker
    /// that can remember where the reference's calls go (see [`RouteMemo`]) overrides this.
    /// Same semantics as `invoke`; the default builds the request and calls it.
    fn invoke_memo(&self, call: CallRequest<'_>, args: Payload, memo: &RouteMemo) -> PendingCall {
        let _ = memo;
        self.invoke(call.into_request(args))
    }
}

/// What an invoker learned about where one reference's calls go (the silo: the grain type's
/// registration and its GPU activation), set by the invoker on a call and read on the next
/// ones. Empty until then; a clone of a reference shares what was set before the clone.
///
/// Only the invoker that set it reads it (a reference's invoker never changes), and it must
/// check that what it remembered still holds: the memo is a hint, never the authority.
#[derive(Default)]
pub struct RouteMemo {
    memo: OnceLock<Arc<dyn Any + Send + Sync>>,
    called: AtomicBool,
}

impl RouteMemo {
    /// What the invoker set, if anything.
    pub fn get(&self) -> Option<&(dyn Any + Send + Sync)> {
        self.memo.get().map(|memo| &**memo)
    }

    /// What the invoker set, setting `init()` first if nothing is set yet.
    pub fn get_or_init(
        &self,
        init: impl FnOnce() -> Arc<dyn Any + Send + Sync>,
    ) -> &(dyn Any + Send + Sync) {
        &**self.memo.get_or_init(init)
    }

    /// Records a call and says whether the reference made one before: an invoker that sets
    /// the memo only from a reference's second call on spends nothing on references used
    /// once (`factory.get(key).method()`, a common shape).
    pub fn called_before(&self) -> bool {
        self.called.load(Ordering::Relaxed) || self.called.swap(true, Ordering::Relaxed)
    }
}

impl Clone for RouteMemo {
    fn clone(&self) -> Self {
        Self {
            memo: self.memo.clone(),
            called: AtomicBool::new(self.called.load(Ordering::Relaxed)),
        }
    }
}

impl fmt::Debug for RouteMemo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.memo.get().is_some() {
            "set"
        } else {
            "empty"
        };
        f.debug_tuple("RouteMemo").field(&state).finish()
    }
}

/// The future of one call as an invoker returns it: answered already (for instance a turn that
/// ran inline), which costs no allocation, or still on its way.
#[must_use = "a call's answer is only seen by awaiting it"]
pub struct PendingCall(PendingState);

enum PendingState {
    Answered(Option<Result<Payload, CallError>>),
    Waiting(BoxFuture<'static, Result<Payload, CallError>>),
}

impl PendingCall {
    /// A call that already has its answer.
    pub fn answered(result: Result<Payload, CallError>) -> Self {
        Self(PendingState::Answered(Some(result)))
    }

    /// A call whose answer `future` will bring.
    pub fn waiting(
        future: impl Future<Output = Result<Payload, CallError>> + Send + 'static,
    ) -> Self {
        Self(PendingState::Waiting(Box::pin(future)))
    }

    /// A call whose answer the already boxed `future` will bring (for an invoker that polls
    /// the future in place before handing it out).
    pub fn boxed(future: BoxFuture<'static, Result<Payload, CallError>>) -> Self {
        Self(PendingState::Waiting(future))
    }
}

impl Future for PendingCall {
    type Output = Result<Payload, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            PendingState::Answered(answer) => Poll::Ready(
                answer
                    .take()
                    .expect("PendingCall polled after it completed"),
            ),
            PendingState::Waiting(future) => future.as_mut().poll(cx),
        }
    }
}

/// The future of a call made through a typed reference (what `#[grain]`'s reference methods
/// return): the invoker's [`PendingCall`], its answer decoded as `T`. A plain struct rather
/// than an `async` block, so the future callers keep in flight is no larger than the call
/// itself (an `async` block held both the encoding's result and the call it became).
#[must_use = "a call's answer is only seen by awaiting it"]
pub struct TypedCall<T> {
    pending: PendingCall,
    output: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> TypedCall<T> {
    /// The call `sent`, or its error if the arguments could not be sent (for instance, could not
    /// be encoded): that error is the answer.
    pub fn new(sent: Result<PendingCall, CallError>) -> Self {
        Self {
            pending: sent.unwrap_or_else(|error| PendingCall::answered(Err(error))),
            output: PhantomData,
        }
    }
}

impl<T: DeserializeOwned> Future for TypedCall<T> {
    type Output = Result<T, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.pending)
            .poll(cx)
            .map(|answer| crate::codec::decode(&answer?))
    }
}

impl<T> fmt::Debug for TypedCall<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TypedCall").field(&self.pending).finish()
    }
}

impl fmt::Debug for PendingCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.0 {
            PendingState::Answered(_) => "answered",
            PendingState::Waiting(_) => "waiting",
        };
        f.debug_tuple("PendingCall").field(&state).finish()
    }
}

/// An untyped grain reference: a grain id plus the invoker that reaches it.
#[derive(Clone)]
pub struct RawGrainRef {
    id: GrainId,
    invoker: Arc<dyn Invoker>,
    options: CallOptions,
    memo: RouteMemo,
}

impl RawGrainRef {
    /// A reference to `id` through `invoker`.
    pub fn new(id: GrainId, invoker: Arc<dyn Invoker>) -> Self {
        Self {
            id,
            invoker,
            options: CallOptions::default(),
            memo: RouteMemo::default(),
        }
    }

    /// The grain this reference names.
    pub fn id(&self) -> &GrainId {
        &self.id
    }

    /// The invoker calls go through.
    pub fn invoker(&self) -> &Arc<dyn Invoker> {
        &self.invoker
    }

    /// What the invoker remembered about this reference's calls (see [`RouteMemo`]).
    pub fn memo(&self) -> &RouteMemo {
        &self.memo
    }

    /// The same reference with a different per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// Calls `method` of `interface` with already-encoded arguments.
    pub fn invoke_raw(
        &self,
        interface: &'static str,
        method: &'static str,
        args: Payload,
    ) -> PendingCall {
        let call = CallRequest {
            target: &self.id,
            interface,
            method,
            options: self.options,
        };
        self.invoker.invoke_memo(call, args, &self.memo)
    }
}

impl fmt::Debug for RawGrainRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawGrainRef")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A typed reference generated by `#[grain]`: names one interface and wraps a `RawGrainRef`.
pub trait GrainReference: Clone + Send + Sync + Sized + 'static {
    /// The interface name: the identity of the interface on the wire.
    const INTERFACE: &'static str;
    /// The interface's methods.
    const METHODS: &'static [MethodInfo];
    /// The options declared on the interface.
    const DEFAULT_OPTIONS: GrainOptions;

    /// Wraps an untyped reference.
    fn from_raw(raw: RawGrainRef) -> Self;

    /// The untyped reference inside.
    fn as_raw(&self) -> &RawGrainRef;

    /// The grain type that implementations of this interface register under by default.
    fn grain_type() -> GrainType {
        GrainType::from_static(Self::INTERFACE)
    }

    /// The grain's id.
    fn id(&self) -> &GrainId {
        self.as_raw().id()
    }

    /// The same grain seen through another interface. Calling a method the grain does not
    /// implement fails with `RejectCode::WrongInterface`.
    fn cast<R: GrainReference>(&self) -> R {
        R::from_raw(self.as_raw().clone())
    }

    /// The same reference with a per-call timeout for every call made through it.
    fn with_timeout(&self, timeout: Duration) -> Self {
        Self::from_raw(self.as_raw().clone().with_timeout(timeout))
    }
}

/// Makes typed references from keys. Cheap to clone.
#[derive(Clone)]
pub struct GrainFactory {
    invoker: Arc<dyn Invoker>,
}

impl GrainFactory {
    /// A factory whose references call through `invoker`.
    pub fn new(invoker: Arc<dyn Invoker>) -> Self {
        Self { invoker }
    }

    /// The reference to the grain of `R`'s interface with `key`.
    pub fn get<R: GrainReference>(&self, key: impl Into<GrainKey>) -> R {
        self.get_typed(R::grain_type(), key)
    }

    /// The reference to a grain of an explicitly named grain type, typed as `R`.
    pub fn get_typed<R: GrainReference>(
        &self,
        grain_type: GrainType,
        key: impl Into<GrainKey>,
    ) -> R {
        R::from_raw(RawGrainRef::new(
            GrainId::new(grain_type, key),
            self.invoker.clone(),
        ))
    }

    /// The reference to `id`, typed as `R`.
    pub fn get_by_id<R: GrainReference>(&self, id: GrainId) -> R {
        R::from_raw(RawGrainRef::new(id, self.invoker.clone()))
    }
}

impl fmt::Debug for GrainFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrainFactory").finish_non_exhaustive()
    }
}
