//! Policy files, dry runs and the JSON audit log through the real `usocket` binary: `policy
//! check` on the shipped examples and on broken files, and `run --policy` / `--dry-run` /
//! `--audit` against a loopback HTTP server. Every wait is bounded (a deadline for each
//! child, socket timeouts, and the runner's own `--time-limit`); everything stays on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

mod common;
use common::{example, finish, text, usocket};

/// How long any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(30);

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies")
}

/// A file in the temp folder, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "usocket-policy-cli-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    fn read(&self) -> String {
        std::fs::read_to_string(&self.0).unwrap_or_default()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A loopback HTTP server answering at most one request; the count of connections it
/// accepted arrives on the receiver once it has served one.
fn http_server() -> (u16, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        let _ = tx.send(());
        conn.set_read_timeout(Some(WAIT)).unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
            line.clear();
        }
        let _ = conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhello\n");
    });
    (port, rx)
}

/// `usocket run --time-limit 30 ARGS... http_get.wasm 127.0.0.1 PORT`.
fn http_get(args: &[&str], port: u16) -> Output {
    let port = port.to_string();
    let wasm = example("http_get");
    let mut all = vec!["run", "--time-limit", "30"];
    all.extend_from_slice(args);
    all.extend([wasm.as_str(), "127.0.0.1", port.as_str()]);
    usocket(&all)
}

fn assert_fetched(out: &Output) {
    assert!(
        out.status.success(),
        "status {:?}, stderr: {}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).starts_with("HTTP/1.0 200 OK\r\n"),
        "{}",
        text(&out.stdout)
    );
}

fn assert_refused(out: &Output, errno: &str) {
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains(errno), "{}", text(&out.stderr));
}

/// The JSON audit lines of `log` whose verdict is `verdict`.
fn audit_lines(log: &str, verdict: &str) -> Vec<String> {
    let needle = format!("\"verdict\":\"{verdict}\"");
    log.lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn policy_check_explains_every_example_in_plain_words() {
    let mut checked = 0;
    for entry in std::fs::read_dir(policies_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let out = usocket(&["policy", "check", path.to_str().unwrap()]);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            text(&out.stderr)
        );
        for part in [
            "a valid policy.",
            "\nAllowed:\n",
            "\nDenied, whatever the allow rules say:\n",
            "\nLimits:\n",
            "  sockets open at once: ",
            "A deny rule beats every allow rule; everything no allow rule grants is denied.",
        ] {
            assert!(
                stdout.contains(part),
                "{}: no {part:?} in\n{stdout}",
                path.display()
            );
        }
        // Each rule line holds the rule and its plain-words description after it.
        let allowed = stdout
            .split("\nAllowed:\n")
            .nth(1)
            .unwrap()
            .split("\n\n")
            .next()
            .unwrap();
        for line in allowed.lines() {
            let words = line.split_whitespace().count();
            assert!(words >= 4, "not explained: {line:?}");
        }
        checked += 1;
    }
    assert!(checked >= 2, "examples/policies has the two sample files");

    let web = text(
        &usocket(&[
            "policy",
            "check",
            &format!("{}/web-client.toml", policies_dir().display()),
        ])
        .stdout,
    );
    for part in [
        "connect=*.example.com:443",
        "connect=metadata:*",
        "resolve=example.net",
        "  sockets open at once: 8\n",
        "  bytes sent, in total: 1048576 (1 MiB)\n",
        "  bandwidth, bytes per second each way: 1048576 (1 MiB)\n",
        "  longest life of a name -> address pin: 300 s\n",
    ] {
        assert!(web.contains(part), "no {part:?} in\n{web}");
    }
    assert!(web.find("\nAllowed:").unwrap() < web.find("\nDenied").unwrap());
    assert!(web.find("\nDenied").unwrap() < web.find("\nLimits:").unwrap());
}

#[test]
fn policy_check_of_a_bad_file_names_the_line_and_exits_2() {
    let bad_rule = TempFile::new(
        "bad-rule.toml",
        "# a policy\nallow = [\n    \"connect=127.0.0.1:80\",\n    \"connect=::1:80\",\n]\n",
    );
    let out = usocket(&["policy", "check", bad_rule.path()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:4:5: bad rule `connect=::1:80`",
            bad_rule.path()
        )),
        "{err}"
    );
    assert!(err.contains("brackets") && err.contains("fix:"), "{err}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));

    let unknown_key = TempFile::new(
        "unknown-key.toml",
        "allow = []\n\n[limits]\nmax_sokets = 3\n",
    );
    let out = usocket(&["policy", "check", unknown_key.path()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{}:4:", unknown_key.path())), "{err}");
    assert!(
        err.contains("unknown field `max_sokets`") && err.contains("known keys"),
        "{err}"
    );

    let syntax = TempFile::new(
        "syntax.toml",
        "deny = [\"connect=127.0.0.1:80\"\nallow = []\n",
    );
    let out = usocket(&["policy", "check", syntax.path()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!("{}:", syntax.path())),
        "{}",
        text(&out.stderr)
    );

    let out = usocket(&["policy", "check", "/nonexistent/policy.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("/nonexistent/policy.toml: cannot read the policy file"),
        "{}",
        text(&out.stderr)
    );

    // `run --policy` refuses the same file before running anything.
    let out = usocket(&["run", "--policy", bad_rule.path(), &example("http_get")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(":4:5: bad rule"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_with_a_policy_file_grants_what_it_allows_and_nothing_else() {
    let (port, _) = http_server();
    let granted = TempFile::new(
        "grant.toml",
        &format!("allow = [\"connect=127.0.0.1:{port}\"]\n"),
    );
    assert_fetched(&http_get(&["--policy", granted.path()], port));

    // A file that grants something else leaves the connection denied.
    let (port, accepted) = http_server();
    let other = TempFile::new(
        "other.toml",
        &format!(
            "allow = [\"connect=127.0.0.1:{}\", \"resolve=localhost\"]\n",
            port.wrapping_add(1)
        ),
    );
    assert_refused(
        &http_get(&["--policy", other.path()], port),
        "[Errno 13] EACCES",
    );
    assert!(
        accepted.recv_timeout(Duration::from_millis(200)).is_err(),
        "a denied connect reached the server"
    );

    // Flags add to the file: --deny beats the file's allow, --allow adds a grant.
    let (port, _) = http_server();
    let granted = TempFile::new(
        "grant2.toml",
        &format!("allow = [\"connect=127.0.0.1:{port}\"]\n"),
    );
    assert_refused(
        &http_get(
            &["--policy", granted.path(), "--deny", "connect=loopback:*"],
            port,
        ),
        "[Errno 13] EACCES",
    );
    let grant = format!("connect=127.0.0.1:{port}");
    assert_fetched(&http_get(
        &["--policy", other.path(), "--allow", &grant],
        port,
    ));
}

#[test]
fn flags_override_the_files_limits() {
    // The file lets the guest connect but send nothing (each server answers one connection).
    let no_sending = |port: u16| {
        TempFile::new(
            "no-sending.toml",
            &format!("allow = [\"connect=127.0.0.1:{port}\"]\n[limits]\nmax_bytes_sent = 0\n"),
        )
    };
    let (port, _) = http_server();
    let file = no_sending(port);
    assert_refused(
        &http_get(&["--policy", file.path()], port),
        "[Errno 12] ENOMEM",
    );
    let (port, _) = http_server();
    let file = no_sending(port);
    assert_fetched(&http_get(
        &["--policy", file.path(), "--max-bytes-sent", "1000000"],
        port,
    ));

    // Bad limit flags are usage errors.
    let out = usocket(&["run", "--rate", "0", &example("http_get")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("at least 1"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn zero_sockets_are_refused_in_files_and_flags_alike() {
    let file = TempFile::new(
        "zero-sockets.toml",
        "allow = [\"connect=127.0.0.1:80\"]\n[limits]\nmax_sockets = 0\n",
    );
    let out = usocket(&["policy", "check", file.path()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:3:15: `max_sockets = 0` would fail",
            file.path()
        )),
        "{err}"
    );
    assert!(
        err.contains("fix: give max_sockets a value of at least 1"),
        "{err}"
    );
    let out = usocket(&["run", "--policy", file.path(), &example("http_get")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("`max_sockets = 0`"),
        "{}",
        text(&out.stderr)
    );

    let out = usocket(&["run", "--max-sockets", "0", &example("http_get")]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("`--max-sockets 0` would fail every socket() with ENOMEM")
            && err.contains("give --max-sockets a value of at least 1"),
        "{err}"
    );

    // A pin longer than any DNS answer should live is refused too.
    let out = usocket(&["run", "--pin-ttl", "9999999999", &example("http_get")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("at most 604800"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn dry_run_lets_the_guest_through_and_audits_would_deny() {
    let (port, _) = http_server();
    let audit = TempFile::new("dry-run.jsonl", "");
    let out = http_get(&["--dry-run", "--audit", audit.path()], port);
    assert_fetched(&out);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("dry run"), "{stderr}");
    assert!(
        stderr.contains(&format!("would deny connect 127.0.0.1:{port}")),
        "{stderr}"
    );

    let log = audit.read();
    let target = format!("127.0.0.1:{port}");
    let would_deny = audit_lines(&log, "would-deny");
    assert!(
        would_deny
            .iter()
            .any(|l| l.contains("connect") && l.contains(&target)),
        "no would-deny connect to {target} in:\n{log}"
    );
    assert!(audit_lines(&log, "deny").is_empty(), "{log}");
    for line in log.lines() {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        let mut keys: Vec<&str> = event
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {line}"))
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "guest", "reason", "repeated", "rule", "target", "time", "use", "verdict"
            ],
            "{line}"
        );
    }

    // A file can switch dry run on too.
    let (port, _) = http_server();
    let file = TempFile::new("dry.toml", "dry_run = true\n");
    assert_fetched(&http_get(&["--policy", file.path()], port));
}

#[test]
fn audit_log_records_denials_and_grants_as_json_lines() {
    let (port, _) = http_server();
    let audit = TempFile::new("deny.jsonl", "");
    let out = http_get(&["--audit", audit.path()], port);
    assert_refused(&out, "[Errno 13] EACCES");
    let log = audit.read();
    let target = format!("127.0.0.1:{port}");
    let denied = audit_lines(&log, "deny");
    assert!(
        denied
            .iter()
            .any(|l| l.contains(&format!("\"target\":\"{target}\""))
                && l.contains("connect")
                && l.contains("\"guest\":\"http_get.wasm\"")),
        "no deny line for {target} in:\n{log}"
    );

    // The file is appended to: a granted run adds an allow line after the deny line.
    let (port2, _) = http_server();
    let grant = format!("connect=127.0.0.1:{port2}");
    assert_fetched(&http_get(
        &["--audit", audit.path(), "--allow", &grant],
        port2,
    ));
    let log = audit.read();
    assert_eq!(audit_lines(&log, "deny").len(), denied.len(), "{log}");
    let allowed = audit_lines(&log, "allow");
    assert!(
        allowed
            .iter()
            .any(|l| l.contains(&format!("127.0.0.1:{port2}"))),
        "no allow line in:\n{log}"
    );

    // An audit file that cannot be opened stops usocket before the guest runs.
    let out = usocket(&[
        "run",
        "--audit",
        "/nonexistent/dir/audit.jsonl",
        &example("http_get"),
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("cannot open the audit file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_local_server_example_serves_loopback_clients() {
    // The shipped file, on a free port instead of 8000.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let shipped = std::fs::read_to_string(policies_dir().join("local-server.toml")).unwrap();
    assert!(shipped.contains("127.0.0.1:8000"));
    let policy = TempFile::new(
        "local-server.toml",
        &shipped.replace("127.0.0.1:8000", &format!("127.0.0.1:{port}")),
    );
    let port_arg = port.to_string();
    let args = [
        "run",
        "--time-limit",
        "30",
        "--policy",
        policy.path(),
        &example("echo_server"),
        &port_arg,
        "1",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_usocket"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = lines.recv_timeout(WAIT);
    if first.is_err() {
        let _ = child.kill();
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        panic!("echo_server did not start: {err}");
    }
    assert_eq!(
        first.unwrap(),
        format!("echo_server: listening on 127.0.0.1:{port}")
    );

    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    conn.write_all(b"ping\n").unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "ping\n");
    drop((conn, reader));
    let out = finish(child, &args);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
}

/// `usocket policy check FILE` on a temporary file holding `contents`.
fn check_file(name: &str, contents: &str) -> (TempFile, Output) {
    let file = TempFile::new(name, contents);
    let out = usocket(&["policy", "check", file.path()]);
    (file, out)
}

fn assert_usage_error(out: &Output, needle: &str) {
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains(needle),
        "no {needle:?} in: {}",
        text(&out.stderr)
    );
}

#[test]
fn a_class_written_in_capitals_is_the_class() {
    // `--deny connect=Loopback:*` used to be a rule for the host name `loopback`, which
    // denied nothing: the guest reached the server.
    let (port, accepted) = http_server();
    let grant = format!("connect=127.0.0.1:{port}");
    assert_refused(
        &http_get(&["--allow", &grant, "--deny", "connect=Loopback:*"], port),
        "[Errno 13] EACCES",
    );
    assert!(
        accepted.recv_timeout(Duration::from_millis(200)).is_err(),
        "a denied connect reached the server"
    );
    let (_file, out) = check_file(
        "capitals.toml",
        "allow = [\"connect=*:443\"]\ndeny = [\"connect=Loopback:*\", \"connect=METADATA:*\"]\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("  connect=loopback:*  connecting to loopback addresses on any port"),
        "{stdout}"
    );
    assert!(stdout.contains("  connect=metadata:*  "), "{stdout}");
}

#[test]
fn rules_that_would_mean_something_else_are_refused_by_flags_and_files() {
    let wasm = example("http_get");
    for (flag, rule, needle) in [
        (
            "--deny",
            "connect=link_local:*",
            "did you mean `link-local`?",
        ),
        (
            "--deny",
            "connect=linklocal:*",
            "did you mean `link-local`?",
        ),
        ("--deny", "connect=metadata.:*", "did you mean `metadata`?"),
        ("--deny", "connect= loopback:*", "a space at character 9"),
        ("--deny", "connect=\tloopback:*", "a tab at character 9"),
        (
            "--allow",
            "bind, listen=127.0.0.1:80",
            "a space at character 6",
        ),
        ("--allow", "resolve=example.com..", "not a host name"),
        ("--allow", "connect=[2002:7f00:1::]/48:*", "is 6to4"),
    ] {
        let out = usocket(&["run", flag, rule, &wasm]);
        assert_usage_error(&out, needle);
    }
    for (entry, needle) in [
        ("connect=link_local:*", "did you mean `link-local`?"),
        ("connect=Metadata.:*", "did you mean `metadata`?"),
        ("connect= loopback:*", "a space at character 9"),
        (
            "connect=localhost:*",
            "a deny rule cannot name hosts by name",
        ),
    ] {
        let contents = format!("allow = [\"connect=*:443\"]\ndeny = [\n  \"{entry}\",\n]\n");
        let (file, out) = check_file("strict.toml", &contents);
        assert_usage_error(&out, &format!("{}:3:3: bad rule", file.path()));
        assert_usage_error(&out, needle);
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
        let out = usocket(&["run", "--policy", file.path(), &wasm]);
        assert_usage_error(&out, needle);
    }
}

#[test]
fn a_deny_rule_by_name_never_lets_its_address_through_as_a_literal() {
    // `--deny connect=localhost:*` used to deny the name's pins only: 127.0.0.1 as a literal
    // went through. The flag is now refused (exit 2) with a way to write it.
    let (port, accepted) = http_server();
    let grant = format!("connect=127.0.0.1:{port}");
    let out = http_get(&["--allow", &grant, "--deny", "connect=localhost:*"], port);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_usage_error(&out, "cannot name hosts by name");
    assert!(
        accepted.recv_timeout(Duration::from_millis(200)).is_err(),
        "a connect denied by name reached the server as a literal"
    );
}

#[test]
fn policy_check_prints_rules_that_parse_back_to_the_same_rules() {
    let (_first, out) = check_file(
        "printed.toml",
        "allow = [\n  \"bind,listen=127.0.0.1:8000\",\n  \"connect=*.Example.COM.:443\",\n  \
         \"connect=[::ffff:10.0.0.0]/104:1-100\",\n  \"accept=Private:*\",\n  \
         \"resolve=LocalHost\",\n  \"send=[fd00::/8]:53\",\n  \"recv=ANY:0-65535\",\n]\n\
         deny = [\"connect=[64:ff9b::a9fe:a9fe]:*\", \"connect=[::ffff:127.0.0.1]:*\", \
         \"resolve=*.internal.example.com\"]\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let rules = |stdout: &str, heading: &str| -> Vec<String> {
        stdout
            .split(heading)
            .nth(1)
            .unwrap()
            .split("\n\n")
            .next()
            .unwrap()
            .lines()
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect()
    };
    let allowed = rules(&stdout, "\nAllowed:\n");
    let denied = rules(&stdout, "\nDenied, whatever the allow rules say:\n");
    assert_eq!(
        allowed,
        [
            "bind=127.0.0.1:8000",
            "listen=127.0.0.1:8000",
            "connect=*.example.com:443",
            "connect=10.0.0.0/8:1-100",
            "accept=private:*",
            "resolve=localhost",
            "send=[fd00::]/8:53",
            "recv=*:*",
        ]
    );
    assert_eq!(
        denied,
        [
            "connect=169.254.169.254:*",
            "connect=127.0.0.1:*",
            "resolve=*.internal.example.com",
        ]
    );
    // The printed rules, as a file of their own, are the same policy, printed the same.
    let quoted = |rules: &[String]| {
        rules
            .iter()
            .map(|r| format!("\"{r}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (_second, again) = check_file(
        "reprinted.toml",
        &format!(
            "allow = [{}]\ndeny = [{}]\n",
            quoted(&allowed),
            quoted(&denied)
        ),
    );
    assert!(again.status.success(), "{}", text(&again.stderr));
    let again = text(&again.stdout);
    let body = |s: &str| s.split_once('\n').unwrap().1.to_string();
    assert_eq!(body(&again), body(&stdout));
}

#[test]
fn absurd_pin_lifetimes_are_refused_by_check_and_run_alike() {
    let wasm = example("http_get");
    // i64::MAX and u64::MAX seconds used to overflow the clock at the first granted lookup.
    for ttl in ["9223372036854775807", "18446744073709551615", "604801"] {
        let out = usocket(&["run", "--pin-ttl", ttl, &wasm]);
        assert_usage_error(&out, &format!("`--pin-ttl {ttl}` is longer than"));
        assert_usage_error(&out, "give --pin-ttl a value of at most 604800");
    }
    for ttl in ["18446744073709551616", "-1", "1.5", "60s", ""] {
        let out = usocket(&["run", &format!("--pin-ttl={ttl}"), &wasm]);
        assert_usage_error(&out, "for '--pin-ttl <SECONDS>'");
    }
    for (value, needle) in [
        (
            "9223372036854775807",
            "`pin_ttl_secs = 9223372036854775807` is longer than",
        ),
        ("604801", "`pin_ttl_secs = 604801` is longer than"),
        ("0", "`pin_ttl_secs = 0` would expire every name pin"),
        ("-1", "`pin_ttl_secs` takes a whole number from 1 to 604800"),
        (
            "1.5",
            "`pin_ttl_secs` takes a whole number from 1 to 604800",
        ),
        (
            "\"60\"",
            "`pin_ttl_secs` takes a whole number from 1 to 604800",
        ),
        (
            "99999999999999999999",
            "`pin_ttl_secs` takes a whole number from 1 to 604800",
        ),
    ] {
        let contents =
            format!("allow = [\"connect=127.0.0.1:80\"]\n[limits]\npin_ttl_secs = {value}\n");
        let (file, out) = check_file("pin.toml", &contents);
        assert_usage_error(&out, &format!("{}:3:16: ", file.path()));
        assert_usage_error(&out, needle);
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
        // `policy check` refuses what `run` would choke on, and `run` refuses it the same way.
        let out = usocket(&["run", "--policy", file.path(), &wasm]);
        assert_usage_error(&out, &format!("{}:3:16: ", file.path()));
        assert_usage_error(&out, needle);
    }
}

#[test]
fn numbers_in_policy_files_are_whole_numbers_in_range() {
    for key in [
        "max_sockets",
        "max_buffered",
        "max_bytes_sent",
        "max_bytes_received",
        "rate",
        "max_buffered_total",
        "max_memory",
    ] {
        for value in [
            "-5",
            "2.5",
            "1e6",
            "\"1024\"",
            "99999999999999999999",
            "nan",
        ] {
            let (file, out) = check_file("numbers.toml", &format!("[limits]\n{key} = {value}\n"));
            assert_usage_error(&out, &format!("{}:2:{}: ", file.path(), key.len() + 4));
            assert_usage_error(&out, &format!("fix: `{key}` takes a whole number from "));
        }
    }
}

/// A temporary folder of TLS files made at test time (removed when dropped): `ca.pem` (two CA
/// certificates), `server.pem` + `server.key` (a pair), `stray.key` (another key) and
/// `note.txt` (not PEM).
struct TlsDir(PathBuf);

impl TlsDir {
    fn new() -> TlsDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "usocket-policy-cli-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = |name: &str| rcgen::generate_simple_self_signed(vec![name.into()]).unwrap();
        let (ca1, ca2, server, stray) = (
            cert("ca1.test"),
            cert("ca2.test"),
            cert("localhost"),
            cert("stray.test"),
        );
        for (name, contents) in [
            ("ca.pem", ca1.cert.pem() + &ca2.cert.pem()),
            ("server.pem", server.cert.pem()),
            ("server.key", server.signing_key.serialize_pem()),
            ("stray.key", stray.signing_key.serialize_pem()),
            ("note.txt", "not a certificate\n".to_string()),
        ] {
            std::fs::write(dir.join(name), contents).unwrap();
        }
        TlsDir(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }

    /// Writes the policy file `name` into the folder; its path.
    fn policy(&self, name: &str, contents: &str) -> String {
        std::fs::write(self.0.join(name), contents).unwrap();
        self.path(name)
    }
}

impl Drop for TlsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn tls_flags_refuse_files_that_cannot_work_before_running_anything() {
    let dir = TlsDir::new();
    let (ca, note, server, key, stray) = (
        dir.path("ca.pem"),
        dir.path("note.txt"),
        dir.path("server.pem"),
        dir.path("server.key"),
        dir.path("stray.key"),
    );
    let missing = dir.path("missing.pem");
    // No component there: valid flags would end in exit 125 (cannot read the component).
    let wasm = dir.path("absent.wasm");
    for (flags, needles) in [
        (
            vec!["--tls-ca", &missing],
            vec![
                format!("--tls-ca {missing}: cannot read the CA file `{missing}`: "),
                "fix: give a PEM file of CA certificates".into(),
            ],
        ),
        (
            vec!["--tls-ca", &ca, "--tls-ca", &note],
            vec![format!(
                "--tls-ca {note}: `{note}` is not PEM: it holds no -----BEGIN CERTIFICATE----- block"
            )],
        ),
        (
            vec!["--tls-ca", &key],
            vec![format!("--tls-ca {key}: `{key}` holds no certificate")],
        ),
        (
            vec!["--tls-cert", &server],
            vec![
                format!("--tls-cert {server} needs --tls-key"),
                "fix: add --tls-key KEY.pem".into(),
            ],
        ),
        (
            vec!["--tls-key", &key],
            vec![
                format!("--tls-key {key} needs --tls-cert"),
                "fix: add --tls-cert CERT.pem".into(),
            ],
        ),
        (
            vec!["--tls-cert", &server, "--tls-key", &stray],
            vec![
                format!(
                    "--tls-key {stray}: the key in `{stray}` does not match the certificate in \
                     `{server}`"
                ),
                "fix: give the private key made with this certificate".into(),
            ],
        ),
        (
            vec!["--tls-cert", &note, "--tls-key", &key],
            vec![format!(
                "--tls-cert {note}: the certificate file `{note}` is not PEM"
            )],
        ),
        (
            vec!["--tls-cert", &server, "--tls-key", &missing],
            vec![format!(
                "--tls-key {missing}: cannot read the key file `{missing}`: "
            )],
        ),
    ] {
        let mut args = vec!["run"];
        args.extend(&flags);
        args.push(&wasm);
        let out = usocket(&args);
        for needle in &needles {
            assert_usage_error(&out, needle);
        }
    }
    // With files that work, the next problem is the component's.
    let out = usocket(&[
        "run",
        "--tls-ca",
        &ca,
        "--tls-no-system-roots",
        "--tls-cert",
        &server,
        "--tls-key",
        &key,
        &wasm,
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot read component"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_guest_runs_with_tls_files_from_flags_and_a_policy_file() {
    let dir = TlsDir::new();
    let (port, accepted) = http_server();
    let policy = dir.policy(
        "tls.toml",
        &format!(
            "allow = [\"connect=127.0.0.1:{port}\"]\n[tls]\nca_files = [\"ca.pem\"]\n\
             system_roots = false\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n"
        ),
    );
    let out = http_get(
        &[
            "--policy",
            &policy,
            "--tls-ca",
            &dir.path("ca.pem"),
            "--tls-cert",
            &dir.path("server.pem"),
            "--tls-key",
            &dir.path("server.key"),
        ],
        port,
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    accepted
        .recv_timeout(WAIT)
        .expect("the guest reached the server");
}

#[test]
fn policy_check_explains_the_tls_table_and_tls_rules() {
    let dir = TlsDir::new();
    let policy = dir.policy(
        "tls.toml",
        "allow = [\"tls=*.example.com:443\", \"tls=127.0.0.1:8443\"]\n[tls]\n\
         ca_files = [\"ca.pem\"]\nsystem_roots = false\ncert_file = \"server.pem\"\n\
         key_file = \"server.key\"\n",
    );
    let out = usocket(&["policy", "check", &policy]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for part in [
        "\n  tls=*.example.com:443  connecting to the addresses names below example.com \
         resolved to on port 443, only over TLS with a certificate valid for the name granted\n"
            .to_string(),
        "\n  tls=127.0.0.1:8443     connecting to 127.0.0.1 on port 8443, only over TLS with a \
         verified certificate\n"
            .to_string(),
        format!(
            "\nTLS (run by the host; private keys never enter the guest):\n  trusted CAs: 2 \
             certificates from {}\n  server identity: {} with the key {} (presented by a \
             guest's server side that passes none)\n",
            dir.path("ca.pem"),
            dir.path("server.pem"),
            dir.path("server.key")
        ),
    ] {
        assert!(stdout.contains(&part), "no {part:?} in\n{stdout}");
    }
    assert!(stdout.find("\nLimits:").unwrap() < stdout.find("\nTLS (").unwrap());

    // Without a [tls] table: the system's CAs, no identity.
    let (_file, out) = check_file("no-tls.toml", "allow = [\"tls=*:443\"]\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("  trusted CAs: the system's CAs ("),
        "{stdout}"
    );
    assert!(
        stdout.contains("  server identity: none: a guest's TLS server side must pass its own"),
        "{stdout}"
    );
    assert!(!stdout.contains("warning"), "{stdout}");
    // tls rules that nothing trusted can satisfy are pointed out.
    let (_file, out) = check_file(
        "trusts-nothing.toml",
        "allow = [\"tls=*:443\"]\n[tls]\nsystem_roots = false\n",
    );
    assert!(
        text(&out.stdout).contains("  warning: no CA is trusted, so every connection the tls"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_bad_tls_table_or_tls_deny_rule_is_refused_by_check_and_run_alike() {
    let dir = TlsDir::new();
    let wasm = example("http_get");
    let missing = dir.path("missing.pem");
    for (contents, place, needle) in [
        (
            "allow = []\n[tls]\nca_files = [\"ca.pem\", \"missing.pem\"]\n",
            ":3:23: ",
            format!("cannot read the CA file `{missing}`"),
        ),
        (
            "[tls]\nca_files = [\"note.txt\"]\n",
            ":2:13: ",
            "note.txt` is not PEM".to_string(),
        ),
        (
            "[tls]\ncert_file = \"server.pem\"\n",
            ":2:13: ",
            "`cert_file` without `key_file`".to_string(),
        ),
        (
            "[tls]\nkey_file = \"server.key\"\n",
            ":2:12: ",
            "`key_file` without `cert_file`".to_string(),
        ),
        (
            "[tls]\ncert_file = \"server.pem\"\nkey_file = \"stray.key\"\n",
            ":3:12: ",
            "stray.key` does not match the certificate in".to_string(),
        ),
        (
            "[tls]\nsystem_roots = true\nca_file = [\"ca.pem\"]\n",
            ":3:1: ",
            "unknown field `ca_file`".to_string(),
        ),
        (
            "[tls]\nca_files = \"ca.pem\"\n",
            ":2:12: ",
            "ca_files is a list of file names".to_string(),
        ),
        (
            "allow = [\"connect=*:*\"]\ndeny = [\"tls=127.0.0.1:443\"]\n",
            ":2:9: ",
            "deny connect=127.0.0.1:443 instead".to_string(),
        ),
    ] {
        let policy = dir.policy("bad.toml", contents);
        let out = usocket(&["policy", "check", &policy]);
        assert_usage_error(&out, &format!("{policy}{place}"));
        assert_usage_error(&out, &needle);
        assert_usage_error(&out, "fix: ");
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
        let out = usocket(&["run", "--policy", &policy, &wasm]);
        assert_usage_error(&out, &needle);
    }
    let out = usocket(&["run", "--deny", "tls=loopback:*", &wasm]);
    assert_usage_error(&out, "`tls` is an allow-only use");
    assert_usage_error(&out, "deny connect=loopback:* instead");
}
