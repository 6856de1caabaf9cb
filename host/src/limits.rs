//! Per-guest limits: how many sockets, bytes and how fast a guest may use the network.
//!
//! [`Limits`] holds the values a guest runs with. [`LimitOverrides`] holds the ones a source
//! sets (a policy file's `[limits]` table, command-line flags, an embedder's configuration):
//! [`LimitOverrides::merge`] layers sources (the later one wins) and [`LimitOverrides::apply`]
//! puts them over a base. [`Limits::validate`] and [`LimitOverrides::validate`] are the one
//! place the rules live; a [`LimitError`] says which limit is wrong, why, and how to fix it,
//! and [`Limit`] names each limit as code, policy files and the command line spell it.
//!
//! # Memory
//!
//! [`Limits::max_memory`] bounds the guest's own memory (its linear memories and tables), which
//! wasmtime allocates, not `usocket`: it holds only once a `Store`'s resource limiter enforces
//! it. [`crate::run::Runner`] does this for every guest it runs; an embedder with a `Store` of
//! its own puts the [`MemoryLimiter`] of [`Limits::memory_limiter`] in the `Store` data and
//! hands it to [`wasmtime::Store::limiter`]:
//!
//! ```
//! use usocket_host::limits::{Limits, MemoryLimiter};
//! use wasmtime::{Engine, Store};
//!
//! struct Host {
//!     limiter: MemoryLimiter,
//!     // ... WasiCtx, UsocketCtx, ResourceTable
//! }
//!
//! let limits = Limits { max_memory: 64 << 20, ..Limits::default() };
//! let engine = Engine::default();
//! let mut store = Store::new(&engine, Host { limiter: limits.memory_limiter() });
//! store.limiter(|host| &mut host.limiter);
//! // A guest's `memory.grow` past 64 MiB now returns -1 (a Rust guest's allocation fails).
//! ```

use std::fmt;
use std::time::Duration;

/// Limits applied to one guest. Exhausted quotas fail with ENOMEM at once, never by waiting;
/// the rate limit delays I/O instead of failing it.
///
/// Build them with struct update syntax over [`Limits::default`] and check them with
/// [`Limits::validate`], or from overrides with [`LimitOverrides::apply`] (which checks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Sockets open at once (counted from creation until closed or dropped). At least 1.
    pub max_sockets: usize,
    /// Bytes the host buffers for one socket on behalf of `read()` and `readline()` before
    /// failing with ENOBUFS (the bytes stay queued). At least 1.
    pub max_buffered: usize,
    /// Total bytes the guest may send over its life (0: it may send nothing).
    pub max_bytes_sent: Option<u64>,
    /// Total bytes the guest may receive over its life (0: it may receive nothing).
    pub max_bytes_received: Option<u64>,
    /// Bytes per second in each direction (a token bucket with one second of burst). At
    /// least 1.
    pub rate: Option<u64>,
    /// The longest a name grant keeps an address its lookup returned (the system resolver
    /// reports no TTL, so its answers live this long). Above zero, at most
    /// [`MAX_PIN_TTL`].
    pub pin_ttl: Duration,
    /// Bytes the host buffers for all of the guest's sockets together (receive queues and
    /// read-ahead the guest library holds): a guest with many sockets cannot make the host
    /// hold `max_sockets * max_buffered`. At least 1.
    pub max_buffered_total: usize,
    /// Bytes of memory the guest's instance may use: its linear memories, plus its tables at
    /// [`TABLE_ELEMENT_BYTES`] a table element, all together. At least one wasm page
    /// ([`WASM_PAGE`], 64 KiB). Enforced by the `Store`'s resource limiter
    /// ([`Limits::memory_limiter`]; [`crate::run::Runner`] installs it): a `memory.grow` or
    /// `table.grow` past it fails (returns -1 to the guest, whose allocator then fails), and
    /// an instance whose initial memory is larger does not start.
    pub max_memory: usize,
}

/// The size of a wasm page, the smallest [`Limits::max_memory`]: no guest can start with
/// less.
pub const WASM_PAGE: usize = 64 << 10;

/// What one table element counts against [`Limits::max_memory`]: the size of a pointer, what
/// wasmtime stores for each element.
pub const TABLE_ELEMENT_BYTES: usize = size_of::<usize>();

/// The longest [`Limits::pin_ttl`] accepted: 7 days (604800 s), the cap RFC 8767 advises
/// resolvers to put on any record's TTL. Longer pins would outlive every DNS answer, and
/// absurd ones would overflow the clock.
pub const MAX_PIN_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sockets: 64,
            max_buffered: 16 << 20,
            max_bytes_sent: None,
            max_bytes_received: None,
            rate: None,
            pin_ttl: Duration::from_secs(60),
            max_buffered_total: 64 << 20,
            max_memory: 256 << 20,
        }
    }
}

impl Limits {
    /// Checks every limit: each one that would stall or cripple a guest rather than limit it
    /// is an error (the first one found, in field order).
    ///
    /// Refused: `max_sockets`, `max_buffered`, `rate` and `max_buffered_total` of 0, a zero
    /// `pin_ttl` and one above [`MAX_PIN_TTL`], a `max_memory` below one wasm page. Byte
    /// totals of 0 are accepted: a guest that may only receive (or only send) is a policy, not
    /// a mistake.
    pub fn validate(&self) -> Result<(), LimitError> {
        Limit::MaxSockets.check(self.max_sockets as u64)?;
        Limit::MaxBuffered.check(self.max_buffered as u64)?;
        if let Some(n) = self.max_bytes_sent {
            Limit::MaxBytesSent.check(n)?;
        }
        if let Some(n) = self.max_bytes_received {
            Limit::MaxBytesReceived.check(n)?;
        }
        if let Some(n) = self.rate {
            Limit::Rate.check(n)?;
        }
        check_pin_ttl(self.pin_ttl)?;
        Limit::MaxBufferedTotal.check(self.max_buffered_total as u64)?;
        Limit::MaxMemory.check(self.max_memory as u64)
    }

    /// A resource limiter that holds the guest to [`Limits::max_memory`], for
    /// [`wasmtime::Store::limiter`] (see [the module docs](self#memory)).
    pub fn memory_limiter(&self) -> MemoryLimiter {
        MemoryLimiter {
            max: self.max_memory,
            used: 0,
            last_growth: 0,
        }
    }
}

/// A [`wasmtime::ResourceLimiter`] that holds all of a `Store`'s linear memories and tables
/// together to one number of bytes ([`Limits::max_memory`]; tables count
/// [`TABLE_ELEMENT_BYTES`] an element). A growth past it is refused: `memory.grow` and
/// `table.grow` return -1 to the guest, and a memory or table created larger than it fails
/// the instantiation with an error. Never a host abort: the memory is not reserved first.
///
/// Memories and tables live as long as their `Store`, so the count only grows; use one
/// limiter per `Store`.
#[derive(Clone, Debug)]
pub struct MemoryLimiter {
    max: usize,
    used: usize,
    /// The bytes the last allowed growth added (taken back if wasmtime then fails it).
    last_growth: usize,
}

impl MemoryLimiter {
    /// The bytes of memory and tables counted so far.
    pub fn used(&self) -> usize {
        self.used
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }

    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let added = desired.saturating_sub(current);
        match self.used.checked_add(added) {
            Some(total) if total <= self.max => {
                self.used = total;
                self.last_growth = added;
                true
            }
            _ => {
                tracing::debug!(
                    used = self.used,
                    asked = added,
                    max = self.max,
                    "a guest's memory growth was refused (max_memory)"
                );
                false
            }
        }
    }

    fn grow_failed(&mut self) {
        self.used -= std::mem::take(&mut self.last_growth);
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let bytes = |n: usize| n.saturating_mul(TABLE_ELEMENT_BYTES);
        Ok(self.grow(bytes(current), bytes(desired)))
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed();
        Ok(())
    }
}

/// Limits a source sets, each `None` keeping the value underneath: a policy file's `[limits]`
/// table or the command line's limit flags. The same rules as [`Limits::validate`] apply to
/// every value set.
///
/// ```
/// use std::time::Duration;
/// use usocket_host::limits::{LimitOverrides, Limits};
/// let file = LimitOverrides { max_sockets: Some(8), rate: Some(1 << 20), ..Default::default() };
/// let flags = LimitOverrides { max_sockets: Some(4), ..Default::default() };
/// let limits = file.merge(flags).apply(Limits::default())?;
/// assert_eq!((limits.max_sockets, limits.rate), (4, Some(1 << 20)));
/// assert_eq!(limits.pin_ttl, Duration::from_secs(60));
///
/// let zero = LimitOverrides { rate: Some(0), ..Default::default() };
/// assert!(zero.validate().unwrap_err().to_string().contains("at least 1"));
/// # Ok::<(), usocket_host::limits::LimitError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimitOverrides {
    /// [`Limits::max_sockets`].
    pub max_sockets: Option<usize>,
    /// [`Limits::max_buffered`].
    pub max_buffered: Option<usize>,
    /// [`Limits::max_bytes_sent`] (there is no way to override a limit back to none).
    pub max_bytes_sent: Option<u64>,
    /// [`Limits::max_bytes_received`].
    pub max_bytes_received: Option<u64>,
    /// [`Limits::rate`].
    pub rate: Option<u64>,
    /// [`Limits::pin_ttl`].
    pub pin_ttl: Option<Duration>,
    /// [`Limits::max_buffered_total`].
    pub max_buffered_total: Option<usize>,
    /// [`Limits::max_memory`].
    pub max_memory: Option<usize>,
}

impl LimitOverrides {
    /// `self` with `later`'s values wherever `later` sets one (the later source wins: for
    /// `usocket run`, the policy file then the flags).
    pub fn merge(self, later: LimitOverrides) -> LimitOverrides {
        LimitOverrides {
            max_sockets: later.max_sockets.or(self.max_sockets),
            max_buffered: later.max_buffered.or(self.max_buffered),
            max_bytes_sent: later.max_bytes_sent.or(self.max_bytes_sent),
            max_bytes_received: later.max_bytes_received.or(self.max_bytes_received),
            rate: later.rate.or(self.rate),
            pin_ttl: later.pin_ttl.or(self.pin_ttl),
            max_buffered_total: later.max_buffered_total.or(self.max_buffered_total),
            max_memory: later.max_memory.or(self.max_memory),
        }
    }

    /// `base` with the values set here, checked with [`Limits::validate`].
    pub fn apply(&self, base: Limits) -> Result<Limits, LimitError> {
        self.validate()?;
        let limits = Limits {
            max_sockets: self.max_sockets.unwrap_or(base.max_sockets),
            max_buffered: self.max_buffered.unwrap_or(base.max_buffered),
            max_bytes_sent: self.max_bytes_sent.or(base.max_bytes_sent),
            max_bytes_received: self.max_bytes_received.or(base.max_bytes_received),
            rate: self.rate.or(base.rate),
            pin_ttl: self.pin_ttl.unwrap_or(base.pin_ttl),
            max_buffered_total: self.max_buffered_total.unwrap_or(base.max_buffered_total),
            max_memory: self.max_memory.unwrap_or(base.max_memory),
        };
        limits.validate()?;
        Ok(limits)
    }

    /// Checks the values set here, as [`Limits::validate`] does (the first error, in field
    /// order).
    pub fn validate(&self) -> Result<(), LimitError> {
        let check =
            |limit: Limit, value: Option<usize>| value.map_or(Ok(()), |n| limit.check(n as u64));
        let check_u64 = |limit: Limit, value: Option<u64>| value.map_or(Ok(()), |n| limit.check(n));
        check(Limit::MaxSockets, self.max_sockets)?;
        check(Limit::MaxBuffered, self.max_buffered)?;
        check_u64(Limit::MaxBytesSent, self.max_bytes_sent)?;
        check_u64(Limit::MaxBytesReceived, self.max_bytes_received)?;
        check_u64(Limit::Rate, self.rate)?;
        self.pin_ttl.map_or(Ok(()), check_pin_ttl)?;
        check(Limit::MaxBufferedTotal, self.max_buffered_total)?;
        check(Limit::MaxMemory, self.max_memory)
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == LimitOverrides::default()
    }
}

fn check_pin_ttl(ttl: Duration) -> Result<(), LimitError> {
    if ttl.is_zero() {
        Err(LimitError::new(Limit::PinTtl, 0, Problem::Zero))
    } else if ttl > MAX_PIN_TTL {
        Err(LimitError::new(
            Limit::PinTtl,
            ttl.as_secs(),
            Problem::TooLarge {
                max: MAX_PIN_TTL.as_secs(),
            },
        ))
    } else {
        Ok(())
    }
}

/// One of the guest limits, with its names in code, in policy files and on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// [`Limits::max_sockets`].
    MaxSockets,
    /// [`Limits::max_buffered`].
    MaxBuffered,
    /// [`Limits::max_bytes_sent`].
    MaxBytesSent,
    /// [`Limits::max_bytes_received`].
    MaxBytesReceived,
    /// [`Limits::rate`].
    Rate,
    /// [`Limits::pin_ttl`] (in seconds in files and flags).
    PinTtl,
    /// [`Limits::max_buffered_total`].
    MaxBufferedTotal,
    /// [`Limits::max_memory`].
    MaxMemory,
}

impl Limit {
    /// Every limit, in field order.
    pub const ALL: [Limit; 8] = [
        Limit::MaxSockets,
        Limit::MaxBuffered,
        Limit::MaxBytesSent,
        Limit::MaxBytesReceived,
        Limit::Rate,
        Limit::PinTtl,
        Limit::MaxBufferedTotal,
        Limit::MaxMemory,
    ];

    /// The field of [`Limits`]: `"pin_ttl"`.
    pub fn field(self) -> &'static str {
        match self {
            Limit::MaxSockets => "max_sockets",
            Limit::MaxBuffered => "max_buffered",
            Limit::MaxBytesSent => "max_bytes_sent",
            Limit::MaxBytesReceived => "max_bytes_received",
            Limit::Rate => "rate",
            Limit::PinTtl => "pin_ttl",
            Limit::MaxBufferedTotal => "max_buffered_total",
            Limit::MaxMemory => "max_memory",
        }
    }

    /// The key in a policy file's `[limits]` table: `"pin_ttl_secs"`.
    pub fn file_key(self) -> &'static str {
        match self {
            Limit::PinTtl => "pin_ttl_secs",
            other => other.field(),
        }
    }

    /// The `usocket run` flag: `"--pin-ttl"`.
    pub fn flag(self) -> &'static str {
        match self {
            Limit::MaxSockets => "--max-sockets",
            Limit::MaxBuffered => "--max-buffered",
            Limit::MaxBytesSent => "--max-bytes-sent",
            Limit::MaxBytesReceived => "--max-bytes-received",
            Limit::Rate => "--rate",
            Limit::PinTtl => "--pin-ttl",
            Limit::MaxBufferedTotal => "--max-buffered-total",
            Limit::MaxMemory => "--max-memory",
        }
    }

    /// Checks one value of this limit (seconds for [`Limit::PinTtl`]).
    pub fn check(self, value: u64) -> Result<(), LimitError> {
        match self {
            Limit::MaxSockets | Limit::MaxBuffered | Limit::Rate | Limit::MaxBufferedTotal
                if value == 0 =>
            {
                Err(LimitError::new(self, value, Problem::Zero))
            }
            Limit::MaxMemory if value < WASM_PAGE as u64 => Err(LimitError::new(
                self,
                value,
                Problem::TooSmall {
                    min: WASM_PAGE as u64,
                },
            )),
            Limit::PinTtl => check_pin_ttl(Duration::from_secs(value)),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.field())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Problem {
    Zero,
    TooSmall { min: u64 },
    TooLarge { max: u64 },
}

/// A limit whose value cannot work: which one, why, and how to fix it.
///
/// Its `Display` names the limit by its [`Limits`] field; [`LimitError::explain`] names it as
/// the caller's source spells it (a policy file key, a flag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitError {
    limit: Limit,
    value: u64,
    problem: Problem,
}

impl LimitError {
    fn new(limit: Limit, value: u64, problem: Problem) -> Self {
        LimitError {
            limit,
            value,
            problem,
        }
    }

    /// The limit that is wrong.
    pub fn limit(&self) -> Limit {
        self.limit
    }

    /// The value refused (seconds for [`Limit::PinTtl`]).
    pub fn value(&self) -> u64 {
        self.value
    }

    /// Why the value cannot work, e.g. `"would stall all traffic forever (rate is bytes per
    /// second)"`.
    pub fn reason(&self) -> String {
        match (self.problem, self.limit) {
            (Problem::Zero, Limit::MaxSockets) => {
                "would fail every socket() with ENOMEM, so the guest could not use the network at all"
                    .into()
            }
            (Problem::Zero, Limit::MaxBuffered) => "would fail every read with ENOBUFS".into(),
            (Problem::Zero, Limit::Rate) => {
                "would stall all traffic forever (rate is bytes per second)".into()
            }
            (Problem::Zero, Limit::PinTtl) => {
                "would expire every name pin at once, so no granted name could be connected to"
                    .into()
            }
            (Problem::Zero, Limit::MaxBufferedTotal) => {
                "would fail every read of every socket with ENOBUFS".into()
            }
            (Problem::Zero, _) => "is not a usable limit".into(),
            (Problem::TooSmall { min }, Limit::MaxMemory) => format!(
                "is less than one wasm page ({min} bytes), so no guest could even start"
            ),
            (Problem::TooSmall { min }, _) => format!("is below the smallest value, {min}"),
            (Problem::TooLarge { max }, Limit::PinTtl) => format!(
                "is longer than any DNS answer should be kept: the longest pin is {max} s ({} days)",
                max / 86_400
            ),
            (Problem::TooLarge { max }, _) => format!("is above the largest value, {max}"),
        }
    }

    /// How to fix it, naming the limit as `name` (a policy file key, a flag).
    pub fn fix(&self, name: &str) -> String {
        match self.problem {
            Problem::Zero if self.limit == Limit::MaxSockets => format!(
                "give {name} a value of at least 1; to keep a guest off the network, grant it \
                 nothing (everything no allow rule grants is denied)"
            ),
            Problem::Zero => format!("give {name} a value of at least 1"),
            Problem::TooSmall { min } => format!("give {name} a value of at least {min}"),
            Problem::TooLarge { max } => format!("give {name} a value of at most {max}"),
        }
    }

    /// The whole message, naming the limit as `name` and showing the value with `sep`
    /// between them: `explain("rate", " = ")` gives "`rate = 0` would stall all traffic
    /// forever (rate is bytes per second): give rate a value of at least 1".
    pub fn explain(&self, name: &str, sep: &str) -> String {
        format!(
            "`{name}{sep}{}` {}: {}",
            self.value,
            self.reason(),
            self.fix(name)
        )
    }
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explain(self.limit.field(), " = "))
    }
}

impl std::error::Error for LimitError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(Limits::default().validate(), Ok(()));
        assert_eq!(LimitOverrides::default().validate(), Ok(()));
        assert!(LimitOverrides::default().is_empty());
    }

    #[test]
    fn zero_limits_that_would_stall_a_guest_are_errors() {
        let cases = [
            (
                Limits {
                    max_sockets: 0,
                    ..Limits::default()
                },
                Limit::MaxSockets,
                "ENOMEM",
            ),
            (
                Limits {
                    max_buffered: 0,
                    ..Limits::default()
                },
                Limit::MaxBuffered,
                "ENOBUFS",
            ),
            (
                Limits {
                    rate: Some(0),
                    ..Limits::default()
                },
                Limit::Rate,
                "stall all traffic",
            ),
            (
                Limits {
                    pin_ttl: Duration::ZERO,
                    ..Limits::default()
                },
                Limit::PinTtl,
                "expire every name pin",
            ),
        ];
        for (limits, limit, why) in cases {
            let e = limits.validate().unwrap_err();
            assert_eq!((e.limit(), e.value()), (limit, 0), "{e}");
            assert!(e.reason().contains(why), "{e}");
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("`{} = 0` ", limit.field())),
                "{shown}"
            );
            assert!(
                shown.contains(&format!("give {} a value of at least 1", limit.field())),
                "{shown}"
            );
        }
        // The sockets message says how to do what a zero was probably meant for.
        let e = Limit::MaxSockets.check(0).unwrap_err();
        assert!(e.fix("--max-sockets").contains("grant it nothing"), "{e}");
    }

    #[test]
    fn zero_byte_totals_are_a_policy() {
        let limits = Limits {
            max_bytes_sent: Some(0),
            max_bytes_received: Some(0),
            ..Limits::default()
        };
        assert_eq!(limits.validate(), Ok(()));
    }

    #[test]
    fn pin_ttls_are_capped_at_seven_days() {
        let at_max = Limits {
            pin_ttl: MAX_PIN_TTL,
            ..Limits::default()
        };
        assert_eq!(at_max.validate(), Ok(()));
        let sub_second = Limits {
            pin_ttl: Duration::from_millis(500),
            ..Limits::default()
        };
        assert_eq!(sub_second.validate(), Ok(()));
        for ttl in [MAX_PIN_TTL + secs(1), secs(i64::MAX as u64), Duration::MAX] {
            let e = Limits {
                pin_ttl: ttl,
                ..Limits::default()
            }
            .validate()
            .unwrap_err();
            assert_eq!((e.limit(), e.value()), (Limit::PinTtl, ttl.as_secs()));
            assert!(e.to_string().contains("at most 604800"), "{e}");
        }
        let e = Limit::PinTtl.check(u64::MAX).unwrap_err();
        assert!(
            e.explain("--pin-ttl", " ").starts_with(&format!(
                "`--pin-ttl {}` is longer than any DNS answer",
                u64::MAX
            )),
            "{e}"
        );
    }

    #[test]
    fn later_overrides_win_and_unset_ones_keep_the_base() {
        let file = LimitOverrides {
            max_sockets: Some(8),
            max_bytes_sent: Some(100),
            pin_ttl: Some(secs(300)),
            ..LimitOverrides::default()
        };
        let flags = LimitOverrides {
            max_sockets: Some(4),
            rate: Some(10),
            ..LimitOverrides::default()
        };
        let merged = file.clone().merge(flags.clone());
        assert_eq!(
            merged,
            LimitOverrides {
                max_sockets: Some(4),
                max_bytes_sent: Some(100),
                rate: Some(10),
                pin_ttl: Some(secs(300)),
                ..LimitOverrides::default()
            }
        );
        let limits = merged.apply(Limits::default()).unwrap();
        assert_eq!(
            limits,
            Limits {
                max_sockets: 4,
                max_bytes_sent: Some(100),
                rate: Some(10),
                pin_ttl: secs(300),
                ..Limits::default()
            }
        );
        // Applying in two steps is the same as merging first.
        let stepwise = flags.apply(file.apply(Limits::default()).unwrap()).unwrap();
        assert_eq!(stepwise, limits);
        assert_eq!(LimitOverrides::default().apply(limits.clone()), Ok(limits));
    }

    #[test]
    fn overrides_are_checked_by_the_same_rules() {
        for (overrides, limit) in [
            (
                LimitOverrides {
                    max_sockets: Some(0),
                    ..LimitOverrides::default()
                },
                Limit::MaxSockets,
            ),
            (
                LimitOverrides {
                    max_buffered: Some(0),
                    ..LimitOverrides::default()
                },
                Limit::MaxBuffered,
            ),
            (
                LimitOverrides {
                    rate: Some(0),
                    ..LimitOverrides::default()
                },
                Limit::Rate,
            ),
            (
                LimitOverrides {
                    pin_ttl: Some(Duration::ZERO),
                    ..LimitOverrides::default()
                },
                Limit::PinTtl,
            ),
            (
                LimitOverrides {
                    pin_ttl: Some(Duration::MAX),
                    ..LimitOverrides::default()
                },
                Limit::PinTtl,
            ),
        ] {
            let e = overrides.validate().unwrap_err();
            assert_eq!(e.limit(), limit, "{e}");
            assert_eq!(overrides.apply(Limits::default()).unwrap_err(), e);
        }
        // An invalid base is caught too.
        let bad_base = Limits {
            max_sockets: 0,
            ..Limits::default()
        };
        assert_eq!(
            LimitOverrides::default()
                .apply(bad_base.clone())
                .unwrap_err()
                .limit(),
            Limit::MaxSockets
        );
        let fixed = LimitOverrides {
            max_sockets: Some(2),
            ..LimitOverrides::default()
        };
        assert_eq!(fixed.apply(bad_base).unwrap().max_sockets, 2);
    }

    #[test]
    fn memory_and_buffered_total_are_checked() {
        for (limits, limit, value, why, fix) in [
            (
                Limits {
                    max_buffered_total: 0,
                    ..Limits::default()
                },
                Limit::MaxBufferedTotal,
                0,
                "ENOBUFS",
                "at least 1",
            ),
            (
                Limits {
                    max_memory: 0,
                    ..Limits::default()
                },
                Limit::MaxMemory,
                0,
                "wasm page",
                "at least 65536",
            ),
            (
                Limits {
                    max_memory: WASM_PAGE - 1,
                    ..Limits::default()
                },
                Limit::MaxMemory,
                WASM_PAGE as u64 - 1,
                "no guest could even start",
                "at least 65536",
            ),
        ] {
            let e = limits.validate().unwrap_err();
            assert_eq!((e.limit(), e.value()), (limit, value), "{e}");
            assert!(e.reason().contains(why), "{e}");
            assert!(e.fix(limit.flag()).contains(fix), "{e}");
        }
        let one_page = Limits {
            max_memory: WASM_PAGE,
            max_buffered_total: 1,
            ..Limits::default()
        };
        assert_eq!(one_page.validate(), Ok(()));
        // Overrides: the same rules, and they apply and merge like the others.
        let bad = LimitOverrides {
            max_memory: Some(1),
            ..LimitOverrides::default()
        };
        assert_eq!(bad.validate().unwrap_err().limit(), Limit::MaxMemory);
        let file = LimitOverrides {
            max_memory: Some(32 << 20),
            max_buffered_total: Some(1 << 20),
            ..LimitOverrides::default()
        };
        let flags = LimitOverrides {
            max_memory: Some(16 << 20),
            ..LimitOverrides::default()
        };
        let limits = file.merge(flags).apply(Limits::default()).unwrap();
        assert_eq!(
            (limits.max_memory, limits.max_buffered_total),
            (16 << 20, 1 << 20)
        );
    }

    #[test]
    fn the_memory_limiter_counts_memories_and_tables_together() {
        use wasmtime::ResourceLimiter as _;
        let mut limiter = Limits {
            max_memory: 4 * WASM_PAGE,
            ..Limits::default()
        }
        .memory_limiter();
        assert_eq!(limiter.max(), 4 * WASM_PAGE);
        // Two memories of two pages each fill it.
        assert!(limiter.memory_growing(0, 2 * WASM_PAGE, None).unwrap());
        assert!(limiter.memory_growing(0, WASM_PAGE, None).unwrap());
        assert!(
            limiter
                .memory_growing(WASM_PAGE, 2 * WASM_PAGE, None)
                .unwrap()
        );
        assert_eq!(limiter.used(), 4 * WASM_PAGE);
        assert!(
            !limiter
                .memory_growing(2 * WASM_PAGE, 3 * WASM_PAGE, None)
                .unwrap()
        );
        assert!(!limiter.table_growing(0, 1, None).unwrap());
        assert!(!limiter.memory_growing(0, usize::MAX, None).unwrap());
        assert_eq!(limiter.used(), 4 * WASM_PAGE);

        // A growth wasmtime fails after the limiter allowed it is taken back.
        let mut limiter = Limits {
            max_memory: WASM_PAGE,
            ..Limits::default()
        }
        .memory_limiter();
        assert!(limiter.table_growing(0, 100, None).unwrap());
        assert_eq!(limiter.used(), 100 * TABLE_ELEMENT_BYTES);
        limiter
            .table_grow_failed(wasmtime::format_err!("no"))
            .unwrap();
        assert_eq!(limiter.used(), 0);
        assert!(limiter.memory_growing(0, WASM_PAGE, None).unwrap());
        assert!(!limiter.table_growing(0, 1, None).unwrap());
    }

    #[test]
    fn a_store_with_the_limiter_refuses_memory_grow() {
        use wasmtime::{Engine, Memory, MemoryType, Store};
        let limits = Limits {
            max_memory: 16 * WASM_PAGE,
            ..Limits::default()
        };
        let mut store = Store::new(&Engine::default(), limits.memory_limiter());
        store.limiter(|l| l);
        let memory = Memory::new(&mut store, MemoryType::new(8, None)).unwrap();
        assert_eq!(memory.grow(&mut store, 8).unwrap(), 8);
        assert!(memory.grow(&mut store, 1).is_err(), "grown past the limit");
        assert_eq!(memory.size(&store), 16);
        assert!(Memory::new(&mut store, MemoryType::new(1, None)).is_err());
    }

    #[test]
    fn limits_are_named_as_each_source_spells_them() {
        for limit in Limit::ALL {
            assert_eq!(
                limit.flag(),
                format!("--{}", limit.field().replace('_', "-"))
            );
            assert_eq!(limit.to_string(), limit.field());
        }
        assert_eq!(Limit::PinTtl.file_key(), "pin_ttl_secs");
        assert_eq!(Limit::Rate.file_key(), "rate");
        let e = Limit::Rate.check(0).unwrap_err();
        assert_eq!(
            e.explain("--rate", " "),
            "`--rate 0` would stall all traffic forever (rate is bytes per second): give --rate \
             a value of at least 1"
        );
    }
}
