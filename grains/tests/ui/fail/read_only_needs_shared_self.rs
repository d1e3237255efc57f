use silica_grains::grain;

#[grain]
pub trait Counter {
    #[grain(read_only)]
    async fn get(&mut self) -> u64;
}

fn main() {}
