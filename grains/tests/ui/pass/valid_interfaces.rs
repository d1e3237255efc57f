use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use silica_grains::{Grain, GrainContext, GrainReference, PlacementStrategy, grain};

#[derive(Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub lines: Vec<(String, u32)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ShopError {
    OutOfStock(String),
}

/// Every option and argument shape an interface may use.
#[grain(reentrant, placement = HashBased, idle_after_secs = 600, name = "shop.Inventory")]
pub trait Inventory {
    /// Documented methods keep their docs on the reference.
    async fn place(&mut self, order: Order, priority: u8) -> Result<u64, ShopError>;
    #[grain(read_only)]
    async fn stock(&self) -> HashMap<String, u32>;
    #[grain(always_interleave)]
    async fn ping(&self);
    async fn nothing(&mut self);
}

#[grain(stateless_worker = 8)]
pub trait Hasher {
    async fn hash(&mut self, data: Vec<u8>) -> [u8; 4];
}

struct Shop;

impl Grain for Shop {
    type Interface = InventoryRef;
    fn create(_: &GrainContext) -> Self {
        Shop
    }
}

impl Inventory for Shop {
    async fn place(&mut self, order: Order, _priority: u8) -> Result<u64, ShopError> {
        Ok(order.id)
    }
    async fn stock(&self) -> HashMap<String, u32> {
        HashMap::new()
    }
    async fn ping(&self) {}
    async fn nothing(&mut self) {}
}

fn main() {
    assert_eq!(InventoryRef::INTERFACE, "shop.Inventory");
    assert_eq!(InventoryRef::DEFAULT_OPTIONS.placement, PlacementStrategy::HashBased);
    assert!(InventoryRef::DEFAULT_OPTIONS.reentrant);
    assert_eq!(HasherRef::DEFAULT_OPTIONS.stateless_worker, Some(8));
    assert_eq!(InventoryRef::METHODS.len(), 4);
}
