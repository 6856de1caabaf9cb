//! Python guests through `usocket run`: what the generic runner gives a script (arguments,
//! `--env`, `--dir` read-only or writable, exit codes) and how the guest library turns bad
//! arguments into the contract's OSError instead of a trap.

use std::path::PathBuf;

mod common;
use common::python::{CONFORMANCE_GRANTS, repo, run_code, run_script};
use common::text;

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("python-guest")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_script_sees_its_arguments_and_only_the_given_environment() {
    let out = run_code(
        "env",
        "import os, sys\nprint(sys.argv[1:])\nprint(sorted(os.environ.items()))\n",
        &["--env", "GREETING=hello world", "--env", "EMPTY="],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "[]\n[('EMPTY', ''), ('GREETING', 'hello world')]\n"
    );
}

#[test]
fn dir_is_read_only_and_dir_rw_is_writable() {
    let ro = scratch("ro");
    let rw = scratch("rw");
    std::fs::write(ro.join("data.txt"), "from the host\n").unwrap();
    let code = "\
import sys
print(open('/ro/data.txt').read(), end='')
for path in ('/ro/new.txt', '/rw/new.txt'):
    try:
        with open(path, 'w') as f:
            f.write('written by the guest\\n')
        print(path, 'written')
    except OSError:
        print(path, 'refused')
";
    let out = run_code(
        "dirs",
        code,
        &[
            "--dir",
            &format!("{}::/ro", ro.display()),
            "--dir-rw",
            &format!("{}::/rw", rw.display()),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "from the host\n/ro/new.txt refused\n/rw/new.txt written\n"
    );
    assert!(!ro.join("new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(rw.join("new.txt")).unwrap(),
        "written by the guest\n"
    );
}

#[test]
fn exit_codes_reach_the_shell() {
    for (code, want) in [
        ("pass", 0),
        ("import sys; sys.exit(0)", 0),
        ("import sys; sys.exit(3)", 3),
        ("import sys; sys.exit(255)", 255),
        ("raise SystemExit(7)", 7),
        ("import sys; sys.exit('a message')", 1),
    ] {
        let out = run_code("exit", code, &[]);
        assert_eq!(
            out.status.code(),
            Some(want),
            "{code}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn an_uncaught_exception_prints_a_traceback_and_exits_1() {
    let out = run_code(
        "raise",
        "def f():\n    raise ValueError('boom')\nf()\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Traceback"), "{stderr}");
    assert!(stderr.contains("ValueError: boom"), "{stderr}");
}

#[test]
fn oserror_is_shaped_as_micropython_raises_it() {
    let code = "\
import usocket as socket, uerrno as errno
s = socket.socket()
try:
    s.connect(('127.0.0.1', 1))
except OSError as e:
    err = e
print(type(err).__name__, err.errno, err.args, err.errno == errno.ECONNREFUSED)
print(err.__context__ is None, err.__cause__ is None)
try:
    s.close(); s.recv(1)
except OSError as e:
    print(e.errno == errno.EBADF, e.args == (errno.EBADF,))
import socket as alias_socket, select, errno as alias_errno
print(alias_socket is socket, select.poll is not None, alias_errno is errno)
";
    let out = run_code("oserror", code, CONFORMANCE_GRANTS);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "OSError 111 (111,) True\nTrue True\nTrue True\nTrue True True\n"
    );
}

/// The output of guest-python/tests/conversions.py (one line per check of a conversion rule of
/// the guest library: wrong-typed or out-of-range arguments raise OSError, never trap the
/// guest), run once per test binary, and its expected output.
fn conversions() -> &'static (String, String) {
    static RUN: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        let tests = repo().join("guest-python").join("tests");
        let out = run_script(&tests, "conversions.py", &[], CONFORMANCE_GRANTS);
        assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
        assert_eq!(out.status.code(), Some(0));
        let expected = std::fs::read_to_string(tests.join("conversions.exp")).unwrap();
        (text(&out.stdout), expected)
    })
}

/// The lines of one conversion rule's checks, got and expected: those starting with one of
/// `prefixes` (at least one expected).
fn conversion(prefixes: &[&str]) {
    let (got, expected) = conversions();
    let pick = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
            .map(str::to_string)
            .collect()
    };
    let want = pick(expected);
    assert!(!want.is_empty(), "no expected lines for {prefixes:?}");
    assert_eq!(pick(got), want, "{prefixes:?}");
}

#[test]
fn conversions_all_checks_ran_without_a_trap() {
    let (got, expected) = conversions();
    assert!(got.ends_with("done\n"), "{got}");
    assert_eq!(got, expected);
}

macro_rules! conversion_rules {
    ($($name:ident => [$($prefix:literal),*],)*) => {$(
        #[test]
        fn $name() {
            conversion(&[$($prefix),*]);
        }
    )*};
}

conversion_rules! {
    conversion_oserror_shape => ["shape ", "no chain "],
    conversion_socket_arguments => ["socket "],
    conversion_addresses => ["address ", "connect ", "bind ", "sendto "],
    conversion_data_buffers => ["send ", "sendall ", "write ", "received "],
    conversion_recv_sizes_and_flags => ["recv ", "recvfrom "],
    conversion_read_sizes => ["read "],
    conversion_readinto_buffers => ["readinto "],
    conversion_readline_limits => ["readline "],
    conversion_listen_backlog => ["listen "],
    conversion_timeouts => ["settimeout ", "setblocking ", "non-blocking "],
    conversion_setsockopt => ["setsockopt "],
    conversion_makefile => ["makefile "],
    conversion_getaddrinfo => ["getaddrinfo "],
    conversion_poll_and_select => ["register ", "modify ", "poll ", "ipoll ", "select "],
}

/// The socket options MicroPython's own tests use: SO_LINGER on with 0 s makes `close` reset
/// the connection; SO_RCVBUF and SO_SNDBUF are accepted (the host clamps them).
#[test]
fn so_linger_zero_resets_and_buffer_sizes_are_accepted() {
    let code = "\
import struct, usocket as socket, uselect as select, uerrno as errno
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(socket.getaddrinfo('127.0.0.1', 0)[0][-1])
l.listen()
port = l.getsockname()[1]
c = socket.socket()
c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2**40)
c.connect(('127.0.0.1', port))
s, _ = l.accept()
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
s.close()
p = select.poll(); p.register(c, select.POLLIN); p.poll(2000)
try:
    print(c.recv(10))
except OSError as e:
    print('reset', e.errno == errno.ECONNRESET)
print(c.recv(10))
";
    let out = run_code("linger", code, CONFORMANCE_GRANTS);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "reset True\nb''\n");
}
