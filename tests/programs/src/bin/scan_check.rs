//! Runs the `usocket` crate's checks of its line scans and copies inside wasm, where the SIMD
//! versions run (the crate's native unit tests cover the portable ones). Prints `ok`.

fn main() {
    usocket::__scan_self_check();
    println!("ok");
}
