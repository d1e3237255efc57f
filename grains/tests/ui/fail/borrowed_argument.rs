use silica_grains::grain;

#[grain]
pub trait Greeter {
    async fn greet(&mut self, name: &str) -> String;
}

fn main() {}
