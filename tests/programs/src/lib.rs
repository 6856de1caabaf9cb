//! Shared helpers for the conformance test programs.
//!
//! Each binary in `src/bin/` is a statement-by-statement port of one scenario of
//! `tests/conformance/` (`cNN_name` for `NN_name.py`, `mK_name` for `mK_name.py`); its
//! stdout must equal the scenario's `.exp` byte for byte. This library provides what the
//! Python scenarios get from the language and from their preamble:
//!
//! - [`Py`]: Python's `repr` of the Rust values the scenarios print, plus [`ByteArray`];
//! - [`e`]: the preamble's `E(f)`;
//! - [`a`], [`a_host`], [`try_a`], [`try_a_host`], [`server`], [`pair`], [`wait`]: the rest
//!   of the preamble;
//! - [`time`]: the `utime` functions the scenarios use;
//! - [`multitest`]: the helpers of MicroPython's `run-multitests.py` for `m1`..`m4`.

use usocket::select::{self, Poll};
use usocket::{AddrInfo, OSError, SockAddr, Socket};

/// Python's `repr()` of a value.
pub trait Py {
    /// The text Python's `repr()` gives for the corresponding Python value.
    fn py(&self) -> String;
}

/// Python's `repr` of a `bytes` object: `b'...'`.
///
/// Quotes are `'` unless the data contains `'` and no `"`. `\\`, the quote character,
/// `\t`, `\n`, `\r` are escaped with a backslash; other bytes below 0x20 or from 0x7f
/// become `\xNN` (lowercase hex).
pub fn bytes_repr(data: &[u8]) -> String {
    quoted_bytes(data, false)
}

/// The `b'...'` of [`bytes_repr`]; `escape_single` escapes `'` even inside `"` quotes, as
/// CPython's `bytearray` repr does (`bytearray(b"it\'s")`).
fn quoted_bytes(data: &[u8], escape_single: bool) -> String {
    let quote = if data.contains(&b'\'') && !data.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    let mut out = String::with_capacity(data.len() + 3);
    out.push('b');
    out.push(quote as char);
    for &byte in data {
        match byte {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            _ if byte == quote || (escape_single && byte == b'\'') => {
                out.push('\\');
                out.push(byte as char);
            }
            0x20..=0x7e => out.push(byte as char),
            _ => out.push_str(&format!("\\x{byte:02x}")),
        }
    }
    out.push(quote as char);
    out
}

/// Python's `repr` of a `str`: `'...'` (exact for ASCII text, which is all the scenarios use).
///
/// Same quoting rule as [`bytes_repr`]; `\\`, the quote, `\t`, `\n`, `\r` are escaped and other
/// control characters become `\xNN`. Other characters are kept as they are.
pub fn str_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for ch in text.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ if ch == quote => {
                out.push('\\');
                out.push(quote);
            }
            '\0'..='\x1f' | '\x7f'..='\u{9f}' => out.push_str(&format!("\\x{:02x}", ch as u32)),
            _ => out.push(ch),
        }
    }
    out.push(quote);
    out
}

/// A Python `bytearray`: its repr is `bytearray(b'...')`, as CPython prints it (which, unlike
/// `bytes`, escapes `'` also inside `"` quotes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteArray<'a>(pub &'a [u8]);

impl Py for ByteArray<'_> {
    fn py(&self) -> String {
        format!("bytearray({})", quoted_bytes(self.0, true))
    }
}

/// `bytes`.
impl Py for [u8] {
    fn py(&self) -> String {
        bytes_repr(self)
    }
}

/// `bytes`.
impl Py for Vec<u8> {
    fn py(&self) -> String {
        bytes_repr(self)
    }
}

/// `bytes`.
impl<const N: usize> Py for [u8; N] {
    fn py(&self) -> String {
        bytes_repr(self)
    }
}

/// A list: `[a, b]` (a `Vec<u8>` is `bytes`, see above).
impl<T: Py> Py for Vec<T> {
    fn py(&self) -> String {
        let items: Vec<String> = self.iter().map(Py::py).collect();
        format!("[{}]", items.join(", "))
    }
}

impl<T: Py + ?Sized> Py for &T {
    fn py(&self) -> String {
        (**self).py()
    }
}

/// `None` or the value.
impl<T: Py> Py for Option<T> {
    fn py(&self) -> String {
        match self {
            Some(value) => value.py(),
            None => "None".to_string(),
        }
    }
}

/// What a Python method without a result returns: `None`.
impl Py for () {
    fn py(&self) -> String {
        "None".to_string()
    }
}

impl Py for bool {
    fn py(&self) -> String {
        if *self { "True" } else { "False" }.to_string()
    }
}

macro_rules! py_int {
    ($($t:ty),*) => {$(
        /// `int`.
        impl Py for $t {
            fn py(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
py_int!(i32, i64, u16, u32, u64, usize);

/// `str`: `'...'`.
impl Py for str {
    fn py(&self) -> String {
        str_repr(self)
    }
}

/// `str`: `'...'`.
impl Py for String {
    fn py(&self) -> String {
        str_repr(self)
    }
}

impl<A: Py> Py for (A,) {
    fn py(&self) -> String {
        format!("({},)", self.0.py())
    }
}

impl<A: Py, B: Py> Py for (A, B) {
    fn py(&self) -> String {
        format!("({}, {})", self.0.py(), self.1.py())
    }
}

impl<A: Py, B: Py, C: Py> Py for (A, B, C) {
    fn py(&self) -> String {
        format!("({}, {}, {})", self.0.py(), self.1.py(), self.2.py())
    }
}

impl<A: Py, B: Py, C: Py, D: Py> Py for (A, B, C, D) {
    fn py(&self) -> String {
        format!(
            "({}, {}, {}, {})",
            self.0.py(),
            self.1.py(),
            self.2.py(),
            self.3.py()
        )
    }
}

impl<A: Py, B: Py, C: Py, D: Py, E: Py> Py for (A, B, C, D, E) {
    fn py(&self) -> String {
        format!(
            "({}, {}, {}, {}, {})",
            self.0.py(),
            self.1.py(),
            self.2.py(),
            self.3.py(),
            self.4.py()
        )
    }
}

/// The 5-tuple `(family, type, proto, canonname, sockaddr)` of `getaddrinfo`.
impl Py for AddrInfo {
    fn py(&self) -> String {
        (
            self.family,
            self.socktype,
            self.proto,
            self.canonname.as_str(),
            &self.sockaddr,
        )
            .py()
    }
}

/// A socket object. Python shows `<socket ...>`, whose text is not part of the contract and
/// never appears in an `.exp` file (scenarios print only empty poll lists, and `E(...)` of
/// a call that must fail).
impl Py for Socket {
    fn py(&self) -> String {
        "<socket>".to_string()
    }
}

/// The preamble's `E(f)`: `('ok', repr(result))` or `('OSError', errno)`.
///
/// The Python form also maps any other exception to `(TypeName, None)`; the Rust API has
/// only `OSError` (anything else is a panic).
pub fn e<T: Py>(r: usocket::Result<T>) -> String {
    match r {
        Ok(value) => format!("('ok', {})", value.py()),
        Err(err) => os_error(err),
    }
}

/// The `('OSError', errno)` half of [`e`].
pub fn os_error(err: OSError) -> String {
    format!("('OSError', {})", err.errno())
}

/// `A(port, host)` of the preamble as a fallible call: `getaddrinfo(host, port)[0][-1]`.
/// Used where a scenario evaluates `A(...)` inside `E(...)` or `try`.
pub fn try_a_host(port: i64, host: &str) -> usocket::Result<SockAddr> {
    let infos = usocket::getaddrinfo(host, port)?;
    Ok(infos[0].sockaddr.clone())
}

/// `A(port)` of the preamble as a fallible call: `getaddrinfo("127.0.0.1", port)[0][-1]`.
pub fn try_a(port: i64) -> usocket::Result<SockAddr> {
    try_a_host(port, "127.0.0.1")
}

/// The preamble's `A(port, host)`: `getaddrinfo(host, port)[0][-1]`; panics on an error.
#[track_caller]
pub fn a_host(port: i64, host: &str) -> SockAddr {
    try_a_host(port, host).unwrap()
}

/// The preamble's `A(port)`: `getaddrinfo("127.0.0.1", port)[0][-1]`; panics on an error.
#[track_caller]
pub fn a(port: i64) -> SockAddr {
    try_a(port).unwrap()
}

/// The preamble's `server(port, backlog=None)`: a TCP socket with SO_REUSEADDR, bound to
/// `A(port)`, listening with `listen()` (None) or `listen(backlog)`. Panics on an error.
#[track_caller]
pub fn server(port: i64, backlog: Option<i32>) -> Socket {
    let l = usocket::socket(usocket::AF_INET, usocket::SOCK_STREAM, 0).unwrap();
    l.setsockopt(usocket::SOL_SOCKET, usocket::SO_REUSEADDR, 1)
        .unwrap();
    l.bind(a(port)).unwrap();
    // `listen(None)` is `listen()`.
    l.listen(backlog).unwrap();
    l
}

/// The preamble's `pair(port)`: `(listener, client, accepted)`. Panics on an error.
#[track_caller]
pub fn pair(port: i64) -> (Socket, Socket, Socket) {
    let l = server(port, None);
    let c = usocket::socket(usocket::AF_INET, usocket::SOCK_STREAM, 0).unwrap();
    c.connect(a(port)).unwrap();
    let (s, _) = l.accept().unwrap();
    (l, c, s)
}

/// The preamble's `wait(sock, mask=POLLIN, ms=2000)`: polls one socket with a fresh poller
/// and returns its revents, 0 on timeout. Panics on an error.
#[track_caller]
pub fn wait(sock: &Socket, mask: u32, ms: i32) -> u32 {
    let mut p: Poll = select::poll();
    p.register(sock, mask);
    let r = p.poll(ms).unwrap();
    if r.is_empty() { 0 } else { r[0].1 }
}

/// `utime` equivalents.
pub mod time {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    fn epoch() -> Instant {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    /// `time.ticks_ms()`: milliseconds of a monotonic clock (from the first call).
    pub fn ticks_ms() -> i64 {
        epoch().elapsed().as_millis() as i64
    }

    /// `time.ticks_diff(a, b)`: `a - b`.
    pub fn ticks_diff(a: i64, b: i64) -> i64 {
        a - b
    }

    /// `time.sleep(seconds)`.
    pub fn sleep(seconds: f64) {
        std::thread::sleep(Duration::from_secs_f64(seconds));
    }

    /// `time.sleep_ms(ms)`.
    pub fn sleep_ms(ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// The `multitest` helpers of MicroPython's `tests/run-multitests.py`, for the two-instance
/// programs. Such a program takes the instance number (`0` or `1`) as its first argument and
/// the globals set so far as further arguments `NAME=REPR`. Every helper flushes stdout.
pub mod multitest {
    use std::io::{BufRead, Write};

    fn emit(line: &str) {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    }

    /// The instance number, the program's first argument (`0` or `1`).
    pub fn instance() -> u32 {
        let arg = std::env::args()
            .nth(1)
            .expect("usage: PROGRAM INSTANCE [NAME=REPR]...");
        arg.parse().expect("the instance number must be 0 or 1")
    }

    /// Runs `instance0` or `instance1` according to [`instance`].
    pub fn run(instance0: fn(), instance1: fn()) {
        match instance() {
            0 => instance0(),
            1 => instance1(),
            n => panic!("no instance {n}"),
        }
    }

    /// `multitest.next()`: prints `NEXT`.
    pub fn next() {
        emit("NEXT");
    }

    /// `multitest.globals(NAME=value, ...)`: prints `SET NAME = REPR` per pair. The values are
    /// given already as Python reprs (`("IP", "'127.0.0.1'")`).
    pub fn globals(pairs: &[(&str, &str)]) {
        for (name, repr) in pairs {
            emit(&format!("SET {name} = {repr}"));
        }
    }

    /// `multitest.broadcast(msg)`: prints `BROADCAST msg`.
    pub fn broadcast(msg: &str) {
        emit(&format!("BROADCAST {msg}"));
    }

    /// `multitest.wait(msg)`: reads stdin lines until one equals `BROADCAST msg` (trailing
    /// whitespace ignored, as `rstrip()` does). Panics at the end of stdin.
    pub fn wait(msg: &str) {
        std::io::stdout().flush().unwrap();
        let want = format!("BROADCAST {msg}");
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            let n = stdin.lock().read_line(&mut line).unwrap();
            assert!(n > 0, "stdin ended while waiting for {want:?}");
            if line.trim_end() == want {
                return;
            }
        }
    }

    /// The value of the global `name` (a `NAME=REPR` argument) as a string: the repr must be a
    /// Python str literal, returned unquoted and unescaped. Panics if absent or not a str.
    pub fn global(name: &str) -> String {
        let prefix = format!("{name}=");
        let repr = std::env::args()
            .skip(2)
            .find_map(|arg| arg.strip_prefix(&prefix).map(str::to_string))
            .unwrap_or_else(|| panic!("global {name} was not passed"));
        unrepr_str(&repr).unwrap_or_else(|| panic!("global {name}={repr} is not a str literal"))
    }

    /// Parses a Python str literal as `repr()` prints it (`'...'` or `"..."` with the escapes
    /// `\\ \' \" \t \n \r \xNN`).
    pub fn unrepr_str(repr: &str) -> Option<String> {
        let quote = repr.chars().next()?;
        if !(quote == '\'' || quote == '"') || repr.len() < 2 || !repr.ends_with(quote) {
            return None;
        }
        let body = &repr[1..repr.len() - 1];
        let mut out = String::new();
        let mut chars = body.chars();
        while let Some(ch) = chars.next() {
            if ch == quote {
                return None;
            }
            if ch != '\\' {
                out.push(ch);
                continue;
            }
            match chars.next()? {
                '\\' => out.push('\\'),
                '\'' => out.push('\''),
                '"' => out.push('"'),
                't' => out.push('\t'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                'x' => {
                    let hex: String = chars.by_ref().take(2).collect();
                    if hex.len() != 2 {
                        return None;
                    }
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                _ => return None,
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::multitest::unrepr_str;
    use super::*;

    // Expected values are Python 3's own output (`python3 -c "print(repr(...))"`).
    #[test]
    fn bytes_like_python() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "b''"),
            (b"ping", "b'ping'"),
            (b"GET / HTTP/1.0\r\n", r"b'GET / HTTP/1.0\r\n'"),
            (b"a\tb\\c", r"b'a\tb\\c'"),
            (b"it's", r#"b"it's""#),
            (b"it's \"q\"", r#"b'it\'s "q"'"#),
            (b"say \"hi\"", r#"b'say "hi"'"#),
            (
                b"\x00\x01\x1f\x7f\x80\xff ~",
                r"b'\x00\x01\x1f\x7f\x80\xff ~'",
            ),
            (b"\x0b\x0c\x1b", r"b'\x0b\x0c\x1b'"),
            (b"'", r#"b"'""#),
            (b"\"", r#"b'"'"#),
            (b"'\"", r#"b'\'"'"#),
            (b"\x01\x00\x00\x00", r"b'\x01\x00\x00\x00'"),
        ];
        for (data, want) in cases {
            assert_eq!(bytes_repr(data), *want, "{data:?}");
            assert_eq!(data.to_vec().py(), *want);
        }
    }

    #[test]
    fn bytearray_like_python() {
        assert_eq!(ByteArray(b"0123").py(), "bytearray(b'0123')");
        assert_eq!(ByteArray(b"it's").py(), r#"bytearray(b"it\'s")"#);
        assert_eq!(ByteArray(b"'").py(), r#"bytearray(b"\'")"#);
        assert_eq!(ByteArray(b"\"").py(), r#"bytearray(b'"')"#);
        assert_eq!(ByteArray(b"'\"").py(), r#"bytearray(b'\'"')"#);
        assert_eq!(
            ByteArray(b"a\\b\n\x00\x7f").py(),
            r"bytearray(b'a\\b\n\x00\x7f')"
        );
        assert_eq!(ByteArray(b"").py(), "bytearray(b'')");
    }

    #[test]
    fn str_like_python() {
        assert_eq!(str_repr("127.0.0.1"), "'127.0.0.1'");
        assert_eq!(str_repr(""), "''");
        assert_eq!(str_repr("it's"), r#""it's""#);
        assert_eq!(str_repr("it's \"q\""), r#"'it\'s "q"'"#);
        assert_eq!(str_repr("a\tb\\c\n\x01\x7f"), r"'a\tb\\c\n\x01\x7f'");
        assert_eq!(String::from("::1").py(), "'::1'");
    }

    #[test]
    fn scalars_like_python() {
        assert_eq!(None::<Vec<u8>>.py(), "None");
        assert_eq!(Some(b"x".to_vec()).py(), "b'x'");
        assert_eq!(Some(4usize).py(), "4");
        assert_eq!(().py(), "None");
        assert_eq!(true.py(), "True");
        assert_eq!(false.py(), "False");
        assert_eq!((-2i32).py(), "-2");
        assert_eq!(20u32.py(), "20");
    }

    #[test]
    fn containers_like_python() {
        let addr: SockAddr = ("127.0.0.1".to_string(), 9822);
        assert_eq!(
            (b"again".to_vec(), addr.clone()).py(),
            "(b'again', ('127.0.0.1', 9822))"
        );
        assert_eq!((1i32,).py(), "(1,)");
        assert_eq!(Vec::<(i32, u32)>::new().py(), "[]");
        assert_eq!(vec![(1i32, 2u32), (3, 4)].py(), "[(1, 2), (3, 4)]");
        let info = AddrInfo {
            family: 2,
            socktype: 1,
            proto: 6,
            canonname: String::new(),
            sockaddr: ("127.0.0.1".to_string(), 8080),
        };
        assert_eq!(vec![info].py(), "[(2, 1, 6, '', ('127.0.0.1', 8080))]");
        let info6 = AddrInfo {
            family: 10,
            socktype: 1,
            proto: 6,
            canonname: String::new(),
            sockaddr: ("::1".to_string(), 8080),
        };
        assert_eq!(vec![info6].py(), "[(10, 1, 6, '', ('::1', 8080))]");
    }

    #[test]
    fn e_like_python() {
        assert_eq!(e(Ok(())), "('ok', None)");
        assert_eq!(e(Ok(b"late".to_vec())), "('ok', b'late')");
        assert_eq!(e(Ok(Some(b"".to_vec()))), "('ok', b'')");
        assert_eq!(e::<()>(Err(OSError::new(9))), "('OSError', 9)");
        assert_eq!(e::<Vec<u8>>(Err(OSError::new(110))), "('OSError', 110)");
    }

    #[test]
    fn unrepr() {
        assert_eq!(unrepr_str("'127.0.0.1'").as_deref(), Some("127.0.0.1"));
        assert_eq!(unrepr_str(r#""it's""#).as_deref(), Some("it's"));
        assert_eq!(unrepr_str(r"'a\\b\'\x41'").as_deref(), Some("a\\b'A"));
        assert_eq!(unrepr_str("127.0.0.1"), None);
        assert_eq!(unrepr_str("'"), None);
    }
}
