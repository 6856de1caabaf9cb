//! The Python examples (examples/python/) run with the documented commands: the generic
//! runner component, the script's directory given with --dir, the grants with --allow.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

mod common;
use common::python::{repo, run_script, script_command};
use common::{finish, free_tcp_port, http_server, text};

fn examples() -> PathBuf {
    repo().join("examples").join("python")
}

#[test]
fn http_get_fetches_a_page_when_granted() {
    let port = http_server("hello from python\n");
    let grant = format!("connect=127.0.0.1:{port}");
    let out = run_script(
        &examples(),
        "http_get.py",
        &["localhost", &port.to_string(), "/"],
        &["--allow", &grant, "--allow", "resolve=localhost"],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("HTTP/1.0 200 OK\r\n"), "{stdout}");
    assert!(stdout.ends_with("\r\n\r\nhello from python\n"), "{stdout}");
}

#[test]
fn http_get_reports_eacces_and_exit_codes() {
    let port = http_server("never sent\n").to_string();
    // Resolving is granted, connecting is not.
    let out = run_script(
        &examples(),
        "http_get.py",
        &["localhost", &port],
        &["--allow", "resolve=localhost"],
    );
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("http_get: [Errno 13] EACCES"),
        "{}",
        text(&out.stderr)
    );
    // A usage error is the script's own exit status 2, through exit-with-code.
    let out = run_script(&examples(), "http_get.py", &["only-a-host"], &[]);
    assert_eq!(out.status.code(), Some(2), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("usage:"));
}

#[test]
fn echo_server_serves_several_clients_at_once() {
    let port = free_tcp_port();
    let clients = 3;
    let mut server = script_command(
        &examples(),
        "echo_server.py",
        &[&port.to_string(), &clients.to_string()],
        &[
            "--allow",
            &format!("bind,listen=127.0.0.1:{port}"),
            "--allow",
            "accept=127.0.0.1:*",
            "--time-limit",
            "30",
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("usocket runs");
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(
        first,
        format!("echo_server: listening on 127.0.0.1:{port}\n")
    );

    // All clients connect before any of them is served: one guest serves them together.
    let mut conns: Vec<TcpStream> = (0..clients)
        .map(|_| {
            let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c
        })
        .collect();
    for round in 0..3 {
        for (i, c) in conns.iter_mut().enumerate() {
            // A line in two segments, and a line with \r\n.
            c.write_all(format!("client {i} ").as_bytes()).unwrap();
            c.write_all(format!("round {round}\r\n").as_bytes())
                .unwrap();
        }
        for (i, c) in conns.iter_mut().enumerate() {
            let want = format!("client {i} round {round}\r\n");
            let mut got = vec![0; want.len()];
            c.read_exact(&mut got).unwrap();
            assert_eq!(text(&got), want);
        }
    }
    drop(conns);

    // Bounded: killed (and the test failed) after common::RUN_LIMIT. Its stdout was taken
    // above; the rest of it is read here.
    let out = finish(server, &["echo_server.py"]);
    let status = out.status;
    let stderr = text(&out.stderr);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(rest.matches(" gone\n").count(), clients, "{rest}");
}
