//! With the `cli` feature, builds the example guests: `usocket demo` bundles the demo one.

fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_CLI");
    if std::env::var_os("CARGO_FEATURE_CLI").is_none() {
        return;
    }
    let dir = usocket_build_guests::build(&["usocket-examples"], &["guest", "wit", "examples"]);
    println!(
        "cargo:rustc-env=USOCKET_DEMO_WASM={}",
        dir.join("demo.wasm").display()
    );
    // The examples, for the CLI's own tests (tests/cli.rs).
    println!("cargo:rustc-env=USOCKET_EXAMPLES_DIR={}", dir.display());
}
