//! Turn-based execution: one message at a time, FIFO per caller, opt-in interleaving, stateless
//! worker pools, and single activation under racing first calls.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use silica_grains::{Grain, GrainContext, GrainReference, grain};
use silica_silo::Silo;

/// Probes for interleaving: `meet(n)` waits (bounded) until `n` calls are inside at once.
#[grain]
pub trait Meeting {
    /// Records `seq` in arrival order.
    async fn record(&mut self, seq: u32);
    /// The recorded sequence numbers.
    #[grain(read_only)]
    async fn recorded(&self) -> Vec<u32>;
    /// A read-only rendezvous: true if `n` calls were inside together within the deadline.
    #[grain(read_only)]
    async fn meet_read_only(&self, n: usize) -> bool;
    /// A plain `&self` rendezvous: interleaves only on reentrant grain types.
    async fn meet_shared(&self, n: usize) -> bool;
    /// An always-interleave rendezvous.
    #[grain(always_interleave)]
    async fn meet_always(&self, n: usize) -> bool;
    /// An exclusive method: the most `&self` calls seen inside at once while it ran.
    async fn exclusive(&mut self) -> usize;
}

/// The same probes on a reentrant grain type.
#[grain(reentrant)]
pub trait ReentrantMeeting {
    /// A plain `&self` rendezvous.
    async fn meet_shared(&self, n: usize) -> bool;
    /// Asks the `Relay` grain `via` to call `answer` on this grain (key `me`) while this turn
    /// waits.
    async fn call_back(&self, via: String, me: String) -> Result<u32, String>;
    /// A plain `&self` method to call back.
    async fn answer(&self) -> u32;
}

/// Calls a reentrant grain back from inside that grain's turn.
#[grain]
pub trait Relay {
    /// Calls `answer` on the `ReentrantMeeting` grain `to`.
    async fn relay(&mut self, to: String) -> Result<u32, String>;
}

#[derive(Default)]
struct MeetingGrain {
    log: Vec<u32>,
    inside: AtomicUsize,
}

impl MeetingGrain {
    async fn meet(&self, n: usize) -> bool {
        self.inside.fetch_add(1, Ordering::SeqCst);
        let met = tokio::time::timeout(Duration::from_secs(2), async {
            while self.inside.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .is_ok();
        // Stay inside a little so late arrivals still meet us.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.inside.fetch_sub(1, Ordering::SeqCst);
        met
    }
}

impl Grain for MeetingGrain {
    type Interface = MeetingRef;
    fn create(_: &GrainContext) -> Self {
        Self::default()
    }
}

impl Meeting for MeetingGrain {
    async fn record(&mut self, seq: u32) {
        tokio::task::yield_now().await;
        self.log.push(seq);
    }
    async fn recorded(&self) -> Vec<u32> {
        self.log.clone()
    }
    async fn meet_read_only(&self, n: usize) -> bool {
        self.meet(n).await
    }
    async fn meet_shared(&self, n: usize) -> bool {
        self.meet(n).await
    }
    async fn meet_always(&self, n: usize) -> bool {
        self.meet(n).await
    }
    async fn exclusive(&mut self) -> usize {
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.inside.load(Ordering::SeqCst)
    }
}

struct ReentrantGrain(MeetingGrain, GrainContext);

impl Grain for ReentrantGrain {
    type Interface = ReentrantMeetingRef;
    fn create(ctx: &GrainContext) -> Self {
        Self(MeetingGrain::default(), ctx.clone())
    }
}

impl ReentrantMeeting for ReentrantGrain {
    async fn meet_shared(&self, n: usize) -> bool {
        self.0.meet(n).await
    }
    async fn call_back(&self, via: String, me: String) -> Result<u32, String> {
        let relay: RelayRef = self.1.grain_factory().get(via);
        relay.relay(me).await.map_err(|error| error.to_string())?
    }
    async fn answer(&self) -> u32 {
        7
    }
}

struct RelayGrain(GrainContext);

impl Grain for RelayGrain {
    type Interface = RelayRef;
    fn create(ctx: &GrainContext) -> Self {
        Self(ctx.clone())
    }
}

impl Relay for RelayGrain {
    async fn relay(&mut self, to: String) -> Result<u32, String> {
        let back: ReentrantMeetingRef = self.0.grain_factory().get(to);
        back.answer().await.map_err(|error| error.to_string())
    }
}

fn silo() -> Silo {
    Silo::builder()
        .register::<MeetingGrain>()
        .register::<ReentrantGrain>()
        .register::<RelayGrain>()
        .start()
        .unwrap()
}

// Pins FIFO per caller: calls issued in order are handled in order, even when the caller does not
// await one before issuing the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_one_caller_run_in_order() {
    let silo = silo();
    let grain: MeetingRef = silo.grain_factory().get("fifo");
    let pending: Vec<_> = (0..200).map(|seq| grain.record(seq)).collect();
    for answer in join_all(pending).await {
        answer.unwrap();
    }
    assert_eq!(
        grain.recorded().await.unwrap(),
        (0..200).collect::<Vec<_>>()
    );
    silo.shutdown().await;
}

// Pins that read-only calls interleave with each other.
#[tokio::test(start_paused = true)]
async fn read_only_calls_interleave() {
    let silo = silo();
    let grain: MeetingRef = silo.grain_factory().get("ro");
    let (a, b) = tokio::join!(grain.meet_read_only(2), grain.meet_read_only(2));
    assert!(
        a.unwrap() && b.unwrap(),
        "two read-only calls should be inside together"
    );
    silo.shutdown().await;
}

// Pins that read-only calls interleave on an activation that is already running: the first call
// starts inline on the caller's thread and, once it waits, must not hold back the second.
#[tokio::test(start_paused = true)]
async fn read_only_calls_interleave_on_an_active_grain() {
    let silo = silo();
    let grain: MeetingRef = silo.grain_factory().get("ro-active");
    grain.recorded().await.unwrap();
    let (a, b) = tokio::join!(grain.meet_read_only(2), grain.meet_read_only(2));
    assert!(
        a.unwrap() && b.unwrap(),
        "two read-only calls should be inside together"
    );
    silo.shutdown().await;
}

// Pins that plain `&self` calls on a non-reentrant grain run one at a time.
#[tokio::test(start_paused = true)]
async fn shared_calls_do_not_interleave_without_reentrancy() {
    let silo = silo();
    let grain: MeetingRef = silo.grain_factory().get("shared");
    let (a, b) = tokio::join!(grain.meet_shared(2), grain.meet_shared(2));
    assert!(!a.unwrap() && !b.unwrap(), "non-reentrant turns overlapped");
    silo.shutdown().await;
}

// Pins that on a reentrant grain type, `&self` calls interleave.
#[tokio::test(start_paused = true)]
async fn reentrant_grain_interleaves_shared_calls() {
    let silo = silo();
    let grain: ReentrantMeetingRef = silo.grain_factory().get("re");
    let (a, b) = tokio::join!(grain.meet_shared(2), grain.meet_shared(2));
    assert!(a.unwrap() && b.unwrap());
    silo.shutdown().await;
}

// Pins that a reentrant grain's waiting turn lets its own call chain back in, whether the turn
// started on the activation's task (first call) or inline (the grain already active):
// A.call_back -> B.relay -> A.answer completes instead of timing out.
#[tokio::test(start_paused = true)]
async fn reentrant_grain_takes_a_call_back_from_its_chain() {
    let silo = silo();
    let grain: ReentrantMeetingRef = silo.grain_factory().get("re-chain");
    let grain = grain.with_timeout(Duration::from_secs(5));
    for attempt in ["first call", "active grain"] {
        let answer = grain.call_back("relay".into(), "re-chain".into()).await;
        assert_eq!(answer, Ok(Ok(7)), "{attempt}");
    }
    silo.shutdown().await;
}

// Pins that an always-interleave call joins a running read-only call on a non-reentrant grain,
// and that an exclusive call waits until no `&self` call is inside.
#[tokio::test(start_paused = true)]
async fn always_interleave_joins_and_exclusive_waits() {
    let silo = silo();
    let grain: MeetingRef = silo.grain_factory().get("always");
    let (a, b, inside) = tokio::join!(
        grain.meet_read_only(2),
        grain.meet_always(2),
        grain.exclusive()
    );
    assert!(a.unwrap() && b.unwrap());
    assert_eq!(
        inside.unwrap(),
        0,
        "an exclusive turn overlapped interleaved calls"
    );
    silo.shutdown().await;
}

/// A stateless worker: a local pool of up to 3 activations.
#[grain(stateless_worker = 3)]
pub trait Hasher {
    /// Which pooled instance answered, after holding the turn for a while.
    async fn work(&mut self) -> usize;
}

static INSTANCES: AtomicUsize = AtomicUsize::new(0);

struct HasherGrain(usize);

impl Grain for HasherGrain {
    type Interface = HasherRef;
    fn create(_: &GrainContext) -> Self {
        HasherGrain(INSTANCES.fetch_add(1, Ordering::SeqCst))
    }
}

impl Hasher for HasherGrain {
    async fn work(&mut self) -> usize {
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.0
    }
}

// Pins that a stateless worker spreads concurrent calls over a pool that grows up to its limit
// and no further.
#[tokio::test(start_paused = true)]
async fn stateless_worker_pool_is_bounded() {
    let silo = Silo::builder().register::<HasherGrain>().start().unwrap();
    let worker: HasherRef = silo.grain_factory().get(0_i64);
    let answers = join_all((0..12).map(|_| worker.work())).await;
    let mut seen: Vec<usize> = answers.into_iter().map(Result::unwrap).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 3, "pool used {seen:?}");
    assert_eq!(silo.activation_count(), 3);
    silo.shutdown().await;
}

/// Counts activations, to check single activation.
#[grain]
pub trait Single {
    /// Returns the activation number of the instance that answered.
    async fn which(&mut self) -> usize;
}

static SINGLE_ACTIVATIONS: Mutex<usize> = Mutex::new(0);

struct SingleGrain(usize);

impl Grain for SingleGrain {
    type Interface = SingleRef;
    fn create(_: &GrainContext) -> Self {
        let mut count = SINGLE_ACTIVATIONS.lock().unwrap();
        *count += 1;
        SingleGrain(*count)
    }
}

impl Single for SingleGrain {
    async fn which(&mut self) -> usize {
        self.0
    }
}

// Pins single activation: many racing first calls from several threads reach one activation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_first_calls_share_one_activation() {
    let silo = Silo::builder().register::<SingleGrain>().start().unwrap();
    let calls = (0..64).map(|_| {
        let grain: SingleRef = silo.grain_factory().get("only");
        tokio::spawn(async move { grain.which().await.unwrap() })
    });
    let answers: Vec<usize> = join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert_eq!(*SINGLE_ACTIVATIONS.lock().unwrap(), 1);
    silo.shutdown().await;
}

/// Walks a chain of grains: `walk(n)` on grain `n` calls `walk(n - 1)` on grain `n - 1`.
#[grain]
pub trait Walker {
    /// The number of grains below this one, counted by calling each.
    async fn walk(&mut self, n: u32) -> u32;
}

struct WalkerGrain(GrainContext);

impl Grain for WalkerGrain {
    type Interface = WalkerRef;
    fn create(ctx: &GrainContext) -> Self {
        Self(ctx.clone())
    }
}

impl Walker for WalkerGrain {
    async fn walk(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        let next: WalkerRef = self.0.grain_factory().get(i64::from(n - 1));
        next.walk(n - 1).await.unwrap_or(u32::MAX) + 1
    }
}

// Pins that a chain of calls to active, idle grains does not nest without bound on the
// caller's stack, where each would run inline inside the one before: 400 of them fit a thread
// with a 1 MiB stack, which they overflow (aborting the process) when all nest, in a debug or a
// release build.
#[test]
fn deep_chain_of_active_grains_fits_a_small_stack() {
    const DEPTH: u32 = 400;
    let walk = || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let silo = Silo::builder().register::<WalkerGrain>().start().unwrap();
            let top: WalkerRef = silo.grain_factory().get(i64::from(DEPTH));
            assert_eq!(
                top.walk(DEPTH).await.unwrap(),
                DEPTH,
                "activating the chain"
            );
            assert_eq!(top.walk(DEPTH).await.unwrap(), DEPTH, "the active chain");
            silo.shutdown().await;
        });
    };
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(walk)
        .unwrap()
        .join()
        .unwrap();
}
