#[path = "../../scripts/link_libtorch.rs"]
mod link_libtorch;

fn main() {
    link_libtorch::link_libtorch();
}
