//! `usocket compile` and `run --allow-precompiled`, and the WASI flags of `run` (`--dir`,
//! `--dir-rw`, `--env`): what they accept, and how they explain what they refuse. (What a guest
//! sees through `--dir` and `--env` is tested with Python guests in tests/python.rs.)

use std::path::PathBuf;

mod common;
use common::{example, http_server, text, usocket};

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_precompiled_component_runs_with_allow_precompiled_only() {
    let dir = scratch("precompiled");
    let cwasm = dir.join("http_get.cwasm");
    let out = usocket(&[
        "compile",
        &example("http_get"),
        "-o",
        cwasm.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "compile: {}", text(&out.stderr));
    assert!(cwasm.metadata().unwrap().len() > 0);

    let port = http_server("ok\n").to_string();
    let grant = format!("connect=127.0.0.1:{port}");
    let out = usocket(&[
        "run",
        "--allow",
        &grant,
        cwasm.to_str().unwrap(),
        "127.0.0.1",
        &port,
    ]);
    assert_eq!(out.status.code(), Some(2), "refused without the flag");
    assert!(
        text(&out.stderr).contains("--allow-precompiled"),
        "{}",
        text(&out.stderr)
    );

    let out = usocket(&[
        "run",
        "--allow",
        &grant,
        "--allow-precompiled",
        cwasm.to_str().unwrap(),
        "127.0.0.1",
        &port,
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).ends_with("\r\n\r\nok\n"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn compile_writes_next_to_the_component_by_default_and_never_over_it() {
    let dir = scratch("compile-default");
    let wasm = dir.join("g.wasm");
    std::fs::copy(example("http_get"), &wasm).unwrap();
    let out = usocket(&["compile", wasm.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.join("g.cwasm").exists());

    let out = usocket(&[
        "compile",
        wasm.to_str().unwrap(),
        "-o",
        wasm.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("overwrite"),
        "{}",
        text(&out.stderr)
    );

    // Another spelling of the same file is refused too.
    let dotted = format!("{}/./g.wasm", dir.display());
    let out = usocket(&["compile", wasm.to_str().unwrap(), "-o", &dotted]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("overwrite"),
        "{}",
        text(&out.stderr)
    );
    assert!(std::fs::read(&wasm).unwrap().starts_with(b"\0asm"));

    let out = usocket(&["compile", dir.join("g.cwasm").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("already precompiled"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn broken_inputs_fail_with_a_message_not_a_panic() {
    let dir = scratch("broken");
    let junk = dir.join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").unwrap();
    let out = usocket(&["compile", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("not a wasm32-wasip2 command component"));

    // A precompiled file cut short: wasmtime refuses it (as not precompiled, or as unloadable).
    let cwasm = dir.join("whole.cwasm");
    let out = usocket(&[
        "compile",
        &example("http_get"),
        "-o",
        cwasm.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let bytes = std::fs::read(&cwasm).unwrap();
    let cut = dir.join("cut.cwasm");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = usocket(&["run", "--allow-precompiled", cut.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("compile it again"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("panicked"));
}

#[test]
fn bad_dir_and_env_flags_are_explained() {
    let dir = scratch("flags");
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let d = dir.to_str().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--dir".into(), "/no/such/dir".into()], "cannot open"),
        (
            vec!["--dir".into(), file.display().to_string()],
            "is not a directory",
        ),
        (vec!["--dir".into(), "::/app".into()], "HOST::GUEST"),
        (vec!["--dir".into(), format!("{d}::")], "HOST::GUEST"),
        (
            vec![
                "--dir".into(),
                format!("{d}::/app"),
                "--dir-rw".into(),
                format!("{d}::/app"),
            ],
            "guest path `/app`",
        ),
        (vec!["--env".into(), "=value".into()], "NAME=VALUE"),
        (
            vec!["--env".into(), "USOCKET_TEST_SURELY_UNSET_42".into()],
            "is not set",
        ),
    ];
    for (flags, says) in cases {
        let mut args = vec!["run".to_string()];
        args.extend(flags.iter().cloned());
        args.push(example("http_get"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = usocket(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{flags:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(says),
            "{flags:?}: {}",
            text(&out.stderr)
        );
    }
}
