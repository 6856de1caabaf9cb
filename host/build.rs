//! With the `cli` feature, builds the demo guest that `usocket demo` runs (bundled into the binary).

fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_CLI");
    if std::env::var_os("CARGO_FEATURE_CLI").is_none() {
        return;
    }
    let dir = usocket_build_guests::build(&["usocket-examples"], &["guest", "wit", "examples"]);
    println!("cargo:rustc-env=USOCKET_DEMO_WASM={}", dir.join("demo.wasm").display());
}
