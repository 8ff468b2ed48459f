#[path = "../scripts/link_libtorch.rs"]
mod link_libtorch;

fn main() {
    let lib_dir = link_libtorch::link_libtorch();
    // csrc/ against the same libtorch's headers (torch/include beside
    // torch/lib), with the C++11 ABI every torch >= 2.7 wheel uses.
    let include = lib_dir.with_file_name("include");
    let sources = [
        "csrc/aten_settings.cpp",
        "csrc/cpu_cache.cpp",
        "csrc/packing.cpp",
    ];
    for source in sources {
        println!("cargo:rerun-if-changed={source}");
    }
    cc::Build::new()
        .cpp(true)
        .files(sources)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(false)
        .compile("bocb_aten_settings");
}
