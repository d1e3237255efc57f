//! Grains shared by the silo's integration tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use silica_grains::{DeactivationReason, Grain, GrainContext, GrainError, grain};
use silica_silo::{Silo, SiloBuilder};

#[grain]
pub trait Counter {
    async fn add(&mut self, n: u64) -> u64;
    #[grain(read_only)]
    async fn get(&self) -> u64;
    async fn fail(&mut self, message: String);
    async fn sleep(&mut self, millis: u64) -> u64;
}

/// Counts activations and deactivations of `CounterGrain`, process-wide per test via the key.
pub static ACTIVATIONS: AtomicUsize = AtomicUsize::new(0);
pub static DEACTIVATIONS: AtomicUsize = AtomicUsize::new(0);

pub struct CounterGrain {
    pub value: u64,
}

impl Grain for CounterGrain {
    type Interface = CounterRef;
    fn create(_: &GrainContext) -> Self {
        CounterGrain { value: 0 }
    }
    async fn on_activate(&mut self) -> Result<(), GrainError> {
        ACTIVATIONS.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn on_deactivate(&mut self, _reason: DeactivationReason) {
        DEACTIVATIONS.fetch_add(1, Ordering::SeqCst);
    }
}

impl Counter for CounterGrain {
    async fn add(&mut self, n: u64) -> u64 {
        self.value += n;
        self.value
    }
    async fn get(&self) -> u64 {
        self.value
    }
    async fn fail(&mut self, message: String) {
        panic!("{message}");
    }
    async fn sleep(&mut self, millis: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        self.value
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankError {
    Insufficient { balance: i64 },
    Call(String),
}

impl From<silica_grains::CallError> for BankError {
    fn from(e: silica_grains::CallError) -> Self {
        BankError::Call(e.to_string())
    }
}

#[grain]
pub trait Account {
    async fn deposit(&mut self, amount: i64) -> i64;
    async fn withdraw(&mut self, amount: i64) -> Result<i64, BankError>;
    #[grain(read_only)]
    async fn balance(&self) -> i64;
    /// Moves `amount` to the account `to` (a grain-to-grain call).
    async fn transfer(&mut self, to: String, amount: i64) -> Result<i64, BankError>;
    /// Calls `other`, which calls back into this account: a cycle on a non-reentrant grain.
    async fn ping_back(&mut self, other: String) -> Result<i64, BankError>;
}

pub struct AccountGrain {
    ctx: GrainContext,
    balance: i64,
}

impl Grain for AccountGrain {
    type Interface = AccountRef;
    fn create(ctx: &GrainContext) -> Self {
        AccountGrain {
            ctx: ctx.clone(),
            balance: 0,
        }
    }
}

impl Account for AccountGrain {
    async fn deposit(&mut self, amount: i64) -> i64 {
        self.balance += amount;
        self.balance
    }
    async fn withdraw(&mut self, amount: i64) -> Result<i64, BankError> {
        if amount > self.balance {
            return Err(BankError::Insufficient {
                balance: self.balance,
            });
        }
        self.balance -= amount;
        Ok(self.balance)
    }
    async fn balance(&self) -> i64 {
        self.balance
    }
    async fn transfer(&mut self, to: String, amount: i64) -> Result<i64, BankError> {
        if amount > self.balance {
            return Err(BankError::Insufficient {
                balance: self.balance,
            });
        }
        let target: AccountRef = self.ctx.grain_factory().get(to);
        target.deposit(amount).await?;
        self.balance -= amount;
        Ok(self.balance)
    }
    async fn ping_back(&mut self, other: String) -> Result<i64, BankError> {
        let me = match &self.ctx.id().key {
            silica_grains::GrainKey::String(s) => s.to_string(),
            _ => unreachable!(),
        };
        let other: AccountRef = self.ctx.grain_factory().get(other);
        other.transfer(me, 0).await?
    }
}

pub fn builder() -> SiloBuilder {
    Silo::builder()
        .register::<CounterGrain>()
        .register::<AccountGrain>()
}
