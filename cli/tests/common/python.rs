//! Python guests for the CLI's tests: the generic runner component (guest-python/build.py
//! `runner`), built and precompiled once per test binary, and ways to run scripts with it
//! through `usocket run`, as a user would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use super::{finish, text};

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// What the conformance README asks a host to grant, as `usocket run` flags.
pub const CONFORMANCE_GRANTS: &[&str] = &[
    "--allow",
    "connect,send,bind,listen,accept,recv=127.0.0.1:*",
    "--allow",
    "resolve=*",
];

/// The Python runner, precompiled (`.cwasm`): built by guest-python/build.py (which installs
/// its pinned componentize-py in a venv under target/ and skips work that is up to date), then
/// compiled with `usocket compile` unless the `.cwasm` is newer than both the component and
/// the `usocket` binary.
pub fn runner() -> &'static Path {
    static RUNNER: OnceLock<PathBuf> = OnceLock::new();
    RUNNER.get_or_init(|| {
        let dir = repo().join("target").join("usocket-python");
        std::fs::create_dir_all(&dir).unwrap();
        let wasm = dir.join("python.wasm");
        let build = Command::new("python3")
            .arg(repo().join("guest-python").join("build.py"))
            .args(["runner", "-o"])
            .arg(&wasm)
            .stdin(Stdio::null())
            .output()
            .expect("python3 runs (guest-python/build.py needs python3 with venv and pip)");
        assert!(
            build.status.success(),
            "guest-python/build.py runner failed:\n{}\n{}",
            text(&build.stdout),
            text(&build.stderr)
        );
        let cwasm = dir.join("python.cwasm");
        let mtime = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
        let bin = Path::new(env!("CARGO_BIN_EXE_usocket"));
        let fresh = match (mtime(&cwasm), mtime(&wasm), mtime(bin)) {
            (Some(c), Some(w), Some(b)) => c > w && c > b,
            _ => false,
        };
        if !fresh {
            let out = super::usocket(&[
                "compile",
                wasm.to_str().unwrap(),
                "-o",
                cwasm.to_str().unwrap(),
            ]);
            assert!(
                out.status.success(),
                "usocket compile: {}",
                text(&out.stderr)
            );
        }
        cwasm
    })
}

/// `usocket run FLAGS --dir DIR::/app --allow-precompiled RUNNER /app/SCRIPT ARGS`.
pub fn run_script(dir: &Path, script: &str, args: &[&str], flags: &[&str]) -> Output {
    let child = script_command(dir, script, args, flags)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("usocket runs");
    finish(child, &[script])
}

/// The command [`run_script`] runs, for tests that talk to the guest while it runs.
pub fn script_command(dir: &Path, script: &str, args: &[&str], flags: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_usocket"));
    command
        .arg("run")
        .args(flags)
        .arg("--dir")
        .arg(format!("{}::/app", dir.display()))
        .arg("--allow-precompiled")
        .arg(runner())
        .arg(format!("/app/{script}"))
        .args(args);
    command
}

/// Runs Python source `code` (written to a fresh directory) with `flags`.
pub fn run_code(name: &str, code: &str, flags: &[&str]) -> Output {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("python-code")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.py"), code).unwrap();
    run_script(&dir, "main.py", &[], flags)
}
