//! The call path of a reference that remembers where its calls go (`silica_grains::RouteMemo`).
//!
//! A reference's second call on this silo looks up its grain type's registration and checks
//! the interface, as every call on the envelope path does (`runtime`), and the reference
//! remembers both; for a type with a GPU variant, also a memo of the grain's activation
//! (`gpu::memo`). Its next calls to the GPU variant build no envelope, copy no grain id, and skip
//! the registry, the interface check and the activation lookups. (Its first call only notes that
//! it was made: a reference used once costs no memo.) Everything else is checked on every call, as on
//! the envelope path: the silo's lifecycle, the size of the arguments, the method, call cycles.
//!
//! Calls that need more take the envelope path: a silo in a cluster (the directory decides where
//! a grain lives), a cycle or a refusal to report, an activation being deactivated, a type whose
//! CPU implementation serves (it has no GPU variant, or no usable device).

use std::any::Any;
use std::sync::Arc;

use silica_client::CallChain;
use silica_grains::{CallRequest, Payload, PendingCall, RouteMemo};

use crate::caller::chain_for_outgoing_call;
use crate::gpu::GpuCallParts;
use crate::registry::Registration;
use crate::runtime::{Lifecycle, SiloInner, would_wait_on_itself};

/// What a reference remembers about its calls on this silo.
struct RememberedRoute {
    registration: Arc<Registration>,
    /// The interface the reference's calls were checked for.
    interface: &'static str,
    /// The GPU variant's memo of the grain's activation (`GpuRoute::new_memo`); `None` for a
    /// type without one, whose calls take the envelope path.
    activation: Option<Box<dyn Any + Send + Sync>>,
}

impl SiloInner {
    /// Sends a call made through a reference whose memo is `memo`: on the remembered route
    /// if it has one that takes the call, else on the envelope path.
    pub(crate) fn send_remembered(
        self: &Arc<Self>,
        call: CallRequest<'_>,
        args: Payload,
        memo: &RouteMemo,
    ) -> PendingCall {
        let chain = chain_for_outgoing_call();
        // In a cluster the directory decides where a grain lives: the envelope path asks it.
        if self.cluster.get().is_none()
            && let Some(route) = self.remembered_route(call, memo)
            && let Some(activation) = route.activation.as_deref()
            && let Some(pending) = self.send_on(route, activation, call, &args, &chain)
        {
            return pending;
        }
        self.send(self.envelope_with_chain(call.into_request(args), chain))
    }

    /// The call sent on `route` to the GPU activation its memo `activation` remembers, or
    /// `None` if it needs the envelope path.
    fn send_on(
        &self,
        route: &RememberedRoute,
        activation: &(dyn Any + Send + Sync),
        call: CallRequest<'_>,
        args: &Payload,
        chain: &CallChain,
    ) -> Option<PendingCall> {
        if self.lifecycle() != Lifecycle::Running || args.len() > self.config.max_message_bytes {
            return None;
        }
        let registration = &route.registration;
        let kind = registration.method_kind(call.method)?;
        if would_wait_on_itself(chain, call.target, kind, &registration.options) {
            return None;
        }
        let timeout = self.timeout_of(call.options);
        let parts = GpuCallParts {
            method: call.method,
            args,
            hlc: self.clock.last(),
            timeout,
        };
        let gpu = registration.gpu.as_ref()?;
        let answered = gpu.route_memo(self, call.target, parts, activation)?;
        Some(self.wait_for(answered, timeout))
    }

    /// The route `memo` remembers for `call`'s interface, remembering it on the second call
    /// to a registered type that implements the interface.
    fn remembered_route<'m>(
        &self,
        call: CallRequest<'_>,
        memo: &'m RouteMemo,
    ) -> Option<&'m RememberedRoute> {
        let memo = match memo.get() {
            Some(memo) => memo,
            // A reference used once (`factory.get(key).method()`) remembers nothing.
            None if !memo.called_before() => return None,
            None => {
                let registration = self.registry.get(&call.target.grain_type)?;
                if registration.handler.interface() != call.interface {
                    return None;
                }
                let activation = registration.gpu.as_ref().and_then(|gpu| gpu.new_memo());
                memo.get_or_init(|| {
                    Arc::new(RememberedRoute {
                        registration: registration.clone(),
                        interface: call.interface,
                        activation,
                    })
                })
            }
        };
        let route = memo.downcast_ref::<RememberedRoute>()?;
        // A reference cast to another interface shares its memo: its calls are checked anew.
        let same =
            std::ptr::eq(route.interface, call.interface) || route.interface == call.interface;
        same.then_some(route)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use silica_gpu::samples::{Accumulator, Add, Totals};
    use silica_gpu::{BackendChoice, BackendKind};
    use silica_grains::{Grain, GrainContext, GrainReference, grain};

    use super::RememberedRoute;
    use crate::gpu::memo::ActivationMemo;
    use crate::gpu::{GpuActivation, GpuConfig, GpuDevices, GpuGrain};
    use crate::{Silo, SiloConfig};

    #[grain]
    trait Counter {
        async fn add(&mut self, amount: u32) -> u64;
    }

    struct CounterCpu(Totals);

    impl Grain for CounterCpu {
        type Interface = CounterRef;
        fn create(_: &GrainContext) -> Self {
            CounterCpu(Totals::default())
        }
    }

    impl Counter for CounterCpu {
        async fn add(&mut self, amount: u32) -> u64 {
            self.0.total += u64::from(amount);
            self.0.total
        }
    }

    struct CounterGpu(GpuActivation<Accumulator>);

    impl GpuGrain for CounterGpu {
        type Interface = CounterRef;
        type Kernel = Accumulator;
        fn create(activation: GpuActivation<Accumulator>) -> Self {
            CounterGpu(activation)
        }
    }

    impl Counter for CounterGpu {
        async fn add(&mut self, amount: u32) -> u64 {
            self.0.call(Add { amount }).await.total
        }
    }

    // Pins that a reference's calls to a GPU variant fill its memo: empty after the first call
    // (a reference used once costs nothing), then holding the route and the activation,
    // entered through it without the catalog (the path every later call takes; a memo of the
    // wrong type would silently send every call down the envelope path).
    #[tokio::test]
    async fn calls_to_a_gpu_variant_remember_their_activation() {
        let gpu = GpuConfig {
            devices: GpuDevices::Exact(vec![BackendChoice::Exact {
                kind: BackendKind::Cpu,
                device: 0,
            }]),
            slots_per_device: 8,
            reply_spin: Duration::ZERO,
            ..GpuConfig::default()
        };
        let silo = Silo::builder()
            .config(SiloConfig {
                gpu,
                ..SiloConfig::default()
            })
            .register_gpu_variant::<CounterCpu, CounterGpu>()
            .start()
            .unwrap();
        let counter: CounterRef = silo.grain_factory().get("memo");
        assert!(
            counter.as_raw().memo().get().is_none(),
            "empty before a call"
        );
        assert_eq!(counter.add(2).await.unwrap(), 2);
        assert_eq!(counter.add(3).await.unwrap(), 5);
        let route = counter
            .as_raw()
            .memo()
            .get()
            .expect("set by the first call");
        let route = route.downcast_ref::<RememberedRoute>().expect("the silo's");
        let activation = route.activation.as_deref().expect("a GPU variant's memo");
        let activation = activation
            .downcast_ref::<ActivationMemo<Accumulator>>()
            .expect("the variant's activation memo");
        let entered = activation.entered().expect("the current activation");
        entered.exit();
        silo.shutdown().await;
    }
}
