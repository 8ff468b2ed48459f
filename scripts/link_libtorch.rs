// Shared by the build scripts of every crate whose artefacts link libtorch
// (each crate's build.rs includes it with `#[path]`).
//
// torch-sys exports the libtorch directory as `DEP_TCH_LIBTORCH_LIB`. We bake it
// into the binaries' rpath so they run without LD_LIBRARY_PATH, and force-link
// libtorch_cuda: nothing references its symbols directly, so with the default
// `--as-needed` the linker drops it and CUDA is never found at run time.

/// Emits the link settings and returns the libtorch `lib` directory.
pub fn link_libtorch() -> std::path::PathBuf {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!(
            "torch-sys did not report its libtorch directory; run `make venv` \
             (installs torch==2.11.0 into .venv) and build again"
        );
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    let lib_dir = std::path::PathBuf::from(lib_dir);
    // `bocb bench optim` runs the reference optimizers with the python whose
    // torch this is: VENV/lib/python3.X/site-packages/torch/lib -> VENV/bin/python.
    println!(
        "cargo:rustc-env=BOCB_BUILD_PYTHON={}",
        lib_dir
            .ancestors()
            .nth(5)
            .map_or("python3".into(), |venv| venv.join("bin/python"))
            .display()
    );
    if lib_dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    lib_dir
}
