//! Name lookups ask for the granted name only (issue 8, item 2), checked against a DNS server
//! of the test's own, in a private network and mount namespace the test makes.
//!
//! Each test re-runs itself under `unshare -rnm` (a user, network and mount namespace: no
//! root needed, nothing outside changes). Inside, it brings `lo` up, bind-mounts a
//! resolv.conf naming `127.0.0.1` with `search corp.test` and `options ndots:5` (the
//! Kubernetes default) over `/etc/resolv.conf`, and answers DNS on 127.0.0.1:53 itself,
//! recording every name it is asked for:
//!
//! - `nx.example.com.corp.test`: A 10.99.0.1 (an "internal" address a search list would
//!   reach); `nx.example.com`: NXDOMAIN;
//! - `www.example.com`: A 127.0.0.2, TTL 30 s (so the test sees the server is used at all);
//! - `short.example.com`: A 127.0.0.2, TTL 1 s;
//! - `hang.example.com`: never answered;
//! - anything else: NXDOMAIN.
//!
//! It also bind-mounts its own `/etc/hosts` (`localhost`, and `internal.example.com` at
//! 127.0.0.5).
//!
//! Where namespaces are unavailable, the tests print why and pass without checking.

use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use usocket_host::{Stats, UsocketCtx};
use usocket_tests::{counting_listener, policy};

/// Set in the re-executed test inside the namespaces: the parent's namespace ids.
const CHILD_ENV: &str = "USOCKET_RESOLVER_NETNS_PARENT";

/// The resolv.conf the tests put in place inside their mount namespace.
const RESOLV_CONF: &str = "nameserver 127.0.0.1\nsearch corp.test\noptions ndots:5\n";

/// The hosts file the tests put in place inside their mount namespace.
const HOSTS: &str = "127.0.0.1 localhost\n::1 localhost\n127.0.0.5 internal.example.com\n";

/// The namespace ids of this process (`net:[..] mnt:[..]`).
fn namespace_ids() -> String {
    ["net", "mnt"]
        .iter()
        .map(|ns| {
            std::fs::read_link(format!("/proc/self/ns/{ns}"))
                .map(|p| p.display().to_string())
                .unwrap_or_else(|e| format!("{ns}: {e}"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the test `name` (this very function's caller) again inside fresh namespaces and
/// returns `true` there, where the caller then does the work; in the parent, waits (bounded)
/// for the child, fails if it failed, and returns `false`.
fn in_private_namespaces(name: &str) -> bool {
    if let Ok(parent) = std::env::var(CHILD_ENV) {
        let here = namespace_ids();
        // Never touch /etc/resolv.conf or port 53 of the real machine.
        assert!(
            parent.split(' ').zip(here.split(' ')).all(|(a, b)| a != b),
            "not in private namespaces (parent {parent}, here {here}): refusing to go on"
        );
        setup_namespace();
        return true;
    }
    match Command::new("unshare")
        .args(["-rnm", "ip", "link", "set", "lo", "up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        other => {
            println!(
                "SKIPPED {name}: `unshare -rnm ip link set lo up` does not work here \
                 ({other:?}); this test needs user, network and mount namespaces and `ip`"
            );
            return false;
        }
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new("unshare")
        .arg("-rnm")
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, namespace_ids())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare runs");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} in its namespaces ran longer than 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("the child's output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- {name} in private namespaces ---\n{stdout}{stderr}---");
    assert!(
        status.success() && stdout.contains("1 passed"),
        "{name} failed in its namespaces ({status})"
    );
    false
}

/// Inside the namespaces: `lo` up, our resolv.conf over the system's.
fn setup_namespace() {
    let ok = |cmd: &mut Command| {
        let out = cmd.output().expect("command runs");
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(Command::new("ip").args(["link", "set", "lo", "up"]));
    for (text, target) in [(RESOLV_CONF, "/etc/resolv.conf"), (HOSTS, "/etc/hosts")] {
        let name = target.trim_start_matches("/etc/");
        let file: PathBuf = std::env::temp_dir().join(format!(
            "usocket-resolver-test-{}.{name}",
            std::process::id()
        ));
        std::fs::write(&file, text).unwrap();
        ok(Command::new("mount").arg("--bind").arg(&file).arg(target));
        assert_eq!(std::fs::read_to_string(target).unwrap(), text);
    }
}

/// The test's DNS server on 127.0.0.1:53 (UDP): what it answers is in the module doc. It
/// records every name it is asked for (lower case, no final dot) and stops when dropped.
struct DnsServer {
    queries: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    fn start() -> DnsServer {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 53)).expect("bind 127.0.0.1:53");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let queries = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (queries.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Some((name, qtype, question_end)) = parse_query(&buf[..n]) else {
                    continue;
                };
                seen.lock().unwrap().push(name.clone());
                if let Some(reply) = answer(&buf[..question_end], &name, qtype) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        DnsServer {
            queries,
            stop,
            thread: Some(thread),
        }
    }

    fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The question of a DNS query: its name, its type, and where the question ends.
fn parse_query(msg: &[u8]) -> Option<(String, u16, usize)> {
    let qdcount = u16::from_be_bytes([*msg.get(4)?, *msg.get(5)?]);
    if msg.len() < 12 || msg[2] & 0x80 != 0 || qdcount != 1 {
        return None;
    }
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = usize::from(*msg.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 || labels.len() > 127 {
            return None;
        }
        labels.push(String::from_utf8_lossy(msg.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]);
    Some((labels.join("."), qtype, i + 4))
}

/// The reply to a query whose header and question are `question`, or `None` for no reply.
fn answer(question: &[u8], name: &str, qtype: u16) -> Option<Vec<u8>> {
    const A: u16 = 1;
    let (rcode, address, ttl) = match name {
        "hang.example.com" => return None,
        "nx.example.com.corp.test" => (0, [10, 99, 0, 1], 30),
        "www.example.com" => (0, [127, 0, 0, 2], 30),
        "short.example.com" => (0, [127, 0, 0, 2], 1),
        _ => (3, [0; 4], 0),
    };
    let with_answer = rcode == 0 && qtype == A;
    let mut reply = question.to_vec();
    // QR, the query's opcode and RD, RA; the rcode; one question, one or no answer.
    reply[2] = 0x80 | (question[2] & 0x79);
    reply[3] = 0x80 | rcode;
    reply[6..12].copy_from_slice(&[0, u8::from(with_answer), 0, 0, 0, 0]);
    if with_answer {
        // A pointer to the question's name, type A, class IN, the TTL, 4 bytes.
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, ttl, 0, 4]);
        reply.extend_from_slice(&address);
    }
    Some(reply)
}

/// Runs probe with `args` under `ctx` on a runtime of its own, and returns its stdout.
fn probe(rt: &tokio::runtime::Runtime, ctx: UsocketCtx, args: &[&str]) -> String {
    let out = rt
        .block_on(usocket_tests::run_with(
            "probe",
            args,
            ctx,
            Duration::from_secs(60),
        ))
        .expect("probe runs");
    assert_eq!(
        out.code,
        0,
        "probe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout_text()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_granted_name_is_looked_up_as_written_never_with_the_search_list() {
    if !in_private_namespaces("a_granted_name_is_looked_up_as_written_never_with_the_search_list") {
        return;
    }
    let server = DnsServer::start();
    let rt = runtime();
    let (port, hits) = rt.block_on(counting_listener("127.0.0.2:0"));
    let p = port.to_string();
    let grants = [
        format!("connect=*.example.com:{port}"),
        format!("connect=localhost:{port}"),
    ];
    let rules = policy(&[&grants[0], &grants[1]], &[]);
    let ctx = UsocketCtx::new("probe", rules);
    let stats = ctx.stats();
    let out = probe(
        &rt,
        ctx,
        &[
            "rconnect",
            "nx.example.com",
            &p,
            "resolve",
            "nx.example.com.",
            "rconnect",
            "www.example.com",
            &p,
            "resolve",
            "localhost",
            // Not granted: refused before any query.
            "resolve",
            "nx.other.test",
        ],
    );
    let queries = server.queries();
    println!("guest printed {out:?}; the DNS server was asked for {queries:?}");
    assert_eq!(
        out, "errno -2\nerrno -2\nok\nok 127.0.0.1\nerrno 13\n",
        "nx.example.com must not resolve (through the search list or otherwise); \
         www.example.com and localhost must"
    );
    let strays: Vec<&String> = queries
        .iter()
        .filter(|q| *q != "nx.example.com" && *q != "www.example.com")
        .collect();
    assert!(
        strays.is_empty(),
        "the host asked for names nobody granted: {strays:?}"
    );
    assert!(
        queries.iter().any(|q| q == "nx.example.com"),
        "the server was never asked for nx.example.com: {queries:?}"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "one connection to 127.0.0.2"
    );
    assert_eq!(Stats::get(&stats.lookups), 4);
    drop(rt);
}

#[test]
fn a_hanging_lookup_ends_with_its_guest() {
    if !in_private_namespaces("a_hanging_lookup_ends_with_its_guest") {
        return;
    }
    let server = DnsServer::start();
    let start = Instant::now();
    let rt = runtime();
    let rules = policy(&["connect=*.example.com:80"], &[]);
    let ctx = UsocketCtx::new("probe", rules);
    let result = rt.block_on(usocket_tests::run_with(
        "probe",
        &["resolve", "hang.example.com"],
        ctx,
        Duration::from_secs(1),
    ));
    let guest_ended = start.elapsed();
    // The runtime waits for every blocking task it started before it goes away: a lookup
    // still running on a thread would keep the process alive here.
    drop(rt);
    let all_gone = start.elapsed();
    println!(
        "hang.example.com under a 1 s time limit: {:?} after {guest_ended:?}, runtime gone \
         after {all_gone:?}; the server was asked for {:?}",
        result.as_ref().map(|o| o.stdout_text()),
        server.queries()
    );
    assert!(result.is_err(), "the guest must hit its time limit");
    assert!(
        all_gone < Duration::from_secs(4),
        "a lookup kept the host busy {all_gone:?} after a guest limited to 1 s"
    );
}

#[test]
fn hosts_file_names_resolve_without_a_query_and_pins_follow_the_record_ttl() {
    if !in_private_namespaces(
        "hosts_file_names_resolve_without_a_query_and_pins_follow_the_record_ttl",
    ) {
        return;
    }
    let server = DnsServer::start();
    let rt = runtime();
    let (port, hits) = rt.block_on(counting_listener("127.0.0.2:0"));
    let p = port.to_string();
    let grant = format!("connect=*.example.com:{port}");
    let ctx = UsocketCtx::new("probe", policy(&[&grant], &[]));
    let out = probe(
        &rt,
        ctx,
        &[
            "resolve",
            "internal.example.com",
            // Pinned for the record's 1 s, not for pin_ttl (60 s): connecting to the
            // address it returned works at once and is refused 1.5 s later.
            "resolve-sleep-connect",
            "short.example.com",
            &p,
            "0",
            "resolve-sleep-connect",
            "short.example.com",
            &p,
            "1500",
        ],
    );
    let queries = server.queries();
    println!("guest printed {out:?}; the DNS server was asked for {queries:?}");
    assert_eq!(out, "ok 127.0.0.5\nok\nerrno 13\n");
    assert!(
        queries.iter().all(|q| q == "short.example.com"),
        "{queries:?}"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "one connection to 127.0.0.2"
    );
}
