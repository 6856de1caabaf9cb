//! The fuzz harness of the host interface (issue 8): the `fuzz_calls` guest makes random
//! `usocket` calls with random, often hostile, arguments over loopback sockets of its own, and
//! this driver runs it under a loopback-only policy. See docs/fuzzing.md.
//!
//! Each run must end with the guest exiting 0 (a trap or a host error fails the test; a host
//! panic fails it too), exactly the calls asked for, no `finding` line (an errno outside the
//! contract's table, an escape from the policy, a result of the wrong shape, a call that
//! waited seconds), and every socket of the guest freed afterwards. `gap` lines (an errno of
//! the contract's table that the contract names only for other calls) are printed, and fail
//! the run only with `USOCKET_FUZZ_STRICT=1`.
//!
//! CI runs `ci_seeds`: 4 seeds x 2,000 calls. The long run is `#[ignore]`d:
//!
//! ```text
//! USOCKET_FUZZ_CALLS=1000000 cargo test --release -p usocket-tests --test fuzz -- --ignored --nocapture long_run
//! ```
//!
//! The guest fuzzes TLS too (`wrap_socket`, `SSLContext`, `IPPROTO_SEC`, `getpeercert`, data
//! calls on TLS sockets): each run gets a test PKI of its own (the host trusts its CA only and
//! presents its leaf as the embedder's server identity; the guest gets the PEMs as arguments),
//! so that pairs of the guest's own sockets can also finish real handshakes.
//!
//! `replay` (`#[ignore]`d) prints one seed's run with every call traced. The last tests are
//! the minimised reproducers of the host bugs the harness found, kept as regression tests
//! (all of them run).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use usocket_host::{Limits, Policy, SocketCeiling, TlsConfig, UsocketCtx};
use usocket_test_pki::{Ca, Leaf};
use usocket_tests::{policy, run_with};

/// Every use on both loopback addresses, and lookups of `localhost` only.
fn fuzz_policy() -> Arc<Policy> {
    policy(
        &[
            "connect,send,bind,listen,accept,recv=127.0.0.1:*",
            "connect,send,bind,listen,accept,recv=[::1]:*",
            "resolve=localhost",
        ],
        &[],
    )
}

/// The fuzz runs' test PKI (`usocket-test-pki`), made once per test binary: a CA; a leaf it
/// signs for localhost, 127.0.0.1 and ::1 (the host's server identity and the guest's valid
/// certificate); an expired one, one for another name, and one of a CA nobody trusts, each
/// with its key (PEM).
struct Pki {
    ca: String,
    leaf: (String, String),
    bad: Vec<(String, String)>,
    tls: TlsConfig,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = Ca::new("usocket fuzz CA");
        let stranger = Ca::new("usocket fuzz unknown CA");
        let names = ["localhost", "127.0.0.1", "::1"];
        let pem = |l: Leaf| (l.cert_pem, l.key_pem);
        let good = pem(ca.leaf(&names));
        let bad = vec![
            pem(ca.expired_leaf(&names)),
            pem(ca.leaf(&["other.test"])),
            pem(stranger.leaf(&names)),
        ];
        let tls = TlsConfig::empty()
            .add_roots(ca.pem.as_bytes(), "fuzz CA")
            .unwrap()
            .with_server_identity(good.0.as_bytes(), good.1.as_bytes(), "fuzz leaf")
            .unwrap();
        Pki {
            ca: ca.pem,
            leaf: good,
            bad,
            tls,
        }
    })
}

/// The guest's arguments after SEED COUNT WATCH_MS MODE: the PKI's PEMs.
fn pki_args() -> Vec<&'static str> {
    let p = pki();
    let mut args = vec![p.ca.as_str(), p.leaf.0.as_str(), p.leaf.1.as_str()];
    for (cert, key) in &p.bad {
        args.push(cert);
        args.push(key);
    }
    args
}

/// Tight limits for half of the seeds: few sockets, a small per-socket and per-guest buffer
/// (below `readline`'s 64 KiB read-ahead), byte quotas a run exhausts, and a rate, so that the
/// ENOMEM and ENOBUFS paths and the rate limiter (which must never make a timed or
/// non-blocking call wait past its deadline) are fuzzed too.
fn tight_limits() -> Limits {
    let limits = Limits {
        max_sockets: 24,
        max_buffered: 4096,
        max_bytes_sent: Some(8 << 20),
        max_bytes_received: Some(8 << 20),
        rate: Some(512 << 10),
        max_buffered_total: 64 << 10,
        ..Limits::default()
    };
    limits.validate().expect("valid limits");
    limits
}

/// The limits seed `seed` runs with: default for even seeds, [`tight_limits`] for odd ones.
fn limits_for(seed: u64) -> (Limits, &'static str) {
    if seed.is_multiple_of(2) {
        (Limits::default(), "default limits")
    } else {
        (tight_limits(), "tight limits")
    }
}

/// What one guest run reported.
#[derive(Debug)]
struct Report {
    seed: u64,
    limits: &'static str,
    calls: u64,
    /// `{errno: count}` as the guest printed it.
    errors: String,
    findings: Vec<String>,
    /// `gap CALL errno N count C` lines, and the `gap step K: ...` line of the first of each.
    gaps: Vec<String>,
    /// The guest's `call NAME n=.. ok=.. none=.. max_ms=.. errno={..}` lines.
    calls_by_name: Vec<String>,
    took: Duration,
}

/// What the TLS calls of some runs did, from their `call` lines.
#[derive(Default)]
struct TlsTally {
    /// `wrap_socket` and `ctx_wrap`: calls, successes.
    wraps: (u64, u64),
    /// `getpeercert`: calls, certificates returned.
    peercerts: (u64, u64),
    /// Calls on TLS sockets (the `NAME/tls` lines).
    on_tls: u64,
    /// The longest `close` or drop of a TLS socket (ms): up to 2 s by the contract.
    close_ms: u64,
    /// The TLS failures (EPROTO, EBADMSG, ENOKEY, EKEYEXPIRED, EKEYREJECTED) any call reported.
    failures: std::collections::BTreeMap<i32, u64>,
}

impl TlsTally {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("call ") else {
            return;
        };
        let mut words = rest.split_whitespace();
        let name = words.next().unwrap_or_default();
        let field = |key: &str| -> u64 {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let (n, ok) = (field("n="), field("ok="));
        let base = name.strip_suffix("/tls").unwrap_or(name);
        if name.ends_with("/tls") {
            self.on_tls += n;
        }
        if name == "close/tls" || name == "drop/tls" {
            self.close_ms = self.close_ms.max(field("max_ms="));
        }
        match base {
            "wrap_socket" | "ctx_wrap" => {
                self.wraps.0 += n;
                self.wraps.1 += ok;
            }
            "getpeercert" => {
                self.peercerts.0 += n;
                self.peercerts.1 += ok;
            }
            _ => {}
        }
        // errno={71: 3, 104: 2}
        if let Some(map) = rest.split("errno={").nth(1) {
            for pair in map.trim_end_matches('}').split(", ") {
                if let Some((e, c)) = pair.split_once(": ")
                    && let (Ok(e), Ok(c)) = (e.parse::<i32>(), c.parse::<u64>())
                    && [71, 74, 126, 127, 129].contains(&e)
                {
                    *self.failures.entry(e).or_default() += c;
                }
            }
        }
    }
}

/// Runs `fuzz_calls SEED COUNT` with the seed's limits ([`limits_for`]) and a socket ceiling of
/// its own; fails the test if the guest traps, exits non-zero, makes another number of calls,
/// or leaves a socket open.
async fn fuzz(seed: u64, count: u64, time_limit: Duration) -> Report {
    let ceiling = SocketCeiling::new(1000);
    let (limits, label) = limits_for(seed);
    let ctx = UsocketCtx::new(format!("fuzz-{seed}"), fuzz_policy())
        .with_limits(limits)
        .with_ceiling(ceiling.clone())
        .with_tls(pki().tls.clone());
    let started = Instant::now();
    let args = [seed.to_string(), count.to_string()];
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["2000", "quiet"]);
    args.extend(pki_args());
    let out = run_with("fuzz_calls", &args, ctx, time_limit)
        .await
        .unwrap_or_else(|e| panic!("fuzz_calls {seed} {count}: trap or host error: {e:?}"));
    let took = started.elapsed();
    let stdout = out.stdout_text();
    assert_eq!(
        out.code,
        0,
        "fuzz_calls {seed} {count} exited {}: {}\n{stdout}",
        out.code,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    let (calls, errors) = last
        .strip_prefix("calls ")
        .and_then(|rest| rest.split_once(" errors "))
        .unwrap_or_else(|| panic!("seed {seed}: no summary line in:\n{stdout}"));
    let calls: u64 = calls.parse().expect("call count");
    assert_eq!(calls, count, "seed {seed}: calls made\n{stdout}");
    assert_eq!(
        ceiling.open(),
        0,
        "seed {seed}: sockets still open after the guest ended"
    );
    let pick = |prefix: &str| -> Vec<String> {
        stdout
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    };
    Report {
        seed,
        limits: label,
        calls,
        errors: errors.to_string(),
        findings: pick("finding "),
        gaps: pick("gap "),
        calls_by_name: pick("call "),
        took,
    }
}

/// Runs `seeds` in parallel, `count` calls each; prints each report and checks them all.
async fn campaign(seeds: std::ops::Range<u64>, count: u64, time_limit: Duration) {
    let started = Instant::now();
    let runs: Vec<_> = seeds
        .map(|seed| tokio::spawn(fuzz(seed, count, time_limit)))
        .collect();
    let mut reports = Vec::new();
    for run in runs {
        reports.push(run.await.expect("a fuzz run panicked"));
    }
    let total: u64 = reports.iter().map(|r| r.calls).sum();
    for r in &reports {
        println!(
            "seed {} ({}): {} calls in {:.1} s, errors {}",
            r.seed,
            r.limits,
            r.calls,
            r.took.as_secs_f64(),
            r.errors
        );
        for line in r.findings.iter().chain(&r.gaps) {
            println!("  seed {}: {line}", r.seed);
        }
    }
    println!(
        "total: {total} calls in {:.1} s over {} seeds",
        started.elapsed().as_secs_f64(),
        reports.len()
    );
    let mut tls = TlsTally::default();
    for line in reports.iter().flat_map(|r| &r.calls_by_name) {
        tls.add(line);
    }
    println!(
        "TLS: {} wraps ({} succeeded), {} getpeercert ({} certificates), {} calls on TLS sockets, TLS failures {:?}, longest TLS close {} ms",
        tls.wraps.0,
        tls.wraps.1,
        tls.peercerts.0,
        tls.peercerts.1,
        tls.on_tls,
        tls.failures,
        tls.close_ms
    );
    let findings: Vec<_> = reports
        .iter()
        .flat_map(|r| {
            r.findings
                .iter()
                .map(move |f| format!("seed {}: {f}", r.seed))
        })
        .collect();
    assert!(findings.is_empty(), "findings:\n{}", findings.join("\n"));
    if std::env::var_os("USOCKET_FUZZ_STRICT").is_some_and(|v| v == "1") {
        let gaps: Vec<_> = reports.iter().flat_map(|r| r.gaps.iter()).collect();
        assert!(gaps.is_empty(), "gaps: {gaps:#?}");
    }
}

/// CI: 4 seeds x 2,000 calls, in parallel (two with default limits, two with tight ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_seeds() {
    campaign(1..5, 2_000, Duration::from_secs(120)).await;
}

/// The long run: `USOCKET_FUZZ_CALLS` calls in all (default 1,000,000), split over
/// `USOCKET_FUZZ_SEEDS` seeds run in parallel (default 16), from `USOCKET_FUZZ_FIRST_SEED`
/// (default 1000); odd seeds run with tight limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: about a million calls; see docs/fuzzing.md"]
async fn long_run() {
    let var = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
            })
            .unwrap_or(default)
    };
    let calls = var("USOCKET_FUZZ_CALLS", 1_000_000);
    let seeds = var("USOCKET_FUZZ_SEEDS", 16).max(1);
    let first = var("USOCKET_FUZZ_FIRST_SEED", 1000);
    let per_seed = calls.div_ceil(seeds);
    campaign(
        first..first + seeds,
        per_seed,
        Duration::from_secs(3 * 3600),
    )
    .await;
}

/// Found by the fuzz harness (2026-11-30; fixed in 571b724): `close` of a TCP socket with
/// SO_LINGER on and a linger time of N seconds, while its send buffer held data the peer had
/// not read, blocked for N seconds in the host (the kernel's `close` lingers even on a
/// non-blocking socket, and the host closed the descriptor on the thread running the guest),
/// for any N up to i32::MAX, past the guest's time limit. The guest asks for 3 seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_with_linger_does_not_wait() {
    let ctx = UsocketCtx::new("linger", fuzz_policy());
    let out = run_with(
        "fuzz_calls",
        &["repro", "linger-close", "3"],
        ctx,
        Duration::from_secs(30),
    )
    .await
    .expect("the reproducer runs");
    let stdout = out.stdout_text();
    assert_eq!(out.code, 0, "{stdout}");
    let ms: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("close took "))
        .and_then(|l| l.strip_suffix(" ms"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no close time in:\n{stdout}"));
    assert!(ms < 1000, "close waited {ms} ms:\n{stdout}");
}

/// Replays one seed (with its limits) with every call traced, for minimising a finding:
/// `USOCKET_FUZZ_SEED=1015 USOCKET_FUZZ_CALLS=12761 cargo test --release -p usocket-tests
/// --test fuzz -- --ignored --nocapture replay > trace.txt`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a tool: prints the trace of USOCKET_FUZZ_SEED"]
async fn replay() {
    let seed = std::env::var("USOCKET_FUZZ_SEED").unwrap_or_else(|_| "1".into());
    let calls = std::env::var("USOCKET_FUZZ_CALLS").unwrap_or_else(|_| "2000".into());
    let limits = limits_for(seed.parse().expect("USOCKET_FUZZ_SEED")).0;
    let ctx = UsocketCtx::new(format!("fuzz-{seed}"), fuzz_policy())
        .with_limits(limits)
        .with_tls(pki().tls.clone());
    let mut args = vec![seed.as_str(), calls.as_str(), "2000", "trace"];
    args.extend(pki_args());
    let out = run_with("fuzz_calls", &args, ctx, Duration::from_secs(3600))
        .await
        .unwrap_or_else(|e| panic!("fuzz_calls {seed} {calls}: trap or host error: {e:?}"));
    print!("{}", out.stdout_text());
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.code, 0);
}

/// Found by the fuzz harness (2026-11-30; fixed in 571b724): with allow rules matching the
/// IPv4 address an IPv6 address is an alias of, `connect,send=127.0.0.1:*` granted a connect
/// to `[::127.0.0.1]` (IPv4-compatible) on an AF_INET6 socket, and the kernel, for which that
/// is an ordinary IPv6 address (the socket is IPV6_V6ONLY), sent the SYN off the machine (the
/// connect timed out; the socket's local address was the machine's global `fd00::2`); UDP
/// datagrams and the IPv4-translated and NAT64 spellings too. Each must be EACCES, and so must
/// 6to4 (`2002:7f00:1::`), which allow rules never granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_spellings_of_a_granted_ipv4_address_do_not_leave() {
    let ctx = UsocketCtx::new(
        "alias",
        policy(&["connect,send=127.0.0.1:*", "connect,send=[::1]:*"], &[]),
    );
    let out = run_with(
        "fuzz_calls",
        &["repro", "alias-connect", "9"],
        ctx,
        Duration::from_secs(30),
    )
    .await
    .expect("the reproducer runs");
    let stdout = out.stdout_text();
    assert_eq!(out.code, 0, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 8, "{stdout}");
    for line in lines {
        assert!(
            line.contains(" errno 13 "),
            "granted, not EACCES: {line}\n{stdout}"
        );
    }
}

/// Found by the fuzz harness's TLS calls (2026-11-30; open, a host bug): `wrap_socket` while
/// a non-blocking connect is under way succeeds (the host keeps the parameters and starts TLS
/// when the connect completes). If starting TLS then fails (a `server_hostname` the policy
/// does not grant: EACCES; CA data that is no certificate: EINVAL), the first call after the
/// connect reports that error once, and the socket is left connected **without TLS**: the
/// next writes send the guest's data in plaintext, and the peer reads it. Each write must
/// fail instead (the failure sticky, as every TLS failure is) and the peer read nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deferred_tls_sends_no_plaintext() {
    for what in ["hostname", "cadata"] {
        let ctx = UsocketCtx::new("tls-deferred", fuzz_policy()).with_tls(pki().tls.clone());
        let out = run_with(
            "fuzz_calls",
            &["repro", "tls-deferred", what],
            ctx,
            Duration::from_secs(30),
        )
        .await
        .expect("the reproducer runs");
        let stdout = out.stdout_text();
        assert_eq!(out.code, 0, "{stdout}");
        assert!(stdout.contains("wrap ok"), "{what}: {stdout}");
        for k in 1..=3 {
            let line = stdout
                .lines()
                .find(|l| l.starts_with(&format!("write {k} ")))
                .unwrap_or_else(|| panic!("{what}: no write {k} in:\n{stdout}"));
            assert!(
                line.contains("errno"),
                "{what}: a write went through: {line}\n{stdout}"
            );
        }
        assert!(
            !stdout.contains("secret"),
            "{what}: the peer read plaintext:\n{stdout}"
        );
    }
}

/// Found by the fuzz harness's TLS calls (2026-11-30; fixed in 93d0c78): after the peer of a TLS
/// connection reset it (it closed with data unread), the client's `send` says ECONNRESET and
/// then **every** read says EPIPE, never the end of the stream. The records a failed write
/// left in the host are flushed again before each read, and the read passes the kernel's
/// EPIPE on. The contract (docs/contract.md#errors) names EPIPE for writes only, and says
/// reads after a peer reset give ECONNRESET once, then the end of the stream, as they do on a
/// plain socket (what they do since the fix: ECONNRESET, then `b""`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_reads_after_a_reset_end() {
    let ctx = UsocketCtx::new("tls-reset", fuzz_policy()).with_tls(pki().tls.clone());
    let out = run_with(
        "fuzz_calls",
        &["repro", "tls-reset"],
        ctx,
        Duration::from_secs(30),
    )
    .await
    .expect("the reproducer runs");
    let stdout = out.stdout_text();
    assert_eq!(out.code, 0, "{stdout}");
    assert!(stdout.contains("handshake done"), "{stdout}");
    let recvs: Vec<&str> = stdout.lines().filter(|l| l.starts_with("recv ")).collect();
    assert_eq!(recvs.len(), 4, "{stdout}");
    assert!(
        recvs.iter().all(|l| !l.ends_with("errno 32")),
        "EPIPE from a read:\n{stdout}"
    );
    assert!(recvs[3].ends_with("\"\""), "no end of stream:\n{stdout}");
}
