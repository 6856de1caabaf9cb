//! Fuzzes the host interface from a guest: `fuzz_calls SEED COUNT [WATCH_MS [trace|quiet [CA
//! CERT KEY EXPIRED EXPIRED_KEY WRONG_NAME WRONG_NAME_KEY UNKNOWN_CA UNKNOWN_CA_KEY]]]` makes
//! COUNT calls of the `usocket` API, each chosen at random among all of them, with random and
//! often hostile arguments, over a small pool of sockets (at most 16 handles) and loopback peers
//! it makes itself (its own listeners, connections to them, UDP to itself).
//!
//! TLS (`usocket::ssl`): `wrap_socket` and `SSLContext` with hostile options on every kind of
//! socket in the pool, `IPPROTO_SEC` sockets, `getpeercert`, and the data calls on TLS sockets.
//! The optional PEM arguments are the driver's test PKI (the host trusts CA and presents CERT
//! as its embedder identity): with them, pairs of the pool's own sockets can finish real
//! handshakes (valid, expired, wrong-name, unknown-CA and mangled certificates); without
//! them, only hostile material is used. Checks of its own: a TLS client that verified must
//! have accepted the valid certificate only, bytes written on a TLS socket must never reach a
//! plain socket of the pool as plaintext, and a TLS failure must stick.
//!
//! Every call goes through the guest library, which maps nearly 1:1 onto the WIT functions
//! (this crate has no wit-bindgen of its own); `readline` exercises `readline-ahead` and
//! `unread`, the `std::io` traits exercise `read-ahead`, `recv(MSG_PEEK)` and `read(n)`.
//!
//! The program never blocks for long: before any call that may wait, the socket it uses is
//! made non-blocking or given a timeout of at most 50 ms (these set-up calls are counted as
//! `aux`, not as calls), `poll` waits at most 50 ms unless a closed socket (always ready) is
//! among its entries, and no name but `localhost` (in a few spellings) is granted a lookup.
//! Addresses are 127.0.0.1 and ::1 (or hostile strings the host must refuse); ports are 0, 1,
//! ports of its own sockets, or out of range, so it never reaches anyone else's listener.
//!
//! It checks, for every call: the errno against the contract (an errno outside the contract's
//! table is a finding; one in the table that the contract names only for other calls is a
//! `gap`), the shape of successful results (sizes within what was asked, poll bits, address
//! literals, getaddrinfo records), and the time taken (more than WATCH_MS, default 2000, is a
//! finding: no call here may wait that long). Output, one line each: `finding step K: ...`
//! (at most 200), `gap step K: ...` (the first of each call and errno), `trace ...` (every
//! call, with `trace` as the fourth argument), `call NAME ...` per call (`NAME/tls` for those
//! on TLS sockets), `gap CALL errno N count C`, `aux N`, `seconds S`, `findings N`, and last
//! `calls N errors {errno: count}`.
//! A trap is a finding of the driver (`tests/tests/fuzz.rs`); docs/fuzzing.md has the rest.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use usocket::select::{self, POLL_CLOSED, POLLERR, POLLHUP, POLLIN, POLLOUT};
use usocket::ssl::{self, MAX_TLS_DATA, SSLContext, WrapOptions};
use usocket::{
    AF_INET, AF_INET6, IPPROTO_IP, IPPROTO_IPV6, IPPROTO_SEC, IPPROTO_TCP, IPPROTO_UDP,
    MSG_DONTWAIT, MSG_PEEK, OSError, SO_BROADCAST, SO_KEEPALIVE, SO_LINGER, SO_RCVBUF,
    SO_REUSEADDR, SO_SNDBUF, SOCK_DGRAM, SOCK_STREAM, SOL_SOCKET, Socket, TCP_NODELAY,
};

/// splitmix64: small, fast, and good enough to pick calls.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True with probability `num / den`.
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next() % den < num
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    /// A uniform float in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Sockets in the pool (handles: `makefile` and clones count as one each).
const POOL: usize = 16;
/// Registrations one poller may hold before the program replaces it.
const POLLER_MAX: usize = 24;
/// Closed sockets kept for `poll` with many entries (the host accepts 4096).
const GRAVEYARD_MAX: usize = 4200;
/// The longest timeout the program sets before a call that may wait.
const SAFE_TIMEOUT: f64 = 0.05;

/// One handle in the pool, with what the program knows of its socket.
struct Entry {
    sock: Socket,
    /// Names the host socket in trace lines (shared by its handles).
    id: u64,
    /// Shared by all handles of one socket: its timeout is known to be at most 50 ms (or
    /// non-blocking), so a call that waits ends soon.
    safe: Rc<Cell<bool>>,
    /// Shared by all handles of one socket: a connect may be under way (a later `connect`
    /// reports its outcome, whatever address it names).
    pending: Rc<Cell<bool>>,
    /// Shared by all handles of one socket: `listen` succeeded on it (accept prefers these).
    listening: Rc<Cell<bool>>,
    /// Shared by all handles of one socket: TLS was set up on it (see [`TlsInfo`]).
    tls: Rc<Cell<Option<TlsInfo>>>,
    /// Shared by all handles of one socket: the TLS failure (EPROTO, EBADMSG, ENOKEY,
    /// EKEYEXPIRED, EKEYREJECTED) a call on it reported; every later write must repeat it.
    tls_failed: Rc<Cell<Option<i32>>>,
}

/// What the program asked for when a socket became a TLS one (the first `wrap_socket` that
/// reached the host's TLS set-up, or `IPPROTO_SEC`).
#[derive(Clone, Copy, Debug)]
struct TlsInfo {
    server: bool,
    /// A client that verifies the server's certificate (CERT_OPTIONAL, CERT_REQUIRED,
    /// IPPROTO_SEC).
    verify: bool,
    /// It trusts the driver's CA only (the host's roots, or `cadata` that is exactly the CA):
    /// a finished handshake must then have accepted the valid certificate, nothing else.
    strict: bool,
    /// A later call on it reported EACCES or EINVAL, as a TLS start the host deferred (a wrap
    /// during a non-blocking connect) does when it fails when the connect completes: the
    /// socket may then be plain, and a later wrap may start TLS with other parameters, which
    /// then replace these.
    tainted: bool,
}

/// Written on TLS sockets (instead of `data()`'s letters): a plain socket of the pool that
/// reads it got plaintext that should have been encrypted.
const SECRET: &[u8] = b"\x7fTLS\x7f";

/// The driver's test PKI (PEM arguments), with the DER of each certificate and key.
struct Material {
    ca: Pem,
    /// Valid for localhost, 127.0.0.1 and ::1, signed by the CA (the host's identity too).
    leaf: Pem,
    leaf_key: Pem,
    /// Expired, wrong-name (other.test) and unknown-CA (signed by a CA nobody trusts) ones, with their keys.
    bad: Vec<(Pem, Pem)>,
}

struct Pem {
    pem: Vec<u8>,
    der: Vec<u8>,
}

impl Pem {
    fn new(pem: &str) -> Pem {
        Pem {
            pem: pem.as_bytes().to_vec(),
            der: pem_body(pem),
        }
    }
}

/// Which argument of `wrap_socket` TLS data is for.
#[derive(Clone, Copy)]
enum Role {
    Cert,
    Key,
    Ca,
}

#[derive(Default)]
struct CallStats {
    calls: u64,
    ok: u64,
    none: u64,
    errnos: BTreeMap<i32, u64>,
    max_ms: u128,
}

/// What a call returned, for the books.
#[derive(Clone, Copy)]
enum Res {
    Ok,
    None,
    Err(i32),
}

struct Fuzz {
    rng: Rng,
    pool: Vec<Entry>,
    /// Addresses of the program's own sockets (bound, listening, peers it saw).
    known: Vec<(String, i64)>,
    pollers: [(select::Poll, usize); 2],
    graveyard: Vec<Socket>,
    /// Per call, and whether the socket was a TLS one.
    stats: BTreeMap<(&'static str, bool), CallStats>,
    errors: BTreeMap<i32, u64>,
    /// (call, errno) pairs of the contract's table that it does not name for that call.
    gaps: BTreeMap<(&'static str, bool, i32), u64>,
    findings: u64,
    /// Calls made so far (the steps that found a socket to use).
    calls: u64,
    aux: u64,
    step: u64,
    watch: Duration,
    /// Print every call and its result (`trace` as the fourth argument).
    trace: bool,
    /// The socket the current call uses, for trace lines.
    cur: Option<u64>,
    /// Whether that socket is a TLS one (its data calls may answer with the TLS errnos).
    cur_tls: bool,
    next_id: u64,
    /// The driver's test PKI, if it gave one.
    mat: Option<Rc<Material>>,
}

/// The errnos the contract (docs/contract.md and the WIT's notes) names for each call.
/// ENOMEM (a quota) and EACCES (the policy) are named wherever the host may need a quota or
/// a grant; ENOBUFS (the per-socket buffer) for the calls that make the host buffer.
fn allowed(call: &str) -> &'static [i32] {
    const RECV: &[i32] = &[9, 11, 12, 22, 104, 105, 107, 110];
    const READ: &[i32] = &[9, 12, 104, 105, 107, 110];
    const SEND: &[i32] = &[9, 11, 12, 13, 32, 104, 107, 110];
    match call {
        "socket" => &[12, 13, 22, 97],
        "bind" => &[9, 13, 22, 98, 99],
        "listen" => &[9, 12, 13, 22, 95, 98, 99],
        "accept" => &[9, 11, 12, 22, 95, 103, 110],
        // ECONNABORTED: a retry after a refused connect (POSIX leaves it open; Linux's answer,
        // kept by the host on purpose: host/src/socket/tests.rs).
        "connect" => &[9, 13, 22, 99, 101, 103, 106, 110, 111, 113, 114, 115],
        "send" | "sendall" | "write" | "io_write" => SEND,
        "sendto" => &[9, 11, 12, 13, 22, 32, 99, 101, 104, 106, 107, 110, 113],
        "recv" | "recv_flags" | "recvfrom" | "recvfrom_flags" => RECV,
        "io_read" | "fill_buf" => &[9, 11, 12, 104, 105, 107, 110],
        "read" | "read_all" | "readinto" | "readline" | "readline_limit" => READ,
        "settimeout" => &[9, 22],
        "setblocking" | "kind" => &[9],
        "setsockopt" => &[9, 22, 92],
        "getsockname" => &[9, 22],
        "getpeername" => &[9, 107],
        "makefile" => &[9, 22],
        "poll" | "ipoll" | "poll_many" => &[22],
        "modify" => &[2],
        "getaddrinfo" | "getaddrinfo_with" => &[-9, -6, -3, -2, 12, 13, 22],
        // docs/contract.md#tls: the TLS failures, ETIMEDOUT, ECONNRESET, EACCES
        // (server_hostname), EINVAL (state, data), ENOTCONN, EOPNOTSUPP (guest-side), EBADF.
        "wrap_socket" | "ctx_wrap" => &[9, 13, 22, 71, 74, 95, 104, 107, 110, 126, 127, 129],
        "getpeercert" => &[9, 95],
        _ => &[],
    }
}

/// What a call on a TLS socket may answer besides [`allowed`]: the TLS failures (a handshake
/// runs inside `connect` for IPPROTO_SEC and inside the first reads and writes; a failure is
/// sticky), ETIMEDOUT for its deadline, ECONNRESET for a stream cut without close_notify.
fn allowed_tls(call: &str) -> &'static [i32] {
    const TLS: &[i32] = &[71, 74, 104, 110, 126, 127, 129];
    match call {
        "connect" | "send" | "sendall" | "write" | "io_write" | "recv" | "recv_flags"
        | "recvfrom" | "recvfrom_flags" | "io_read" | "fill_buf" | "read" | "read_all"
        | "readinto" | "readline" | "readline_limit" => TLS,
        _ => &[],
    }
}

/// Every errno of the contract's table (docs/contract.md#errors); getaddrinfo's negative
/// codes are named for getaddrinfo only.
const CONTRACT_ERRNOS: &[i32] = &[
    1, 2, 5, 9, 11, 12, 13, 17, 22, 32, 71, 74, 92, 95, 97, 98, 99, 101, 103, 104, 105, 106, 107,
    110, 111, 113, 114, 115, 126, 127, 129,
];

const HOSTILE_ADDRESSES: &[&str] = &[
    "",
    "0.0.0.0",
    "::",
    "127.0.0.2",
    "10.0.0.1",
    "169.254.169.254",
    "255.255.255.255",
    "224.0.0.1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::127.0.0.1",
    "64:ff9b::a9fe:a9fe",
    "2002:7f00:1::",
    "fe80::1%1",
    "::1%lo",
    "[::1]",
    "127.1",
    "2130706433",
    "0x7f.1",
    "0177.0.0.1",
    "localhost",
    "LOCALHOST",
    "127.0.0.1 ",
    " 127.0.0.1",
    "127.0.0.1\0",
    "127.0.0.1:80",
    "1.2.3",
    "::1::",
    "\u{ff}\u{fe}",
    "\u{1f980}",
    "-1",
];

const HOSTILE_PORTS: &[i64] = &[
    -1,
    -65535,
    65536,
    65537,
    i32::MIN as i64,
    i32::MAX as i64,
    i64::MAX,
    i64::MIN,
    u32::MAX as i64,
];

const SIZES: &[usize] = &[
    0,
    1,
    2,
    7,
    64,
    1000,
    4096,
    65535,
    65536,
    65537,
    1 << 20,
    (1 << 31) - 1,
    1 << 31,
    (u32::MAX - 1) as usize,
    u32::MAX as usize,
    usize::MAX,
];

const HOSTILE_TIMEOUTS: &[f64] = &[
    f64::NAN,
    -f64::NAN,
    -1.0,
    -0.0,
    -1e-300,
    f64::NEG_INFINITY,
    f64::INFINITY,
    f64::MAX,
    1e300,
    1.8446744073709552e19,
    18446744073.709553,
    1e9,
    60.0,
    1e-300,
    5e-324,
    f64::MIN_POSITIVE,
    1e-9,
];

impl Fuzz {
    fn finding(&mut self, what: String) {
        self.findings += 1;
        if self.findings <= 200 {
            println!("finding step {}: {what}", self.step);
        }
    }

    /// An errno against the contract: a finding outside its table, a gap when the contract
    /// names it for other calls only.
    fn judge(&mut self, call: &'static str, tls: bool, e: i32, args: &str) {
        if allowed(call).contains(&e) || (tls && allowed_tls(call).contains(&e)) {
            return;
        }
        let on = if tls { " on a TLS socket" } else { "" };
        if CONTRACT_ERRNOS.contains(&e) {
            let n = self.gaps.entry((call, tls, e)).or_default();
            *n += 1;
            if *n == 1 {
                println!("gap step {}: {call}({args}){on} gave errno {e}", self.step);
            }
        } else {
            self.finding(format!(
                "{call}({args}){on} gave errno {e}, not in the contract"
            ));
        }
    }

    /// Books one call: its result, time and (for an error) whether the contract allows it.
    fn book(&mut self, call: &'static str, res: Res, took: Duration, args: &str) {
        self.calls += 1;
        let tls = self.cur_tls;
        let st = self.stats.entry((call, tls)).or_default();
        st.calls += 1;
        st.max_ms = st.max_ms.max(took.as_millis());
        let errno = match res {
            Res::Ok => {
                st.ok += 1;
                None
            }
            Res::None => {
                st.none += 1;
                None
            }
            Res::Err(e) => {
                *st.errnos.entry(e).or_default() += 1;
                Some(e)
            }
        };
        if let Some(e) = errno {
            self.judge(call, tls, e, args);
        }
        if let Some(e) = errno {
            *self.errors.entry(e).or_default() += 1;
        }
        if self.trace {
            let on = self.cur.map_or(String::new(), |id| format!(" on #{id}"));
            let out = match res {
                Res::Ok => "ok".to_string(),
                Res::None => "none".to_string(),
                Res::Err(e) => format!("errno {e}"),
            };
            let tls = if tls { " tls" } else { "" };
            println!(
                "trace {} {call}({args}){on}{tls} -> {out} {} ms",
                self.step,
                took.as_millis()
            );
        }
        // `close` and dropping a handle never wait (the contract: a blocked call never blocks
        // a host thread, and close has nothing to wait for), except that a TLS socket's sends
        // what the host holds and close_notify, waiting up to 2 s (docs/contract.md#tls).
        let watch = match call {
            "close" | "drop" if tls => Duration::from_millis(2500),
            "close" | "drop" => self.watch.min(Duration::from_millis(500)),
            _ => self.watch,
        };
        if took > watch {
            self.finding(format!("{call}({args}) took {} ms", took.as_millis()));
        }
    }

    fn res<T>(r: &usocket::Result<T>) -> Res {
        match r {
            Ok(_) => Res::Ok,
            Err(e) => Res::Err(e.errno()),
        }
    }

    fn res_opt<T>(r: &usocket::Result<Option<T>>) -> Res {
        match r {
            Ok(Some(_)) => Res::Ok,
            Ok(None) => Res::None,
            Err(e) => Res::Err(e.errno()),
        }
    }

    fn res_io<T>(r: &std::io::Result<T>) -> Res {
        match r {
            Ok(_) => Res::Ok,
            // An io::Error that carries no OSError (the guest library's own): 0.
            Err(e) => Res::Err(OSError::from_io_error(e).map_or(0, |e| e.errno())),
        }
    }

    // ---- arguments -------------------------------------------------------------------

    fn family(&mut self) -> i32 {
        if self.rng.chance(9, 10) {
            self.rng.pick(&[AF_INET, AF_INET6])
        } else {
            self.rng
                .pick(&[0, 1, -1, 3, 17, 11, i32::MAX, i32::MIN, AF_INET | 0x100])
        }
    }

    fn socktype(&mut self) -> i32 {
        if self.rng.chance(9, 10) {
            self.rng.pick(&[SOCK_STREAM, SOCK_DGRAM])
        } else {
            // SOCK_RAW, SOCK_SEQPACKET, SOCK_STREAM|SOCK_NONBLOCK, SOCK_DGRAM|SOCK_CLOEXEC, ...
            self.rng
                .pick(&[0, 3, 5, -1, 1 | 0x800, 2 | 0x80000, 10, i32::MAX, i32::MIN])
        }
    }

    fn proto(&mut self, socktype: i32) -> i32 {
        if self.rng.chance(8, 10) {
            match (socktype, self.rng.chance(1, 2)) {
                (_, true) => 0,
                (SOCK_STREAM, false) if self.rng.chance(1, 3) => IPPROTO_SEC,
                (SOCK_STREAM, false) => IPPROTO_TCP,
                _ => IPPROTO_UDP,
            }
        } else {
            self.rng.pick(&[
                IPPROTO_TCP,
                IPPROTO_UDP,
                IPPROTO_IP,
                IPPROTO_IPV6,
                IPPROTO_SEC,
                1,
                132,
                255,
                256,
                -1,
                i32::MIN,
            ])
        }
    }

    fn loopback(&mut self) -> &'static str {
        self.rng.pick(&["127.0.0.1", "::1"])
    }

    /// An address for `bind`: mostly loopback with port 0 or a known port.
    fn bind_addr(&mut self) -> (String, i64) {
        match self.rng.below(10) {
            0..=5 => (self.loopback().to_string(), 0),
            6 | 7 => self.known_addr(),
            _ => self.hostile_addr(),
        }
    }

    /// An address for `connect` and `sendto`: mostly one of the program's own.
    fn peer_addr(&mut self) -> (String, i64) {
        match self.rng.below(10) {
            0..=6 => self.known_addr(),
            7 => (self.loopback().to_string(), self.rng.pick(&[0, 1])),
            _ => self.hostile_addr(),
        }
    }

    /// The address of one of the pool's listeners, if any (so that `accept` has work).
    fn listener_addr(&mut self) -> Option<(String, i64)> {
        let listeners: Vec<usize> = (0..self.pool.len())
            .filter(|&j| self.pool[j].listening.get())
            .collect();
        if listeners.is_empty() {
            return None;
        }
        let j = listeners[self.rng.below(listeners.len())];
        self.aux += 1;
        let (addr, port) = self.pool[j].sock.getsockname().ok()?;
        Some((addr, i64::from(port)))
    }

    fn known_addr(&mut self) -> (String, i64) {
        if self.known.is_empty() {
            return (self.loopback().to_string(), 0);
        }
        let (addr, port) = self.known[self.rng.below(self.known.len())].clone();
        if self.rng.chance(1, 10) {
            // The other loopback address with this port: usually nobody there.
            let other = if addr.contains(':') {
                "127.0.0.1"
            } else {
                "::1"
            };
            return (other.to_string(), port);
        }
        (addr, port)
    }

    fn hostile_addr(&mut self) -> (String, i64) {
        let addr = match self.rng.below(10) {
            0..=6 => self.rng.pick(HOSTILE_ADDRESSES).to_string(),
            7 => "1".repeat(self.rng.pick(&[256, 4096, 65536])),
            8 => "a.".repeat(self.rng.pick(&[64, 200, 5000])),
            _ => {
                let bytes: Vec<u8> = (0..self.rng.below(40))
                    .map(|_| self.rng.next() as u8)
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
        };
        let port = match self.rng.below(3) {
            0 => self.rng.pick(HOSTILE_PORTS),
            1 => self.known_addr().1,
            _ => self.rng.pick(&[0, 1]),
        };
        (addr, port)
    }

    fn size(&mut self) -> usize {
        if self.rng.chance(6, 10) {
            self.rng.below(200)
        } else {
            self.rng.pick(SIZES)
        }
    }

    fn data(&mut self) -> Vec<u8> {
        let len = match self.rng.below(20) {
            0 => 0,
            1..=11 => self.rng.below(64),
            12..=17 => self.rng.below(4096),
            18 => 65536,
            _ => {
                if self.rng.chance(1, 4) {
                    1 << 20
                } else {
                    65508 // one more than the largest UDP payload over IPv4
                }
            }
        };
        let newline_every = self.rng.pick(&[0usize, 1, 8, 100]);
        (0..len)
            .map(|i| {
                if newline_every != 0 && i % newline_every == newline_every - 1 {
                    b'\n'
                } else {
                    b'a' + (i % 26) as u8
                }
            })
            .collect()
    }

    fn flags(&mut self) -> i32 {
        if self.rng.chance(7, 10) {
            self.rng
                .pick(&[0, MSG_PEEK, MSG_DONTWAIT, MSG_PEEK | MSG_DONTWAIT])
        } else {
            // MSG_OOB, MSG_WAITALL, MSG_TRUNC, MSG_NOSIGNAL, MSG_ERRQUEUE, every bit, ...
            let random = self.rng.next() as i32;
            self.rng.pick(&[
                1,
                0x100,
                0x20,
                0x4000,
                0x2000,
                -1,
                i32::MIN,
                i32::MAX,
                MSG_DONTWAIT | 0x100,
                random,
            ])
        }
    }

    fn timeout(&mut self) -> Option<f64> {
        match self.rng.below(10) {
            0..=6 => Some(self.safe_timeout()),
            7 => None,
            _ => Some(self.rng.pick(HOSTILE_TIMEOUTS)),
        }
    }

    /// A timeout in [0, 0.05]: non-blocking half of the time, mostly short otherwise.
    fn safe_timeout(&mut self) -> f64 {
        match self.rng.below(10) {
            0..=4 => 0.0,
            5..=7 => self.rng.unit() * 0.005,
            _ => self.rng.unit() * SAFE_TIMEOUT,
        }
    }

    fn mask(&mut self) -> u32 {
        if self.rng.chance(7, 10) {
            self.rng.pick(&[POLLIN, POLLOUT, POLLIN | POLLOUT, 0])
        } else {
            let random = self.rng.next() as u32;
            self.rng.pick(&[
                POLLERR,
                POLLHUP,
                POLL_CLOSED,
                0x40,
                0x2000,
                u32::MAX,
                random,
            ])
        }
    }

    /// A poll timeout in milliseconds and whether it may wait longer than 50 ms.
    fn poll_timeout(&mut self) -> (i32, bool) {
        match self.rng.below(10) {
            0..=3 => (0, false),
            4..=7 => (self.rng.below(6) as i32, false),
            8 => (self.rng.below(51) as i32, false),
            _ => (
                self.rng.pick(&[-1, -2, i32::MIN, 51, 10_000, i32::MAX]),
                true,
            ),
        }
    }

    // ---- pool ------------------------------------------------------------------------

    fn add(&mut self, sock: Socket, safe: bool) {
        self.add_tls(sock, safe, None);
    }

    fn add_tls(&mut self, sock: Socket, safe: bool, tls: Option<TlsInfo>) {
        self.next_id += 1;
        if self.trace {
            println!("trace new #{} (step {})", self.next_id, self.step);
        }
        let entry = Entry {
            id: self.next_id,
            sock,
            safe: Rc::new(Cell::new(safe)),
            pending: Rc::new(Cell::new(false)),
            listening: Rc::new(Cell::new(false)),
            tls: Rc::new(Cell::new(tls)),
            tls_failed: Rc::new(Cell::new(None)),
        };
        self.add_entry(entry);
    }

    fn add_listener(&mut self, l: Socket) {
        self.add(l, true);
        if let Some(e) = self.pool.last() {
            e.listening.set(true);
        }
    }

    fn add_entry(&mut self, entry: Entry) {
        if self.pool.len() >= POOL {
            // Dropping the handle closes the socket when it was the last one.
            let i = self.rng.below(self.pool.len());
            self.pool.swap_remove(i);
        }
        self.pool.push(entry);
    }

    fn learn(&mut self, addr: (String, u16)) {
        if addr.1 == 0 || addr.0.parse::<IpAddr>().is_err() {
            return;
        }
        let addr = (addr.0, i64::from(addr.1));
        if self.known.contains(&addr) {
            return;
        }
        if self.known.len() >= 32 {
            let i = self.rng.below(self.known.len());
            self.known.swap_remove(i);
        }
        self.known.push(addr);
    }

    /// A random pool entry (its index), or `None` if the pool is empty.
    fn any(&mut self) -> Option<usize> {
        let i = (!self.pool.is_empty()).then(|| self.rng.below(self.pool.len()));
        self.cur = i.map(|i| self.pool[i].id);
        self.cur_tls = i.is_some_and(|i| self.pool[i].tls.get().is_some());
        i
    }

    /// Makes the socket of entry `i` safe to wait on: non-blocking or a timeout of at most
    /// 50 ms. False if that failed on an open socket (the call must then be skipped).
    fn make_safe(&mut self, i: usize) -> bool {
        if self.pool[i].safe.get() {
            return true;
        }
        let t = self.safe_timeout();
        self.aux += 1;
        match self.pool[i].sock.settimeout(Some(t)) {
            Ok(()) => {
                self.pool[i].safe.set(true);
                true
            }
            // Closed: every call fails at once.
            Err(e) if e.errno() == 9 => true,
            Err(e) => {
                self.finding(format!("settimeout({t}) to make a call safe gave {e:?}"));
                false
            }
        }
    }

    /// Aux: a listener, a client connected to it and the accepted socket, each timed, so
    /// that data calls also meet connected sockets. Not counted as calls.
    fn make_pair(&mut self) {
        let af = self.rng.pick(&[AF_INET, AF_INET6]);
        let host = if af == AF_INET { "127.0.0.1" } else { "::1" };
        self.aux += 1;
        let Ok(l) = usocket::socket(af, SOCK_STREAM, 0) else {
            return;
        };
        self.aux += 4;
        if l.settimeout(Some(SAFE_TIMEOUT)).is_err()
            || l.bind((host, 0)).is_err()
            || l.listen(None).is_err()
        {
            return;
        }
        let Ok(addr) = l.getsockname() else { return };
        self.learn(addr.clone());
        self.aux += 3;
        let Ok(c) = usocket::socket(af, SOCK_STREAM, 0) else {
            self.add_listener(l);
            return;
        };
        let _ = c.settimeout(Some(SAFE_TIMEOUT));
        let connected = c.connect(&addr);
        if connected.is_ok() {
            self.aux += 1;
            if let Ok((s, peer)) = l.accept() {
                self.learn(peer);
                self.add(s, true);
            }
        }
        self.add(c, true);
        // A connect that timed out is still under way.
        if let (Err(e), Some(entry)) = (connected, self.pool.last()) {
            entry.pending.set(matches!(e.errno(), 110 | 114 | 115));
        }
        self.add_listener(l);
    }

    /// Aux: a UDP socket bound to loopback, so that datagrams have somewhere to go.
    fn make_udp(&mut self) {
        let af = self.rng.pick(&[AF_INET, AF_INET6]);
        let host = if af == AF_INET { "127.0.0.1" } else { "::1" };
        self.aux += 4;
        let Ok(u) = usocket::socket(af, SOCK_DGRAM, 0) else {
            return;
        };
        if u.settimeout(Some(0.0)).is_ok() && u.bind((host, 0)).is_ok() {
            if let Ok(addr) = u.getsockname() {
                self.learn(addr);
            }
            self.add(u, true);
        }
    }

    // ---- checks ----------------------------------------------------------------------

    fn check_addr(&mut self, call: &str, addr: &(String, u16), need_port: bool) {
        match addr.0.parse::<IpAddr>() {
            Ok(ip) if ip.is_loopback() || ip.is_unspecified() => {}
            _ => self.finding(format!("{call} returned the address {addr:?}")),
        }
        if need_port && addr.1 == 0 {
            self.finding(format!(
                "{call} returned port 0 (or one out of range): {addr:?}"
            ));
        }
    }

    /// The policy grants 127.0.0.1 and ::1 only: a `connect`, `sendto` or `bind` with any
    /// other literal that succeeds, or a `connect` that fails the way only a packet that was
    /// sent can fail (ETIMEDOUT, ECONNREFUSED, EINPROGRESS), escaped the policy. (A
    /// `sendto`'s ECONNREFUSED is an earlier datagram's.) (ENETUNREACH and
    /// EHOSTUNREACH are the kernel's own refusals, e.g. of `::ffff:127.0.0.1` on an
    /// IPV6_V6ONLY socket: nothing left.)
    fn check_reach(&mut self, call: &str, addr: &(String, i64), res: Res) {
        let Ok(ip) = addr.0.parse::<IpAddr>() else {
            return;
        };
        if ip == IpAddr::from([127, 0, 0, 1]) || ip == IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]) {
            return;
        }
        let escaped = match res {
            Res::Ok | Res::None => true,
            Res::Err(e) => call == "connect" && [110, 111, 115].contains(&e),
        };
        if escaped {
            let out = match res {
                Res::Err(e) => format!("errno {e}"),
                _ => "ok".into(),
            };
            self.finding(format!("{call}({}) not refused: {out}", short(addr)));
        }
    }

    fn check_len(&mut self, call: &str, got: usize, max: usize) {
        if got > max {
            self.finding(format!("{call} returned {got} bytes for at most {max}"));
        }
    }

    // ---- TLS -------------------------------------------------------------------------

    /// Data to write on entry `i`: [`SECRET`] over and over on a TLS socket (so that a plain
    /// reader of it is caught), `data()`'s letters otherwise.
    fn data_for(&mut self, i: usize) -> Vec<u8> {
        let mut data = self.data();
        if self.pool[i].tls.get().is_some() {
            for (k, b) in data.iter_mut().enumerate() {
                *b = SECRET[k % SECRET.len()];
            }
            if self.rng.chance(1, 2)
                && let Some(last) = data.last_mut()
            {
                *last = b'\n';
            }
        }
        data
    }

    /// Bytes a read on entry `i` returned: a plain socket must never read what a TLS socket
    /// wrote (it went out unencrypted).
    fn check_leak(&mut self, i: usize, call: &str, data: &[u8]) {
        if self.pool[i].tls.get().is_none() && data.windows(SECRET.len()).any(|w| w == SECRET) {
            self.finding(format!(
                "{call} on plain socket #{} read plaintext a TLS socket wrote ({} bytes)",
                self.pool[i].id,
                data.len()
            ));
        }
    }

    /// A trace line for an aux TLS set-up of [`Fuzz::make_tls_pair`] (the sockets are the
    /// next `trace new` ones: client, then server).
    fn trace_aux(&self, side: &str, what: &str, res: Res) {
        if self.trace {
            let out = match res {
                Res::Ok => "ok".to_string(),
                Res::None => "-".to_string(),
                Res::Err(e) => format!("errno {e}"),
            };
            println!("trace {} aux tls pair {side}: {what} -> {out}", self.step);
        }
    }

    /// After a call on entry `i` (a write of `len` bytes, or `None`): learns the socket's TLS
    /// failure; once it failed, the failure is sticky (docs/contract.md#tls): a write of data
    /// must fail with the same errno (or one that comes before TLS: EBADF, a quota, the rate
    /// limit's EAGAIN or ETIMEDOUT), and no call may report another TLS failure.
    fn tls_after(&mut self, i: usize, call: &str, res: Res, len: Option<usize>) {
        const STICKY: &[i32] = &[71, 74, 126, 127, 129];
        let Some(e) = self.pool.get(i) else { return };
        if e.tls.get().is_none() {
            return;
        }
        let failed = e.tls_failed.clone();
        let data = len.is_some_and(|n| n > 0);
        // A deferred TLS start that failed (or an argument error: nothing is lost by skipping
        // the verification check then).
        let deferred_failure = match res {
            Res::Err(13) => true,
            Res::Err(22) => !call.ends_with("_flags") && !call.contains("wrap"),
            _ => false,
        };
        if deferred_failure && let Some(mut info) = e.tls.get() {
            info.tainted = true;
            e.tls.set(Some(info));
        }
        match (failed.get(), res) {
            (Some(f), Res::Err(e)) if STICKY.contains(&e) && e != f => self.finding(format!(
                "{call} on a TLS socket that failed with errno {f} gave errno {e}"
            )),
            (Some(f), Res::Err(e)) if data && ![f, 9, 11, 12, 110].contains(&e) => self.finding(
                format!("{call} of {len:?} bytes on a TLS socket that failed with errno {f} gave errno {e}"),
            ),
            (Some(f), Res::Ok | Res::None) if data => self.finding(format!(
                "{call} of {len:?} bytes on a TLS socket that failed with errno {f} did not fail"
            )),
            (None, Res::Err(e)) if STICKY.contains(&e) => failed.set(Some(e)),
            _ => {}
        }
    }

    /// An aux call's errno against the contract (aux calls are not booked).
    fn check_aux(&mut self, call: &'static str, res: Res, tls: bool) {
        if let Res::Err(e) = res {
            self.judge(call, tls, e, "aux");
        }
    }

    /// Random bytes, `n` of them.
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.rng.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// A DER SEQUENCE of `n` random content bytes (which passes the guest library's check),
    /// sometimes starting like a certificate or a PKCS#8 key.
    fn der_garbage(&mut self, n: usize) -> Vec<u8> {
        let mut content = self.bytes(n);
        match self.rng.below(4) {
            0 if n >= 4 => content[..4].copy_from_slice(&[0x30, 0x82, 0x01, 0x00]),
            1 if n >= 3 => content[..3].copy_from_slice(&[0x02, 0x01, 0x00]),
            _ => {}
        }
        der_sequence(&content)
    }

    /// A PEM block (or several) around garbage: valid-looking headers, bodies that are raw
    /// bytes, base64 of random bytes or of a DER SEQUENCE, nothing, or not base64; matching,
    /// other or missing END lines.
    fn pem_garbage(&mut self, role: Role) -> Vec<u8> {
        let labels = [
            "CERTIFICATE",
            "PRIVATE KEY",
            "RSA PRIVATE KEY",
            "EC PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
            "TRUSTED CERTIFICATE",
            "X509 CRL",
            "CERTIFICATE REQUEST",
            "",
            "CERTIFICATE\0",
            "\u{e7}ERTIFICATE",
        ];
        let own = match role {
            Role::Key => "PRIVATE KEY",
            _ => "CERTIFICATE",
        };
        let blocks = self.rng.pick(&[1usize, 1, 1, 2, 3, 50]);
        let mut out = Vec::new();
        if self.rng.chance(1, 5) {
            out.extend_from_slice(b"junk before\n");
        }
        for _ in 0..blocks {
            let label = if self.rng.chance(2, 3) {
                own
            } else {
                self.rng.pick(&labels)
            };
            out.extend_from_slice(format!("-----BEGIN {label}-----\n").as_bytes());
            let n = self.rng.pick(&[0usize, 1, 3, 30, 300, 3000]);
            match self.rng.below(5) {
                0 => out.extend(self.bytes(n)),
                1 => {
                    let raw = self.bytes(n);
                    base64_lines(&raw, &mut out);
                }
                2 => {
                    let der = self.der_garbage(n);
                    base64_lines(&der, &mut out);
                }
                3 => {}
                _ => out.extend_from_slice(b"!!!not base64===\n====\n"),
            }
            match self.rng.below(4) {
                0 | 1 => out.extend_from_slice(format!("-----END {label}-----\n").as_bytes()),
                2 => {
                    let other = self.rng.pick(&labels);
                    out.extend_from_slice(format!("-----END {other}-----\n").as_bytes());
                }
                _ => {}
            }
        }
        out
    }

    /// A valid certificate (or key, or the CA) of the driver's PKI: index 0 is the valid
    /// leaf, 1.. the bad ones. PEM or DER.
    fn valid_item(&mut self, m: &Material, role: Role, index: usize) -> Vec<u8> {
        let pem = match role {
            Role::Ca => &m.ca,
            Role::Cert if index == 0 => &m.leaf,
            Role::Key if index == 0 => &m.leaf_key,
            Role::Cert => &m.bad[index - 1].0,
            Role::Key => &m.bad[index - 1].1,
        };
        if self.rng.chance(1, 2) {
            pem.pem.clone()
        } else {
            pem.der.clone()
        }
    }

    /// Certificate, key or CA bytes for `wrap_socket`: `None`, valid material of the driver's
    /// PKI, or hostile bytes (empty, random, PEM around garbage, DER garbage, a valid
    /// certificate with a byte changed, cut short, huge, another role's material, mixtures).
    fn tls_bytes(&mut self, role: Role) -> Option<Vec<u8>> {
        let mat = self.mat.clone();
        if self.rng.chance(1, 5) {
            return None;
        }
        let pick = self.rng.below(16);
        if let Some(m) = mat.as_deref()
            && pick < 6
        {
            let index = if self.rng.chance(1, 2) {
                0
            } else {
                self.rng.below(m.bad.len() + 1)
            };
            return Some(self.valid_item(m, role, index));
        }
        Some(match pick {
            0..=2 => return None,
            3 | 4 => Vec::new(),
            6 => {
                let n = self.rng.pick(&[1usize, 2, 16, 300, 5000]);
                self.bytes(n)
            }
            7 | 8 => self.pem_garbage(role),
            9 => {
                let n = self.rng.pick(&[0usize, 1, 2, 10, 127, 128, 1000, 60_000]);
                self.der_garbage(n)
            }
            10 if mat.is_some() => {
                // A byte changed inside a valid DER (its structure and length stay).
                let m = mat.as_deref().expect("material");
                let mut der = match role {
                    Role::Key => m.leaf_key.der.clone(),
                    Role::Ca => m.ca.der.clone(),
                    Role::Cert => m.leaf.der.clone(),
                };
                let at = 4 + self.rng.below(der.len().saturating_sub(4).max(1));
                if let Some(b) = der.get_mut(at) {
                    *b ^= 1 << self.rng.below(8);
                }
                if self.rng.chance(1, 2) {
                    pem_of(
                        if matches!(role, Role::Key) {
                            "PRIVATE KEY"
                        } else {
                            "CERTIFICATE"
                        },
                        &der,
                    )
                } else {
                    der
                }
            }
            11 if mat.is_some() => {
                // A valid PEM cut short.
                let m = mat.as_deref().expect("material");
                let pem = match role {
                    Role::Key => &m.leaf_key.pem,
                    _ => &m.leaf.pem,
                };
                pem[..self.rng.below(pem.len())].to_vec()
            }
            12 => {
                // Huge: at the guest library's limit (the host's too), one over, far over.
                let n = self
                    .rng
                    .pick(&[MAX_TLS_DATA, MAX_TLS_DATA, MAX_TLS_DATA + 1, 1 << 20]);
                match self.rng.below(3) {
                    0 => {
                        let mut pem = b"-----BEGIN CERTIFICATE-----\n".to_vec();
                        pem.resize(n, b'A');
                        pem
                    }
                    1 => {
                        // A DER SEQUENCE of `n` bytes in all.
                        let mut der = vec![0x30, 0x83];
                        let len = n - 5;
                        der.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
                        der.extend(self.bytes(len));
                        der
                    }
                    _ => {
                        // As many valid certificates as fit (or one more).
                        let one = match mat.as_deref() {
                            Some(m) => m.ca.pem.clone(),
                            None => self.pem_garbage(role),
                        };
                        let mut all = Vec::new();
                        while all.len() + one.len() <= n {
                            all.extend_from_slice(&one);
                        }
                        all
                    }
                }
            }
            13 if mat.is_some() => {
                // Mixtures: certificate and key in one PEM, a chain, garbage then valid.
                let m = mat.as_deref().expect("material");
                let mut out = Vec::new();
                match self.rng.below(3) {
                    0 => {
                        out.extend_from_slice(&m.leaf.pem);
                        out.extend_from_slice(&m.leaf_key.pem);
                    }
                    1 => {
                        out.extend_from_slice(&m.leaf.pem);
                        out.extend_from_slice(&m.ca.pem);
                    }
                    _ => {
                        out.extend(self.pem_garbage(role));
                        out.extend_from_slice(&m.ca.pem);
                    }
                }
                out
            }
            14 if mat.is_some() => {
                // Another role's material: a key as a certificate, a certificate as a key.
                let m = mat.as_deref().expect("material");
                let role = self.rng.pick(&[Role::Cert, Role::Key, Role::Ca]);
                let index = self.rng.below(m.bad.len() + 1);
                self.valid_item(m, role, index)
            }
            _ => self.pem_garbage(role),
        })
    }

    /// `cert` and `key` for `wrap_socket`: mostly none or a matching valid pair, else a
    /// certificate alone (with or without its key inside), a key alone, mismatched pairs, or
    /// hostile bytes for either.
    fn identity(&mut self) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let mat = self.mat.clone();
        match (self.rng.below(10), mat.as_deref()) {
            (0..=2, _) => (None, None),
            (3..=5, Some(m)) => {
                let index = if self.rng.chance(2, 3) {
                    0
                } else {
                    self.rng.below(m.bad.len() + 1)
                };
                (
                    Some(self.valid_item(m, Role::Cert, index)),
                    Some(self.valid_item(m, Role::Key, index)),
                )
            }
            (6, Some(m)) => {
                let mut cert = m.leaf.pem.clone();
                if self.rng.chance(2, 3) {
                    cert.extend_from_slice(&m.leaf_key.pem);
                }
                (Some(cert), None)
            }
            (7, Some(m)) => {
                let a = self.rng.below(m.bad.len() + 1);
                let b = (a + 1 + self.rng.below(m.bad.len())) % (m.bad.len() + 1);
                (
                    Some(self.valid_item(m, Role::Cert, a)),
                    Some(self.valid_item(m, Role::Key, b)),
                )
            }
            (8, _) => (None, self.tls_bytes(Role::Key)),
            _ => (self.tls_bytes(Role::Cert), self.tls_bytes(Role::Key)),
        }
    }

    /// A `server_hostname`: none, granted names and literals, names that are not granted,
    /// and hostile strings (empty, huge, non-ASCII, NUL, wildcard, odd literals, random).
    fn server_hostname(&mut self) -> Option<String> {
        Some(match self.rng.below(10) {
            0..=3 => return None,
            4 | 5 => self
                .rng
                .pick(&["localhost", "LOCALHOST", "localhost.", "127.0.0.1", "::1"])
                .to_string(),
            6 | 7 => self
                .rng
                .pick(&[
                    "",
                    "example.com",
                    "other.test",
                    "*.localhost",
                    "a..b",
                    "-",
                    ".",
                    "local host",
                    "localhost\0",
                    "localhost\0.evil",
                    "xn--nxasmq6b",
                    "\u{fc}n\u{ef}c\u{f6}d\u{e9}.test",
                    "\u{1f980}",
                    "[::1]",
                    "127.0.0.2",
                    "0.0.0.0",
                    "::",
                    "::ffff:127.0.0.1",
                    "127.1",
                    "0x7f.1",
                    "2130706433",
                    "1.2.3",
                    "fe80::1%lo",
                    "127.0.0.1:443",
                    "localhost:443",
                ])
                .to_string(),
            8 => match self.rng.below(5) {
                0 => "a".repeat(253),
                1 => "a".repeat(254),
                2 => format!("{}.localhost", "a".repeat(64)),
                3 => "a.".repeat(5000),
                _ => "x".repeat(self.rng.pick(&[65_536, 300_000, 1 << 20])),
            },
            _ => {
                let n = self.rng.below(40);
                let b = self.bytes(n);
                String::from_utf8_lossy(&b).into_owned()
            }
        })
    }

    /// `cert_reqs`: MicroPython's three, or out of range.
    fn cert_reqs(&mut self) -> i32 {
        if self.rng.chance(8, 10) {
            self.rng
                .pick(&[ssl::CERT_NONE, ssl::CERT_OPTIONAL, ssl::CERT_REQUIRED])
        } else {
            self.rng.pick(&[-1, 3, 7, 100, i32::MIN, i32::MAX])
        }
    }

    /// Whether `cadata` leaves the CA of the driver's PKI as the only trust (none: the host's
    /// roots, which the driver set to that CA).
    fn strict_trust(&self, cadata: &[Vec<u8>]) -> bool {
        let Some(m) = self.mat.as_deref() else {
            return false;
        };
        match cadata {
            [] => true,
            [one] => *one == m.ca.pem || *one == m.ca.der,
            _ => false,
        }
    }

    /// `ssl.wrap_socket` (or an `SSLContext`) on any socket of the pool, with hostile options;
    /// the handle it returns joins the pool now and then.
    fn do_wrap(&mut self) {
        let Some(i) = self.any() else { return };
        // The handshake may wait: non-blocking or at most 50 ms.
        if !self.make_safe(i) {
            return;
        }
        let server_side = self.rng.chance(1, 3);
        let (cert, key) = self.identity();
        let cert_reqs = self.cert_reqs();
        let server_hostname = self.server_hostname();
        let do_handshake = self.rng.chance(1, 2);
        let mut cadata = Vec::new();
        for _ in 0..self.rng.pick(&[0usize, 0, 1, 1, 2]) {
            let ca = if self.rng.chance(1, 2) {
                self.mat.clone().map(|m| {
                    if self.rng.chance(1, 2) {
                        m.ca.pem.clone()
                    } else {
                        m.ca.der.clone()
                    }
                })
            } else {
                self.tls_bytes(Role::Ca)
            };
            cadata.extend(ca);
        }
        let sizes =
            |d: &Option<Vec<u8>>| d.as_ref().map_or("-".to_string(), |d| d.len().to_string());
        let host_arg = server_hostname.as_ref().map_or("-".to_string(), |h| {
            if h.len() > 40 {
                format!("<{} bytes>", h.len())
            } else {
                format!("{h:?}")
            }
        });
        let with_ctx = self.rng.chance(1, 4);
        let (call, verify, side, r, args);
        if with_ctx {
            // SSLContext: the protocol, then verify_mode, the chain, the CAs (several loads
            // add up), and a wrap whose side may not match the context.
            call = "ctx_wrap";
            let protocol = if self.rng.chance(9, 10) {
                if server_side {
                    ssl::PROTOCOL_TLS_SERVER
                } else {
                    ssl::PROTOCOL_TLS_CLIENT
                }
            } else {
                self.rng
                    .pick(&[-1, 2, 3, 100, i32::MIN, i32::from(!server_side)])
            };
            let set_mode = self.rng.chance(2, 3);
            side = if self.rng.chance(9, 10) {
                server_side
            } else {
                !server_side
            };
            let t = Instant::now();
            let res = SSLContext::new(protocol).and_then(|mut ctx| {
                if set_mode {
                    ctx.verify_mode = cert_reqs;
                }
                if let (Some(c), Some(k)) = (&cert, &key) {
                    ctx.load_cert_chain(c, k)?;
                }
                for ca in &cadata {
                    ctx.load_verify_locations(ca)?;
                }
                ctx.wrap_socket_with(
                    &self.pool[i].sock,
                    side,
                    server_hostname.as_deref(),
                    do_handshake,
                )
            });
            let took = t.elapsed();
            // A context whose protocol or side does not match fails before the host.
            let mode = match (set_mode, protocol) {
                (true, _) => cert_reqs,
                (false, ssl::PROTOCOL_TLS_CLIENT) => ssl::CERT_REQUIRED,
                (false, _) => ssl::CERT_NONE,
            };
            verify = mode != ssl::CERT_NONE;
            args = format!(
                "proto {protocol}, side {side}, cert {}, key {}, mode {}, ca {:?}, host {host_arg}, hs {do_handshake}",
                sizes(&cert),
                sizes(&key),
                if set_mode {
                    cert_reqs.to_string()
                } else {
                    "default".into()
                },
                cadata.iter().map(Vec::len).collect::<Vec<_>>(),
            );
            r = res;
            self.book(call, Self::res(&r), took, &args);
        } else {
            call = "wrap_socket";
            side = server_side;
            verify = cert_reqs != ssl::CERT_NONE;
            // wrap_socket takes one cadata: the first, or all of them as one PEM text.
            let ca = match cadata.len() {
                0 => None,
                1 => Some(cadata[0].clone()),
                _ => Some(cadata.concat()),
            };
            if let Some(ca) = &ca {
                cadata = vec![ca.clone()];
            }
            args = format!(
                "side {side}, cert {}, key {}, cert_reqs {cert_reqs}, cadata {}, host {host_arg}, hs {do_handshake}",
                sizes(&cert),
                sizes(&key),
                sizes(&ca),
            );
            let opts = WrapOptions {
                server_side,
                key,
                cert,
                cert_reqs,
                cadata: ca,
                server_hostname,
                do_handshake,
            };
            let t = Instant::now();
            r = ssl::wrap_socket(&self.pool[i].sock, opts);
            let took = t.elapsed();
            self.book(call, Self::res(&r), took, &args);
        }
        let res = Self::res(&r);
        // The host set TLS up unless the call failed before (a guest-side check, the
        // read-ahead given back, the state, the parameters): from then on the socket is a TLS
        // one, with the first parameters that got that far.
        let installed = match res {
            Res::Err(e) => ![5, 9, 13, 22, 95, 105, 107].contains(&e),
            _ => true,
        };
        if installed && self.pool[i].tls.get().is_none_or(|t| t.tainted) {
            let info = TlsInfo {
                server: side,
                verify: !side && verify,
                strict: self.strict_trust(&cadata),
                tainted: false,
            };
            self.pool[i].tls.set(Some(info));
        }
        self.tls_after(i, call, res, None);
        if let Ok(s) = r
            && self.rng.chance(1, 4)
        {
            // Another handle of the same socket.
            let e = &self.pool[i];
            let entry = Entry {
                sock: s,
                id: e.id,
                safe: e.safe.clone(),
                pending: e.pending.clone(),
                listening: e.listening.clone(),
                tls: e.tls.clone(),
                tls_failed: e.tls_failed.clone(),
            };
            self.add_entry(entry);
        }
    }

    /// `getpeercert(True)` (and `False`, EOPNOTSUPP): a certificate only from a TLS client
    /// whose handshake finished; from a client that verified and trusts the driver's CA only,
    /// the valid leaf and nothing else.
    fn do_getpeercert(&mut self) {
        let Some(i) = self.any() else { return };
        let binary = self.rng.chance(9, 10);
        let t = Instant::now();
        let r = self.pool[i].sock.getpeercert(binary);
        let took = t.elapsed();
        self.book("getpeercert", Self::res_opt(&r), took, &format!("{binary}"));
        if !binary && r.is_ok() {
            self.finding("getpeercert(false) did not fail".into());
        }
        let Ok(Some(der)) = r else { return };
        let info = self.pool[i].tls.get();
        let leaf = self.mat.as_ref().map(|m| m.leaf.der.clone());
        match info {
            None => self.finding(format!(
                "getpeercert returned {} bytes on a socket that never started TLS",
                der.len()
            )),
            Some(TlsInfo { server: true, .. }) => self.finding(format!(
                "getpeercert returned {} bytes on a server side (which asks for no certificate)",
                der.len()
            )),
            Some(TlsInfo {
                verify: true,
                strict: true,
                tainted: false,
                ..
            }) if Some(&der) != leaf.as_ref() => {
                let which = self.mat.as_deref().map_or("?", |m| {
                    let names = ["expired", "wrong-name", "unknown-CA"];
                    if der == m.ca.der {
                        "the CA"
                    } else {
                        m.bad
                            .iter()
                            .position(|(c, _)| c.der == der)
                            .map_or("none of the PKI's", |k| {
                                names.get(k).copied().unwrap_or("a bad one")
                            })
                    }
                });
                self.finding(format!(
                    "a verifying client finished a handshake with a certificate other than the valid one: {which} ({} bytes, {:02x?}...), {info:?}",
                    der.len(),
                    &der[..der.len().min(16)]
                ));
            }
            _ => {}
        }
        if der.first() != Some(&0x30) {
            self.finding(format!("getpeercert returned {} bytes, not DER", der.len()));
        }
    }

    /// Aux: a connected pair of the pool's own sockets, both made TLS ones without waiting
    /// (the client side by `wrap_socket` or as an IPPROTO_SEC socket; the server side with
    /// the host's identity or the guest's own, sometimes a bad one), so that later calls on
    /// both can finish a real handshake. Without the driver's PKI: only hostile server sides.
    fn make_tls_pair(&mut self) {
        let af = self.rng.pick(&[AF_INET, AF_INET6]);
        let host = if af == AF_INET { "127.0.0.1" } else { "::1" };
        self.aux += 1;
        let Ok(l) = usocket::socket(af, SOCK_STREAM, 0) else {
            return;
        };
        self.aux += 4;
        if l.settimeout(Some(SAFE_TIMEOUT)).is_err()
            || l.bind((host, 0)).is_err()
            || l.listen(None).is_err()
        {
            return;
        }
        let Ok(addr) = l.getsockname() else { return };
        let sec = self.rng.chance(1, 3);
        if sec {
            self.trace_aux("client", "IPPROTO_SEC", Res::None);
        }
        self.aux += 3;
        let proto = if sec { IPPROTO_SEC } else { 0 };
        let Ok(c) = usocket::socket(af, SOCK_STREAM, proto) else {
            self.add_listener(l);
            return;
        };
        let _ = c.settimeout(Some(0.0));
        let connected = c.connect(&addr);
        let mut client_info = sec.then_some(TlsInfo {
            server: false,
            verify: true,
            strict: self.mat.is_some(),
            tainted: false,
        });
        self.aux += 1;
        let accepted = l.accept();
        if !sec {
            // The client side: mostly what works, sometimes a name or trust that fails.
            let cert_reqs =
                self.rng
                    .pick(&[ssl::CERT_NONE, ssl::CERT_OPTIONAL, ssl::CERT_REQUIRED]);
            let server_hostname = match self.rng.below(6) {
                0 | 1 => None,
                2 => Some("localhost".to_string()),
                3 | 4 => Some(host.to_string()),
                _ => self.server_hostname(),
            };
            let mat = self.mat.clone();
            let cadata = match (self.rng.below(5), mat.as_deref()) {
                (0, Some(m)) => Some(m.ca.pem.clone()),
                (1, Some(m)) => Some(m.bad[m.bad.len() - 1].0.pem.clone()),
                (2, _) => self.tls_bytes(Role::Ca),
                _ => None,
            };
            let strict = self.strict_trust(cadata.as_slice());
            let opts = WrapOptions {
                cert_reqs,
                server_hostname,
                cadata,
                do_handshake: self.rng.chance(1, 2),
                ..WrapOptions::default()
            };
            self.aux += 1;
            let shown = format!("{opts:?}");
            let r = ssl::wrap_socket(&c, opts);
            self.trace_aux("client", &shown, Self::res(&r));
            self.check_aux("wrap_socket", Self::res(&r), false);
            if r.is_ok()
                || r.as_ref()
                    .is_err_and(|e| ![5, 9, 13, 22, 95, 105, 107].contains(&e.errno()))
            {
                client_info = Some(TlsInfo {
                    server: false,
                    verify: cert_reqs != ssl::CERT_NONE,
                    strict,
                    tainted: false,
                });
            }
        }
        let mut server = None;
        if let Ok((s, peer)) = accepted {
            self.learn(peer);
            let _ = s.settimeout(Some(0.0));
            let mat = self.mat.clone();
            if self.rng.chance(1, 4) {
                // A plain server side: it must never read the client's plaintext.
                self.trace_aux("server", "plain", Res::None);
                self.add_tls(c, true, client_info);
                if let (Err(e), Some(entry)) = (&connected, self.pool.last()) {
                    entry.pending.set(matches!(e.errno(), 110 | 114 | 115));
                }
                self.add(s, true);
                self.add_listener(l);
                return;
            }
            let (cert, key) = match (self.rng.below(6), mat.as_deref()) {
                // The host's identity (the valid leaf).
                (0 | 1, Some(_)) => (None, None),
                (4, Some(m)) => {
                    // The valid leaf with one bit changed (mostly in its signature, at the
                    // end), and its key: malformed or badly signed (EBADMSG when verified).
                    let mut der = m.leaf.der.clone();
                    let n = der.len();
                    let at = if self.rng.chance(2, 3) {
                        n - 1 - self.rng.below(40.min(n))
                    } else {
                        4 + self.rng.below(n.saturating_sub(4).max(1))
                    };
                    if let Some(b) = der.get_mut(at) {
                        *b ^= 1 << self.rng.below(8);
                    }
                    let key = self.valid_item(m, Role::Key, 0);
                    (Some(der), Some(key))
                }
                (2, Some(m)) => {
                    let cert = self.valid_item(m, Role::Cert, 0);
                    let key = self.valid_item(m, Role::Key, 0);
                    (Some(cert), Some(key))
                }
                (3, Some(m)) => {
                    let index = 1 + self.rng.below(m.bad.len());
                    let cert = self.valid_item(m, Role::Cert, index);
                    let key = self.valid_item(m, Role::Key, index);
                    (Some(cert), Some(key))
                }
                _ => self.identity(),
            };
            let opts = WrapOptions {
                server_side: true,
                cert,
                key,
                do_handshake: self.rng.chance(1, 2),
                ..WrapOptions::default()
            };
            self.aux += 1;
            let shown = format!("{opts:?}");
            let r = ssl::wrap_socket(&s, opts);
            self.trace_aux("server", &shown, Self::res(&r));
            self.check_aux("wrap_socket", Self::res(&r), false);
            let installed = r.is_ok()
                || r.as_ref()
                    .is_err_and(|e| ![5, 9, 13, 22, 95, 105, 107].contains(&e.errno()));
            let info = installed.then_some(TlsInfo {
                server: true,
                verify: false,
                strict: false,
                tainted: false,
            });
            server = Some((s, info));
        }
        // Half of the time, a few non-blocking reads on both sides move the handshake on
        // (left to the random calls otherwise).
        if let Some((s, _)) = &server
            && self.rng.chance(2, 3)
        {
            for _ in 0..self.rng.pick(&[1usize, 2, 4]) {
                for (sock, tls) in [(&c, client_info.is_some()), (s, true)] {
                    self.aux += 1;
                    let r = sock.read(1);
                    self.check_aux("read", Self::res_opt(&r), tls);
                }
            }
        }
        self.add_tls(c, true, client_info);
        if let (Err(e), Some(entry)) = (&connected, self.pool.last()) {
            entry.pending.set(matches!(e.errno(), 110 | 114 | 115));
        }
        if let Some((s, info)) = server {
            self.add_tls(s, true, info);
        }
        self.add_listener(l);
    }

    // ---- one step --------------------------------------------------------------------

    fn step(&mut self) {
        self.cur = None;
        self.cur_tls = false;
        // Keep some connected sockets and UDP sockets around.
        if self.rng.chance(1, 40) || self.pool.len() < 3 {
            if self.rng.chance(2, 3) {
                self.make_pair();
            } else {
                self.make_udp();
            }
        }
        if self.rng.chance(1, 40) {
            self.make_tls_pair();
        }
        let which = self.rng.below(51);
        match which {
            0..=2 => self.do_socket(),
            3 | 4 => self.do_bind(),
            5 | 6 => self.do_listen(),
            7 | 8 => self.do_accept(),
            9..=11 => self.do_connect(),
            12 | 13 => self.do_send(),
            14 => self.do_sendall(),
            15 | 16 => self.do_sendto(),
            17 | 18 => self.do_recv(),
            19 => self.do_recvfrom(),
            20 | 21 => self.do_read(),
            22 => self.do_read_all(),
            23 => self.do_readinto(),
            24 | 25 => self.do_readline(),
            26 | 27 => self.do_write(),
            28 => self.do_close(),
            29 => self.do_drop(),
            30 | 31 => self.do_settimeout(),
            32 => self.do_setblocking(),
            33 | 34 => self.do_setsockopt(),
            35 => self.do_getsockname(),
            36 => self.do_getpeername(),
            37 => self.do_makefile(),
            38 => self.do_kind(),
            39 => self.do_register(),
            40 => self.do_modify(),
            41 => self.do_unregister(),
            42 => self.do_poll(false),
            43 => self.do_poll(true),
            44 => self.do_getaddrinfo(),
            45 => self.do_io(),
            47..=49 => self.do_wrap(),
            50 => self.do_getpeercert(),
            _ => {
                if self.rng.chance(1, 4) {
                    self.do_poll_many()
                } else {
                    self.do_poll(false)
                }
            }
        }
    }

    fn do_socket(&mut self) {
        let (af, ty) = (self.family(), self.socktype());
        let proto = self.proto(ty);
        let t = Instant::now();
        let r = usocket::socket(af, ty, proto);
        let took = t.elapsed();
        self.book(
            "socket",
            Self::res(&r),
            took,
            &format!("{af}, {ty}, {proto}"),
        );
        if let Ok(s) = r {
            // An IPPROTO_SEC stream socket is a verifying TLS client from its connect on.
            let tls = (ty == SOCK_STREAM && proto == IPPROTO_SEC).then_some(TlsInfo {
                server: false,
                verify: true,
                strict: self.mat.is_some(),
                tainted: false,
            });
            self.add_tls(s, false, tls);
        }
    }

    fn do_bind(&mut self) {
        let Some(i) = self.any() else { return };
        let addr = self.bind_addr();
        let t = Instant::now();
        let r = self.pool[i].sock.bind((addr.0.as_str(), addr.1));
        let took = t.elapsed();
        self.book("bind", Self::res(&r), took, &short(&addr));
        self.check_reach("bind", &addr, Self::res(&r));
        if r.is_ok()
            && let Ok(a) = self.pool[i].sock.getsockname()
        {
            self.aux += 1;
            self.learn(a);
        }
    }

    fn do_listen(&mut self) {
        let Some(i) = self.any() else { return };
        let backlog = match self.rng.below(4) {
            0 => None,
            1 => Some(self.rng.below(8) as i32),
            _ => Some(self.rng.pick(&[-1, i32::MIN, i32::MAX, 4097, 100_000])),
        };
        let t = Instant::now();
        let r = self.pool[i].sock.listen(backlog);
        let took = t.elapsed();
        self.book("listen", Self::res(&r), took, &format!("{backlog:?}"));
        if r.is_ok() {
            self.pool[i].listening.set(true);
        }
        if r.is_ok()
            && let Ok(a) = self.pool[i].sock.getsockname()
        {
            self.aux += 1;
            self.learn(a);
        }
    }

    fn do_accept(&mut self) {
        let Some(mut i) = self.any() else { return };
        // Mostly a listener, when there is one: connections wait in their backlogs.
        let listeners: Vec<usize> = (0..self.pool.len())
            .filter(|&j| self.pool[j].listening.get())
            .collect();
        if !listeners.is_empty() && self.rng.chance(3, 4) {
            i = listeners[self.rng.below(listeners.len())];
            self.cur = Some(self.pool[i].id);
            self.cur_tls = self.pool[i].tls.get().is_some();
        }
        if !self.make_safe(i) {
            return;
        }
        let t = Instant::now();
        let r = self.pool[i].sock.accept();
        let took = t.elapsed();
        self.book("accept", Self::res(&r), took, "");
        if let Ok((s, peer)) = r {
            self.check_addr("accept", &peer, true);
            self.learn(peer);
            // It starts in the listener's mode, which is safe.
            self.add(s, true);
        }
    }

    fn do_connect(&mut self) {
        let Some(i) = self.any() else { return };
        if !self.make_safe(i) {
            return;
        }
        let addr = match self.listener_addr() {
            Some(addr) if self.rng.chance(2, 5) => addr,
            _ => self.peer_addr(),
        };
        let t = Instant::now();
        let r = self.pool[i].sock.connect((addr.0.as_str(), addr.1));
        let took = t.elapsed();
        self.book("connect", Self::res(&r), took, &short(&addr));
        self.tls_after(i, "connect", Self::res(&r), None);
        // With a connect under way, `connect` reports that one's outcome, not this address's.
        if !self.pool[i].pending.get() {
            self.check_reach("connect", &addr, Self::res(&r));
        }
        // Under way after ETIMEDOUT, EALREADY, EINPROGRESS; an argument error (EINVAL,
        // EAFNOSUPPORT) or EBADF comes before the host looks at the state, so says nothing.
        match r.as_ref().err().map(|e| e.errno()) {
            Some(110 | 114 | 115) => self.pool[i].pending.set(true),
            Some(9 | 22 | 97) => {}
            _ => self.pool[i].pending.set(false),
        }
    }

    fn do_send(&mut self) {
        let Some(i) = self.any() else { return };
        if !self.make_safe(i) {
            return;
        }
        let data = self.data_for(i);
        let t = Instant::now();
        let r = self.pool[i].sock.send(&data);
        let took = t.elapsed();
        self.book(
            "send",
            Self::res(&r),
            took,
            &format!("{} bytes", data.len()),
        );
        self.tls_after(i, "send", Self::res(&r), Some(data.len()));
        if let Ok(n) = r {
            self.check_len("send", n, data.len());
            if n == 0 && !data.is_empty() {
                self.finding(format!("send of {} bytes returned 0", data.len()));
            }
        }
    }

    fn do_sendall(&mut self) {
        let Some(i) = self.any() else { return };
        if !self.make_safe(i) {
            return;
        }
        let data = self.data_for(i);
        let t = Instant::now();
        let r = self.pool[i].sock.sendall(&data);
        let took = t.elapsed();
        self.book(
            "sendall",
            Self::res(&r),
            took,
            &format!("{} bytes", data.len()),
        );
        self.tls_after(i, "sendall", Self::res(&r), Some(data.len()));
    }

    fn do_write(&mut self) {
        let Some(i) = self.any() else { return };
        if !self.make_safe(i) {
            return;
        }
        let data = self.data_for(i);
        let t = Instant::now();
        let r = self.pool[i].sock.write(&data);
        let took = t.elapsed();
        self.book(
            "write",
            Self::res_opt(&r),
            took,
            &format!("{} bytes", data.len()),
        );
        self.tls_after(i, "write", Self::res_opt(&r), Some(data.len()));
        if let Ok(Some(n)) = r {
            self.check_len("write", n, data.len());
        }
    }

    fn do_sendto(&mut self) {
        let Some(i) = self.any() else { return };
        if !self.make_safe(i) {
            return;
        }
        let mut data = self.data();
        if self.rng.chance(1, 2) {
            data.truncate(self.rng.below(600));
        }
        let addr = self.peer_addr();
        let t = Instant::now();
        let r = self.pool[i].sock.sendto(&data, (addr.0.as_str(), addr.1));
        let took = t.elapsed();
        let args = format!("{} bytes, {}", data.len(), short(&addr));
        self.book("sendto", Self::res(&r), took, &args);
        self.check_reach("sendto", &addr, Self::res(&r));
        if let Ok(n) = r
            && n != data.len()
        {
            self.finding(format!("sendto({args}) returned {n}"));
        }
    }

    fn do_recv(&mut self) {
        let Some(i) = self.any() else { return };
        if !self.make_safe(i) {
            return;
        }
        let n = self.size();
        let with_flags = self.rng.chance(1, 2);
        let flags = if with_flags { self.flags() } else { 0 };
        let t = Instant::now();
        let r = if with_flags {
            self.pool[i].sock.recv_flags(n, flags)
        } else {
            self.pool[i].sock.recv(n)
        };
        let took = t.elapsed();
        let call = if with_flags { "recv_flags" } else { "recv" };
        self.book(call, Self::res(&r), took, &format!("{n}, {flags}"));
        self.tls_after(i, call, Self::res(&r), None);
        if let Ok(d) = r {
            self.check_len(call, d.len(), n.min(u32::MAX as usize));
            self.check_leak(i, call, &d);
        }
    }

    fn do_recvfrom(&mut self) {
        let Some(i) = self.any() else { return };
        if !self.make_safe(i) {
            return;
        }
        let n = self.size();
        let with_flags = self.rng.chance(1, 2);
        let flags = if with_flags { self.flags() } else { 0 };
        let t = Instant::now();
        let r = if with_flags {
            self.pool[i].sock.recvfrom_flags(n, flags)
        } else {
            self.pool[i].sock.recvfrom(n)
        };
        let took = t.elapsed();
        let call = if with_flags {
            "recvfrom_flags"
        } else {
            "recvfrom"
        };
        self.book(call, Self::res(&r), took, &format!("{n}, {flags}"));
        self.tls_after(i, call, Self::res(&r), None);
        if let Ok((d, addr)) = r {
            self.check_len(call, d.len(), n.min(u32::MAX as usize));
            self.check_leak(i, call, &d);
            self.check_addr(call, &addr, false);
            self.learn(addr);
        }
    }

    fn do_read(&mut self) {
        let Some(i) = self.any() else { return };
        if !self.make_safe(i) {
            return;
        }
        let n = self.size();
        let t = Instant::now();
        let r = self.pool[i].sock.read(n);
        let took = t.elapsed();
        self.book("read", Self::res_opt(&r), took, &format!("{n}"));
        self.tls_after(i, "read", Self::res_opt(&r), None);
        if let Ok(Some(d)) = r {
            self.check_len("read", d.len(), n.min(u32::MAX as usize));
            self.check_leak(i, "read", &d);
        }
    }

    fn do_read_all(&mut self) {
        let Some(i) = self.any() else { return };
        if !self.make_safe(i) {
            return;
        }
        let t = Instant::now();
        let r = self.pool[i].sock.read_all();
        let took = t.elapsed();
        self.book("read_all", Self::res_opt(&r), took, "");
        self.tls_after(i, "read_all", Self::res_opt(&r), None);
        if let Ok(Some(d)) = r {
            self.check_leak(i, "read_all", &d);
        }
    }

    fn do_readinto(&mut self) {
        let Some(i) = self.any() else { return };
        if !self.make_safe(i) {
            return;
        }
        let n = self.size().min(65536);
        let mut buf = vec![0u8; n];
        let t = Instant::now();
        let r = self.pool[i].sock.readinto(&mut buf);
        let took = t.elapsed();
        self.book("readinto", Self::res_opt(&r), took, &format!("{n}"));
        self.tls_after(i, "readinto", Self::res_opt(&r), None);
        if let Ok(Some(got)) = r {
            self.check_len("readinto", got, n);
            self.check_leak(i, "readinto", &buf[..got.min(n)]);
        }
    }

    fn do_readline(&mut self) {
        let Some(i) = self.any() else { return };
        if !self.make_safe(i) {
            return;
        }
        let limit = self.rng.chance(1, 2).then(|| self.size());
        let t = Instant::now();
        let r = match limit {
            Some(n) => self.pool[i].sock.readline_limit(n),
            None => self.pool[i].sock.readline(),
        };
        let took = t.elapsed();
        let call = if limit.is_some() {
            "readline_limit"
        } else {
            "readline"
        };
        self.book(call, Self::res_opt(&r), took, &format!("{limit:?}"));
        self.tls_after(i, call, Self::res_opt(&r), None);
        if let (Ok(Some(d)), Some(n)) = (&r, limit) {
            self.check_len(call, d.len(), n.min(u32::MAX as usize));
        }
        if let Ok(Some(d)) = &r {
            self.check_leak(i, call, d);
        }
        // A line ends at its first newline, on stream sockets (on a datagram socket the
        // host returns the whole datagram, which the contract leaves open).
        if let Ok(Some(d)) = &r
            && let Some(pos) = d.iter().position(|&b| b == b'\n')
            && pos + 1 != d.len()
        {
            self.aux += 1;
            if self.pool[i].sock.socktype() == Ok(SOCK_STREAM) {
                self.finding(format!(
                    "{call}({limit:?}) returned {} bytes with a newline at {pos}",
                    d.len()
                ));
            }
        }
    }

    fn do_close(&mut self) {
        let Some(i) = self.any() else { return };
        let t = Instant::now();
        self.pool[i].sock.close();
        let took = t.elapsed();
        self.book("close", Res::Ok, took, "");
    }

    fn do_drop(&mut self) {
        let Some(i) = self.any() else { return };
        let t = Instant::now();
        drop(self.pool.swap_remove(i));
        let took = t.elapsed();
        self.book("drop", Res::Ok, took, "");
    }

    fn do_settimeout(&mut self) {
        let Some(i) = self.any() else { return };
        let timeout = self.timeout();
        let t = Instant::now();
        let r = self.pool[i].sock.settimeout(timeout);
        let took = t.elapsed();
        self.book("settimeout", Self::res(&r), took, &format!("{timeout:?}"));
        match r {
            Ok(()) => {
                let safe = matches!(timeout, Some(t) if (0.0..=SAFE_TIMEOUT).contains(&t));
                self.pool[i].safe.set(safe);
            }
            Err(e) if e.errno() == 22 || e.errno() == 9 => {}
            Err(_) => self.pool[i].safe.set(false),
        }
        let invalid = matches!(timeout, Some(t) if t.is_nan() || t < 0.0);
        match (&r, invalid) {
            (Ok(()), true) => self.finding(format!("settimeout({timeout:?}) was accepted")),
            (Err(e), false) if e.errno() == 22 => {
                self.finding(format!("settimeout({timeout:?}) gave EINVAL"))
            }
            _ => {}
        }
    }

    fn do_setblocking(&mut self) {
        let Some(i) = self.any() else { return };
        let flag = self.rng.chance(1, 3);
        let t = Instant::now();
        let r = self.pool[i].sock.setblocking(flag);
        let took = t.elapsed();
        self.book("setblocking", Self::res(&r), took, &format!("{flag}"));
        if r.is_ok() {
            self.pool[i].safe.set(!flag);
        }
    }

    fn do_setsockopt(&mut self) {
        let Some(i) = self.any() else { return };
        let (level, opt) = if self.rng.chance(7, 10) {
            self.rng.pick(&[
                (SOL_SOCKET, SO_REUSEADDR),
                (SOL_SOCKET, SO_BROADCAST),
                (SOL_SOCKET, SO_KEEPALIVE),
                (SOL_SOCKET, SO_SNDBUF),
                (SOL_SOCKET, SO_RCVBUF),
                (SOL_SOCKET, SO_LINGER),
                (IPPROTO_TCP, TCP_NODELAY),
            ])
        } else {
            let level = self.rng.pick(&[
                SOL_SOCKET,
                IPPROTO_TCP,
                IPPROTO_IP,
                IPPROTO_IPV6,
                IPPROTO_UDP,
                -1,
                0xffff,
            ]);
            // SO_BINDTODEVICE, SO_RCVTIMEO, SO_PRIORITY, SO_MARK, IP_TTL, IPV6_V6ONLY, ...
            let opt = self.rng.pick(&[
                0,
                1,
                2,
                3,
                4,
                12,
                20,
                25,
                26,
                36,
                2,
                15,
                26,
                -1,
                i32::MAX,
                12345,
            ]);
            (level, opt)
        };
        let value: usocket::SockOptValue = match self.rng.below(6) {
            0 | 1 => self
                .rng
                .pick(&[0, 1, -1, 2, 4096, i32::MAX, i32::MIN])
                .into(),
            2 => vec![1u8, 0, 0, 0].into(),
            3 => {
                // struct linger: on/off, seconds (at most 1 s on: a linger may make close wait).
                let on = self.rng.pick(&[0i32, 1, -1]);
                let secs = self.rng.pick(&[0i32, 1, -1, i32::MIN]);
                let mut b = on.to_le_bytes().to_vec();
                b.extend_from_slice(&secs.to_le_bytes());
                b.into()
            }
            _ => {
                let len = self.rng.pick(&[0usize, 1, 2, 3, 5, 7, 8, 9, 16, 4096]);
                (0..len)
                    .map(|_| self.rng.next() as u8)
                    .collect::<Vec<u8>>()
                    .into()
            }
        };
        let args = format!("{level}, {opt}, {value:?}");
        let args = if args.len() > 80 {
            format!("{level}, {opt}, <long>")
        } else {
            args
        };
        let t = Instant::now();
        let r = self.pool[i].sock.setsockopt(level, opt, value);
        let took = t.elapsed();
        self.book("setsockopt", Self::res(&r), took, &args);
    }

    fn do_getsockname(&mut self) {
        let Some(i) = self.any() else { return };
        let t = Instant::now();
        let r = self.pool[i].sock.getsockname();
        let took = t.elapsed();
        self.book("getsockname", Self::res(&r), took, "");
        if let Ok(a) = r {
            self.check_addr("getsockname", &a, true);
            self.learn(a);
        }
    }

    fn do_getpeername(&mut self) {
        let Some(i) = self.any() else { return };
        let t = Instant::now();
        let r = self.pool[i].sock.getpeername();
        let took = t.elapsed();
        self.book("getpeername", Self::res(&r), took, "");
        if let Ok(a) = r {
            self.check_addr("getpeername", &a, true);
        }
    }

    fn do_makefile(&mut self) {
        let Some(i) = self.any() else { return };
        let mode = self
            .rng
            .pick(&["rb", "wb", "rwb", "", "r", "w+b", "rb\0", "RB"]);
        let t = Instant::now();
        let r = self.pool[i].sock.makefile(mode);
        let took = t.elapsed();
        self.book("makefile", Self::res(&r), took, &format!("{mode:?}"));
        if let Ok(f) = r {
            let e = &self.pool[i];
            let (safe, pending, id) = (e.safe.clone(), e.pending.clone(), e.id);
            let (listening, tls) = (e.listening.clone(), e.tls.clone());
            let tls_failed = e.tls_failed.clone();
            self.add_entry(Entry {
                sock: f,
                id,
                safe,
                pending,
                listening,
                tls,
                tls_failed,
            });
        }
    }

    fn do_kind(&mut self) {
        let Some(i) = self.any() else { return };
        let t = Instant::now();
        let r = self.pool[i].sock.family();
        let took = t.elapsed();
        self.book("kind", Self::res(&r), took, "");
        if let Ok(f) = r
            && f != AF_INET
            && f != AF_INET6
        {
            self.finding(format!("family() returned {f}"));
        }
    }

    fn poller(&mut self) -> usize {
        self.rng.below(2)
    }

    fn do_register(&mut self) {
        let Some(i) = self.any() else { return };
        let (p, mask) = (self.poller(), self.mask());
        if self.pollers[p].1 >= POLLER_MAX {
            // Bounded: a poller keeps the sockets it holds open.
            self.pollers[p] = (select::poll(), 0);
        }
        let t = Instant::now();
        self.pollers[p].0.register(&self.pool[i].sock, mask);
        let took = t.elapsed();
        self.pollers[p].1 += 1;
        self.book("register", Res::Ok, took, &format!("{mask}"));
    }

    fn do_modify(&mut self) {
        let Some(i) = self.any() else { return };
        let (p, mask) = (self.poller(), self.mask());
        let t = Instant::now();
        let r = self.pollers[p].0.modify(&self.pool[i].sock, mask);
        let took = t.elapsed();
        self.book("modify", Self::res(&r), took, &format!("{mask}"));
    }

    fn do_unregister(&mut self) {
        let Some(i) = self.any() else { return };
        let p = self.poller();
        let t = Instant::now();
        self.pollers[p].0.unregister(&self.pool[i].sock);
        let took = t.elapsed();
        self.book("unregister", Res::Ok, took, "");
    }

    /// A closed socket: always ready (POLL_CLOSED), so a poll holding it never waits.
    fn sentinel(&mut self) -> Socket {
        if self.graveyard.is_empty() {
            self.aux += 2;
            match usocket::socket(AF_INET, SOCK_STREAM, 0) {
                Ok(s) => {
                    s.close();
                    self.graveyard.push(s);
                }
                Err(e) => {
                    self.finding(format!("socket() for a poll sentinel gave {e:?}"));
                }
            }
        }
        self.graveyard[0].clone()
    }

    fn do_poll(&mut self, ipoll: bool) {
        let p = self.poller();
        let (timeout, long) = self.poll_timeout();
        // A timeout that may wait long: a closed socket makes the poll return at once.
        let sentinel = long.then(|| self.sentinel());
        if let Some(s) = &sentinel {
            self.pollers[p].0.register(s, POLLIN);
        }
        let flags = self.rng.pick(&[0u32, 1, 1, 2, u32::MAX]);
        let t = Instant::now();
        let r = if ipoll {
            self.pollers[p].0.ipoll(timeout, flags)
        } else {
            self.pollers[p].0.poll(timeout)
        };
        let took = t.elapsed();
        if let Some(s) = &sentinel {
            self.pollers[p].0.unregister(s);
        }
        let call = if ipoll { "ipoll" } else { "poll" };
        self.book(call, Self::res(&r), took, &format!("{timeout}, {flags}"));
        if let Ok(ready) = r {
            for (_, revents) in &ready {
                if revents & !(POLLIN | POLLOUT | POLLERR | POLLHUP | POLL_CLOSED) != 0 {
                    self.finding(format!("{call} reported revents {revents}"));
                }
            }
            if long && ready.is_empty() {
                self.finding(format!(
                    "{call}({timeout}) with a closed socket reported nothing"
                ));
            }
        }
    }

    /// `poll` with many entries: the pool plus up to 4200 closed sockets (the host accepts
    /// 4096 entries, EINVAL beyond).
    fn do_poll_many(&mut self) {
        let grow = self.rng.pick(&[0usize, 10, 100, 500]);
        for _ in 0..grow {
            if self.graveyard.len() >= GRAVEYARD_MAX {
                break;
            }
            self.aux += 2;
            match usocket::socket(AF_INET6, SOCK_DGRAM, 0) {
                Ok(s) => {
                    s.close();
                    self.graveyard.push(s);
                }
                // The quota is full (pollers may hold sockets the pool let go): stop here.
                Err(_) => break,
            }
        }
        let want = self.rng.below(self.graveyard.len() + 1);
        let mut p = select::poll();
        for s in &self.graveyard[..want] {
            p.register(s, POLLIN | POLLOUT);
        }
        for e in &self.pool {
            let mask = self
                .rng
                .pick(&[POLLIN, POLLOUT, POLLIN | POLLOUT, 0, u32::MAX]);
            p.register(&e.sock, mask);
        }
        let t = Instant::now();
        let r = p.poll(0);
        let took = t.elapsed();
        let entries = want + self.pool.len();
        self.book(
            "poll_many",
            Self::res(&r),
            took,
            &format!("~{entries} entries"),
        );
        match &r {
            Ok(ready) if ready.len() > entries => {
                self.finding(format!("poll_many: {} ready of {entries}", ready.len()))
            }
            Err(e) if e.errno() == 22 && entries <= 4096 => {
                self.finding(format!("poll_many: EINVAL for {entries} entries"))
            }
            _ => {}
        }
    }

    fn do_getaddrinfo(&mut self) {
        let host: String = match self.rng.below(10) {
            0..=2 => self.loopback().to_string(),
            3 | 4 => "localhost".to_string(),
            5 => self
                .rng
                .pick(&[
                    "LOCALHOST",
                    "localhost.",
                    "LocalHost",
                    "0.0.0.0",
                    "::",
                    "",
                    "::ffff:127.0.0.1",
                ])
                .to_string(),
            _ => self.hostile_addr().0,
        };
        let port = if self.rng.chance(7, 10) {
            self.rng.below(65536) as i64
        } else {
            self.rng.pick(HOSTILE_PORTS)
        };
        if self.rng.chance(1, 2) {
            let t = Instant::now();
            let r = usocket::getaddrinfo(&host, port);
            let took = t.elapsed();
            let args = short(&(host.clone(), port));
            self.book("getaddrinfo", Self::res(&r), took, &args);
            if let Ok(list) = r {
                self.check_infos("getaddrinfo", &list, port, 0, 0);
            }
        } else {
            let af = if self.rng.chance(1, 2) {
                self.rng.pick(&[0, AF_INET, AF_INET6])
            } else {
                self.family()
            };
            let ty = if self.rng.chance(1, 2) {
                self.rng.pick(&[0, SOCK_STREAM, SOCK_DGRAM])
            } else {
                self.socktype()
            };
            let proto = self.proto(ty);
            let random = self.rng.next() as i32;
            let flags = self
                .rng
                .pick(&[0, 0, 1, 2, 4, 8, 0x400, -1, i32::MIN, random]);
            let t = Instant::now();
            let r = usocket::getaddrinfo_with(&host, port, af, ty, proto, flags);
            let took = t.elapsed();
            let args = format!(
                "{}, {af}, {ty}, {proto}, {flags}",
                short(&(host.clone(), port))
            );
            self.book("getaddrinfo_with", Self::res(&r), took, &args);
            if let Ok(list) = r {
                self.check_infos("getaddrinfo_with", &list, port, af, ty);
            }
        }
    }

    fn check_infos(&mut self, call: &str, list: &[usocket::AddrInfo], port: i64, af: i32, ty: i32) {
        if list.is_empty() {
            self.finding(format!("{call} returned an empty list"));
        }
        for info in list {
            let ok_family = info.family == AF_INET || info.family == AF_INET6;
            let ok_af = af == 0 || info.family == af;
            let ok_type = if ty == 0 {
                info.socktype == SOCK_STREAM
            } else {
                info.socktype == ty
            };
            let ok_proto = (info.socktype == SOCK_STREAM && info.proto == IPPROTO_TCP)
                || (info.socktype == SOCK_DGRAM && info.proto == IPPROTO_UDP);
            let ok_addr = info.sockaddr.0.parse::<IpAddr>().is_ok();
            if !(ok_family
                && ok_af
                && ok_type
                && ok_proto
                && ok_addr
                && info.canonname.is_empty()
                && i64::from(info.sockaddr.1) == port)
            {
                self.finding(format!(
                    "{call} returned {info:?} for port {port}, af {af}, type {ty}"
                ));
            }
        }
    }

    /// The `std::io` traits: `Read::read` (the read-ahead, else recv), `Write::write` (send),
    /// `BufRead::fill_buf` (the read-ahead, refilled by one `readline-ahead`; datagrams: a peek)
    /// and `consume`.
    fn do_io(&mut self) {
        let Some(i) = self.any() else { return };
        if !self.make_safe(i) {
            return;
        }
        match self.rng.below(4) {
            0 => {
                let mut buf = vec![0u8; self.size().min(65536)];
                let t = Instant::now();
                let r = Read::read(&mut self.pool[i].sock, &mut buf);
                let took = t.elapsed();
                self.book("io_read", Self::res_io(&r), took, &format!("{}", buf.len()));
                self.tls_after(i, "io_read", Self::res_io(&r), None);
                if let Ok(n) = r {
                    self.check_len("io_read", n, buf.len());
                    self.check_leak(i, "io_read", &buf[..n.min(buf.len())]);
                }
            }
            1 => {
                let data = self.data_for(i);
                let t = Instant::now();
                let r = Write::write(&mut self.pool[i].sock, &data);
                let took = t.elapsed();
                self.book(
                    "io_write",
                    Self::res_io(&r),
                    took,
                    &format!("{}", data.len()),
                );
                self.tls_after(i, "io_write", Self::res_io(&r), Some(data.len()));
                if let Ok(n) = r {
                    self.check_len("io_write", n, data.len());
                }
            }
            2 => {
                let t = Instant::now();
                let r = self.pool[i].sock.fill_buf().map(|b| b.to_vec());
                let took = t.elapsed();
                self.book("fill_buf", Self::res_io(&r), took, "");
                self.tls_after(i, "fill_buf", Self::res_io(&r), None);
                if let Ok(d) = r {
                    self.check_leak(i, "fill_buf", &d);
                }
            }
            _ => {
                // Consumes from what an earlier fill_buf of this handle cached (the library
                // clamps `amt` to it; with no valid cache it does nothing).
                let amt = self.rng.pick(&[0usize, 1, 10, 1000, 65536, usize::MAX]);
                let t = Instant::now();
                self.pool[i].sock.consume(amt);
                let took = t.elapsed();
                self.book("consume", Res::Ok, took, &format!("{amt}"));
            }
        }
    }
}

/// A DER SEQUENCE holding `content`.
fn der_sequence(content: &[u8]) -> Vec<u8> {
    let n = content.len();
    let mut out = vec![0x30];
    match n {
        0..=0x7f => out.push(n as u8),
        0x80..=0xff => out.extend_from_slice(&[0x81, n as u8]),
        0x100..=0xffff => out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]),
        _ => out.extend_from_slice(&[0x83, (n >> 16) as u8, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(content);
    out
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64 of `data` in lines of 64 characters, appended to `out`.
fn base64_lines(data: &[u8], out: &mut Vec<u8>) {
    for line in data.chunks(48) {
        for chunk in line.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for k in 0..4 {
                out.push(if k <= chunk.len() {
                    BASE64[((n >> (18 - 6 * k)) & 63) as usize]
                } else {
                    b'='
                });
            }
        }
        out.push(b'\n');
    }
}

/// `der` as a PEM block labelled `label`.
fn pem_of(label: &str, der: &[u8]) -> Vec<u8> {
    let mut out = format!("-----BEGIN {label}-----\n").into_bytes();
    base64_lines(der, &mut out);
    out.extend_from_slice(format!("-----END {label}-----\n").as_bytes());
    out
}

/// The DER inside the first PEM block of `pem` (base64 between the BEGIN and END lines).
fn pem_body(pem: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::new();
    let body = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN "))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END "));
    for c in body.flat_map(str::bytes) {
        let Some(v) = BASE64.iter().position(|&b| b == c) else {
            continue;
        };
        bits = (bits << 6) | v as u32;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
        }
    }
    out
}

/// An address for a finding line, with long strings cut.
fn short(addr: &(String, i64)) -> String {
    let a = &addr.0;
    if a.len() > 40 {
        let cut: String = a.chars().take(20).collect();
        format!("({cut:?}... ({} bytes), {})", a.len(), addr.1)
    } else {
        format!("({a:?}, {})", addr.1)
    }
}

/// `fuzz_calls repro linger-close SECS`: SO_LINGER on with SECS seconds on a connected socket
/// whose peer (the program's own accepted socket) never reads, the send buffer filled
/// without blocking, then `close`. Prints `close took MS ms`: the close must not wait (a
/// kernel close with a linger time blocks the calling thread, non-blocking socket or not).
fn repro(args: &[String]) {
    let secs: i32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    let l = usocket::socket(AF_INET, SOCK_STREAM, 0).expect("socket");
    l.bind(("127.0.0.1", 0)).expect("bind");
    l.listen(None).expect("listen");
    let addr = l.getsockname().expect("getsockname");
    let c = usocket::socket(AF_INET, SOCK_STREAM, 0).expect("socket");
    c.connect(&addr).expect("connect");
    let (peer, _) = l.accept().expect("accept");
    let mut linger = 1i32.to_le_bytes().to_vec();
    linger.extend_from_slice(&secs.to_le_bytes());
    c.setsockopt(SOL_SOCKET, SO_LINGER, linger)
        .expect("setsockopt");
    c.setblocking(false).expect("setblocking");
    let chunk = vec![b'x'; 65536];
    let mut queued = 0;
    while let Ok(Some(n)) = c.write(&chunk) {
        if n == 0 {
            break;
        }
        queued += n;
    }
    println!("queued {queued} bytes");
    let t = Instant::now();
    c.close();
    println!("close took {} ms", t.elapsed().as_millis());
    drop(peer);
}

/// `fuzz_calls repro alias-connect PORT`: a TCP connect and a UDP datagram to IPv6 spellings
/// of 127.0.0.1 (IPv4-compatible, IPv4-translated, NAT64) on AF_INET6 sockets. Under a policy
/// that grants 127.0.0.1 only, each must be EACCES: to the kernel these are ordinary IPv6
/// addresses (the sockets are IPV6_V6ONLY), routed off the machine, not loopback. Prints
/// `SPELLING tcp RESULT local ADDR` and `SPELLING udp RESULT local ADDR`.
fn repro_alias(args: &[String]) {
    let port: i64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(9);
    for spelling in [
        "::127.0.0.1",
        "::ffff:0:127.0.0.1",
        "64:ff9b::127.0.0.1",
        "2002:7f00:1::",
    ] {
        for ty in [SOCK_STREAM, SOCK_DGRAM] {
            let s = usocket::socket(AF_INET6, ty, 0).expect("socket");
            s.settimeout(Some(0.2)).expect("settimeout");
            let r = if ty == SOCK_STREAM {
                s.connect((spelling, port))
            } else {
                s.sendto(b"x", (spelling, port)).map(|_| ())
            };
            let result = match r {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("errno {}", e.errno()),
            };
            let local = match s.getsockname() {
                Ok(a) => format!("{a:?}"),
                Err(e) => format!("errno {}", e.errno()),
            };
            let kind = if ty == SOCK_STREAM { "tcp" } else { "udp" };
            println!("{spelling} {kind} {result} local {local}");
        }
    }
}

/// `fuzz_calls repro tls-deferred hostname|cadata`: `wrap_socket` while a non-blocking
/// connect is under way (the host starts TLS when the connect completes) with parameters the
/// host refuses then: a `server_hostname` the policy does not grant, or CA data that passes
/// the guest library's check (a DER SEQUENCE) but is no certificate. Then three writes on the
/// wrapped socket, a read on the accepted peer, and a second wrap (CERT_NONE). Prints
/// `connect R`, `wrap R`, `write K R`, `peer read R` and `wrap again R`: the peer must never
/// read the plaintext (and the second wrap must not start another TLS).
fn repro_tls_deferred(args: &[String]) {
    let what = args.get(1).map_or("hostname", String::as_str);
    let show = |r: Result<String, OSError>| match r {
        Ok(s) => s,
        Err(e) => format!("errno {}", e.errno()),
    };
    let l = usocket::socket(AF_INET, SOCK_STREAM, 0).expect("socket");
    l.bind(("127.0.0.1", 0)).expect("bind");
    l.listen(None).expect("listen");
    let addr = l.getsockname().expect("getsockname");
    let c = usocket::socket(AF_INET, SOCK_STREAM, 0).expect("socket");
    c.setblocking(false).expect("setblocking");
    println!("connect {}", show(c.connect(&addr).map(|()| "ok".into())));
    let mut opts = WrapOptions::default();
    match what {
        "cadata" => {
            opts.cert_reqs = ssl::CERT_REQUIRED;
            opts.cadata = Some(vec![0x30, 0x03, 1, 2, 3]);
        }
        _ => opts.server_hostname = Some("example.com".into()),
    }
    println!(
        "wrap {}",
        show(ssl::wrap_socket(&c, opts).map(|_| "ok".into()))
    );
    l.settimeout(Some(2.0)).expect("settimeout");
    let (peer, _) = l.accept().expect("accept");
    for k in 1..=3 {
        let r = c.write(b"secret\n").map(|n| format!("{n:?}"));
        println!("write {k} {}", show(r));
    }
    peer.settimeout(Some(0.5)).expect("settimeout");
    let r = peer
        .recv(100)
        .map(|d| format!("{:?}", String::from_utf8_lossy(&d)));
    println!("peer read {}", show(r));
    // The socket is a plain one again: a second wrap (with other parameters) starts TLS.
    let again = ssl::wrap_socket(&c, WrapOptions::default()).map(|_| "ok".into());
    println!("wrap again {}", show(again));
}

/// `fuzz_calls repro tls-reset` (the host must present a server identity): a TLS connection
/// between two of the program's own sockets (the client CERT_NONE, the server side with the
/// host's identity), the client writes 64 KiB the server never reads, the server closes (a
/// reset: unread data), then the client sends and reads four times. Prints `handshake R`,
/// `write R`, `send R` and `recv K R`.
fn repro_tls_reset() {
    let show = |r: Result<String, OSError>| match r {
        Ok(s) => s,
        Err(e) => format!("errno {}", e.errno()),
    };
    let l = usocket::socket(AF_INET, SOCK_STREAM, 0).expect("socket");
    l.bind(("127.0.0.1", 0)).expect("bind");
    l.listen(None).expect("listen");
    let addr = l.getsockname().expect("getsockname");
    let c = usocket::socket(AF_INET, SOCK_STREAM, 0).expect("socket");
    c.setblocking(false).expect("setblocking");
    let _ = c.connect(&addr);
    l.settimeout(Some(2.0)).expect("settimeout");
    let (s, _) = l.accept().expect("accept");
    s.setblocking(false).expect("setblocking");
    let client = WrapOptions {
        do_handshake: false,
        ..WrapOptions::default()
    };
    let server = WrapOptions {
        server_side: true,
        do_handshake: false,
        ..WrapOptions::default()
    };
    ssl::wrap_socket(&c, client).expect("client wrap");
    ssl::wrap_socket(&s, server).expect("server wrap");
    let mut done = false;
    for _ in 0..100 {
        let _ = c.read(1);
        let _ = s.read(1);
        if matches!(c.getpeercert(true), Ok(Some(_))) {
            done = true;
            break;
        }
        let mut p = select::poll();
        p.register(&c, POLLIN);
        p.register(&s, POLLIN);
        let _ = p.poll(10);
    }
    println!("handshake {}", if done { "done" } else { "not done" });
    c.settimeout(Some(1.0)).expect("settimeout");
    let w = c.write(&vec![b'x'; 65536]).map(|n| format!("{n:?}"));
    println!("write {}", show(w));
    // Let the server's kernel take the records, then close it with them unread (a reset).
    let mut p = select::poll();
    p.register(&s, POLLIN);
    let _ = p.poll(200);
    drop(p);
    s.close();
    let mut p = select::poll();
    p.register(&c, POLLIN);
    let _ = p.poll(200);
    drop(p);
    println!("send {}", show(c.send(b"y").map(|n| n.to_string())));
    for k in 1..=4 {
        let r = c
            .recv(10)
            .map(|d| format!("{:?}", String::from_utf8_lossy(&d)));
        println!("recv {k} {}", show(r));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "repro") {
        match args.get(1).map(String::as_str) {
            Some("linger-close") => repro(&args[1..]),
            Some("alias-connect") => repro_alias(&args[1..]),
            Some("tls-deferred") => repro_tls_deferred(&args[1..]),
            Some("tls-reset") => repro_tls_reset(),
            other => panic!("unknown reproducer {other:?}"),
        }
        return;
    }
    let seed: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(1);
    let count: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let watch_ms: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let trace = args.get(3).is_some_and(|s| s == "trace");
    // The driver's PKI: CA, leaf and key, then (certificate, key) pairs of bad ones.
    let mat = (args.len() >= 7 && (args.len() - 7).is_multiple_of(2)).then(|| {
        Rc::new(Material {
            ca: Pem::new(&args[4]),
            leaf: Pem::new(&args[5]),
            leaf_key: Pem::new(&args[6]),
            bad: args[7..]
                .chunks(2)
                .map(|p| (Pem::new(&p[0]), Pem::new(&p[1])))
                .collect(),
        })
    });
    let mat = mat.filter(|m| !m.bad.is_empty());
    let mut f = Fuzz {
        rng: Rng(seed),
        pool: Vec::new(),
        known: Vec::new(),
        pollers: [(select::poll(), 0), (select::poll(), 0)],
        graveyard: Vec::new(),
        stats: BTreeMap::new(),
        errors: BTreeMap::new(),
        gaps: BTreeMap::new(),
        findings: 0,
        calls: 0,
        aux: 0,
        step: 0,
        watch: Duration::from_millis(watch_ms),
        trace,
        cur: None,
        cur_tls: false,
        next_id: 0,
        mat,
    };
    let started = Instant::now();
    // Each step makes at most one counted call (none if it found no socket to use).
    while f.calls < count && f.step < count.saturating_mul(4).saturating_add(1000) {
        f.step();
        f.step += 1;
    }
    if f.calls < count {
        f.finding(format!("only {} calls in {} steps", f.calls, f.step));
    }
    // Close everything: the driver checks that the host freed every socket.
    f.pool.clear();
    f.pollers = [(select::poll(), 0), (select::poll(), 0)];
    f.graveyard.clear();
    let calls = f.calls;
    for ((name, tls), s) in &f.stats {
        let name = if *tls {
            format!("{name}/tls")
        } else {
            name.to_string()
        };
        println!(
            "call {name} n={} ok={} none={} max_ms={} errno={:?}",
            s.calls, s.ok, s.none, s.max_ms, s.errnos
        );
    }
    for ((call, tls, errno), n) in &f.gaps {
        let tls = if *tls { "/tls" } else { "" };
        println!("gap {call}{tls} errno {errno} count {n}");
    }
    println!("aux {}", f.aux);
    println!("seconds {:.1}", started.elapsed().as_secs_f64());
    println!("findings {}", f.findings);
    println!("calls {calls} errors {:?}", f.errors);
}
