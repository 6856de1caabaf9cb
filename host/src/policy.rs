//! The capability policy: which guest may do what on the network.
//!
//! Deny by default. A [`Policy`] holds allow rules and deny rules; a use is granted when some
//! allow rule matches it and no deny rule does (deny beats allow). Every check happens before
//! the syscall, packet or DNS query it guards, and its outcome is a [`Decision`] that names
//! the rule (or the absence of one) that decided.
//!
//! # Uses
//!
//! | use | checked on | address checked |
//! |---|---|---|
//! | `resolve` | `getaddrinfo` of a name | the name |
//! | `connect` | TCP connect, UDP connect (default peer) | the destination |
//! | `send` | every UDP datagram (`sendto`, `send` on a connected UDP socket) | the destination |
//! | `bind` | an explicit `bind` | the local address |
//! | `autobind` | the implicit bind of `connect`/`listen`/`sendto` on an unbound socket | the wildcard, port 0 |
//! | `listen` | `listen` | the local address |
//! | `accept` | each inbound TCP connection | the peer |
//! | `recv` | each inbound UDP datagram | the sender |
//! | `tls` | (allow only) TCP connect, on condition of verified TLS; failed handshakes | the destination |
//!
//! An `autobind` is granted with the use that causes it; only deny rules apply to it on its
//! own, so `deny bind=...` does not break outbound connects while `deny autobind=...` can
//! still forbid them. An inbound connection or datagram that is not granted is closed or
//! dropped without waking the guest.
//!
//! # TLS rules
//!
//! A `tls` rule (`tls=*.example.com:443`, `tls=127.0.0.1:8443`) grants `connect` to what it
//! covers on one condition: the connection carries TLS, run by the host ([`crate::tls`]),
//! with the server's certificate verified. Until the guest starts TLS on it, every read and
//! write of such a connection fails with EACCES, so no plaintext crosses it. The certificate is verified whatever the guest asks (`cert_reqs=CERT_NONE` does not
//! turn it off), and for a rule by name against the name the rule grants (the name the
//! address is pinned to), whatever `server_hostname` the guest passes; under a rule by
//! address or class, against the guest's `server_hostname` if the guest is granted that name,
//! else the name it looked the address up by, else the address. A handshake that fails is
//! refused and audited with the use `tls` and a [`Decision::TlsRefused`] naming the reason.
//!
//! - **A plain grant wins**: where a `connect` rule covers the same destination too, the
//!   connection is granted by that rule (the wider grant) and needs no TLS.
//! - **Allow only**: a deny list refuses `tls` rules ([`parse_deny_rules`], policy files):
//!   deny `connect=HOST:PORTS` instead, which also refuses everything a `tls` rule grants.
//!   [`PolicyBuilder::deny`] takes a `tls` rule as the `connect` rule for the same hosts and
//!   ports.
//! - A `tls` rule by name grants the lookup of its names, as a `connect` rule by name does,
//!   and matches only addresses pinned to them.
//! - A `tls` rule grants nothing but `connect`: no `send`, `bind`, `listen`, `accept` or `recv`.
//!
//! # Rule text
//!
//! ```text
//! RULE  = USES=HOST:PORTS | resolve=NAME
//! USES  = USE[,USE]...                       e.g. bind,listen=127.0.0.1:8000
//! USE   = connect | send | bind | autobind | listen | accept | recv
//!       | tls                                allow rules only: connect over verified TLS
//! HOST  = 127.0.0.1 | 10.0.0.0/8 | [::1] | [fd00::]/8     literal or CIDR (IPv6 in brackets)
//!       | loopback | private | link-local | metadata | multicast | any | *   a class
//!       | api.example.com | *.example.com   a name grant: the addresses the resolver returned
//! PORTS = N | N-M | *                        ranges inclusive; * is 0-65535
//! NAME  = api.example.com | *.example.com | *
//! ```
//!
//! - Classes: `loopback` 127.0.0.0/8, ::1; `private` RFC 1918 (10/8, 172.16/12, 192.168/16),
//!   CGNAT 100.64/10 and ULA fc00::/7; `link-local` 169.254/16, fe80::/10; `metadata`
//!   169.254.169.254 and fd00:ec2::254; `multicast` 224/4, ff00::/8; `any` (or `*`) every
//!   IPv4 and IPv6 address.
//! - `*.example.com` matches names strictly below `example.com`, not `example.com` itself.
//!   Names compare case-insensitively, without a final dot.
//! - A name grant (`connect=*.example.com:443`) also grants resolving the names it covers. It
//!   matches an address only while that address is pinned to a matching name: this guest's
//!   lookup of the name returned it, within the record's lifetime (capped by
//!   `Limits::pin_ttl`). An answer that later points elsewhere (DNS rebinding) is connectable
//!   only if it too came from a granted name, and the deny rules still apply to it.
//!
//! The grammar is strict, so that no rule silently means something else:
//!
//! - **No whitespace** anywhere in a rule (`connect= loopback:*`, `bind, listen=...` are
//!   refused, saying where the space is).
//! - **Keywords**: classes and `any` are matched case-insensitively (`Loopback` is the class
//!   `loopback`); uses are lower case (`Connect` is refused with a "did you mean"). A host or
//!   name spelt like a class keyword up to case, `-`/`_` and final dots (`link_local`,
//!   `linklocal`, `metadata.`) is refused with "did you mean `link-local`?", never read as a
//!   host name; so is a `resolve` name spelt like a class (`resolve=any` suggests
//!   `resolve=*`).
//! - **Names** must be valid DNS names ([`crate::addr::is_host_name`], the host's one name
//!   check), with at most one final dot, and are kept in lower case without it.
//! - **Deny rules do not take host names.** `deny connect=localhost:*` is refused
//!   ([`parse_deny_rules`], policy files): a name stands for the addresses a lookup
//!   returned, and a guest can use the same address as a literal or reach it through another
//!   name, so the rule would deny less than it says. Deny by address or class
//!   (`connect=127.0.0.1:*`, `connect=loopback:*`), and refuse the lookup itself with
//!   `resolve=localhost`. Where such a rule is taken without that check
//!   ([`PolicyBuilder::deny`], [`Policy::from_texts`]), it fails closed: it refuses its use
//!   on its ports for every address, since a name may stand for any address.
//! - **Printing parses back**: a rule prints (`Display`, and so `usocket policy check`) in
//!   its canonical form, which parses to the same rule.
//!
//! # IPv6 spellings of IPv4 addresses
//!
//! An IPv6 *alias* of an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-translated
//! `::ffff:0:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96` and
//! `64:ff9b:1::/48`; see [`crate::addr::Embedding`]) is that IPv4 address to the policy, on
//! both sides:
//!
//! - **In rules**, a literal or network made only of aliases is parsed as, kept as and
//!   printed as the IPv4 address or network they carry: `[::ffff:127.0.0.1]` is `127.0.0.1`,
//!   `[64:ff9b::a9fe:a9fe]` is `169.254.169.254`, `[::ffff:10.0.0.0]/104` is `10.0.0.0/8`, and
//!   a whole alias range (`[::ffff:0:0]/96`, `[64:ff9b::]/96`) is `0.0.0.0/0`. Networks that
//!   merely contain aliases (`[::]/0`) stay IPv6 networks.
//! - **In requests**, deny rules match the address and every IPv4 address it carries
//!   ([`spellings`]); allow rules match the address exactly as given. So a deny rule for
//!   `127.0.0.1` refuses `::ffff:127.0.0.1` and `64:ff9b::7f00:1`, and one written
//!   `[::ffff:127.0.0.1]` refuses `127.0.0.1`; but an allow rule for `127.0.0.1` grants
//!   `127.0.0.1` only: to the kernel an IPv6 destination that embeds an IPv4 address is an
//!   IPv6 address (our IPv6 sockets are IPV6_V6ONLY), routed as such, possibly off the
//!   machine (`::127.0.0.1` and `64:ff9b::7f00:1` are, `::ffff:127.0.0.1` is refused by the
//!   kernel), so an IPv4 grant never covers it.
//! - **6to4** (`2002:aabb:ccdd::/48`) is the IPv6 network behind the IPv4 address a.b.c.d,
//!   not a.b.c.d: deny rules for a.b.c.d refuse it too, allow rules for a.b.c.d do not grant
//!   it, and a rule written in 6to4 is refused (write the IPv4 address).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use cap_std::AmbientAuthority;
use ipnet::IpNet;

/// A use of the network a guest asks for (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Use {
    /// A host name lookup.
    Resolve,
    /// An outbound TCP connection or a UDP default peer.
    Connect,
    /// The destination of a UDP datagram.
    Send,
    /// An explicit bind of a local address.
    Bind,
    /// The implicit bind of an unbound socket by connect, listen or sendto.
    AutoBind,
    /// Listening on a local address.
    Listen,
    /// An inbound TCP connection, by its peer address.
    Accept,
    /// An inbound UDP datagram, by its sender.
    Recv,
    /// An outbound TCP connection that must carry TLS verified for the granted name (a rule
    /// of this use grants `connect` on that condition; audit events of TLS handshakes that
    /// fail carry it too).
    Tls,
}

impl Use {
    /// Every use, in rule-keyword order.
    pub const ALL: [Use; 9] = [
        Use::Resolve,
        Use::Connect,
        Use::Send,
        Use::Bind,
        Use::AutoBind,
        Use::Listen,
        Use::Accept,
        Use::Recv,
        Use::Tls,
    ];

    /// The rule keyword of this use.
    pub fn keyword(self) -> &'static str {
        match self {
            Use::Resolve => "resolve",
            Use::Connect => "connect",
            Use::Send => "send",
            Use::Bind => "bind",
            Use::AutoBind => "autobind",
            Use::Listen => "listen",
            Use::Accept => "accept",
            Use::Recv => "recv",
            Use::Tls => "tls",
        }
    }

    fn from_keyword(word: &str) -> Option<Use> {
        Use::ALL.into_iter().find(|u| u.keyword() == word)
    }

    /// How [`Rule::describe`] words this use.
    fn verb(self) -> &'static str {
        match self {
            Use::Resolve => "resolving",
            Use::Connect => "connecting to",
            Use::Send => "sending datagrams to",
            Use::Bind => "binding",
            Use::AutoBind => "implicitly binding",
            Use::Listen => "listening on",
            Use::Accept => "accepting connections from",
            Use::Recv => "receiving datagrams from",
            Use::Tls => "connecting to",
        }
    }
}

/// A named class of addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// 127.0.0.0/8 and ::1.
    Loopback,
    /// RFC 1918, CGNAT (100.64.0.0/10) and ULA (fc00::/7).
    Private,
    /// 169.254.0.0/16 and fe80::/10.
    LinkLocal,
    /// Cloud metadata endpoints: 169.254.169.254 and fd00:ec2::254.
    Metadata,
    /// 224.0.0.0/4 and ff00::/8.
    Multicast,
}

impl Class {
    const ALL: [Class; 5] = [
        Class::Loopback,
        Class::Private,
        Class::LinkLocal,
        Class::Metadata,
        Class::Multicast,
    ];

    /// The rule keyword of this class.
    pub fn keyword(self) -> &'static str {
        match self {
            Class::Loopback => "loopback",
            Class::Private => "private",
            Class::LinkLocal => "link-local",
            Class::Metadata => "metadata",
            Class::Multicast => "multicast",
        }
    }

    /// Whether `ip` (exactly as given) is in this class.
    pub fn contains(self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Class::Loopback, ip) => ip.is_loopback(),
            (Class::Private, IpAddr::V4(v4)) => v4.is_private() || in_v4(v4, [100, 64, 0, 0], 10),
            (Class::Private, IpAddr::V6(v6)) => v6.segments()[0] & 0xfe00 == 0xfc00,
            (Class::LinkLocal, IpAddr::V4(v4)) => v4.is_link_local(),
            (Class::LinkLocal, IpAddr::V6(v6)) => v6.segments()[0] & 0xffc0 == 0xfe80,
            (Class::Metadata, IpAddr::V4(v4)) => v4 == Ipv4Addr::new(169, 254, 169, 254),
            (Class::Metadata, IpAddr::V6(v6)) => {
                v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
            }
            (Class::Multicast, ip) => ip.is_multicast(),
        }
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u8) -> bool {
    ipnet::Ipv4Net::new(Ipv4Addr::from(net), prefix).is_ok_and(|n| n.contains(&ip))
}

pub use crate::addr::spellings;

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

/// Host names a rule covers. Names compare case-insensitively, without a final dot.
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
        let name = crate::addr::normalize_name(name);
        match self {
            Names::Any => true,
            Names::Exact(exact) => name == *exact,
            Names::Below(suffix) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

/// The addresses a rule covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hosts {
    /// Every IPv4 and IPv6 address (`any` or `*`).
    Any,
    /// One network (a literal is a /32 or /128).
    Net(IpNet),
    /// A class of addresses.
    Class(Class),
    /// The addresses this guest's resolver lookups of matching names returned (pinned).
    Name(Names),
}

impl Hosts {
    fn contains(&self, ip: IpAddr, pinned_names: &[String]) -> bool {
        match self {
            Hosts::Any => true,
            Hosts::Net(net) => net.contains(&ip),
            Hosts::Class(class) => class.contains(ip),
            Hosts::Name(names) => pinned_names.iter().any(|n| names.matches(n)),
        }
    }
}

/// One allow or deny rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// `USE=HOST:PORTS`.
    Addr {
        /// The use it covers (never `Use::Resolve`).
        use_: Use,
        /// The addresses.
        hosts: Hosts,
        /// The ports.
        ports: Ports,
    },
    /// `resolve=NAME`.
    Resolve(Names),
}

/// One use of an address to decide: what, where, and the names the address is pinned to.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The use.
    pub use_: Use,
    /// The address (destination, local address, peer or sender, by use).
    pub addr: SocketAddr,
    /// Names whose lookup by this guest returned `addr` and whose pin has not expired.
    pub pinned_names: &'a [String],
}

impl Rule {
    /// Whether this allow rule grants `req`, for the request's address or the IPv4 address it
    /// is an alias of, `ip`.
    fn matches(&self, req: &Request<'_>, ip: IpAddr) -> bool {
        match self {
            Rule::Addr { use_, hosts, ports } => {
                (*use_ == req.use_ || (*use_ == Use::Tls && req.use_ == Use::Connect))
                    && ports.contains(req.addr.port())
                    && hosts.contains(ip, req.pinned_names)
            }
            Rule::Resolve(_) => false,
        }
    }

    /// Whether this deny rule refuses `req`, whose address stands for `spellings`. A rule
    /// that names hosts by name (which the parsers refuse in deny lists, but
    /// [`PolicyBuilder::deny`] takes) refuses its use on its ports for every address: a name
    /// may stand for any address.
    fn denies(&self, req: &Request<'_>, spellings: &[IpAddr]) -> bool {
        match self {
            Rule::Addr {
                use_,
                hosts: Hosts::Name(_),
                ports,
            } => *use_ == req.use_ && ports.contains(req.addr.port()),
            _ => spellings.iter().any(|ip| self.matches(req, *ip)),
        }
    }

    /// Of `pinned` (the names an address is pinned to), those this rule grants by name.
    pub(crate) fn granted_names(&self, pinned: &[String]) -> Vec<String> {
        match self {
            Rule::Addr {
                hosts: Hosts::Name(names),
                ..
            } => pinned
                .iter()
                .filter(|n| names.matches(n))
                .cloned()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The use of an address rule (`None` for `resolve=`).
    pub fn use_(&self) -> Option<Use> {
        match self {
            Rule::Addr { use_, .. } => Some(*use_),
            Rule::Resolve(_) => None,
        }
    }

    /// Whether this is an address rule that names hosts by name (`connect=localhost:*`).
    pub fn names_hosts(&self) -> bool {
        matches!(
            self,
            Rule::Addr {
                hosts: Hosts::Name(_),
                ..
            }
        )
    }

    /// The rule in the form the parsers give and the policy keeps: names in lower case
    /// without a final dot, `Hosts::Name(Names::Any)` as `Hosts::Any`, and a network of IPv6
    /// aliases of IPv4 addresses as the IPv4 network (see the module docs). Printing a
    /// canonical rule and parsing the text gives the rule back.
    pub fn canonical(&self) -> Rule {
        let names = |names: &Names| match names {
            Names::Any => Names::Any,
            Names::Exact(n) => Names::Exact(crate::addr::normalize_name(n)),
            Names::Below(n) => Names::Below(crate::addr::normalize_name(n)),
        };
        match self {
            Rule::Resolve(n) => Rule::Resolve(names(n)),
            Rule::Addr { use_, hosts, ports } => Rule::Addr {
                use_: *use_,
                hosts: match hosts {
                    Hosts::Name(Names::Any) => Hosts::Any,
                    Hosts::Name(n) => Hosts::Name(names(n)),
                    Hosts::Net(IpNet::V6(v6)) => match crate::addr::embedded_net(*v6) {
                        Some((v4, form)) if form.is_alias() => Hosts::Net(IpNet::V4(v4)),
                        _ => Hosts::Net(IpNet::V6(v6.trunc())),
                    },
                    Hosts::Net(IpNet::V4(v4)) => Hosts::Net(IpNet::V4(v4.trunc())),
                    other => other.clone(),
                },
                ports: *ports,
            },
        }
    }

    /// Whether this rule lets a guest look `name` up: a `resolve` rule, or a name grant.
    fn grants_name(&self, name: &str) -> bool {
        match self {
            Rule::Resolve(names)
            | Rule::Addr {
                hosts: Hosts::Name(names),
                ..
            } => names.matches(name),
            Rule::Addr { .. } => false,
        }
    }

    fn denies_name(&self, name: &str) -> bool {
        matches!(self, Rule::Resolve(names) if names.matches(name))
    }

    /// Whether this deny rule refuses `use_` of every address `name` could resolve to.
    fn denies_every_use_of(&self, use_: Use, _name: &str) -> bool {
        match self {
            Rule::Addr {
                use_: u,
                hosts,
                ports,
            } if *u == use_ && *ports == Ports::ANY => match hosts {
                // A name in a deny rule stands for every address (see `denies`).
                Hosts::Any | Hosts::Name(_) => true,
                Hosts::Net(_) | Hosts::Class(_) => false,
            },
            _ => false,
        }
    }

    /// The rule in plain words, e.g. "connecting to 127.0.0.1 on port 8080".
    pub fn describe(&self) -> String {
        match self {
            Rule::Resolve(Names::Any) => "resolving any host name".into(),
            Rule::Resolve(Names::Exact(n)) => format!("resolving the host name {n}"),
            Rule::Resolve(Names::Below(n)) => {
                format!("resolving host names below {n} (not {n} itself)")
            }
            Rule::Addr { use_, hosts, ports } => {
                let place = match hosts {
                    Hosts::Any => "any address".to_string(),
                    Hosts::Net(net) if net.prefix_len() == net.max_prefix_len() => {
                        net.addr().to_string()
                    }
                    Hosts::Net(net) => format!("addresses in {net}"),
                    Hosts::Class(c) => format!("{} addresses", c.keyword()),
                    Hosts::Name(Names::Any) => "the addresses any host name resolved to".into(),
                    Hosts::Name(Names::Exact(n)) => format!("the addresses {n} resolved to"),
                    Hosts::Name(Names::Below(n)) => {
                        format!("the addresses names below {n} resolved to")
                    }
                };
                let ports = match (ports.first, ports.last) {
                    (0, u16::MAX) => "any port".to_string(),
                    (a, b) if a == b => format!("port {a}"),
                    (a, b) => format!("ports {a} to {b}"),
                };
                let condition = match (*use_, hosts) {
                    (Use::Tls, Hosts::Name(Names::Exact(n))) => {
                        format!(", only over TLS with a certificate valid for {n}")
                    }
                    (Use::Tls, Hosts::Name(_)) => {
                        ", only over TLS with a certificate valid for the name granted".into()
                    }
                    (Use::Tls, _) => ", only over TLS with a verified certificate".into(),
                    _ => String::new(),
                };
                format!("{} {place} on {ports}{condition}", use_.verb())
            }
        }
    }
}

/// Why a rule did not parse. The message says what was wrong and how to write it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad rule `{rule}`: {problem}")]
pub struct RuleError {
    rule: String,
    problem: String,
}

/// Parses one rule text, which may name several uses (`bind,listen=127.0.0.1:8000`).
///
/// The grammar is strict (see the module docs): no whitespace anywhere, classes in any case
/// (`Loopback` is `loopback`), no host name spelt like a class (`link_local`, `metadata.`),
/// names that are valid DNS names, and IPv6 aliases of IPv4 addresses read as the IPv4
/// address. Deny lists take [`parse_deny_rules`], which also refuses host names.
pub fn parse_rules(text: &str) -> Result<Vec<Rule>, RuleError> {
    let fail = |problem: String| RuleError {
        rule: text.to_string(),
        problem,
    };
    if let Some((at, c)) = text
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_whitespace() || c.is_control())
    {
        let what = match c {
            ' ' => "a space".to_string(),
            '\t' => "a tab".to_string(),
            '\n' | '\r' => "a line break".to_string(),
            c => format!("the character U+{:04X}", u32::from(c)),
        };
        return Err(fail(format!(
            "{what} at character {}: a rule has no whitespace anywhere; write it as one word, \
             e.g. bind,listen=127.0.0.1:8000",
            at + 1
        )));
    }
    let (uses, value) = text.split_once('=').ok_or_else(|| {
        fail("expected USE=VALUE, e.g. connect=127.0.0.1:8080, bind,listen=0.0.0.0:8000-8010 or resolve=*.example.com".into())
    })?;
    let mut rules = Vec::new();
    for word in uses.split(',') {
        let use_ = Use::from_keyword(word).ok_or_else(|| {
            let all: Vec<&str> = Use::ALL.iter().map(|u| u.keyword()).collect();
            let hint = Use::from_keyword(&word.to_ascii_lowercase())
                .map(|u| format!(" (did you mean `{}`?)", u.keyword()))
                .unwrap_or_default();
            fail(format!(
                "unknown use `{word}`{hint}: expected one of {}",
                all.join(", ")
            ))
        })?;
        rules.push(match use_ {
            Use::Resolve => Rule::Resolve(parse_names(value, Place::Resolve).map_err(fail)?),
            _ => {
                let (hosts, ports) = parse_host_ports(value).map_err(fail)?;
                Rule::Addr { use_, hosts, ports }
            }
        });
    }
    Ok(rules)
}

/// Parses one rule text of a deny list: as [`parse_rules`], but a rule that names hosts by
/// name (`connect=localhost:*`, `connect=*.example.com:443`) is refused. A name stands for the
/// addresses some lookup returned, and a guest can use the same address as a literal (or
/// through another name), so such a rule would deny less than it says. Deny by address or
/// class, and refuse the lookup itself with `resolve=NAME`.
///
/// A `tls` rule is refused too: `tls` is an allow-only use. Deny `connect=HOST:PORTS`
/// instead, which also refuses what a `tls` rule grants.
pub fn parse_deny_rules(text: &str) -> Result<Vec<Rule>, RuleError> {
    let rules = parse_rules(text)?;
    if let Some(Rule::Addr { hosts, ports, .. }) = rules.iter().find(|r| r.use_() == Some(Use::Tls))
    {
        let instead = match hosts {
            // A name cannot be denied either: say what to write for one.
            Hosts::Name(_) => format!("connect=ADDRESS:{ports} or resolve={hosts}"),
            _ => format!("connect={hosts}:{ports}"),
        };
        return Err(RuleError {
            rule: text.to_string(),
            problem: format!(
                "`tls` is an allow-only use (it grants connect on condition of verified TLS), \
                 so a deny rule cannot be a tls rule: deny {instead} instead (a deny of \
                 connect also refuses every connection a tls rule grants)"
            ),
        });
    }
    if let Some(Rule::Addr {
        use_,
        hosts: Hosts::Name(names),
        ..
    }) = rules.iter().find(|r| r.names_hosts())
    {
        return Err(RuleError {
            rule: text.to_string(),
            problem: format!(
                "a deny rule cannot name hosts by name (`{}`): a guest could reach the same \
                 address as a literal or through another name. Deny by address or class \
                 instead (e.g. {u}=127.0.0.1:*, {u}=loopback:*, {u}=10.0.0.0/8:*), and refuse \
                 the lookup itself with resolve={}",
                Hosts::Name(names.clone()),
                Hosts::Name(names.clone()),
                u = use_.keyword(),
            ),
        });
    }
    Ok(rules)
}

impl FromStr for Rule {
    type Err = RuleError;

    /// One rule of one use; see [`parse_rules`] for texts with several uses.
    fn from_str(text: &str) -> Result<Rule, RuleError> {
        let mut rules = parse_rules(text)?;
        if rules.len() != 1 {
            return Err(RuleError {
                rule: text.to_string(),
                problem: "names several uses: split it into one rule per use".into(),
            });
        }
        Ok(rules.remove(0))
    }
}

fn parse_host_ports(value: &str) -> Result<(Hosts, Ports), String> {
    let (host, ports) = value.rsplit_once(':').ok_or_else(|| {
        "expected HOST:PORTS, e.g. 127.0.0.1:8080, 10.0.0.0/8:1000-2000, [::1]:*, loopback:* or *.example.com:443"
            .to_string()
    })?;
    Ok((parse_hosts(host)?, parse_ports(ports)?))
}

/// The keywords a host may be spelt as, with what they stand for.
fn host_keywords() -> impl Iterator<Item = (&'static str, Hosts)> {
    Class::ALL
        .into_iter()
        .map(|c| (c.keyword(), Hosts::Class(c)))
        .chain([("any", Hosts::Any)])
}

/// A text squashed as a misspelt keyword would be: lower case, without `-`, `_` or final
/// dots (`Link_Local.` -> `linklocal`).
fn squash(text: &str) -> String {
    text.trim_end_matches('.')
        .chars()
        .filter(|c| !matches!(c, '-' | '_'))
        .collect::<String>()
        .to_ascii_lowercase()
}

fn parse_hosts(host: &str) -> Result<Hosts, String> {
    if host == "*" {
        return Ok(Hosts::Any);
    }
    // Keywords in any case: `Loopback` is the class, never a host name.
    if let Some((_, hosts)) = host_keywords().find(|(k, _)| k.eq_ignore_ascii_case(host)) {
        return Ok(hosts);
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
                Hosts::Net(net.trunc())
            ));
        }
        return canonical_net(net, &text).map(Hosts::Net);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return canonical_net(IpNet::from(ip), &text).map(Hosts::Net);
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') || host.starts_with('[') {
        return Err(format!(
            "`{text}` is not an IP literal (write all four parts: 127.0.0.1) or a CIDR network"
        ));
    }
    match parse_names(&text, Place::Host)? {
        Names::Any => Ok(Hosts::Any),
        names => Ok(Hosts::Name(names)),
    }
}

/// A rule's network as the policy keeps it: one made of IPv6 aliases of IPv4 addresses is
/// the IPv4 network (`[::ffff:127.0.0.1]` is `127.0.0.1`); a 6to4 one is refused.
fn canonical_net(net: IpNet, text: &str) -> Result<IpNet, String> {
    let IpNet::V6(v6) = net else { return Ok(net) };
    match crate::addr::embedded_net(v6) {
        None => Ok(net),
        Some((v4, form)) if form.is_alias() => Ok(IpNet::V4(v4)),
        Some((v4, _)) => {
            let v4 = Hosts::Net(IpNet::V4(v4));
            Err(format!(
                "`{text}` is 6to4, the IPv6 network behind the IPv4 address {v4}: write {v4} \
                 instead (a deny rule for {v4} also refuses its 6to4 network; 6to4 itself \
                 cannot be granted)"
            ))
        }
    }
}

fn parse_ports(ports: &str) -> Result<Ports, String> {
    let port = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| p.parse::<u16>().ok())
            .flatten()
            .ok_or_else(|| format!("`{p}` is not a port number (0-65535)"))
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

/// Where a name is written: the HOST of an address rule, or the NAME of a `resolve` rule.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Host,
    Resolve,
}

fn parse_names(value: &str, place: Place) -> Result<Names, String> {
    if value == "*" {
        return Ok(Names::Any);
    }
    // A name spelt like a keyword is a mistake for the keyword, never a name.
    if let Some((keyword, _)) = host_keywords().find(|(k, _)| squash(k) == squash(value)) {
        return Err(match place {
            Place::Resolve if keyword == "any" => {
                format!("`{value}` is not a host name: did you mean `resolve=*` (any name)?")
            }
            Place::Resolve => format!(
                "`{value}` is spelt like the address class `{keyword}`, and resolve rules take \
                 host names, not classes: to refer to the class, write e.g. \
                 connect={keyword}:*"
            ),
            Place::Host => format!(
                "`{value}` is not a class or a host name: did you mean `{keyword}`? (a host \
                 name spelt like a class is refused)"
            ),
        });
    }
    let (below, name) = match value.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    // One final dot is the DNS root: `example.com.` is `example.com`.
    if !crate::addr::is_host_name(name) {
        return Err(format!(
            "`{value}` is not a host name: expected an exact name (api.example.com), *.suffix or *"
        ));
    }
    let name = crate::addr::normalize_name(name);
    Ok(if below {
        Names::Below(name)
    } else {
        Names::Exact(name)
    })
}

impl fmt::Display for Hosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hosts::Any => f.write_str("*"),
            Hosts::Class(c) => f.write_str(c.keyword()),
            Hosts::Name(Names::Any) => f.write_str("*"),
            Hosts::Name(Names::Exact(n)) => f.write_str(n),
            Hosts::Name(Names::Below(n)) => write!(f, "*.{n}"),
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
            Rule::Addr { use_, hosts, ports } => write!(f, "{}={hosts}:{ports}", use_.keyword()),
            Rule::Resolve(Names::Any) => f.write_str("resolve=*"),
            Rule::Resolve(Names::Exact(n)) => write!(f, "resolve={n}"),
            Rule::Resolve(Names::Below(n)) => write!(f, "resolve=*.{n}"),
        }
    }
}

/// The outcome of a policy check: which rule decided, not just a bool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Granted by this allow rule.
    Allowed(Rule),
    /// An implicit bind, granted with the use that caused it (no deny rule refused it).
    Implied,
    /// Refused by this deny rule (deny beats allow).
    DeniedBy(Rule),
    /// No allow rule covers it (the default).
    NotGranted,
    /// Decided by an embedder's own check ([`AddrCheck`]), named by its label.
    Checked {
        /// Whether the check let the use go ahead.
        allowed: bool,
        /// The check's label, as the embedder named it.
        by: Arc<str>,
    },
    /// A TLS handshake failed (a certificate not valid for the granted name, an unknown CA,
    /// a protocol error): the connection is refused for this reason.
    TlsRefused(String),
}

impl Decision {
    /// Whether the use may go ahead.
    pub fn is_allowed(&self) -> bool {
        match self {
            Decision::Allowed(_) | Decision::Implied => true,
            Decision::Checked { allowed, .. } => *allowed,
            Decision::DeniedBy(_) | Decision::NotGranted | Decision::TlsRefused(_) => false,
        }
    }

    /// The deciding rule, if one decided.
    pub fn rule(&self) -> Option<&Rule> {
        match self {
            Decision::Allowed(rule) | Decision::DeniedBy(rule) => Some(rule),
            Decision::Implied
            | Decision::NotGranted
            | Decision::Checked { .. }
            | Decision::TlsRefused(_) => None,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allowed(rule) => write!(f, "allowed by {rule}"),
            Decision::Implied => f.write_str("allowed with the use that binds implicitly"),
            Decision::DeniedBy(rule) => write!(f, "denied by {rule}"),
            Decision::NotGranted => f.write_str("denied: no rule grants it"),
            Decision::Checked { allowed: true, by } => write!(f, "allowed by {by}"),
            Decision::Checked { allowed: false, by } => write!(f, "denied by {by}"),
            Decision::TlsRefused(reason) => write!(f, "TLS handshake failed: {reason}"),
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
    dry_run: bool,
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

    /// A policy from rule texts (each may name several uses, see [`parse_rules`]).
    ///
    /// ```
    /// use usocket_host::policy::{Decision, Policy, Use};
    /// let policy = Policy::from_texts(
    ///     &["connect=*.example.com:443", "bind,listen=127.0.0.1:8000"],
    ///     &["connect=metadata:*"],
    ///     cap_std::ambient_authority(),
    /// )?;
    /// assert_eq!(policy.allowed().len(), 3);
    /// let metadata = "169.254.169.254:443".parse().unwrap();
    /// assert!(matches!(policy.check_addr(Use::Connect, metadata), Decision::DeniedBy(_)));
    /// # Ok::<(), usocket_host::policy::RuleError>(())
    /// ```
    ///
    /// # Ambient Authority
    ///
    /// The allow rules widen the guest's access from the ambient authority of the host
    /// process, as [`PolicyBuilder::allow`] does.
    ///
    /// # Deny rules by name
    ///
    /// The deny texts are parsed with [`parse_deny_rules`]: one that names hosts by name
    /// (`connect=localhost:*`) is an error saying to deny by address or class.
    pub fn from_texts(
        allow: &[impl AsRef<str>],
        deny: &[impl AsRef<str>],
        ambient: AmbientAuthority,
    ) -> Result<Policy, RuleError> {
        let mut builder = Policy::builder();
        for text in allow {
            for rule in parse_rules(text.as_ref())? {
                builder = builder.allow(rule, ambient);
            }
        }
        for text in deny {
            for rule in parse_deny_rules(text.as_ref())? {
                builder = builder.deny(rule);
            }
        }
        Ok(builder.build())
    }

    /// Decides a use of an address.
    pub fn check(&self, req: &Request<'_>) -> Decision {
        let spellings = spellings(req.addr.ip());
        if let Some(rule) = self.deny.iter().find(|r| r.denies(req, &spellings)) {
            return Decision::DeniedBy(rule.clone());
        }
        if req.use_ == Use::AutoBind {
            return Decision::Implied;
        }
        // Exactly as given: an IPv6 spelling of a granted IPv4 address is another destination
        // to the kernel (the fuzz harness saw `::127.0.0.1` leave the machine).
        let ip = req.addr.ip();
        // A plain grant is the wider one: a `tls` rule decides only where none matches.
        let mut matching = self.allow.iter().filter(|r| r.matches(req, ip));
        let first = matching.next();
        match first {
            Some(rule) if rule.use_() == Some(Use::Tls) => {
                let plain = matching.find(|r| r.use_() != Some(Use::Tls));
                Decision::Allowed(plain.unwrap_or(rule).clone())
            }
            Some(rule) => Decision::Allowed(rule.clone()),
            None => Decision::NotGranted,
        }
    }

    /// Decides a use of an address that no name is pinned to.
    pub fn check_addr(&self, use_: Use, addr: SocketAddr) -> Decision {
        self.check(&Request {
            use_,
            addr,
            pinned_names: &[],
        })
    }

    /// Decides a host name lookup.
    ///
    /// A name grant only grants the lookup if a deny rule does not refuse its use of that
    /// name on every port and address: a lookup that nothing could use is never made.
    pub fn check_name(&self, name: &str) -> Decision {
        if let Some(rule) = self.deny.iter().find(|r| r.denies_name(name)) {
            return Decision::DeniedBy(rule.clone());
        }
        let mut refused = None;
        for rule in self.allow.iter().filter(|r| r.grants_name(name)) {
            let wholly_denied = match rule {
                Rule::Addr { use_, .. } => {
                    // A tls rule grants connect (deny lists hold no tls rules).
                    let use_ = if *use_ == Use::Tls {
                        Use::Connect
                    } else {
                        *use_
                    };
                    self.deny.iter().find(|d| d.denies_every_use_of(use_, name))
                }
                Rule::Resolve(_) => None,
            };
            match wholly_denied {
                None => return Decision::Allowed(rule.clone()),
                Some(deny) => refused = refused.or(Some(deny)),
            }
        }
        match refused {
            Some(deny) => Decision::DeniedBy(deny.clone()),
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

    /// Whether refusals are only reported (`would-deny`), not enforced.
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }
}

/// What a guest's context asks before each use of the network. [`Policy`] (rules) is the
/// built-in one; [`AddrCheck`] wraps an embedder's closure; embedders may implement it
/// themselves (for example to consult their own service, or to combine checks).
///
/// `check` sees every use: `Use::AutoBind` with the wildcard address and port 0 for the
/// implicit bind of `connect`, `listen` or `sendto` on an unbound socket; `Use::Accept` and
/// `Use::Recv` with the peer of each inbound connection or datagram.
pub trait AddressPolicy: Send + Sync + 'static {
    /// Decides a use of an address.
    fn check(&self, req: &Request<'_>) -> Decision;

    /// Decides a host-name lookup (`getaddrinfo` of a name; literals are never asked about).
    fn check_name(&self, name: &str) -> Decision;

    /// Whether refusals are only reported (`would-deny`), not enforced.
    fn is_dry_run(&self) -> bool {
        false
    }
}

impl AddressPolicy for Policy {
    fn check(&self, req: &Request<'_>) -> Decision {
        Policy::check(self, req)
    }

    fn check_name(&self, name: &str) -> Decision {
        Policy::check_name(self, name)
    }

    fn is_dry_run(&self) -> bool {
        Policy::is_dry_run(self)
    }
}

/// An embedder's own address check, as wasmtime-wasi's `socket_addr_check`: a closure that
/// says yes or no to each use of an address. It grants no name lookups (a closure sees
/// addresses only): give guests names through [`Policy`] rules instead.
///
/// ```
/// use std::sync::Arc;
/// use usocket_host::policy::{AddrCheck, Use};
/// use usocket_host::UsocketCtx;
/// // Outbound connections to loopback port 8080 only.
/// let check = AddrCheck::new("loopback-8080", |use_, addr| {
///     use_ == Use::Connect && addr.ip().is_loopback() && addr.port() == 8080
///         || use_ == Use::AutoBind
/// });
/// let ctx = UsocketCtx::new("plugin", Arc::new(check));
/// # drop(ctx);
/// ```
///
/// # Ambient Authority
///
/// What the closure allows, it grants from the ambient authority of the host process.
pub struct AddrCheck<F> {
    label: Arc<str>,
    check: F,
}

impl<F> AddrCheck<F>
where
    F: Fn(Use, SocketAddr) -> bool + Send + Sync + 'static,
{
    /// A check named `label` (audit events say "allowed by LABEL" / "denied by LABEL").
    pub fn new(label: impl Into<Arc<str>>, check: F) -> Self {
        AddrCheck {
            label: label.into(),
            check,
        }
    }
}

impl<F> fmt::Debug for AddrCheck<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddrCheck")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl<F> AddressPolicy for AddrCheck<F>
where
    F: Fn(Use, SocketAddr) -> bool + Send + Sync + 'static,
{
    fn check(&self, req: &Request<'_>) -> Decision {
        Decision::Checked {
            allowed: (self.check)(req.use_, req.addr),
            by: self.label.clone(),
        }
    }

    fn check_name(&self, _name: &str) -> Decision {
        Decision::NotGranted
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
    ///
    /// The policy keeps the rule's [`Rule::canonical`] form.
    pub fn allow(mut self, rule: Rule, _ambient: AmbientAuthority) -> Self {
        self.policy.allow.push(rule.canonical());
        self
    }

    /// Refuses what `rule` covers, whatever the allow rules say. Narrowing needs no authority.
    ///
    /// The policy keeps the rule's [`Rule::canonical`] form. A rule that names hosts by name
    /// ([`Rule::names_hosts`]) is one [`parse_deny_rules`] refuses; given here anyway, it
    /// refuses its use on its ports for every address (and every lookup for that use, if it
    /// covers every port), since a name may stand for any address.
    ///
    /// A `tls` rule (which [`parse_deny_rules`] refuses: `tls` is an allow-only use) is kept
    /// as the `connect` rule for the same hosts and ports: refusing a connection refuses it
    /// with or without TLS.
    pub fn deny(mut self, rule: Rule) -> Self {
        let rule = match rule.canonical() {
            Rule::Addr {
                use_: Use::Tls,
                hosts,
                ports,
            } => Rule::Addr {
                use_: Use::Connect,
                hosts,
                ports,
            },
            rule => rule,
        };
        self.policy.deny.push(rule);
        self
    }

    /// Dry run: evaluate and report every decision, but let refused uses go ahead (audit
    /// events say `would-deny`). For rolling a policy out; never for untrusted guests.
    pub fn dry_run(mut self, on: bool) -> Self {
        self.policy.dry_run = on;
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

    fn policy(allow: &[&str], deny: &[&str]) -> Policy {
        Policy::from_texts(allow, deny, ambient_authority()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_documented_form_parses_and_prints_back() {
        for text in [
            "connect=127.0.0.1:8080",
            "connect=10.0.0.0/8:1000-2000",
            "connect=[::1]:*",
            "connect=[fd00::]/8:443",
            "connect=*:443",
            "send=loopback:53",
            "bind=0.0.0.0:8000-8010",
            "autobind=*:*",
            "listen=127.0.0.1:*",
            "accept=private:*",
            "recv=link-local:*",
            "connect=metadata:*",
            "connect=multicast:*",
            "connect=api.example.com:443",
            "connect=*.example.com:443",
            "resolve=localhost",
            "resolve=*.example.com",
            "resolve=*",
            "tls=*.example.com:443",
            "tls=api.example.com:443",
            "tls=127.0.0.1:8443",
            "tls=[::1]:8000-8010",
            "tls=loopback:*",
            "tls=*:443",
        ] {
            assert_eq!(rule(text).to_string(), text);
        }
        assert_eq!(
            rule("connect=[fd00::/8]:443").to_string(),
            "connect=[fd00::]/8:443"
        );
        assert_eq!(rule("connect=any:1").to_string(), "connect=*:1");
        assert_eq!(
            rule("resolve=Example.COM.").to_string(),
            "resolve=example.com"
        );
        let several = parse_rules("bind,listen,accept=127.0.0.1:80").unwrap();
        assert_eq!(several.len(), 3);
        assert_eq!(several[2].to_string(), "accept=127.0.0.1:80");
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (text, needle) in [
            ("connect", "expected USE=VALUE"),
            (
                "open=1.2.3.4:80",
                "unknown use `open`: expected one of resolve, connect",
            ),
            ("connect=1.2.3.4", "expected HOST:PORTS"),
            ("connect=::1:80", "brackets"),
            ("connect=[::1:80", "without closing"),
            ("connect=127.1:80", "write all four parts"),
            ("connect=10.0.0.1/8:80", "host bits"),
            ("connect=1.2.3.4:70000", "not a port"),
            ("connect=1.2.3.4:90-80", "empty"),
            ("connect=1.2.3.4:", "missing ports"),
            ("connect=bad name:80", "a space at character 12"),
            ("connect=bad!name:80", "not a host name"),
            ("resolve=bad name", "a space at character 12"),
            ("resolve=bad!name", "not a host name"),
            ("resolve=*.", "not a host name"),
            ("bind,listen=127.0.0.1:80", "names several uses"),
        ] {
            let err = text.parse::<Rule>().unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn describe_in_plain_words() {
        assert_eq!(
            rule("connect=127.0.0.1:8080").describe(),
            "connecting to 127.0.0.1 on port 8080"
        );
        assert_eq!(
            rule("accept=private:*").describe(),
            "accepting connections from private addresses on any port"
        );
        assert_eq!(
            rule("connect=*.example.com:443").describe(),
            "connecting to the addresses names below example.com resolved to on port 443"
        );
        assert_eq!(rule("resolve=*").describe(), "resolving any host name");
        assert_eq!(
            rule("tls=*.example.com:443").describe(),
            "connecting to the addresses names below example.com resolved to on port 443, \
             only over TLS with a certificate valid for the name granted"
        );
        assert_eq!(
            rule("tls=api.example.com:443").describe(),
            "connecting to the addresses api.example.com resolved to on port 443, only over \
             TLS with a certificate valid for api.example.com"
        );
        assert_eq!(
            rule("tls=127.0.0.1:8443").describe(),
            "connecting to 127.0.0.1 on port 8443, only over TLS with a verified certificate"
        );
    }

    #[test]
    fn a_tls_rule_grants_connect_and_the_decision_names_it() {
        let p = policy(&["tls=127.0.0.1:8443"], &[]);
        assert_eq!(
            p.check_addr(Use::Connect, sa("127.0.0.1:8443")),
            Decision::Allowed(rule("tls=127.0.0.1:8443"))
        );
        assert_eq!(
            p.check_addr(Use::Connect, sa("127.0.0.1:8444")),
            Decision::NotGranted
        );
        assert_eq!(
            p.check_addr(Use::Connect, sa("[::ffff:127.0.0.1]:8443")),
            Decision::NotGranted,
            "granted as written, as connect rules are"
        );
        // The implicit bind of that connect comes with it.
        assert_eq!(
            p.check_addr(Use::AutoBind, sa("0.0.0.0:0")),
            Decision::Implied
        );
    }

    #[test]
    fn a_plain_connect_rule_wins_over_a_tls_rule_for_the_same_address() {
        for (allow, plain) in [
            (["tls=127.0.0.1:8443", "connect=127.0.0.1:8443"], 1),
            (["connect=loopback:*", "tls=127.0.0.1:8443"], 0),
            (["tls=loopback:*", "connect=127.0.0.0/8:8000-9000"], 1),
        ] {
            let p = policy(&allow, &[]);
            assert_eq!(
                p.check_addr(Use::Connect, sa("127.0.0.1:8443")),
                Decision::Allowed(rule(allow[plain])),
                "{allow:?}"
            );
        }
        // Elsewhere, the tls rule still decides.
        let p = policy(&["tls=loopback:*", "connect=127.0.0.1:80"], &[]);
        assert_eq!(
            p.check_addr(Use::Connect, sa("127.0.0.1:443")),
            Decision::Allowed(rule("tls=loopback:*"))
        );
        // A plain rule of another use is no plain connect grant.
        let p = policy(&["tls=127.0.0.1:8443", "send=127.0.0.1:8443"], &[]);
        assert_eq!(
            p.check_addr(Use::Connect, sa("127.0.0.1:8443")),
            Decision::Allowed(rule("tls=127.0.0.1:8443"))
        );
    }

    #[test]
    fn deny_connect_beats_a_tls_allow() {
        let p = policy(&["tls=*:443"], &["connect=private:*"]);
        assert_eq!(
            p.check_addr(Use::Connect, sa("10.0.0.1:443")),
            Decision::DeniedBy(rule("connect=private:*"))
        );
        assert!(
            p.check_addr(Use::Connect, sa("93.184.216.34:443"))
                .is_allowed()
        );
        // A denied address in any IPv6 spelling stays denied.
        assert!(matches!(
            p.check_addr(Use::Connect, sa("[::ffff:10.0.0.1]:443")),
            Decision::DeniedBy(_)
        ));
    }

    #[test]
    fn deny_lists_refuse_tls_rules_and_say_to_deny_connect() {
        for (text, instead) in [
            ("tls=127.0.0.1:443", "deny connect=127.0.0.1:443 instead"),
            ("tls=loopback:*", "deny connect=loopback:* instead"),
            (
                "connect,tls=10.0.0.0/8:*",
                "deny connect=10.0.0.0/8:* instead",
            ),
            (
                "tls=*.example.com:443",
                "deny connect=ADDRESS:443 or resolve=*.example.com instead",
            ),
        ] {
            let err = parse_deny_rules(text).unwrap_err().to_string();
            assert!(err.contains("`tls` is an allow-only use"), "{err}");
            assert!(err.contains(instead), "{text}: {err}");
            assert!(
                err.contains("a deny of connect also refuses every connection a tls rule grants"),
                "{err}"
            );
            assert!(parse_rules(text).is_ok(), "an allow list takes {text}");
        }
        let err = Policy::from_texts(
            &["connect=*:*"],
            &["tls=127.0.0.1:443"],
            ambient_authority(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("allow-only"), "{err}");
    }

    #[test]
    fn a_tls_rule_given_to_the_builders_deny_is_the_connect_rule() {
        let p = Policy::builder()
            .allow(rule("connect=*:*"), ambient_authority())
            .allow(rule("tls=*:*"), ambient_authority())
            .deny(rule("tls=127.0.0.1:443"))
            .build();
        assert_eq!(p.denied(), [rule("connect=127.0.0.1:443")]);
        assert_eq!(
            p.check_addr(Use::Connect, sa("127.0.0.1:443")),
            Decision::DeniedBy(rule("connect=127.0.0.1:443"))
        );
        assert!(p.check_addr(Use::Connect, sa("127.0.0.1:80")).is_allowed());
        // By name, it stands for every address on its ports (as a connect rule by name does).
        let p = Policy::builder()
            .allow(rule("tls=*.example.com:443"), ambient_authority())
            .deny(rule("tls=bad.example.com:*"))
            .build();
        assert_eq!(p.denied(), [rule("connect=bad.example.com:*")]);
        let pinned = ["good.example.com".to_string()];
        assert!(matches!(
            p.check(&Request {
                use_: Use::Connect,
                addr: sa("93.184.216.34:443"),
                pinned_names: &pinned
            }),
            Decision::DeniedBy(_)
        ));
    }

    #[test]
    fn tls_rules_grant_nothing_but_connect() {
        let p = policy(&["tls=*:*", "tls=*.example.com:*"], &[]);
        let pinned = ["www.example.com".to_string()];
        for use_ in [Use::Send, Use::Bind, Use::Listen, Use::Accept, Use::Recv] {
            for pinned_names in [&[][..], &pinned[..]] {
                let req = Request {
                    use_,
                    addr: sa("127.0.0.1:443"),
                    pinned_names,
                };
                assert_eq!(p.check(&req), Decision::NotGranted, "{use_:?}");
            }
        }
        assert!(p.check_addr(Use::Connect, sa("127.0.0.1:443")).is_allowed());
        // Nor any lookup but of the names a tls rule by name covers.
        assert!(
            !policy(&["tls=*:*"], &[])
                .check_name("localhost")
                .is_allowed()
        );
    }

    #[test]
    fn a_tls_name_rule_grants_only_pinned_addresses_like_a_connect_name_rule() {
        let p = policy(&["tls=*.example.com:443"], &["connect=private:*"]);
        let addr = sa("93.184.216.34:443");
        let check = |addr, names: &[&str]| {
            let pinned: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            p.check(&Request {
                use_: Use::Connect,
                addr,
                pinned_names: &pinned,
            })
        };
        assert_eq!(
            check(addr, &["www.example.com"]),
            Decision::Allowed(rule("tls=*.example.com:443"))
        );
        assert_eq!(
            rule("tls=*.example.com:443")
                .granted_names(&["www.example.com".into(), "x.test".into()]),
            ["www.example.com"]
        );
        assert_eq!(check(addr, &["www.evil.test"]), Decision::NotGranted);
        assert_eq!(check(addr, &[]), Decision::NotGranted);
        assert_eq!(check(addr, &["example.com"]), Decision::NotGranted);
        assert_eq!(
            check(sa("93.184.216.34:80"), &["www.example.com"]),
            Decision::NotGranted
        );
        // A granted name that rebinds to a denied address stays denied.
        assert!(matches!(
            check(sa("10.0.0.5:443"), &["www.example.com"]),
            Decision::DeniedBy(_)
        ));
        // It grants the lookup of its names, and only of those.
        assert_eq!(
            p.check_name("www.example.com"),
            Decision::Allowed(rule("tls=*.example.com:443"))
        );
        assert!(!p.check_name("example.com").is_allowed());
        // Unless connect is denied on every port and address: then nothing could use it.
        let p = policy(&["tls=*.example.com:443"], &["connect=*:*"]);
        assert!(matches!(
            p.check_name("www.example.com"),
            Decision::DeniedBy(_)
        ));
        let p = policy(&["tls=*.example.com:443"], &["connect=*:443"]);
        assert!(p.check_name("www.example.com").is_allowed());
    }

    #[test]
    fn deny_by_default() {
        let p = Policy::deny_all();
        for use_ in Use::ALL {
            if use_ != Use::AutoBind {
                assert_eq!(
                    p.check_addr(use_, sa("127.0.0.1:80")),
                    Decision::NotGranted,
                    "{use_:?}"
                );
            }
        }
        assert_eq!(p.check_name("localhost"), Decision::NotGranted);
    }

    #[test]
    fn port_ranges_are_inclusive_and_uses_separate() {
        let p = policy(&["connect=127.0.0.1:8000-8010"], &[]);
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
        for use_ in [Use::Send, Use::Bind, Use::Listen, Use::Accept, Use::Recv] {
            assert!(
                !p.check_addr(use_, sa("127.0.0.1:8005")).is_allowed(),
                "{use_:?}"
            );
        }
    }

    #[test]
    fn classes() {
        let cases = [
            (Class::Loopback, "127.0.0.1", true),
            (Class::Loopback, "127.255.0.9", true),
            (Class::Loopback, "::1", true),
            (Class::Loopback, "10.0.0.1", false),
            (Class::Private, "10.1.2.3", true),
            (Class::Private, "172.31.0.1", true),
            (Class::Private, "172.32.0.1", false),
            (Class::Private, "192.168.0.1", true),
            (Class::Private, "100.64.0.1", true),
            (Class::Private, "100.128.0.1", false),
            (Class::Private, "fd12::1", true),
            (Class::Private, "fc00::1", true),
            (Class::LinkLocal, "169.254.1.1", true),
            (Class::LinkLocal, "fe80::1", true),
            (Class::Metadata, "169.254.169.254", true),
            (Class::Metadata, "169.254.169.253", false),
            (Class::Metadata, "fd00:ec2::254", true),
            (Class::Multicast, "224.0.0.1", true),
            (Class::Multicast, "ff02::1", true),
            (Class::Multicast, "8.8.8.8", false),
        ];
        for (class, ip, inside) in cases {
            assert_eq!(
                class.contains(ip.parse().unwrap()),
                inside,
                "{class:?} {ip}"
            );
        }
    }

    #[test]
    fn deny_sees_through_every_ipv6_spelling_of_ipv4() {
        let p = policy(
            &["connect=*:*"],
            &["connect=127.0.0.0/8:*", "connect=metadata:*"],
        );
        for spelled in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::127.0.0.1",
            "2002:7f00:1::1",
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::",
        ] {
            let addr = SocketAddr::new(spelled.parse().unwrap(), 80);
            assert!(
                matches!(p.check_addr(Use::Connect, addr), Decision::DeniedBy(_)),
                "{spelled}"
            );
        }
        assert!(
            p.check_addr(Use::Connect, sa("[2001:db8::1]:80"))
                .is_allowed()
        );
        assert!(
            p.check_addr(Use::Connect, sa("[::1]:80")).is_allowed(),
            "::1 is not ::0.0.0.1 compat"
        );
    }

    #[test]
    fn autobind_is_implied_unless_denied() {
        let p = policy(&["connect=*:*"], &["bind=*:*"]);
        assert_eq!(
            p.check_addr(Use::AutoBind, sa("0.0.0.0:0")),
            Decision::Implied
        );
        let p = policy(&["connect=*:*"], &["autobind=*:*"]);
        assert!(matches!(
            p.check_addr(Use::AutoBind, sa("0.0.0.0:0")),
            Decision::DeniedBy(_)
        ));
    }

    #[test]
    fn name_grants_match_only_pinned_addresses() {
        let p = policy(&["connect=*.example.com:443"], &["connect=private:*"]);
        let addr = sa("93.184.216.34:443");
        let pinned = ["www.example.com".to_string()];
        let other = ["www.evil.test".to_string()];
        assert!(
            p.check(&Request {
                use_: Use::Connect,
                addr,
                pinned_names: &pinned
            })
            .is_allowed()
        );
        assert!(
            !p.check(&Request {
                use_: Use::Connect,
                addr,
                pinned_names: &other
            })
            .is_allowed()
        );
        assert!(
            !p.check(&Request {
                use_: Use::Connect,
                addr,
                pinned_names: &[]
            })
            .is_allowed()
        );
        assert!(
            !p.check(&Request {
                use_: Use::Connect,
                addr: sa("93.184.216.34:80"),
                pinned_names: &pinned
            })
            .is_allowed()
        );
        // A granted name that rebinds to a denied address stays denied.
        let internal = sa("10.0.0.5:443");
        assert!(matches!(
            p.check(&Request {
                use_: Use::Connect,
                addr: internal,
                pinned_names: &pinned
            }),
            Decision::DeniedBy(_)
        ));
        // The name grant also grants the lookup, and only of its names.
        assert!(p.check_name("www.example.com").is_allowed());
        assert!(!p.check_name("example.com").is_allowed());
    }

    #[test]
    fn name_patterns() {
        let p = policy(
            &["resolve=*.example.com", "resolve=localhost"],
            &["resolve=evil.example.com"],
        );
        assert!(p.check_name("a.example.com").is_allowed());
        assert!(p.check_name("A.B.Example.com.").is_allowed());
        assert!(!p.check_name("example.com").is_allowed());
        assert!(!p.check_name("notexample.com").is_allowed());
        assert!(!p.check_name("evil.example.com").is_allowed());
        assert!(p.check_name("LOCALHOST").is_allowed());
    }

    #[test]
    fn more_embeddings_and_wholly_denied_names() {
        let p = policy(&["connect=*:*"], &["connect=loopback:*"]);
        for spelled in ["::ffff:0:127.0.0.1", "64:ff9b:1::127.0.0.1"] {
            let addr = SocketAddr::new(spelled.parse().unwrap(), 80);
            assert!(
                matches!(p.check_addr(Use::Connect, addr), Decision::DeniedBy(_)),
                "{spelled}"
            );
        }
        // A name grant whose use is refused on every port and address does not grant its
        // lookup; one refused on some ports does.
        let p = policy(&["connect=*.example.com:443"], &["connect=*:*"]);
        assert!(matches!(
            p.check_name("good.example.com"),
            Decision::DeniedBy(_)
        ));
        let p = policy(&["connect=*.example.com:443"], &["connect=*:443"]);
        assert!(
            p.check_name("bad.example.com").is_allowed(),
            "a port-specific deny still needs the lookup"
        );
        // Names are denied by resolve rules (deny lists refuse host names in address rules).
        let p = policy(&["connect=*.example.com:443"], &["resolve=bad.example.com"]);
        assert!(matches!(
            p.check_name("bad.example.com"),
            Decision::DeniedBy(_)
        ));
        assert!(p.check_name("good.example.com").is_allowed());
    }

    #[test]
    fn a_name_deny_rule_given_to_the_builder_stands_for_every_address() {
        let p = Policy::builder()
            .allow(rule("connect=*.example.com:443"), ambient_authority())
            .allow(rule("connect=*:*"), ambient_authority())
            .allow(rule("send=*:*"), ambient_authority())
            .deny(rule("connect=bad.example.com:443"))
            .build();
        let literal = sa("93.184.216.34:443");
        assert!(matches!(
            p.check_addr(Use::Connect, literal),
            Decision::DeniedBy(_)
        ));
        assert!(
            p.check_addr(Use::Connect, sa("93.184.216.34:80"))
                .is_allowed()
        );
        assert!(p.check_addr(Use::Send, literal).is_allowed());
        // On every port, it refuses every lookup made for that use.
        let p = Policy::builder()
            .allow(rule("connect=*.example.com:443"), ambient_authority())
            .deny(rule("connect=bad.example.com:*"))
            .build();
        assert!(matches!(
            p.check_name("good.example.com"),
            Decision::DeniedBy(_)
        ));
    }
}
