use silica_grains::grain;

#[grain(reentrent)]
pub trait Counter {
    async fn get(&self) -> u64;
}

fn main() {}
