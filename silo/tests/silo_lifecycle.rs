//! Activation lifecycle: idle collection, deactivate-on-idle, failed activation, timers, the
//! default timeout, and graceful shutdown with calls in flight.

use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::join_all;
use silica_grains::{
    CallError, DeactivationReason, Grain, GrainContext, GrainError, GrainKey, GrainReference,
    RejectCode, grain,
};
use silica_silo::{Silo, SiloConfig};

/// A grain that reports its lifecycle into `EVENTS`.
#[grain(idle_after_secs = 60)]
pub trait Lamp {
    /// Adds to the count and returns it.
    async fn bump(&mut self) -> u64;
    /// Asks to be deactivated once idle.
    async fn retire(&mut self);
    /// Holds the turn for `millis`, then returns the count.
    async fn hold(&mut self, millis: u64) -> u64;
    /// Calls another lamp's `bump` from inside a turn.
    async fn bump_other(&mut self, other: String) -> u64;
    /// Never answers.
    async fn hang(&mut self);
    /// Starts a periodic timer that bumps the count every `millis`.
    async fn start_ticking(&mut self, millis: u64);
    /// Stops the timer.
    async fn stop_ticking(&mut self);
    /// Starts a timer like `start_ticking`, then panics.
    async fn start_ticking_then_panic(&mut self, millis: u64);
    /// Glows for `millis` without taking the turn exclusively.
    #[grain(read_only)]
    async fn glow(&self, millis: u64);
    /// Hands this lamp's context to the test (to request deactivation from outside a turn).
    async fn lend_context(&mut self);
    /// Starts a timer whose callback calls this lamp back.
    async fn start_calling_self(&mut self);
}

static LENT_CONTEXT: Mutex<Option<GrainContext>> = Mutex::new(None);

static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn events(key: &str) -> Vec<String> {
    EVENTS
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| e.strip_prefix(&format!("{key}:")).map(str::to_owned))
        .collect()
}

struct LampGrain {
    ctx: GrainContext,
    count: u64,
    timer: Option<silica_grains::TimerHandle>,
}

impl LampGrain {
    fn key(&self) -> String {
        match &self.ctx.id().key {
            GrainKey::String(s) => s.to_string(),
            other => other.to_string(),
        }
    }
    fn log(&self, event: &str) {
        EVENTS
            .lock()
            .unwrap()
            .push(format!("{}:{event}", self.key()));
    }
}

impl Grain for LampGrain {
    type Interface = LampRef;
    fn create(ctx: &GrainContext) -> Self {
        LampGrain {
            ctx: ctx.clone(),
            count: 0,
            timer: None,
        }
    }
    async fn on_activate(&mut self) -> Result<(), GrainError> {
        if self.key().starts_with("broken") && !events(&self.key()).contains(&"refused".to_owned())
        {
            if self.key().starts_with("broken-ticking") {
                self.start_ticking(10).await;
            }
            self.log("refused");
            return Err(GrainError::new("not today"));
        }
        self.log("activate");
        Ok(())
    }
    async fn on_deactivate(&mut self, reason: DeactivationReason) {
        if self.key().starts_with("slowbye") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.key().starts_with("saver") {
            let vault: LampRef = self.ctx.grain_factory().get("vault");
            let saved = vault.bump().await;
            self.log(&format!("saved {saved:?}"));
        }
        self.log(&format!("deactivate {reason:?} at {}", self.count));
    }
}

impl Lamp for LampGrain {
    async fn bump(&mut self) -> u64 {
        self.count += 1;
        self.count
    }
    async fn retire(&mut self) {
        self.ctx.deactivate_on_idle();
    }
    async fn hold(&mut self, millis: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        self.count
    }
    async fn bump_other(&mut self, other: String) -> u64 {
        let other: LampRef = self.ctx.grain_factory().get(other);
        tokio::time::sleep(Duration::from_millis(10)).await;
        other.bump().await.unwrap_or(0)
    }
    async fn hang(&mut self) {
        std::future::pending::<()>().await;
    }
    async fn start_ticking(&mut self, millis: u64) {
        let period = Duration::from_millis(millis);
        let timer = self
            .ctx
            .register_timer::<LampGrain, _>(period, Some(period), |lamp| {
                Box::pin(async move {
                    lamp.count += 1;
                })
            });
        self.timer = Some(timer);
    }
    async fn stop_ticking(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.cancel();
        }
    }
    async fn start_ticking_then_panic(&mut self, millis: u64) {
        self.start_ticking(millis).await;
        panic!("after starting a timer");
    }
    async fn glow(&self, millis: u64) {
        tokio::time::sleep(Duration::from_millis(millis)).await;
    }
    async fn lend_context(&mut self) {
        *LENT_CONTEXT.lock().unwrap() = Some(self.ctx.clone());
    }
    async fn start_calling_self(&mut self) {
        let me: LampRef = self.ctx.grain_factory().get_by_id(self.ctx.id().clone());
        let period = Duration::from_millis(10);
        self.ctx
            .register_timer::<LampGrain, _>(period, None, move |lamp| {
                let me = me.clone();
                Box::pin(async move {
                    let answer = me.bump().await;
                    lamp.log(&format!("timer called self: {answer:?}"));
                })
            });
    }
}

fn silo() -> Silo {
    Silo::builder().register::<LampGrain>().start().unwrap()
}

/// Lets the silo's tasks run until `done` holds, advancing paused time; panics after `limit`.
async fn until(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

// Pins idle collection: an activation idle for its type's age is deactivated (on_deactivate runs
// with Idle) and the next call re-activates it from a fresh instance.
#[tokio::test(start_paused = true)]
async fn idle_activation_is_collected_and_reactivates() {
    let silo = silo();
    let lamp: LampRef = silo.grain_factory().get("idle");
    assert_eq!(lamp.bump().await.unwrap(), 1);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        lamp.bump().await.unwrap(),
        2,
        "still active before its idle age"
    );
    until(Duration::from_secs(120), || silo.activation_count() == 0).await;
    assert_eq!(events("idle"), ["activate", "deactivate Idle at 2"]);
    assert_eq!(
        lamp.bump().await.unwrap(),
        1,
        "re-activated with fresh state"
    );
    silo.shutdown().await;
}

// Pins deactivate_on_idle: the activation ends after its turn with reason Requested.
#[tokio::test(start_paused = true)]
async fn deactivate_on_idle_ends_the_activation() {
    let silo = silo();
    let lamp: LampRef = silo.grain_factory().get("retire");
    lamp.bump().await.unwrap();
    lamp.retire().await.unwrap();
    until(Duration::from_secs(1), || silo.activation_count() == 0).await;
    assert_eq!(events("retire"), ["activate", "deactivate Requested at 1"]);
    silo.shutdown().await;
}

// Pins that a failing on_activate fails that call with ActivationFailed and the next call tries
// again.
#[tokio::test]
async fn failed_activation_is_retried_on_the_next_call() {
    let silo = silo();
    let lamp: LampRef = silo.grain_factory().get("broken-once");
    let error = lamp.bump().await.unwrap_err();
    assert_eq!(
        error.reject_code(),
        Some(RejectCode::ActivationFailed),
        "{error}"
    );
    assert_eq!(lamp.bump().await.unwrap(), 1);
    silo.shutdown().await;
}

// Pins that a timer registered by an `on_activate` that then failed never ticks on the instance
// of the next attempt.
#[tokio::test(start_paused = true)]
async fn failed_activations_timer_does_not_tick_on_the_next_instance() {
    let silo = silo();
    let lamp: LampRef = silo.grain_factory().get("broken-ticking");
    let error = lamp.bump().await.unwrap_err();
    assert_eq!(
        error.reject_code(),
        Some(RejectCode::ActivationFailed),
        "{error}"
    );
    assert_eq!(lamp.bump().await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(lamp.hold(0).await.unwrap(), 1, "the timer ticked");
    silo.shutdown().await;
}

// Pins grain timers: ticks run as turns and change state; a cancelled timer stops ticking.
#[tokio::test(start_paused = true)]
async fn timer_ticks_until_cancelled() {
    let silo = silo();
    let lamp: LampRef = silo.grain_factory().get("timer");
    lamp.start_ticking(100).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1050)).await;
    let ticked = lamp.hold(0).await.unwrap();
    assert!(
        (9..=11).contains(&ticked),
        "ticked {ticked} times in ~1 s at 100 ms"
    );
    lamp.stop_ticking().await.unwrap();
    let stopped_at = lamp.hold(0).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        lamp.hold(0).await.unwrap() <= stopped_at + 1,
        "a cancelled timer kept ticking"
    );
    silo.shutdown().await;
}

// Pins that the timers of an instance that panicked stop with it, even one its panicking turn
// registered: they never tick on the next instance. Both where the turn ran inline (the grain
// was active) and on the activation's task (the call activated the grain).
#[tokio::test(start_paused = true)]
async fn panicked_turns_timer_does_not_tick_on_the_next_instance() {
    let silo = silo();
    for (key, active) in [("panic-inline", true), ("panic-on-task", false)] {
        let lamp: LampRef = silo.grain_factory().get(key);
        if active {
            lamp.bump().await.unwrap();
        }
        let error = lamp.start_ticking_then_panic(10).await.unwrap_err();
        assert!(matches!(error, CallError::GrainPanicked { .. }), "{error}");
        assert_eq!(lamp.bump().await.unwrap(), 1, "{key}: a fresh instance");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            lamp.hold(0).await.unwrap(),
            1,
            "{key}: the timer of the instance that panicked ticked on the next one"
        );
    }
    silo.shutdown().await;
}

// Pins the default call timeout of 30 s: a call that never answers ends with Timeout.
#[tokio::test(start_paused = true)]
async fn default_timeout_is_thirty_seconds() {
    let silo = Silo::builder()
        .register::<LampGrain>()
        .config(SiloConfig {
            shutdown_grace: Duration::from_secs(1),
            ..SiloConfig::default()
        })
        .start()
        .unwrap();
    let lamp: LampRef = silo.grain_factory().get("hang");
    let started = tokio::time::Instant::now();
    assert_eq!(
        lamp.hang().await.unwrap_err(),
        CallError::Timeout(Duration::from_secs(30))
    );
    assert!(started.elapsed() >= Duration::from_secs(30));
    silo.shutdown().await;
}

// Pins graceful shutdown: calls in flight finish with their values (including calls they make to
// other grains), every on_deactivate runs, and new calls are refused with ShuttingDown.
#[tokio::test(start_paused = true)]
async fn shutdown_finishes_in_flight_calls_then_refuses() {
    let silo = silo();
    let factory = silo.grain_factory();
    let lamps: Vec<LampRef> = (0..5).map(|i| factory.get(format!("shut-{i}"))).collect();
    for lamp in &lamps {
        lamp.bump().await.unwrap();
    }
    let holding: Vec<_> = lamps.iter().map(|lamp| lamp.hold(200)).collect();
    let chained = lamps[0].bump_other("shut-late".into());
    tokio::task::yield_now().await;
    let shutdown = tokio::spawn({
        let silo = silo.clone();
        async move { silo.shutdown().await }
    });
    until(Duration::from_secs(1), || silo.is_shutting_down()).await;
    let refused = lamps[1].bump().await;
    assert_eq!(refused.unwrap_err(), CallError::ShuttingDown);
    for answer in join_all(holding).await {
        assert_eq!(answer.unwrap(), 1, "an in-flight call did not finish");
    }
    assert_eq!(
        chained.await.unwrap(),
        1,
        "a call made by an in-flight turn was not served"
    );
    shutdown.await.unwrap();
    for i in 0..5 {
        let events = events(&format!("shut-{i}"));
        assert_eq!(
            events.last().map(String::as_str),
            Some("deactivate Shutdown at 1"),
            "{events:?}"
        );
    }
    assert_eq!(
        events("shut-late"),
        ["activate", "deactivate Shutdown at 1"]
    );
    assert_eq!(lamps[2].bump().await.unwrap_err(), CallError::ShuttingDown);
    assert_eq!(silo.activation_count(), 0);
}

// Pins that an activation draining a read-only call while deactivating does not spin: the call
// sleeps on a current-thread runtime, which only works if the activation yields.
#[tokio::test(start_paused = true)]
async fn deactivating_activation_drains_interleaving_calls() {
    let silo = silo();
    let lamp: LampRef = silo.grain_factory().get("drain");
    lamp.lend_context().await.unwrap();
    let holding = lamp.hold(20);
    tokio::task::yield_now().await;
    LENT_CONTEXT
        .lock()
        .unwrap()
        .take()
        .unwrap()
        .deactivate_on_idle();
    let glowing = lamp.glow(10);
    holding.await.unwrap();
    glowing.await.unwrap();
    until(Duration::from_secs(1), || silo.activation_count() == 0).await;
    silo.shutdown().await;
}

// Pins FIFO per caller across a deactivation: calls issued while the activation runs a slow
// on_deactivate reach its successor in issue order, even one that is never polled.
#[tokio::test(start_paused = true)]
async fn calls_during_deactivation_keep_their_order() {
    let silo = silo();
    let lamp: LampRef = silo.grain_factory().get("slowbye-fifo");
    lamp.bump().await.unwrap();
    lamp.retire().await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let first = lamp.bump();
    let never_polled = lamp.bump();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = lamp.bump();
    assert_eq!(
        first.await.unwrap(),
        1,
        "the successor starts fresh and takes calls in order"
    );
    assert_eq!(
        third.await.unwrap(),
        3,
        "an unpolled call was still delivered, in order"
    );
    drop(never_polled);
    silo.shutdown().await;
}

// Pins that calls made by on_deactivate during shutdown are served (they carry the grain on
// their chain), and that timer callbacks carry a chain too: calling back into their own grain
// fails fast with a cycle instead of waiting for the timeout.
#[tokio::test(start_paused = true)]
async fn deactivation_and_timer_turns_carry_a_call_chain() {
    let silo = silo();
    let saver: LampRef = silo.grain_factory().get("saver");
    saver.bump().await.unwrap();
    let looper: LampRef = silo.grain_factory().get("looper");
    looper.start_calling_self().await.unwrap();
    until(Duration::from_secs(1), || {
        !events("looper").iter().all(|e| e == "activate")
    })
    .await;
    let looped = events("looper");
    assert!(looped[1].contains("CycleDetected"), "{looped:?}");
    silo.shutdown().await;
    assert_eq!(events("saver")[1], "saved Ok(1)");
}

// Pins that shutdown returns even when its grace period aborts a stuck turn whose grain has a
// periodic timer (ticker tasks end with the activation).
#[tokio::test(start_paused = true)]
async fn shutdown_returns_after_aborting_a_grain_with_timers() {
    let silo = Silo::builder()
        .register::<LampGrain>()
        .config(SiloConfig {
            shutdown_grace: Duration::from_millis(100),
            ..SiloConfig::default()
        })
        .start()
        .unwrap();
    let lamp: LampRef = silo.grain_factory().get("stuck");
    lamp.start_ticking(10).await.unwrap();
    let hung = lamp.with_timeout(Duration::from_secs(3600)).hang();
    tokio::time::sleep(Duration::from_millis(50)).await;
    tokio::time::timeout(Duration::from_secs(60), silo.shutdown())
        .await
        .expect("shutdown hung");
    assert!(hung.await.is_err());
}
