use silica_grains::grain;

pub struct NotSerde(u32);

#[grain]
pub trait Counter {
    async fn add(&mut self, n: NotSerde) -> u64;
}

fn main() {}
