//! The shared conformance scenarios (tests/conformance/*.py), unchanged, as Python guests:
//! the generic runner component executes each `.py` file through `usocket run --dir`, and its
//! stdout must equal the scenario's `.exp` byte for byte, with nothing on stderr and exit 0.
//! The two-instance scenarios run as MicroPython's `run-multitests.py` runs them (see
//! tests/conformance's README): two `usocket` processes coordinated over stdin/stdout.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{ChildStdin, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

mod common;
use common::python::{CONFORMANCE_GRANTS, repo, run_script, script_command};
use common::text;

fn scenarios() -> PathBuf {
    repo().join("tests").join("conformance")
}

fn expected(stem: &str) -> String {
    let path = scenarios().join(format!("{stem}.exp"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn single(stem: &str) {
    let out = run_script(&scenarios(), &format!("{stem}.py"), &[], CONFORMANCE_GRANTS);
    let stderr = text(&out.stderr);
    assert_eq!(
        text(&out.stdout),
        expected(stem),
        "{stem} stdout (stderr: {stderr})"
    );
    assert!(out.stderr.is_empty(), "{stem} wrote to stderr: {stderr}");
    assert_eq!(out.status.code(), Some(0), "{stem} exit status");
}

/// How long an instance may stay silent before the scenario fails.
const SILENCE: Duration = Duration::from_secs(10);

/// The `multitest` helpers of MicroPython's runner, defined before the scenario.
const MULTITEST: &str = r#"import sys
class multitest:
    @staticmethod
    def flush():
        sys.stdout.flush()
    @staticmethod
    def next():
        print("NEXT")
        multitest.flush()
    @staticmethod
    def globals(**gs):
        for g in gs:
            print("SET {} = {!r}".format(g, gs[g]))
        multitest.flush()
    @staticmethod
    def broadcast(msg):
        print("BROADCAST", msg)
        multitest.flush()
    @staticmethod
    def wait(msg):
        msg = "BROADCAST " + msg
        while True:
            if sys.stdin.readline().rstrip() == msg:
                return
"#;

struct Instance {
    stdin: ChildStdin,
    child: std::process::Child,
}

/// Writes instance `k`'s program (helpers, globals, scenario, `instancek()`) and starts it;
/// its stdout lines go to `lines` tagged with `k`.
fn start(
    stem: &str,
    k: usize,
    globals: &[String],
    lines: mpsc::Sender<(usize, Option<String>)>,
) -> Instance {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("multitest")
        .join(format!("{stem}-{k}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = std::fs::read_to_string(scenarios().join(format!("{stem}.py"))).unwrap();
    let mut program = String::from(MULTITEST);
    for g in globals {
        program.push_str(g);
        program.push('\n');
    }
    program.push_str(&scenario);
    program.push_str(&format!("\ninstance{k}()\n"));
    std::fs::write(dir.join("main.py"), program).unwrap();

    let mut child = script_command(&dir, "main.py", &[], CONFORMANCE_GRANTS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("usocket runs");
    let stdout = child.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(line) => {
                    if lines.send((k, Some(line))).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = lines.send((k, None));
    });
    Instance {
        stdin: child.stdin.take().unwrap(),
        child,
    }
}

/// `SET NAME = repr` lines become globals (`NAME = repr` lines of the next program); other
/// lines are output.
fn record(line: String, globals: &mut Vec<String>, out: &mut Vec<String>) {
    match line.strip_prefix("SET ") {
        Some(set) => globals.push(set.to_string()),
        None => out.push(line),
    }
}

fn pair(stem: &str) {
    let (tx, rx) = mpsc::channel();
    let mut output: [Vec<String>; 2] = Default::default();
    let mut globals = Vec::new();
    let mut instances = vec![start(stem, 0, &[], tx.clone())];
    let kill = |instances: &mut Vec<Instance>| {
        for i in instances.iter_mut() {
            let _ = i.child.kill();
        }
    };

    // Instance 1 starts once instance 0 says NEXT (its server listens by then).
    loop {
        match rx.recv_timeout(SILENCE) {
            Ok((_, Some(line))) if line == "NEXT" => break,
            Ok((_, Some(line))) => record(line, &mut globals, &mut output[0]),
            Ok((_, None)) | Err(_) => {
                kill(&mut instances);
                panic!("{stem}: instance0 ended or was silent before NEXT: {output:?}");
            }
        }
    }
    instances.push(start(stem, 1, &globals, tx));

    let mut open = 2;
    while open > 0 {
        match rx.recv_timeout(SILENCE) {
            Err(_) => {
                kill(&mut instances);
                panic!("{stem}: an instance was silent for {SILENCE:?}: {output:?}");
            }
            Ok((_, None)) => open -= 1,
            Ok((from, Some(line))) => {
                if let Some(msg) = line.strip_prefix("BROADCAST ") {
                    let to = 1 - from;
                    let _ = writeln!(instances[to].stdin, "BROADCAST {msg}");
                    let _ = instances[to].stdin.flush();
                } else if line != "NEXT" {
                    record(line, &mut globals, &mut output[from]);
                }
            }
        }
    }
    for (k, mut inst) in instances.into_iter().enumerate() {
        drop(inst.stdin);
        let status = inst.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{stem}: instance{k} exit status");
    }
    let mut got = String::new();
    for (k, lines) in output.iter().enumerate() {
        got.push_str(&format!("--- instance{k} ---\n"));
        if lines.is_empty() {
            got.push('\n');
        }
        for line in lines {
            got.push_str(line);
            got.push('\n');
        }
    }
    assert_eq!(got, expected(stem), "{stem}");
}

macro_rules! scenarios {
    ($runner:ident: $($name:ident => $stem:literal,)*) => {$(
        #[test]
        fn $name() {
            $runner($stem);
        }
    )*};
}

scenarios! { single:
    s01_tcp_echo => "01_tcp_echo",
    s02_accept_shape => "02_accept_shape",
    s03_recv_eof => "03_recv_eof",
    s04_read_until_eof => "04_read_until_eof",
    s05_read_n_short_only_at_eof => "05_read_n_short_only_at_eof",
    s06_readinto => "06_readinto",
    s07_readline => "07_readline",
    s08_write_send_sendall_returns => "08_write_send_sendall_returns",
    s09_close_twice_and_use_after_close => "09_close_twice_and_use_after_close",
    s10_unconnected_socket => "10_unconnected_socket",
    s11_connect_refused => "11_connect_refused",
    s12_recv_on_listening_socket => "12_recv_on_listening_socket",
    s13_listen_backlog_variants => "13_listen_backlog_variants",
    s14_nonblocking_recv_family => "14_nonblocking_recv_family",
    s15_recv_timeout => "15_recv_timeout",
    s16_settimeout_zero_equals_setblocking_false => "16_settimeout_zero_equals_setblocking_false",
    s17_poll_fresh_socket => "17_poll_fresh_socket",
    s18_poll_listener => "18_poll_listener",
    s19_poll_data_and_peer_close => "19_poll_data_and_peer_close",
    s20_poll_after_local_close => "20_poll_after_local_close",
    s21_poll_timeout => "21_poll_timeout",
    s22_udp_roundtrip => "22_udp_roundtrip",
    s23_udp_nonblocking_and_timeout => "23_udp_nonblocking_and_timeout",
    s24_getaddrinfo_shape => "24_getaddrinfo_shape",
    s25_getaddrinfo_errors => "25_getaddrinfo_errors",
    s26_constants => "26_constants",
    s27_http_like_server_client => "27_http_like_server_client",
    s28_readline_across_segments => "28_readline_across_segments",
    s29_blocked_recv_wakes_on_close => "29_blocked_recv_wakes_on_close",
    s30_nonblocking_poll_client => "30_nonblocking_poll_client",
    s31_udp_echo => "31_udp_echo",
    s32_bad_arguments => "32_bad_arguments",
}

scenarios! { pair:
    m1_readline_across_segments => "m1_readline_across_segments",
    m2_blocked_recv_wakes_on_close => "m2_blocked_recv_wakes_on_close",
    m3_nonblocking_poll_client => "m3_nonblocking_poll_client",
    m4_udp_echo => "m4_udp_echo",
}
