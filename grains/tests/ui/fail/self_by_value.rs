use silica_grains::grain;

#[grain]
pub trait Counter {
    async fn consume(self) -> u64;
}

fn main() {}
