//! Bad input and faults: each gives a typed error, nothing else breaks, and no call hangs.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use silica_client::{CallChain, Envelope};
use silica_clocks::{HlcTimestamp, NodeId, wall_clock_ms};
use silica_grains::{
    CallError, Grain, GrainContext, GrainId, GrainReference, GrainType, RejectCode,
};

/// An interface no silo registers.
#[silica_grains::grain]
pub trait Unregistered {
    /// Never reaches a grain.
    async fn anything(&mut self) -> u32;
}

/// An interface with Counter's method names, which no Counter grain implements.
#[silica_grains::grain]
pub trait Impostor {
    /// Same name as `Counter::add`, other interface.
    async fn add(&mut self, n: u64) -> u64;
}

// Pins that a call to a grain type no silo registered is rejected with UnknownGrainType.
#[tokio::test]
async fn unknown_grain_type_is_rejected() {
    let silo = builder().start().unwrap();
    let grain: UnregisteredRef = silo.grain_factory().get("x");
    let error = grain.anything().await.unwrap_err();
    assert_eq!(
        error.reject_code(),
        Some(RejectCode::UnknownGrainType),
        "{error}"
    );
    silo.shutdown().await;
}

// Pins that a reference cast to an interface the grain does not implement is rejected, and the
// grain keeps serving its own interface.
#[tokio::test]
async fn wrong_interface_is_rejected() {
    let silo = builder().start().unwrap();
    let counter: CounterRef = silo.grain_factory().get("c");
    counter.add(1).await.unwrap();
    let impostor: ImpostorRef = counter.cast();
    let error = impostor.add(1).await.unwrap_err();
    assert_eq!(
        error.reject_code(),
        Some(RejectCode::WrongInterface),
        "{error}"
    );
    assert_eq!(counter.get().await.unwrap(), 1);
    silo.shutdown().await;
}

// Pins that unknown methods and undecodable arguments are rejected before reaching the handler.
#[tokio::test]
async fn unknown_method_and_bad_arguments_are_rejected() {
    let silo = builder().start().unwrap();
    let counter: CounterRef = silo.grain_factory().get("m");
    let raw = counter.as_raw();
    let error = raw
        .invoke_raw("Counter", "no_such_method", Default::default())
        .await
        .unwrap_err();
    assert_eq!(
        error.reject_code(),
        Some(RejectCode::UnknownMethod),
        "{error}"
    );
    let error = raw
        .invoke_raw("Counter", "add", [0xff; 11].as_slice().into())
        .await
        .unwrap_err();
    assert_eq!(
        error.reject_code(),
        Some(RejectCode::BadArguments),
        "{error}"
    );
    let error = raw
        .invoke_raw("Counter", "add", [1, 2, 3].as_slice().into())
        .await
        .unwrap_err();
    assert_eq!(
        error.reject_code(),
        Some(RejectCode::BadArguments),
        "trailing bytes: {error}"
    );
    assert_eq!(counter.add(2).await.unwrap(), 2, "the grain still serves");
    silo.shutdown().await;
}

// Pins that a panicking handler returns GrainPanicked, drops that activation's state, and the
// silo and the grain keep serving (the next call gets a fresh instance).
#[tokio::test]
async fn panicking_handler_drops_the_activation() {
    let silo = builder().start().unwrap();
    let counter: CounterRef = silo.grain_factory().get("p");
    counter.add(5).await.unwrap();
    let error = counter.fail("boom".into()).await.unwrap_err();
    match &error {
        CallError::GrainPanicked { grain, message } => {
            assert_eq!(grain, counter.id());
            assert_eq!(message, "boom");
        }
        other => panic!("expected GrainPanicked, got {other}"),
    }
    assert_eq!(
        counter.get().await.unwrap(),
        0,
        "state was dropped with the activation"
    );
    let other: CounterRef = silo.grain_factory().get("q");
    assert_eq!(
        other.add(1).await.unwrap(),
        1,
        "other grains are unaffected"
    );
    silo.shutdown().await;
}

/// A grain that panics after a call to itself was queued behind its turn.
#[silica_grains::grain]
pub trait Tally {
    /// Adds `n`; the total.
    async fn add(&mut self, n: u64) -> u64;
    /// Sends `add(n)` to this grain from another thread (it queues: this turn is running), then
    /// panics. The queued call is left in `QUEUED_ADD`.
    async fn queue_add_then_panic(&mut self, n: u64);
}

type QueuedAdd = Pin<Box<dyn Future<Output = Result<u64, CallError>> + Send>>;

static QUEUED_ADD: Mutex<Option<QueuedAdd>> = Mutex::new(None);

struct TallyGrain(u64, GrainContext);

impl Grain for TallyGrain {
    type Interface = TallyRef;
    fn create(ctx: &GrainContext) -> Self {
        Self(0, ctx.clone())
    }
}

impl Tally for TallyGrain {
    async fn add(&mut self, n: u64) -> u64 {
        self.0 += n;
        self.0
    }
    async fn queue_add_then_panic(&mut self, n: u64) {
        let me: TallyRef = self.1.grain_factory().get_by_id(self.1.id().clone());
        // Another thread, so the call is not on this turn's chain (it would be refused).
        let runtime = tokio::runtime::Handle::current();
        let queued = std::thread::spawn(move || {
            let _runtime = runtime.enter();
            Box::pin(me.add(n)) as QueuedAdd
        });
        *QUEUED_ADD.lock().unwrap() = Some(queued.join().unwrap());
        panic!("after queueing a call");
    }
}

// Pins that a panic in a turn that ran inline (the grain was active and idle) drops only the
// instance that panicked: a call queued during that turn starts a fresh instance, which stays.
#[tokio::test]
async fn inline_panic_keeps_the_instance_a_queued_call_started() {
    let silo = builder().register::<TallyGrain>().start().unwrap();
    let tally: TallyRef = silo.grain_factory().get("inline-panic");
    assert_eq!(tally.add(1).await.unwrap(), 1);
    let error = tally.queue_add_then_panic(10).await.unwrap_err();
    assert!(matches!(error, CallError::GrainPanicked { .. }), "{error}");
    let queued = QUEUED_ADD.lock().unwrap().take().unwrap();
    assert_eq!(queued.await.unwrap(), 10, "the queued call starts afresh");
    assert_eq!(
        tally.add(100).await.unwrap(),
        110,
        "the fresh instance was dropped"
    );
    silo.shutdown().await;
}

// Pins that a non-reentrant A -> B -> A fails at once with CycleDetected naming the chain,
// instead of waiting for the timeout.
#[tokio::test]
async fn call_cycle_fails_fast() {
    let silo = builder().start().unwrap();
    let alice: AccountRef = silo.grain_factory().get("alice");
    let started = std::time::Instant::now();
    let result = alice
        .with_timeout(Duration::from_secs(20))
        .ping_back("bob".into())
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cycle waited for the timeout"
    );
    let error = result.unwrap().unwrap_err();
    let BankError::Call(message) = error else {
        panic!("expected a call error, got {error:?}")
    };
    assert!(message.contains("cycle"), "{message}");
    assert!(
        message.contains("Account/\"alice\" -> Account/\"bob\" -> Account/\"alice\""),
        "{message}"
    );
    assert_eq!(alice.deposit(1).await.unwrap(), 1, "alice keeps serving");
    silo.shutdown().await;
}

// Pins that a timeout too long to add to an instant (`Duration::MAX`: "never") is taken as a
// very long one: the call is answered, it does not panic the caller's task.
#[tokio::test]
async fn longest_timeout_is_no_overflow() {
    let silo = builder().start().unwrap();
    let counter: CounterRef = silo.grain_factory().get("patient");
    let forever = counter.clone().with_timeout(Duration::MAX);
    let first = tokio::spawn(async move { forever.add(2).await });
    assert_eq!(first.await.expect("no panic").unwrap(), 2, "a first call");
    let forever = counter.with_timeout(Duration::MAX);
    assert_eq!(
        forever.add(3).await.unwrap(),
        5,
        "a call to the active grain"
    );
    silo.shutdown().await;
}

// Pins that a call outliving its timeout ends with Timeout, and the grain still serves later.
#[tokio::test(start_paused = true)]
async fn slow_call_times_out() {
    let silo = builder().start().unwrap();
    let counter: CounterRef = silo.grain_factory().get("slow");
    let error = counter
        .with_timeout(Duration::from_millis(100))
        .sleep(10_000)
        .await
        .unwrap_err();
    assert_eq!(error, CallError::Timeout(Duration::from_millis(100)));
    assert_eq!(
        counter.add(1).await.unwrap(),
        1,
        "the grain answers once the slow turn is done"
    );
    silo.shutdown().await;
}

fn envelope_at(target: GrainId, hlc: HlcTimestamp, args: silica_grains::Payload) -> Envelope {
    Envelope {
        target,
        interface: "Counter".into(),
        method: "add".into(),
        args,
        hlc,
        chain: CallChain::EMPTY,
        timeout: Duration::from_secs(5),
    }
}

// Pins that an envelope whose HLC timestamp is far ahead of local time is rejected with
// ClockSkew and not adopted, while a sane one is merged (the clock moves past it).
#[tokio::test]
async fn far_future_timestamp_is_rejected_not_adopted() {
    let silo = builder().start().unwrap();
    let target = GrainId::new(GrainType::new("Counter"), "hlc");
    let args = silica_grains::codec::encode(&(1_u64,)).unwrap();
    let future = HlcTimestamp::new(wall_clock_ms() + 3_600_000, 0, NodeId(9));
    let error = silo
        .deliver(envelope_at(target.clone(), future, args.clone()))
        .await
        .unwrap_err();
    assert_eq!(error.reject_code(), Some(RejectCode::ClockSkew), "{error}");
    assert!(
        silo.clock().last() < future,
        "the far-future stamp was adopted"
    );

    let near = HlcTimestamp::new(wall_clock_ms() + 100, 7, NodeId(9));
    let answer = silo.deliver(envelope_at(target, near, args)).await.unwrap();
    assert_eq!(silica_grains::codec::decode::<u64>(&answer).unwrap(), 1);
    assert!(
        silo.clock().last() > near,
        "the receiver merged the sender's timestamp"
    );
    silo.shutdown().await;
}

/// Echoes payloads, to probe the message size limit.
#[silica_grains::grain]
pub trait Echo {
    /// Returns `data` unchanged.
    async fn echo(&mut self, data: Vec<u8>) -> Vec<u8>;
    /// Returns `len` bytes.
    async fn make(&mut self, len: u32) -> Vec<u8>;
    /// Holds the turn for `millis`.
    async fn hold(&mut self, millis: u64);
}

struct EchoGrain;

impl silica_grains::Grain for EchoGrain {
    type Interface = EchoRef;
    fn create(_: &silica_grains::GrainContext) -> Self {
        EchoGrain
    }
}

impl Echo for EchoGrain {
    async fn echo(&mut self, data: Vec<u8>) -> Vec<u8> {
        data
    }
    async fn make(&mut self, len: u32) -> Vec<u8> {
        vec![7; len as usize]
    }
    async fn hold(&mut self, millis: u64) {
        tokio::time::sleep(Duration::from_millis(millis)).await;
    }
}

fn echo_silo(config: silica_silo::SiloConfig) -> silica_silo::Silo {
    silica_silo::Silo::builder()
        .register::<EchoGrain>()
        .config(config)
        .start()
        .unwrap()
}

// Pins that oversized arguments and oversized results are rejected with TooLarge, and that
// messages at the limit and the grain itself are unaffected.
#[tokio::test]
async fn oversized_messages_are_rejected() {
    let config = silica_silo::SiloConfig {
        max_message_bytes: 1024,
        ..Default::default()
    };
    let silo = echo_silo(config);
    let echo: EchoRef = silo.grain_factory().get("big");
    let error = echo.echo(vec![0; 4096]).await.unwrap_err();
    assert_eq!(error.reject_code(), Some(RejectCode::TooLarge), "{error}");
    let error = echo.make(4096).await.unwrap_err();
    assert_eq!(error.reject_code(), Some(RejectCode::TooLarge), "{error}");
    assert_eq!(echo.echo(vec![1; 1000]).await.unwrap().len(), 1000);
    silo.shutdown().await;
}

// Pins load shedding: calls beyond an activation's queue limit are rejected with Overloaded at
// once, the queued ones complete, and the grain serves again once drained.
#[tokio::test(start_paused = true)]
async fn full_mailbox_sheds_load() {
    let config = silica_silo::SiloConfig {
        max_queued_calls: 4,
        ..Default::default()
    };
    let silo = echo_silo(config);
    let echo: EchoRef = silo.grain_factory().get("busy");
    let queued: Vec<_> = (0..4).map(|_| echo.hold(50)).collect();
    let error = echo.hold(50).await.unwrap_err();
    assert_eq!(error.reject_code(), Some(RejectCode::Overloaded), "{error}");
    for answer in futures_util::future::join_all(queued).await {
        answer.unwrap();
    }
    echo.hold(1).await.unwrap();
    silo.shutdown().await;
}

// Pins that a call whose caller timed out while it waited in the queue is not run (as in
// Orleans): its effect never happens.
#[tokio::test(start_paused = true)]
async fn expired_queued_call_is_not_run() {
    let silo = builder().start().unwrap();
    let counter: CounterRef = silo.grain_factory().get("expired");
    let slow = counter.sleep(100);
    let late = counter.with_timeout(Duration::from_millis(10)).add(5);
    assert_eq!(
        late.await.unwrap_err(),
        CallError::Timeout(Duration::from_millis(10))
    );
    assert_eq!(slow.await.unwrap(), 0);
    assert_eq!(
        counter.get().await.unwrap(),
        0,
        "the expired call ran anyway"
    );
    silo.shutdown().await;
}
