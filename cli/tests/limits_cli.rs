//! The memory limits on the command line and in policy files: `--max-memory` and
//! `--max-buffered-total`, the `max_memory` and `max_buffered_total` keys, checked by the same
//! rules, explained by `policy check`, and `max_memory` reaching the guest's store.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

mod common;
use common::{example, text, usocket};

/// A policy file with `body`, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, body: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("usocket-limits-{}-{name}", std::process::id()));
        std::fs::write(&path, body).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn max_memory_reaches_the_guest() {
    // One wasm page is a valid limit but smaller than any Rust guest's initial memory: the
    // guest does not start, and the error says which limit to raise.
    let out = usocket(&["run", "--max-memory", "65536", &example("http_get")]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("exceeds memory limits"), "{err}");
    assert!(err.contains("--max-memory"), "{err}");

    let file = TempFile::new("tiny.toml", "[limits]\nmax_memory = 65536\n");
    let out = usocket(&["run", "--policy", file.path(), &example("http_get")]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("exceeds memory limits"), "{err}");

    // A flag overrides the file: with 16 MiB the guest starts (and explains its arguments).
    let out = usocket(&[
        "run",
        "--policy",
        file.path(),
        "--max-memory",
        "16777216",
        &example("http_get"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("usage: http_get"));
}

#[test]
fn memory_limits_follow_the_same_rules_in_flags_and_files() {
    for (flag, value, why) in [
        ("--max-memory", "0", "less than one wasm page"),
        ("--max-memory", "4096", "less than one wasm page"),
        ("--max-buffered-total", "0", "ENOBUFS"),
    ] {
        let out = usocket(&["run", flag, value, &example("http_get")]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(&format!("`{flag} {value}` ")), "{err}");
        assert!(err.contains(why), "{err}");

        let key = flag.trim_start_matches("--").replace('-', "_");
        let file = TempFile::new(
            &format!("{key}-{value}.toml"),
            &format!("allow = []\n[limits]\n{key} = {value}\n"),
        );
        for args in [
            vec!["policy", "check", file.path()],
            vec!["run", "--policy", file.path(), "x.wasm"],
        ] {
            let out = usocket(&args);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(":3:"), "the line of the key: {err}");
            assert!(err.contains(&format!("`{key} = {value}`")), "{err}");
        }
    }
}

#[test]
fn policy_check_explains_the_memory_limits() {
    let file = TempFile::new(
        "memory.toml",
        "[limits]\nmax_memory = 33554432\nmax_buffered_total = 1048576\n",
    );
    let out = usocket(&["policy", "check", file.path()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("guest memory (linear memories and tables): 33554432 (32 MiB)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("bytes the host queues for all sockets together: 1048576 (1 MiB)"),
        "{stdout}"
    );
    // The defaults are stated too.
    let file = TempFile::new("empty.toml", "");
    let stdout = text(&usocket(&["policy", "check", file.path()]).stdout);
    assert!(stdout.contains("268435456 (256 MiB)"), "{stdout}");
    assert!(stdout.contains("67108864 (64 MiB)"), "{stdout}");
}

/// A loopback HTTP server that answers one request with `size` bytes of body.
fn http_server(size: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
            line.clear();
        }
        let _ = conn.write_all(b"HTTP/1.0 200 OK\r\n\r\n");
        let _ = conn.write_all(&vec![b'x'; size]);
    });
    port.to_string()
}

#[test]
fn max_memory_stops_a_guest_that_would_hold_more() {
    // http_get holds the whole reply (12 MiB, below the 16 MiB a socket may queue) in its
    // memory before printing it: with 8 MiB of memory its allocation fails and it traps.
    const BODY: usize = 12 << 20;
    for (max_memory, fits) in [("8388608", false), ("67108864", true)] {
        let port = http_server(BODY);
        let grant = format!("connect=127.0.0.1:{port}");
        // `output` reads stdout while usocket runs; `--time-limit` bounds the run (usocket
        // ends at most a few seconds after it).
        let out = Command::new(env!("CARGO_BIN_EXE_usocket"))
            .args(["run", "--time-limit", "30", "--max-memory", max_memory])
            .args(["--allow", &grant, &example("http_get"), "127.0.0.1", &port])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = text(&out.stderr);
        if fits {
            assert_eq!(out.status.code(), Some(0), "{err}");
            assert!(out.stdout.len() > BODY, "{} bytes", out.stdout.len());
        } else {
            assert_eq!(out.status.code(), Some(125), "{err}");
            assert!(
                err.contains("unreachable"),
                "not a failed allocation: {err}"
            );
            assert!(out.stdout.is_empty(), "{} bytes printed", out.stdout.len());
        }
    }
}
