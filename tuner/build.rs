#[path = "../scripts/link_libtorch.rs"]
mod link_libtorch;

fn main() {
    // A build without the `train` feature links no libtorch.
    if std::env::var_os("CARGO_FEATURE_TRAIN").is_some() {
        link_libtorch::link_libtorch();
    }
}
