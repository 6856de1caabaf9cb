//! asyncio for Python guests (guest-python/lib/uasyncio.py, installed as `asyncio`): servers
//! and clients in one guest, a guest server driven by native clients, and a guest client of a
//! native server. Each script's stdout must equal its `.exp`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::thread;
use std::time::Duration;

mod common;
use common::python::{CONFORMANCE_GRANTS, repo, run_script, script_command};
use common::{finish, free_tcp_port, text};

fn tests_dir() -> PathBuf {
    repo().join("guest-python").join("tests")
}

fn expected(stem: &str) -> String {
    std::fs::read_to_string(tests_dir().join(format!("{stem}.exp"))).unwrap()
}

fn assert_matches(stem: &str, out: &Output) {
    let stderr = text(&out.stderr);
    assert_eq!(
        text(&out.stdout),
        expected(stem),
        "{stem} (stderr: {stderr})"
    );
    assert!(out.stderr.is_empty(), "{stem} wrote to stderr: {stderr}");
    assert_eq!(out.status.code(), Some(0), "{stem} exit status");
}

fn connect(port: u16) -> TcpStream {
    let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c
}

/// Closes `conn` with a reset (SO_LINGER on, 0 s).
fn reset(conn: TcpStream) {
    let sock = socket2::Socket::from(conn);
    sock.set_linger(Some(Duration::ZERO)).unwrap();
}

#[test]
fn a_server_and_its_clients_in_one_guest() {
    let out = run_script(&tests_dir(), "asyncio_streams.py", &[], CONFORMANCE_GRANTS);
    assert_matches("asyncio_streams", &out);
}

#[test]
fn tasks_timers_cancellation_and_sync_primitives() {
    let out = run_script(&tests_dir(), "asyncio_tasks.py", &[], CONFORMANCE_GRANTS);
    assert_matches("asyncio_tasks", &out);
}

/// A guest `asyncio.start_server` served to native clients: a reset, several clients at once
/// with many lines and one long line each, half a line, then STOP.
#[test]
fn a_guest_server_serves_native_clients() {
    let port = free_tcp_port();
    let mut guest = script_command(
        &tests_dir(),
        "asyncio_echo_server.py",
        &[&port.to_string()],
        &[
            "--allow",
            &format!("bind,listen=127.0.0.1:{port}"),
            "--allow",
            "accept=127.0.0.1:*",
            "--time-limit",
            "60",
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("usocket runs");
    let mut stdout = BufReader::new(guest.stdout.take().unwrap());
    let mut ready = String::new();
    stdout.read_line(&mut ready).unwrap();
    assert_eq!(ready, "READY\n");

    // 1: a client that resets at once.
    reset(connect(port));

    // 2: four clients at once, 50 lines each (one line each in turn), then a long line.
    let mut clients: Vec<(TcpStream, BufReader<TcpStream>)> = (0..4)
        .map(|_| {
            let c = connect(port);
            let r = BufReader::new(c.try_clone().unwrap());
            (c, r)
        })
        .collect();
    for round in 0..50 {
        for (i, (c, _)) in clients.iter_mut().enumerate() {
            c.write_all(format!("client {i} line {round}\n").as_bytes())
                .unwrap();
        }
        for (i, (_, r)) in clients.iter_mut().enumerate() {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert_eq!(line, format!("client {i} line {round}\n"));
        }
    }
    let long = format!("{}\n", "x".repeat(99_999));
    for (c, r) in clients.iter_mut() {
        c.write_all(long.as_bytes()).unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(
            line == long,
            "the long line came back as {} bytes",
            line.len()
        );
    }
    drop(clients);

    // 3: half a line, then the end of the stream.
    let mut half = connect(port);
    half.write_all(b"half a li").unwrap();
    drop(half);

    // 4: STOP gets BYE, then the end of the stream.
    let mut stop = connect(port);
    stop.write_all(b"STOP\n").unwrap();
    let mut answer = Vec::new();
    stop.read_to_end(&mut answer).unwrap();
    assert_eq!(text(&answer), "BYE\n");

    // Bounded: killed (and the test failed) after common::RUN_LIMIT. Its stdout was taken
    // above; the rest of it is read here.
    let out = finish(guest, &["asyncio_echo_server.py"]);
    let status = out.status;
    let stderr = text(&out.stderr);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(
        format!("{ready}{rest}"),
        expected("asyncio_echo_server"),
        "stderr: {stderr}"
    );
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(status.code(), Some(0));
}

/// A native line echo server: each line is echoed; `BYE` is echoed and the connection
/// closed; `RESET` resets it; `SILENT` gets no answer.
fn native_echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for conn in listener.incoming().take(16) {
            let Ok(conn) = conn else { continue };
            thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut writer = conn;
                loop {
                    let mut line = Vec::new();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    match &line[..] {
                        b"SILENT\n" => {}
                        b"RESET\n" => return reset(writer),
                        b"BYE\n" => {
                            let _ = writer.write_all(&line);
                            return;
                        }
                        _ => {
                            if writer.write_all(&line).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_guest_client_talks_to_a_native_server() {
    let port = native_echo_server();
    let grant = format!("connect=127.0.0.1:{port}");
    let out = run_script(
        &tests_dir(),
        "asyncio_client.py",
        &["127.0.0.1", &port.to_string()],
        &["--allow", &grant],
    );
    assert_matches("asyncio_client", &out);
}
