//! Builds the guest test programs and the examples for wasm32-wasip2, once per build.

fn main() {
    let dir = usocket_build_guests::build(
        &["usocket-test-programs", "usocket-examples"],
        &["guest", "wit", "examples", "tests/programs"],
    );
    println!("cargo:rustc-env=USOCKET_GUESTS={}", dir.display());
}
