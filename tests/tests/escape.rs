//! The end-to-end escape matrix and DNS rebinding (issue 4, item 8), through a real guest
//! (`probe`).
//!
//! Escapes: the loopback class is the only one whose packets a test may observe, so native
//! TCP listeners and UDP sockets on 127.0.0.1 and [::1] count what arrives while the guest
//! tries every spelling of a loopback address as a TCP connect and a UDP send under a policy
//! that denies loopback. Every attempt must fail with EACCES (EINVAL for port 0) and nothing
//! may arrive. Spellings that would not stay on loopback if they escaped (IPv4-compatible,
//! NAT64, 6to4: the kernel routes them by their IPv6 form) are only tried after the policy
//! itself refused them in a pure check and the loopback-routed spellings were refused end to
//! end, so that a broken host fails the test before any packet could leave the machine.
//!
//! Rebinding: an injected resolver answers `www.example.test` first with 127.0.0.2, then with
//! 127.0.0.3 (standing for an internal address the policy denies); the name grant lets the
//! guest reach the first answer and not the second, nor an address no lookup returned. Pins
//! expire after `Limits::pin_ttl` (or the record's TTL), and a name that is not granted is
//! refused without a lookup.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use usocket_host::addr::{self, Family, Purpose};
use usocket_host::errno::Errno;
use usocket_host::policy::{Decision, Use};
use usocket_host::resolver::{ResolveFuture, Resolver};
use usocket_host::{Limits, Policy, Stats, UsocketCtx};
use usocket_tests::policy;

/// How long every wait of these tests may take at most.
const BOUND: Duration = Duration::from_secs(10);

/// Binds TCP listeners on every address of `ips`, all on the same port (retrying until a
/// port is free on all of them), and counts the connections each accepts.
async fn tcp_counters(ips: &[&str]) -> (u16, Vec<Arc<AtomicUsize>>) {
    let (port, listeners) = same_port(ips, std::net::TcpListener::bind, |l| l.local_addr());
    let mut counts = Vec::new();
    for listener in listeners {
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while listener.accept().await.is_ok() {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        });
        counts.push(count);
    }
    (port, counts)
}

/// As [`tcp_counters`], for UDP sockets counting the datagrams they receive.
async fn udp_counters(ips: &[&str]) -> (u16, Vec<Arc<AtomicUsize>>) {
    let (port, sockets) = same_port(ips, std::net::UdpSocket::bind, |s| s.local_addr());
    let mut counts = Vec::new();
    for socket in sockets {
        socket.set_nonblocking(true).unwrap();
        let socket = tokio::net::UdpSocket::from_std(socket).unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while socket.recv_from(&mut buf).await.is_ok() {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        });
        counts.push(count);
    }
    (port, counts)
}

/// Binds `bind` on every address of `ips` with one port number that is free on all of them.
fn same_port<T>(
    ips: &[&str],
    bind: impl Fn(SocketAddr) -> std::io::Result<T>,
    local: impl Fn(&T) -> std::io::Result<SocketAddr>,
) -> (u16, Vec<T>) {
    let addr = |ip: &str, port: u16| SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port);
    for _ in 0..100 {
        let first = bind(addr(ips[0], 0)).expect("an ephemeral port");
        let port = local(&first).unwrap().port();
        let mut all = vec![first];
        for ip in &ips[1..] {
            match bind(addr(ip, port)) {
                Ok(b) => all.push(b),
                Err(_) => break,
            }
        }
        if all.len() == ips.len() {
            return (port, all);
        }
    }
    panic!("no port free on all of {ips:?} after 100 tries");
}

/// Runs `probe ARGS` under `p` and returns its stdout.
async fn probe(p: Arc<Policy>, args: &[&str]) -> String {
    usocket_tests::stdout_of("probe", args, p).await
}

/// Runs `probe ARGS` with the given context (for a custom resolver or limits) and returns its
/// stdout.
async fn probe_with(ctx: UsocketCtx, args: &[&str]) -> String {
    let out = usocket_tests::run_with("probe", args, ctx, Duration::from_secs(30))
        .await
        .expect("probe runs");
    assert_eq!(
        out.code,
        0,
        "probe {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout_text()
}

/// Lets a stray connection or datagram reach its counter before we look.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// Waits (bounded) until `cond` holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < BOUND, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn counts(counters: &[Arc<AtomicUsize>]) -> Vec<usize> {
    counters.iter().map(|c| c.load(Ordering::SeqCst)).collect()
}

/// One end-to-end case: a probe command, its address and port, and the errno it must get.
struct Case {
    use_: Use,
    cmd: &'static str,
    host: &'static str,
    port: u16,
    errno: i32,
}

/// The cases for these spellings: each as a TCP connect (to the TCP port) and a UDP send (to
/// the UDP port), plus, with `port_zero`, each plain loopback address with port 0.
fn cases(spellings: &[&'static str], tcp: u16, udp: u16, port_zero: bool) -> Vec<Case> {
    let mut out = Vec::new();
    for &host in spellings {
        let v6 = host.contains(':');
        let ports: &[u16] = if port_zero { &[0] } else { &[tcp] };
        for &port in ports {
            let errno = if port == 0 { 22 } else { 13 };
            out.push(Case {
                use_: Use::Connect,
                cmd: if v6 { "connect6" } else { "connect" },
                host,
                port,
                errno,
            });
            let port = if port == 0 { 0 } else { udp };
            out.push(Case {
                use_: Use::Send,
                cmd: if v6 { "sendto6" } else { "sendto" },
                host,
                port,
                errno,
            });
        }
    }
    out
}

/// Refuses to run cases that the policy itself would let through: the host checks the same
/// `Policy` before any syscall, so this keeps a policy bug from sending a packet anywhere.
fn assert_refused_by_policy(p: &Policy, cases: &[Case]) {
    for c in cases {
        let ip: IpAddr = c.host.parse().unwrap();
        match addr::parse(
            Family::of(ip),
            c.host,
            i32::from(c.port),
            Purpose::Destination,
        ) {
            Err(Errno::EINVAL) => assert_eq!(c.errno, 22, "{} {}", c.host, c.port),
            Err(e) => panic!("{} {}: {e:?}", c.host, c.port),
            Ok(addr) => {
                let decision = p.check_addr(c.use_, addr);
                assert!(
                    matches!(decision, Decision::DeniedBy(_)),
                    "not running the guest: the policy would let {:?} {addr} through ({decision})",
                    c.use_
                );
            }
        }
    }
}

/// Runs the cases in one guest and checks each line it printed.
async fn run_cases(p: &Arc<Policy>, cases: &[Case]) -> usize {
    let ports: Vec<String> = cases.iter().map(|c| c.port.to_string()).collect();
    let mut args = Vec::new();
    for (c, port) in cases.iter().zip(&ports) {
        args.extend([c.cmd, c.host, port.as_str()]);
    }
    let out = probe(p.clone(), &args).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), cases.len(), "one line per case: {out}");
    for (c, line) in cases.iter().zip(&lines) {
        println!("{} {} {} -> {line}", c.cmd, c.host, c.port);
        assert_eq!(
            *line,
            format!("errno {}", c.errno),
            "{} {} {}",
            c.cmd,
            c.host,
            c.port
        );
    }
    cases.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_in_every_spelling_is_refused_and_nothing_arrives() {
    let (tcp, tcp_count) = tcp_counters(&["127.0.0.1", "::1"]).await;
    let (udp, udp_count) = udp_counters(&["127.0.0.1", "::1"]).await;
    let deny = policy(&["connect,send,autobind=*:*"], &["connect,send=loopback:*"]);

    // First the spellings that stay on this machine whatever happens: plain IPv4 and IPv6
    // loopback, the IPv4-mapped form (an IPv6-only socket cannot send to it), port 0.
    let local = cases(&["127.0.0.1", "::1", "::ffff:127.0.0.1"], tcp, udp, false)
        .into_iter()
        .chain(cases(&["127.0.0.1", "::1"], tcp, udp, true))
        .collect::<Vec<_>>();
    assert_refused_by_policy(&deny, &local);
    let mut total = run_cases(&deny, &local).await;
    settle().await;
    assert_eq!(counts(&tcp_count), [0, 0], "a refused connect arrived");
    assert_eq!(counts(&udp_count), [0, 0], "a refused datagram arrived");

    // Then the embeddings the kernel would route by their IPv6 form.
    let embedded = cases(
        &["::127.0.0.1", "64:ff9b::127.0.0.1", "2002:7f00:1::1"],
        tcp,
        udp,
        false,
    );
    assert_refused_by_policy(&deny, &embedded);
    total += run_cases(&deny, &embedded).await;
    settle().await;
    assert_eq!(counts(&tcp_count), [0, 0], "a refused connect arrived");
    assert_eq!(counts(&udp_count), [0, 0], "a refused datagram arrived");
    println!("end-to-end escape matrix: {total} cases run, 0 escapes");
    assert_eq!(total, 16);

    // Control: without the deny rule the plain addresses do arrive, once each, so the
    // counters above could see an escape.
    let allow = policy(&["connect,send,autobind=*:*"], &[]);
    let (t, u) = (tcp.to_string(), udp.to_string());
    let out = probe(
        allow,
        &[
            "connect",
            "127.0.0.1",
            &t,
            "connect6",
            "::1",
            &t,
            "sendto",
            "127.0.0.1",
            &u,
            "sendto6",
            "::1",
            &u,
        ],
    )
    .await;
    assert_eq!(out, "ok\nok\nok 5\nok 5\n");
    eventually("both connects arrived", || counts(&tcp_count) == [1, 1]).await;
    eventually("both datagrams arrived", || counts(&udp_count) == [1, 1]).await;
    settle().await;
    assert_eq!(counts(&tcp_count), [1, 1]);
    assert_eq!(counts(&udp_count), [1, 1]);
}

/// A resolver for tests: answers names below `example.test` with `answers` in turn (the last
/// one from then on), other names with EAI_NONAME, and counts every lookup.
struct ScriptedResolver {
    answers: Vec<IpAddr>,
    ttl: Option<Duration>,
    lookups: AtomicUsize,
    names: Mutex<Vec<String>>,
}

impl ScriptedResolver {
    fn new(answers: &[&str], ttl: Option<Duration>) -> Arc<ScriptedResolver> {
        Arc::new(ScriptedResolver {
            answers: answers.iter().map(|a| a.parse().unwrap()).collect(),
            ttl,
            lookups: AtomicUsize::new(0),
            names: Mutex::new(Vec::new()),
        })
    }

    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

impl Resolver for ScriptedResolver {
    fn lookup(&self, name: &str, _family: Option<Family>) -> ResolveFuture {
        let n = self.lookups.fetch_add(1, Ordering::SeqCst);
        self.names.lock().unwrap().push(name.to_string());
        let answer = if name.to_ascii_lowercase().ends_with(".example.test") {
            let ip = self.answers[n.min(self.answers.len() - 1)];
            Ok(vec![(ip, self.ttl)])
        } else {
            Err(Errno::EAI_NONAME)
        };
        Box::pin(async move { answer })
    }
}

/// Listeners on 127.0.0.2, 127.0.0.3 and 127.0.0.4, on one port.
async fn rebinding_targets() -> (u16, Vec<Arc<AtomicUsize>>) {
    tcp_counters(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]).await
}

fn ctx(p: Arc<Policy>, resolver: &Arc<ScriptedResolver>, limits: Limits) -> UsocketCtx {
    UsocketCtx::new("probe", p)
        .with_limits(limits)
        .with_resolver(resolver.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_rebinding_to_a_denied_address_is_refused() {
    let (port, hits) = rebinding_targets().await;
    let p = port.to_string();
    let grant = format!("connect=*.example.test:{port}");
    let rules = policy(&[&grant], &["connect=127.0.0.3/32:*"]);
    let resolver = ScriptedResolver::new(&["127.0.0.2", "127.0.0.3"], None);
    let ctx = ctx(rules, &resolver, Limits::default());
    let stats = ctx.stats();
    let out = probe_with(
        ctx,
        &[
            "rconnect",
            "www.example.test",
            &p,
            "rconnect",
            "www.example.test",
            &p,
            "connect",
            "127.0.0.4",
            &p,
        ],
    )
    .await;
    println!("rebinding: {out:?}");
    assert_eq!(
        out, "ok\nerrno 13\nerrno 13\n",
        "first answer ok; rebound answer denied; never-resolved address not granted"
    );
    settle().await;
    assert_eq!(counts(&hits), [1, 0, 0], "connections at .2, .3, .4");
    assert_eq!(resolver.lookups(), 2);
    assert_eq!(Stats::get(&stats.lookups), 2);
    assert_eq!(
        *resolver.names.lock().unwrap(),
        ["www.example.test", "www.example.test"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_address_expires_with_pin_ttl() {
    let (port, hits) = rebinding_targets().await;
    let p = port.to_string();
    let grant = format!("connect=*.example.test:{port}");
    let resolver = ScriptedResolver::new(&["127.0.0.2"], None);
    let limits = Limits {
        pin_ttl: Duration::from_millis(200),
        ..Limits::default()
    };
    let ctx = ctx(policy(&[&grant], &[]), &resolver, limits);
    let out = probe_with(
        ctx,
        &[
            "resolve-sleep-connect",
            "www.example.test",
            &p,
            "0",
            "resolve-sleep-connect",
            "www.example.test",
            &p,
            "400",
        ],
    )
    .await;
    println!("pin_ttl 200 ms, connect after 0 ms then after 400 ms: {out:?}");
    assert_eq!(out, "ok\nerrno 13\n");
    settle().await;
    assert_eq!(counts(&hits), [1, 0, 0]);
    assert_eq!(resolver.lookups(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_address_expires_with_the_record_ttl() {
    let (port, hits) = rebinding_targets().await;
    let p = port.to_string();
    let grant = format!("connect=*.example.test:{port}");
    // The record's TTL (300 ms) is shorter than pin_ttl (60 s by default): it decides.
    let resolver = ScriptedResolver::new(&["127.0.0.2"], Some(Duration::from_millis(300)));
    let ctx = ctx(policy(&[&grant], &[]), &resolver, Limits::default());
    let out = probe_with(
        ctx,
        &[
            "resolve-sleep-connect",
            "www.example.test",
            &p,
            "0",
            "resolve-sleep-connect",
            "www.example.test",
            &p,
            "700",
        ],
    )
    .await;
    println!("record TTL 300 ms, connect after 0 ms then after 700 ms: {out:?}");
    assert_eq!(out, "ok\nerrno 13\n");
    settle().await;
    assert_eq!(counts(&hits), [1, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_is_not_granted_is_refused_without_a_lookup() {
    let (port, hits) = rebinding_targets().await;
    let p = port.to_string();
    let grant = format!("connect=*.example.test:{port}");
    let resolver = ScriptedResolver::new(&["127.0.0.2"], None);
    let ctx = ctx(policy(&[&grant], &[]), &resolver, Limits::default());
    let stats = ctx.stats();
    let out = probe_with(
        ctx,
        &[
            "rconnect",
            "other.test",
            &p,
            // `example.test` itself is not below `*.example.test`.
            "rconnect",
            "example.test",
            &p,
            "resolve",
            "other.test",
        ],
    )
    .await;
    assert_eq!(out, "errno 13\nerrno 13\nerrno 13\n");
    assert_eq!(resolver.lookups(), 0, "a denied name reached the resolver");
    assert_eq!(Stats::get(&stats.lookups), 0);
    assert_eq!(Stats::get(&stats.denied), 3);
    settle().await;
    assert_eq!(counts(&hits), [0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_denied_for_connect_is_not_looked_up() {
    let (port, hits) = rebinding_targets().await;
    let p = port.to_string();
    let grant = format!("connect=*.example.test:{port}");
    let resolver = ScriptedResolver::new(&["127.0.0.2"], None);
    let rules = policy(&[&grant], &["resolve=bad.example.test"]);
    let ctx = ctx(rules, &resolver, Limits::default());
    let out = probe_with(ctx, &["rconnect", "bad.example.test", &p]).await;
    println!(
        "deny resolve=bad.example.test: {out:?}, {} lookups",
        resolver.lookups()
    );
    assert_eq!(out, "errno 13\n");
    settle().await;
    assert_eq!(counts(&hits), [0, 0, 0]);
    assert_eq!(
        resolver.lookups(),
        0,
        "the denied name reached the resolver"
    );
}
