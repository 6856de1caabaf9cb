//! The `usocket` command line: runs guests with the rules it is given, exits with the guest's
//! code, and explains bad input.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;

mod common;
use common::{example, http_server, text, usocket};

#[test]
fn http_get_works_when_granted() {
    let port = http_server("hello\n").to_string();
    let grant = format!("connect=127.0.0.1:{port}");
    let out = usocket(&[
        "run",
        "--allow",
        &grant,
        &example("http_get"),
        "127.0.0.1",
        &port,
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("HTTP/1.0 200 OK\r\n"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).ends_with("\r\n\r\nhello\n"));
}

#[test]
fn http_get_gets_eacces_without_a_grant() {
    let port = http_server("hello\n").to_string();
    let out = usocket(&["run", &example("http_get"), "127.0.0.1", &port]);
    assert_eq!(out.status.code(), Some(1), "the guest's own exit code");
    assert!(
        text(&out.stderr).contains("[Errno 13] EACCES"),
        "{}",
        text(&out.stderr)
    );
    // A --deny rule beats the --allow rule.
    let grant = format!("connect=127.0.0.1:{port}");
    let out = usocket(&[
        "run",
        "--allow",
        &grant,
        "--deny",
        "connect=127.0.0.0/8:*",
        &example("http_get"),
        "127.0.0.1",
        &port,
    ]);
    assert!(
        text(&out.stderr).contains("[Errno 13] EACCES"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_rules_are_explained() {
    let out = usocket(&["run", "--allow", "connect=::1:80", &example("http_get")]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad rule `connect=::1:80`") && err.contains("brackets"),
        "{err}"
    );
}

#[test]
fn bad_files_are_explained() {
    let out = usocket(&["run", "/nonexistent/x.wasm"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("cannot read component `/nonexistent/x.wasm`"),
        "{}",
        text(&out.stderr)
    );

    let not_wasm =
        std::env::temp_dir().join(format!("usocket-cli-test-{}.wasm", std::process::id()));
    std::fs::write(&not_wasm, "not a component").unwrap();
    let out = usocket(&["run", not_wasm.to_str().unwrap()]);
    std::fs::remove_file(&not_wasm).unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("is not a wasm32-wasip2 command component"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn demo_shows_a_granted_and_a_refused_connection() {
    let out = usocket(&["demo"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("guest: server replied \"hello from the host's server\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("refused with OSError(13) EACCES"),
        "{stdout}"
    );
    assert!(stdout.contains("saw 0 connection attempts"), "{stdout}");
}

#[test]
fn echo_server_serves_lines() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let (bind, listen) = (
        format!("bind=127.0.0.1:{port}"),
        format!("listen=127.0.0.1:{port}"),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_usocket"))
        .args([
            "run",
            "--time-limit",
            "30",
            "--allow",
            &bind,
            "--allow",
            &listen,
            "--allow",
            "accept=127.0.0.1:*",
            &example("echo_server"),
            &port,
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(
        line,
        format!("echo_server: listening on 127.0.0.1:{port}\n")
    );
    let mut conn =
        std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    conn.write_all(b"one\ntwo\n").unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let (mut a, mut b) = (String::new(), String::new());
    reader.read_line(&mut a).unwrap();
    reader.read_line(&mut b).unwrap();
    assert_eq!((a.as_str(), b.as_str()), ("one\n", "two\n"));
    drop(conn);
    drop(reader);
    assert!(child.wait().unwrap().success());
}
