//! Builds the example guests for wasm32-wasip2: `usocket demo` bundles the demo one, and the
//! CLI's tests run the others.

fn main() {
    let dir = usocket_build_guests::build(&["usocket-examples"], &["guest", "wit", "examples"]);
    println!(
        "cargo:rustc-env=USOCKET_DEMO_WASM={}",
        dir.join("demo.wasm").display()
    );
    // The examples, for the CLI's own tests (tests/cli.rs, tests/examples.rs,
    // tests/policy_cli.rs).
    println!("cargo:rustc-env=USOCKET_EXAMPLES_DIR={}", dir.display());
}
