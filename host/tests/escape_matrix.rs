//! The policy-level escape matrix (issue 4, item 8): every address class x every use of an
//! address x every spelling of the address, against a policy that allows everything and
//! denies the class. Pure: no sockets, only `usocket_host::addr` and `usocket_host::policy`.
//!
//! A case is one (class, address, spelling, port, use, pinning). It is refused when
//! `addr::parse` rejects the destination with EINVAL (the wildcard or port 0 as a destination)
//! or when `Policy::check` answers `DeniedBy` a rule of that use. Anything else is an escape.
//! The control matrix runs the same cases without the deny rule: then only the parser's
//! EINVAL refuses anything, so the deny rules are what refuse the rest.
//!
//! Issue 8 (item 3) adds the rule side: deny rules written in each IPv6 alias of an IPv4
//! member (`[::ffff:a.b.c.d]`, NAT64, ...) refuse every spelling of it, and class keywords in
//! any case are the class.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use cap_std::ambient_authority;
use usocket_host::addr::{self, Family, Purpose};
use usocket_host::errno::Errno;
use usocket_host::policy::{Decision, Policy, Request, Use, spellings};

/// Every use that carries an address (`resolve` carries a name).
const USES: [Use; 7] = [
    Use::Connect,
    Use::Send,
    Use::Bind,
    Use::AutoBind,
    Use::Listen,
    Use::Accept,
    Use::Recv,
];

/// The allow rule of every matrix policy: every use, every address, every port; plus a name
/// grant, so that the pinned variant of each case is granted by a name as well.
const ALLOW_ALL: &[&str] = &[
    "connect,send,bind,autobind,listen,accept,recv=*:*",
    "connect,send,bind,autobind,listen,accept,recv=*.example.test:*",
];

/// The name a pinned case's address is pinned to (granted by [`ALLOW_ALL`]).
const PINNED: &[&str] = &["www.example.test"];

/// A class of the matrix: its name, the deny rule hosts that stand for it, and its members.
struct Class {
    name: &'static str,
    deny_hosts: &'static [&'static str],
    members: &'static [&'static str],
}

const CLASSES: &[Class] = &[
    Class {
        name: "loopback",
        deny_hosts: &["loopback"],
        members: &["127.0.0.1", "::1"],
    },
    Class {
        name: "private",
        deny_hosts: &["private"],
        members: &[
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "fd00::1",
        ],
    },
    Class {
        name: "link-local",
        deny_hosts: &["link-local"],
        members: &["169.254.1.1", "fe80::1"],
    },
    Class {
        name: "metadata",
        deny_hosts: &["metadata"],
        members: &["169.254.169.254", "fd00:ec2::254"],
    },
    Class {
        name: "multicast",
        deny_hosts: &["multicast"],
        members: &["224.0.0.1", "ff02::1"],
    },
    Class {
        name: "unspecified",
        deny_hosts: &["0.0.0.0/32", "[::]/128"],
        members: &["0.0.0.0", "::"],
    },
];

/// The ports of each case: an ordinary one, and 0.
const PORTS: [u16; 2] = [80, 0];

/// The spellings of an address: `(spelling name, literal)`. An IPv4 address has five (plain,
/// IPv4-mapped, IPv4-compatible, NAT64, 6to4); an IPv6 address has its plain form only.
fn spelled(member: &str) -> Vec<(&'static str, String)> {
    let ip: IpAddr = member.parse().expect("a member literal");
    let IpAddr::V4(v4) = ip else {
        return vec![("plain", member.to_string())];
    };
    let [a, b, c, d] = v4.octets();
    let out = vec![
        ("plain", member.to_string()),
        ("v4-mapped", format!("::ffff:{v4}")),
        ("v4-compatible", format!("::{v4}")),
        ("nat64", format!("64:ff9b::{v4}")),
        ("6to4", format!("2002:{a:02x}{b:02x}:{c:02x}{d:02x}::1")),
    ];
    // The matrix itself must be right: every IPv6 spelling carries the IPv4 address (or, for
    // the IPv4-compatible form of 0.0.0.0, is `::`, which the unspecified class denies too).
    for (name, literal) in &out[1..] {
        let ip: IpAddr = literal.parse().unwrap_or_else(|e| panic!("{literal}: {e}"));
        let carried = spellings(ip).contains(&IpAddr::V4(v4));
        let wildcard = v4 == Ipv4Addr::UNSPECIFIED && ip.is_unspecified();
        assert!(
            carried || wildcard,
            "{name} spelling {literal} does not carry {v4}"
        );
    }
    out
}

fn policy(allow: &[&str], deny: &[String]) -> Policy {
    Policy::from_texts(allow, deny, ambient_authority()).unwrap_or_else(|e| panic!("{e}"))
}

/// How the host would treat one case.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// `addr::parse` refused the destination.
    Parse(Errno),
    /// The policy decided.
    Decided(Decision),
}

/// Decides one case as the host does: destinations are parsed as such first (connect and
/// send both call `addr::parse(.., Purpose::Destination)` before the policy), other uses take
/// the address as given.
fn decide(p: &Policy, use_: Use, literal: &str, port: u16, pinned: bool) -> Outcome {
    let ip: IpAddr = literal.parse().expect("a literal");
    let family = Family::of(ip);
    let purpose = match use_ {
        Use::Connect | Use::Send => Purpose::Destination,
        _ => Purpose::Bind,
    };
    let addr: SocketAddr = match addr::parse(family, literal, i32::from(port), purpose) {
        Ok(addr) => addr,
        Err(e) => return Outcome::Parse(e),
    };
    assert_eq!(addr.ip(), ip, "{literal} parsed as another address");
    let pinned_names: Vec<String> = if pinned {
        PINNED.iter().map(|n| n.to_string()).collect()
    } else {
        Vec::new()
    };
    Outcome::Decided(p.check(&Request {
        use_,
        addr,
        pinned_names: &pinned_names,
    }))
}

/// Whether the host's parser must refuse this destination (the wildcard in any spelling, or
/// port 0): EINVAL.
fn parser_refuses(use_: Use, literal: &str, port: u16) -> bool {
    let destination = matches!(use_, Use::Connect | Use::Send);
    let ip: IpAddr = literal.parse().unwrap();
    let wildcard = spellings(ip).iter().any(IpAddr::is_unspecified);
    destination && (port == 0 || wildcard)
}

#[derive(Default, Debug)]
struct Tally {
    cases: usize,
    denied: usize,
    einval: usize,
    escapes: Vec<String>,
}

/// Runs every case of every class; `deny` says whether the class is denied.
fn matrix(deny: bool) -> Tally {
    let mut tally = Tally::default();
    for class in CLASSES {
        for use_ in USES {
            let deny_rules: Vec<String> = if deny {
                class
                    .deny_hosts
                    .iter()
                    .map(|h| format!("{}={h}:*", use_.keyword()))
                    .collect()
            } else {
                Vec::new()
            };
            let p = policy(ALLOW_ALL, &deny_rules);
            for member in class.members {
                for (spelling, literal) in spelled(member) {
                    for port in PORTS {
                        for pinned in [false, true] {
                            tally.cases += 1;
                            let case = format!(
                                "{} {member} as {spelling} `{literal}` port {port}, {}{}",
                                class.name,
                                use_.keyword(),
                                if pinned {
                                    ", pinned to a granted name"
                                } else {
                                    ""
                                },
                            );
                            let outcome = decide(&p, use_, &literal, port, pinned);
                            let refuses = parser_refuses(use_, &literal, port);
                            match outcome {
                                Outcome::Parse(Errno::EINVAL) if refuses => tally.einval += 1,
                                Outcome::Decided(Decision::DeniedBy(rule)) if deny && !refuses => {
                                    // The rule of this use denied it, not some other rule.
                                    let prefix = format!("{}=", use_.keyword());
                                    if rule.to_string().starts_with(&prefix) {
                                        tally.denied += 1;
                                    } else {
                                        tally.escapes.push(format!(
                                            "{case}: denied by the wrong rule {rule}"
                                        ));
                                    }
                                }
                                Outcome::Decided(d) if !deny && !refuses && d.is_allowed() => {}
                                other => tally.escapes.push(format!("{case}: {other:?}")),
                            }
                        }
                    }
                }
            }
        }
    }
    tally
}

#[test]
fn every_class_use_and_spelling_is_refused() {
    let t = matrix(true);
    println!(
        "escape matrix: {} cases run ({} denied by a rule, {} EINVAL), {} escapes",
        t.cases,
        t.denied,
        t.einval,
        t.escapes.len()
    );
    for e in &t.escapes {
        println!("ESCAPE: {e}");
    }
    // 9 IPv4 members x 5 spellings + 6 IPv6 members x 1, x 2 ports x 7 uses x 2 pinnings.
    assert_eq!(t.cases, (9 * 5 + 6) * 2 * 7 * 2);
    assert_eq!(t.denied + t.einval, t.cases);
    assert!(
        t.denied > t.einval,
        "the deny rules, not the parser, refuse most cases"
    );
    assert_eq!(t.escapes.len(), 0, "escapes: {:#?}", t.escapes);
}

#[test]
fn control_without_the_deny_rule_allows_what_the_parser_accepts() {
    let t = matrix(false);
    println!(
        "control matrix: {} cases run ({} EINVAL from the parser, {} allowed), {} unexpected",
        t.cases,
        t.einval,
        t.cases - t.einval - t.escapes.len(),
        t.escapes.len()
    );
    assert_eq!(
        t.escapes.len(),
        0,
        "without a deny rule these were not allowed: {:#?}",
        t.escapes
    );
    // The same cases the matrix counts as denied are allowed here.
    assert_eq!(t.einval, matrix(true).einval);
}

#[test]
fn control_plain_spellings_are_allowed_for_every_use() {
    let p = policy(ALLOW_ALL, &[]);
    let mut allowed = 0;
    for class in CLASSES {
        for member in class.members {
            for use_ in USES {
                if parser_refuses(use_, member, 80) {
                    continue;
                }
                let outcome = decide(&p, use_, member, 80, false);
                assert!(
                    matches!(&outcome, Outcome::Decided(d) if d.is_allowed()),
                    "{member} {use_:?}: {outcome:?}"
                );
                allowed += 1;
            }
        }
    }
    // Every member for every use, but the two wildcards as connect/send destinations.
    assert_eq!(allowed, 15 * 7 - 2 * 2);
}

#[test]
fn class_rules_do_not_overreach() {
    // Neighbours of each class stay allowed when the class is denied: the deny rules refuse
    // the class, not everything.
    for (class, outside) in [
        ("loopback", "128.0.0.1"),
        ("loopback", "::2"),
        ("private", "172.32.0.1"),
        ("private", "100.128.0.1"),
        ("private", "fe00::1"),
        ("link-local", "169.255.0.1"),
        ("link-local", "fec0::1"),
        ("metadata", "169.254.169.253"),
        ("metadata", "fd00:ec2::253"),
        ("multicast", "240.0.0.1"),
        ("multicast", "fe02::1"),
        ("0.0.0.0/32", "0.0.0.1"),
        ("[::]/128", "::2"),
    ] {
        let p = policy(ALLOW_ALL, &[format!("connect={class}:*")]);
        let outcome = decide(&p, Use::Connect, outside, 80, false);
        assert!(
            matches!(&outcome, Outcome::Decided(d) if d.is_allowed()),
            "{class} denied {outside}: {outcome:?}"
        );
    }
}

#[test]
fn other_ipv6_embeddings_of_ipv4() {
    let p = policy(ALLOW_ALL, &["connect=metadata:*".to_string()]);
    for literal in ["::ffff:0:169.254.169.254", "64:ff9b:1::169.254.169.254"] {
        let outcome = decide(&p, Use::Connect, literal, 80, false);
        assert!(
            matches!(outcome, Outcome::Decided(Decision::DeniedBy(_))),
            "{literal}: {outcome:?}"
        );
    }
}

/// The ways a deny rule may spell an IPv4 member (issue 8, item 3): the plain literal, each
/// IPv6 alias of it (which the rule parser reads as the IPv4 address), and none for IPv6.
fn rule_spellings(member: &str) -> Vec<String> {
    let ip: IpAddr = member.parse().unwrap();
    let IpAddr::V4(v4) = ip else {
        return vec![format!("[{member}]")];
    };
    let mut out = vec![
        member.to_string(),
        format!("[::ffff:{v4}]"),
        format!("[::ffff:0:{v4}]"),
        format!("[64:ff9b::{v4}]"),
        format!("[64:ff9b:1:2:3:4:{v4}]"),
    ];
    if u32::from(v4) > 1 {
        out.push(format!("[::{v4}]"));
    }
    out
}

#[test]
fn deny_rules_in_every_spelling_refuse_every_spelling_of_the_address() {
    // Before issue 8, a deny rule written `[::ffff:127.0.0.1]` or `[64:ff9b::a9fe:a9fe]` did
    // not refuse the plain IPv4 address: canonicalisation applied to requests only.
    let (mut cases, mut escapes) = (0, Vec::new());
    for class in CLASSES {
        for member in class.members {
            for written in rule_spellings(member) {
                for use_ in USES {
                    let p = policy(ALLOW_ALL, &[format!("{}={written}:*", use_.keyword())]);
                    for (spelling, literal) in spelled(member) {
                        // `::0.0.0.0` is `::`, the IPv6 wildcard, not a spelling of 0.0.0.0.
                        let ip: IpAddr = literal.parse().unwrap();
                        let member_ip: IpAddr = member.parse().unwrap();
                        if !spellings(ip).contains(&member_ip) {
                            continue;
                        }
                        for pinned in [false, true] {
                            cases += 1;
                            let outcome = decide(&p, use_, &literal, 80, pinned);
                            let ok = match &outcome {
                                Outcome::Parse(Errno::EINVAL) => parser_refuses(use_, &literal, 80),
                                Outcome::Decided(Decision::DeniedBy(_)) => true,
                                _ => false,
                            };
                            if !ok {
                                escapes.push(format!(
                                    "deny {}={written}: {member} as {spelling} `{literal}`, \
                                     pinned {pinned}: {outcome:?}",
                                    use_.keyword()
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    println!(
        "spelled deny rules: {cases} cases, {} escapes",
        escapes.len()
    );
    assert!(cases > 2000, "{cases}");
    assert_eq!(escapes.len(), 0, "escapes: {escapes:#?}");
}

#[test]
fn class_rules_in_any_case_refuse_the_class() {
    // Before issue 8, `Loopback` was a rule for the host name `loopback`: it denied nothing.
    for class in CLASSES.iter().filter(|c| c.name != "unspecified") {
        let upper = class.name.to_ascii_uppercase();
        let mixed: String = class
            .name
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        for written in [upper, mixed] {
            for use_ in USES {
                let p = policy(ALLOW_ALL, &[format!("{}={written}:*", use_.keyword())]);
                for member in class.members {
                    for (_, literal) in spelled(member) {
                        let outcome = decide(&p, use_, &literal, 80, false);
                        assert!(
                            matches!(outcome, Outcome::Decided(Decision::DeniedBy(_))),
                            "deny {}={written}: {literal}: {outcome:?}",
                            use_.keyword()
                        );
                    }
                }
            }
        }
    }
}
