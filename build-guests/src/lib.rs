//! Compiles guest crates of this workspace for `wasm32-wasip2` from a `build.rs`.
//!
//! The nested `cargo build` gets its own target directory (sharing the outer one deadlocks on
//! its lock) and a clean environment (the outer build's RUSTFLAGS and target must not leak
//! in). Guests are always built in release mode: they are small, build in seconds once their
//! dependencies are compiled, and benchmarks need them optimised. They are built as we advise
//! guest authors to build theirs, with fat LTO and one codegen unit (see [`GUEST_PROFILE`]).
//! The `wasm32-wasip2` target is installed with rustup when missing, since
//! `rust-toolchain.toml` alone does not install it where `RUSTUP_AUTO_INSTALL=0`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// The release profile settings the guests get, through cargo's environment so that the host
/// (wasmtime, which the same workspace builds in release for benchmarks) keeps its own.
///
/// Why: without LTO every allocation and free in a guest goes through Rust's allocator shims
/// (`__rust_alloc` -> `__rdl_alloc` -> `malloc`), and a call between wasm functions is not
/// cheap in wasmtime; with LTO the shims fold into direct calls to wasi-libc's `malloc` and
/// `free`, and small library functions inline into the program. MicroPython `readline()`,
/// which allocates one buffer a line, gets about a fifth faster (0.72 -> 0.86 of native by
/// the medians of alternating runs of `cargo bench -p usocket-tests -- readline`). The whole
/// guest build takes about 10 s longer.
pub const GUEST_PROFILE: [(&str, &str); 2] = [
    ("CARGO_PROFILE_RELEASE_LTO", "fat"),
    ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1"),
];

/// Builds `packages` (all their binaries) and returns the folder holding `<bin>.wasm`.
///
/// `watch` lists files and folders (relative to the workspace root) whose changes must
/// rebuild the guests.
pub fn build(packages: &[&str], watch: &[&str]) -> PathBuf {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("run from build.rs"));
    let workspace = workspace_root(&manifest_dir);
    for path in watch {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }
    ensure_target();

    // OUT_DIR is <target>/<profile>/build/<crate>-<hash>/out: put guests beside the profiles so
    // debug and release hosts share one guest build.
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("run from build.rs"));
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .expect("OUT_DIR has the usual depth")
        .join("guests");

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--release", "--quiet", "--target", TARGET])
        .env("CARGO_TARGET_DIR", &target_dir)
        .envs(GUEST_PROFILE);
    for package in packages {
        cmd.args(["-p", package]);
    }
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the guests: {e}"));
    assert!(
        status.success(),
        "building the guests {packages:?} for {TARGET} failed (see the errors above)"
    );
    target_dir.join(TARGET).join("release")
}

fn workspace_root(manifest_dir: &Path) -> PathBuf {
    manifest_dir
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|text| text.contains("[workspace]"))
        })
        .unwrap_or(manifest_dir)
        .to_path_buf()
}

/// Installs the target with rustup if this toolchain lacks it.
fn ensure_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if libdir.is_some_and(|dir| dir.exists()) {
        return;
    }
    println!(
        "cargo:warning=installing the {TARGET} target with rustup (needed to build the guests)"
    );
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .unwrap_or_else(|e| {
            panic!("the {TARGET} target is missing and rustup could not be run: {e}")
        });
    assert!(status.success(), "`rustup target add {TARGET}` failed");
}
