use silica_grains::grain;

#[grain]
pub trait Counter {
    async fn add<T: Into<u64>>(&mut self, n: T) -> u64;
}

fn main() {}
