//! The registry of grain types a silo hosts: name -> how to start an activation of it.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use silica_grains::{
    Grain, GrainId, GrainOptions, GrainReference, GrainType, Interleave, MethodInfo,
};

use silica_client::Envelope;

use crate::activation::{self, ActivationHandle, Answered};
use crate::gpu::GpuRoute;
use crate::runtime::SiloInner;

/// One registered grain type, with the grain type erased.
pub(crate) trait GrainTypeHandler: Send + Sync + 'static {
    /// The interface the type implements.
    fn interface(&self) -> &'static str;
    /// The interface's methods.
    fn methods(&self) -> &'static [MethodInfo];
    /// Runs the call on the caller's thread if the activation is idle (see `activation::inline`);
    /// `None` if it is not.
    fn try_inline(
        &self,
        handle: &ActivationHandle,
        envelope: &Envelope,
        kind: Interleave,
        max_result_bytes: usize,
    ) -> Option<Answered>;
    /// Starts an activation task for `id` and returns its handle.
    fn spawn(
        &self,
        id: Arc<GrainId>,
        silo: &Arc<SiloInner>,
        registration: Arc<Registration>,
    ) -> Arc<ActivationHandle>;
}

/// What the catalog needs about a grain type on every call.
pub(crate) struct Registration {
    pub(crate) handler: Box<dyn GrainTypeHandler>,
    pub(crate) options: GrainOptions,
    /// The type's GPU variant, tried before the CPU implementation (`handler`).
    pub(crate) gpu: Option<Box<dyn GpuRoute>>,
}

impl Registration {
    /// How `method` interleaves, or `None` if the interface has no such method.
    pub(crate) fn method_kind(&self, method: &str) -> Option<Interleave> {
        self.handler
            .methods()
            .iter()
            .find(|m| m.name == method)
            .map(|m| m.interleave)
    }
}

pub(crate) struct TypedHandler<G> {
    _grain: PhantomData<fn() -> G>,
}

impl<G: Grain> TypedHandler<G> {
    pub(crate) fn new() -> Self {
        Self {
            _grain: PhantomData,
        }
    }
}

impl<G: Grain> GrainTypeHandler for TypedHandler<G> {
    fn interface(&self) -> &'static str {
        <G::Interface as GrainReference>::INTERFACE
    }

    fn methods(&self) -> &'static [MethodInfo] {
        <G::Interface as GrainReference>::METHODS
    }

    fn try_inline(
        &self,
        handle: &ActivationHandle,
        envelope: &Envelope,
        kind: Interleave,
        max_result_bytes: usize,
    ) -> Option<Answered> {
        activation::try_inline::<G>(handle, envelope, kind, max_result_bytes)
    }

    fn spawn(
        &self,
        id: Arc<GrainId>,
        silo: &Arc<SiloInner>,
        registration: Arc<Registration>,
    ) -> Arc<ActivationHandle> {
        activation::spawn::<G>(id, silo, registration)
    }
}

/// Grain type name -> registration. Fixed once the silo starts, so reads need no lock.
pub(crate) type Registry = HashMap<GrainType, Arc<Registration>, foldhash::fast::RandomState>;
