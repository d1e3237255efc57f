//! Activation on first call, typed calls, grain-to-grain calls and the grain's own errors.

mod common;

use common::*;
use silica_grains::GrainReference;

// Pins virtual activation: the first call to an id activates it and state persists across calls.
#[tokio::test]
async fn first_call_activates_and_state_persists() {
    let silo = builder().start().unwrap();
    let counter: CounterRef = silo.grain_factory().get("a");
    assert_eq!(counter.add(2).await.unwrap(), 2);
    assert_eq!(counter.add(3).await.unwrap(), 5);
    assert_eq!(counter.get().await.unwrap(), 5);
    let other: CounterRef = silo.grain_factory().get("b");
    assert_eq!(other.get().await.unwrap(), 0);
    assert_eq!(silo.activation_count(), 2);
    silo.shutdown().await;
}

// Pins grain-to-grain calls and that a grain's own error type arrives inside Ok.
#[tokio::test]
async fn transfer_between_accounts() {
    let silo = builder().start().unwrap();
    let alice: AccountRef = silo.grain_factory().get("alice");
    let bob: AccountRef = silo.grain_factory().get("bob");
    alice.deposit(100).await.unwrap();
    assert_eq!(alice.transfer("bob".into(), 30).await.unwrap(), Ok(70));
    assert_eq!(bob.balance().await.unwrap(), 30);
    assert_eq!(
        alice.transfer("bob".into(), 500).await.unwrap(),
        Err(BankError::Insufficient { balance: 70 })
    );
    assert_eq!(alice.id().to_string(), "Account/\"alice\"");
    silo.shutdown().await;
}

// Pins that a call's future is 'static: it outlives the reference that made it and can be
// spawned (the call was already sent when the method was called).
#[tokio::test]
async fn call_futures_outlive_their_reference() {
    let silo = builder().start().unwrap();
    let pending = {
        let counter: CounterRef = silo.grain_factory().get("detached");
        counter.add(4)
    };
    assert_eq!(tokio::spawn(pending).await.unwrap().unwrap(), 4);
    silo.shutdown().await;
}

// Pins that a call from a thread outside any Tokio runtime still works (its turn runs on the
// activation's task, not inline on that thread, where timers would be unavailable).
#[test]
fn calls_from_outside_the_runtime_run_on_the_silo() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let silo = runtime.block_on(async { builder().start().unwrap() });
    let counter: CounterRef = silo.grain_factory().get("from-a-thread");
    runtime.block_on(counter.add(1)).unwrap();
    let from_thread = std::thread::spawn(move || block_on(counter.sleep(5)));
    assert_eq!(from_thread.join().unwrap().unwrap(), 1);
    runtime.block_on(silo.shutdown());
}

/// Polls `future` to completion on this thread, parking between wake-ups; no runtime involved.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
    let mut context = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}
