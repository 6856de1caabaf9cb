//! The capability policy: which guest may connect, bind or resolve what.
//!
//! Deny by default. A [`Policy`] is a list of allow rules and a list of deny rules; a use is
//! granted when some allow rule matches it and no deny rule does (deny beats allow). Every
//! check happens before any syscall, packet or DNS query.
//!
//! Rules have a text form, used by the CLI (`--allow RULE`, `--deny RULE`):
//!
//! ```text
//! RULE  = connect=HOST:PORTS | bind=HOST:PORTS | resolve=NAME
//! HOST  = IPv4 literal | IPv4 CIDR | [IPv6 literal] | [IPv6 CIDR] | *        (* = any address)
//! PORTS = N | N-M (inclusive) | *                                             (* = 0-65535)
//! NAME  = exact.name | *.suffix | *              (*.suffix matches names below suffix only)
//! ```
//!
//! `connect` rules also grant `sendto` destinations of datagram sockets; `bind` rules also grant
//! `listen` on an unbound socket (checked as a bind of the wildcard address, port 0).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use cap_std::AmbientAuthority;
use ipnet::IpNet;

/// A use of the network a guest asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Use {
    /// An outbound TCP connection, UDP default peer, or UDP destination.
    Connect,
    /// A local address to bind (explicitly, or implicitly by `listen`).
    Bind,
    /// A host name lookup.
    Resolve,
}

impl Use {
    /// The rule keyword of this use.
    pub fn keyword(self) -> &'static str {
        match self {
            Use::Connect => "connect",
            Use::Bind => "bind",
            Use::Resolve => "resolve",
        }
    }
}

/// An inclusive range of ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    first: u16,
    last: u16,
}

impl Ports {
    /// Every port, 0-65535.
    pub const ANY: Ports = Ports {
        first: 0,
        last: u16::MAX,
    };

    /// The ports `first..=last`; `None` if `first > last`.
    pub fn range(first: u16, last: u16) -> Option<Ports> {
        (first <= last).then_some(Ports { first, last })
    }

    /// One port.
    pub fn one(port: u16) -> Ports {
        Ports {
            first: port,
            last: port,
        }
    }

    fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

/// The addresses a rule covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hosts {
    /// Every IPv4 and IPv6 address.
    Any,
    /// One network (a literal is a /32 or /128).
    Net(IpNet),
}

impl Hosts {
    fn contains(self, ip: IpAddr) -> bool {
        match self {
            Hosts::Any => true,
            Hosts::Net(net) => net.contains(&ip),
        }
    }
}

/// Host names a `resolve` rule covers. Names compare case-insensitively, without a final dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Names {
    /// Any name.
    Any,
    /// This name only.
    Exact(String),
    /// Names strictly below this suffix (`*.example.com` matches `a.example.com`, not `example.com`).
    Below(String),
}

impl Names {
    fn matches(&self, name: &str) -> bool {
        let name = normalize_name(name);
        match self {
            Names::Any => true,
            Names::Exact(exact) => name == *exact,
            Names::Below(suffix) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// One allow or deny rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// `connect=HOST:PORTS`.
    Connect(Hosts, Ports),
    /// `bind=HOST:PORTS`.
    Bind(Hosts, Ports),
    /// `resolve=NAME`.
    Resolve(Names),
}

impl Rule {
    fn matches_addr(&self, use_: Use, addr: SocketAddr) -> bool {
        let (hosts, ports) = match (self, use_) {
            (Rule::Connect(h, p), Use::Connect) | (Rule::Bind(h, p), Use::Bind) => (h, p),
            _ => return false,
        };
        ports.contains(addr.port()) && hosts.contains(addr.ip())
    }

    /// Deny rules also see through IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`), so an
    /// IPv4 deny rule cannot be bypassed by spelling the address in IPv6.
    fn matches_addr_canonical(&self, use_: Use, addr: SocketAddr) -> bool {
        let canonical = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        self.matches_addr(use_, addr) || self.matches_addr(use_, canonical)
    }

    fn matches_name(&self, name: &str) -> bool {
        matches!(self, Rule::Resolve(names) if names.matches(name))
    }
}

/// Why a rule did not parse. The message says what was wrong and how to write it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad rule `{rule}`: {problem}")]
pub struct RuleError {
    rule: String,
    problem: String,
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Rule, RuleError> {
        let fail = |problem: String| RuleError {
            rule: text.to_string(),
            problem,
        };
        let (kind, value) = text.split_once('=').ok_or_else(|| {
            fail("expected USE=VALUE, e.g. connect=127.0.0.1:8080, bind=0.0.0.0:8000-8010 or resolve=*.example.com".into())
        })?;
        match kind.trim() {
            "connect" => {
                let (hosts, ports) = parse_host_ports(value).map_err(fail)?;
                Ok(Rule::Connect(hosts, ports))
            }
            "bind" => {
                let (hosts, ports) = parse_host_ports(value).map_err(fail)?;
                Ok(Rule::Bind(hosts, ports))
            }
            "resolve" => parse_names(value).map(Rule::Resolve).map_err(fail),
            other => Err(fail(format!(
                "unknown use `{other}`: expected connect, bind or resolve"
            ))),
        }
    }
}

fn parse_host_ports(value: &str) -> Result<(Hosts, Ports), String> {
    let (host, ports) = value.rsplit_once(':').ok_or_else(|| {
        "expected HOST:PORTS, e.g. 127.0.0.1:8080, 10.0.0.0/8:1000-2000, [::1]:* or *:443"
            .to_string()
    })?;
    Ok((parse_hosts(host)?, parse_ports(ports)?))
}

fn parse_hosts(host: &str) -> Result<Hosts, String> {
    if host == "*" {
        return Ok(Hosts::Any);
    }
    // IPv6 goes in brackets so that its colons are not read as the port separator:
    // `[::1]`, `[fd00::/8]` or `[fd00::]/8`.
    let text = if let Some(rest) = host.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{host}` opens `[` without closing `]`"))?;
        if after.is_empty() {
            inner.to_string()
        } else if after.starts_with('/') {
            format!("{inner}{after}")
        } else {
            return Err(format!("unexpected `{after}` after `]` in `{host}`"));
        }
    } else if host.contains(':') {
        return Err(format!("IPv6 addresses go in brackets: `[{host}]:PORTS`"));
    } else {
        host.to_string()
    };
    if text.contains('/') {
        let net: IpNet = text
            .parse()
            .map_err(|_| format!("`{text}` is not a CIDR network like 10.0.0.0/8 or [fd00::]/8"))?;
        if net.trunc() != net {
            return Err(format!(
                "`{text}` has host bits set below its prefix; did you mean {}?",
                net.trunc()
            ));
        }
        Ok(Hosts::Net(net))
    } else {
        let ip: IpAddr = text.parse().map_err(|_| {
            format!("`{text}` is not an IP literal or CIDR (host names go in resolve=NAME rules)")
        })?;
        Ok(Hosts::Net(IpNet::from(ip)))
    }
}

fn parse_ports(ports: &str) -> Result<Ports, String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("`{p}` is not a port number (0-65535)"))
    };
    match ports {
        "*" => Ok(Ports::ANY),
        "" => Err("missing ports after `:`: use N, N-M or *".into()),
        _ => match ports.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (port(a)?, port(b)?);
                Ports::range(a, b).ok_or_else(|| {
                    format!("port range {a}-{b} is empty: write the lower port first")
                })
            }
            None => Ok(Ports::one(port(ports)?)),
        },
    }
}

fn parse_names(value: &str) -> Result<Names, String> {
    let value = value.trim().to_ascii_lowercase();
    if value == "*" {
        return Ok(Names::Any);
    }
    let (below, name) = match value.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, value.as_str()),
    };
    // One final dot is the DNS root: `example.com.` is `example.com`.
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || !name.split('.').all(valid_label) {
        return Err(format!(
            "`{value}` is not a host name: expected an exact name (api.example.com), *.suffix or *"
        ));
    }
    Ok(if below {
        Names::Below(name.to_string())
    } else {
        Names::Exact(name.to_string())
    })
}

impl fmt::Display for Hosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hosts::Any => f.write_str("*"),
            Hosts::Net(IpNet::V4(n)) if n.prefix_len() == 32 => write!(f, "{}", n.addr()),
            Hosts::Net(IpNet::V6(n)) if n.prefix_len() == 128 => write!(f, "[{}]", n.addr()),
            Hosts::Net(IpNet::V4(n)) => write!(f, "{n}"),
            Hosts::Net(IpNet::V6(n)) => write!(f, "[{}]/{}", n.addr(), n.prefix_len()),
        }
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.first, self.last) {
            (0, u16::MAX) => f.write_str("*"),
            (a, b) if a == b => write!(f, "{a}"),
            (a, b) => write!(f, "{a}-{b}"),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Connect(h, p) => write!(f, "connect={h}:{p}"),
            Rule::Bind(h, p) => write!(f, "bind={h}:{p}"),
            Rule::Resolve(Names::Any) => f.write_str("resolve=*"),
            Rule::Resolve(Names::Exact(n)) => write!(f, "resolve={n}"),
            Rule::Resolve(Names::Below(n)) => write!(f, "resolve=*.{n}"),
        }
    }
}

/// The outcome of a policy check: a value that says which rule decided, not a bool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Granted by this allow rule.
    Allowed(Rule),
    /// Refused by this deny rule (deny beats allow).
    DeniedBy(Rule),
    /// No allow rule covers it (the default).
    NotGranted,
}

impl Decision {
    /// Whether the use may go ahead.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed(_))
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allowed(rule) => write!(f, "allowed by {rule}"),
            Decision::DeniedBy(rule) => write!(f, "denied by {rule}"),
            Decision::NotGranted => f.write_str("denied: no rule grants it"),
        }
    }
}

/// A guest's network grants. [`Policy::default`] denies everything.
///
/// A `Policy` is plain data and cheap to share (`Arc`) between the guests it applies to.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

impl Policy {
    /// A policy that grants nothing.
    pub fn deny_all() -> Policy {
        Policy::default()
    }

    /// Starts an empty (deny-all) policy.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    /// Checks a use of a socket address (`Use::Connect` or `Use::Bind`).
    pub fn check_addr(&self, use_: Use, addr: SocketAddr) -> Decision {
        if let Some(rule) = self
            .deny
            .iter()
            .find(|r| r.matches_addr_canonical(use_, addr))
        {
            return Decision::DeniedBy(rule.clone());
        }
        match self.allow.iter().find(|r| r.matches_addr(use_, addr)) {
            Some(rule) => Decision::Allowed(rule.clone()),
            None => Decision::NotGranted,
        }
    }

    /// Checks a host name lookup.
    pub fn check_name(&self, name: &str) -> Decision {
        if let Some(rule) = self.deny.iter().find(|r| r.matches_name(name)) {
            return Decision::DeniedBy(rule.clone());
        }
        match self.allow.iter().find(|r| r.matches_name(name)) {
            Some(rule) => Decision::Allowed(rule.clone()),
            None => Decision::NotGranted,
        }
    }

    /// The allow rules, in order.
    pub fn allowed(&self) -> &[Rule] {
        &self.allow
    }

    /// The deny rules, in order.
    pub fn denied(&self) -> &[Rule] {
        &self.deny
    }
}

/// Builds a [`Policy`] from rules.
#[derive(Debug, Default)]
pub struct PolicyBuilder {
    policy: Policy,
}

impl PolicyBuilder {
    /// Grants what `rule` covers.
    ///
    /// # Ambient Authority
    ///
    /// This widens the guest's access to the host's network from the ambient authority of the
    /// host process, so it takes cap-std's [`AmbientAuthority`] token
    /// (`cap_std::ambient_authority()`) to make that visible at the call site.
    pub fn allow(mut self, rule: Rule, _ambient: AmbientAuthority) -> Self {
        self.policy.allow.push(rule);
        self
    }

    /// Refuses what `rule` covers, whatever the allow rules say. Narrowing needs no authority.
    pub fn deny(mut self, rule: Rule) -> Self {
        self.policy.deny.push(rule);
        self
    }

    /// The policy.
    pub fn build(self) -> Policy {
        self.policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;

    fn rule(s: &str) -> Rule {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_documented_form_parses_and_prints_back() {
        for text in [
            "connect=127.0.0.1:8080",
            "connect=10.0.0.0/8:1000-2000",
            "connect=[::1]:*",
            "connect=[fd00::]/8:443",
            "connect=*:443",
            "bind=0.0.0.0:8000-8010",
            "bind=127.0.0.1:*",
            "resolve=localhost",
            "resolve=*.example.com",
            "resolve=*",
        ] {
            assert_eq!(rule(text).to_string(), text);
        }
        assert_eq!(
            rule("connect=[fd00::/8]:443").to_string(),
            "connect=[fd00::]/8:443"
        );
        assert_eq!(
            rule("resolve=Example.COM.").to_string(),
            "resolve=example.com"
        );
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (text, needle) in [
            ("connect", "expected USE=VALUE"),
            ("open=1.2.3.4:80", "unknown use"),
            ("connect=1.2.3.4", "expected HOST:PORTS"),
            ("connect=::1:80", "brackets"),
            ("connect=[::1:80", "without closing"),
            ("connect=example.com:80", "not an IP literal"),
            ("connect=10.0.0.1/8:80", "host bits"),
            ("connect=1.2.3.4:70000", "not a port"),
            ("connect=1.2.3.4:90-80", "empty"),
            ("connect=1.2.3.4:", "missing ports"),
            ("resolve=bad name", "not a host name"),
            ("resolve=*.", "not a host name"),
        ] {
            let err = text.parse::<Rule>().unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn deny_by_default() {
        let p = Policy::deny_all();
        assert_eq!(
            p.check_addr(Use::Connect, sa("127.0.0.1:80")),
            Decision::NotGranted
        );
        assert_eq!(p.check_name("localhost"), Decision::NotGranted);
    }

    #[test]
    fn port_ranges_are_inclusive_and_uses_separate() {
        let p = Policy::builder()
            .allow(rule("connect=127.0.0.1:8000-8010"), ambient_authority())
            .build();
        assert!(
            p.check_addr(Use::Connect, sa("127.0.0.1:8000"))
                .is_allowed()
        );
        assert!(
            p.check_addr(Use::Connect, sa("127.0.0.1:8010"))
                .is_allowed()
        );
        assert!(
            !p.check_addr(Use::Connect, sa("127.0.0.1:8011"))
                .is_allowed()
        );
        assert!(
            !p.check_addr(Use::Connect, sa("127.0.0.2:8005"))
                .is_allowed()
        );
        assert!(!p.check_addr(Use::Bind, sa("127.0.0.1:8005")).is_allowed());
    }

    #[test]
    fn deny_beats_allow_even_through_v4_mapped_spelling() {
        let p = Policy::builder()
            .allow(rule("connect=*:*"), ambient_authority())
            .deny(rule("connect=127.0.0.0/8:*"))
            .build();
        assert!(matches!(
            p.check_addr(Use::Connect, sa("127.0.0.1:80")),
            Decision::DeniedBy(_)
        ));
        assert!(matches!(
            p.check_addr(Use::Connect, sa("[::ffff:127.0.0.1]:80")),
            Decision::DeniedBy(_)
        ));
        assert!(p.check_addr(Use::Connect, sa("10.1.2.3:80")).is_allowed());
    }

    #[test]
    fn name_patterns() {
        let p = Policy::builder()
            .allow(rule("resolve=*.example.com"), ambient_authority())
            .allow(rule("resolve=localhost"), ambient_authority())
            .deny(rule("resolve=evil.example.com"))
            .build();
        assert!(p.check_name("a.example.com").is_allowed());
        assert!(p.check_name("A.B.Example.com.").is_allowed());
        assert!(!p.check_name("example.com").is_allowed());
        assert!(!p.check_name("notexample.com").is_allowed());
        assert!(!p.check_name("evil.example.com").is_allowed());
        assert!(p.check_name("LOCALHOST").is_allowed());
    }
}
