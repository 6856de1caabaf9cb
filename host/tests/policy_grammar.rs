//! The strict rule grammar (issue 8, item 3): rules that used to mean something else silently
//! (`Loopback`, `link_local`, `metadata.`, a space after `=`, a deny rule by name, a rule
//! written as an IPv6 spelling of an IPv4 address) are now the class, refused with a "did you
//! mean", or canonicalised; and every rule prints in a form that parses back to it.

use std::net::{IpAddr, SocketAddr};

use cap_std::ambient_authority;
use usocket_host::policy::{
    Class, Decision, Hosts, Names, Policy, Request, Rule, Use, parse_deny_rules, parse_rules,
};
use usocket_host::policy_file;

fn rule(text: &str) -> Rule {
    text.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn refused(text: &str) -> String {
    match parse_rules(text) {
        Ok(rules) => panic!("`{text:?}` was accepted as {rules:?}"),
        Err(e) => e.to_string(),
    }
}

fn policy(allow: &[&str], deny: &[&str]) -> Policy {
    Policy::from_texts(allow, deny, ambient_authority()).unwrap_or_else(|e| panic!("{e}"))
}

fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

fn denied(p: &Policy, use_: Use, ip: &str) -> bool {
    matches!(p.check_addr(use_, sa(ip, 80)), Decision::DeniedBy(_))
}

fn hosts(rule: &Rule) -> &Hosts {
    match rule {
        Rule::Addr { hosts, .. } => hosts,
        Rule::Resolve(_) => panic!("not an address rule"),
    }
}

#[test]
fn class_keywords_are_the_class_in_any_case() {
    for (text, class) in [
        ("Loopback", Class::Loopback),
        ("LOOPBACK", Class::Loopback),
        ("Private", Class::Private),
        ("Link-Local", Class::LinkLocal),
        ("METADATA", Class::Metadata),
        ("MultiCast", Class::Multicast),
    ] {
        let r = rule(&format!("connect={text}:*"));
        assert_eq!(hosts(&r), &Hosts::Class(class), "{text}");
        assert_eq!(r.to_string(), format!("connect={}:*", class.keyword()));
    }
    assert_eq!(hosts(&rule("connect=ANY:1")), &Hosts::Any);
    assert_eq!(hosts(&rule("connect=Any:1")), &Hosts::Any);

    // The finding: `--deny connect=Loopback:*` denied nothing (a rule for the host name
    // `loopback`); now it denies the class.
    let p = policy(&["connect=*:*"], &["connect=Loopback:*"]);
    for ip in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
        assert!(denied(&p, Use::Connect, ip), "{ip}");
    }
    assert!(!denied(&p, Use::Connect, "10.0.0.1"));
}

#[test]
fn host_names_spelt_like_a_class_are_refused_with_did_you_mean() {
    for (host, keyword) in [
        ("link_local", "link-local"),
        ("linklocal", "link-local"),
        ("Link_Local", "link-local"),
        ("link-local.", "link-local"),
        ("metadata.", "metadata"),
        ("Metadata.", "metadata"),
        ("meta_data", "metadata"),
        ("loopback.", "loopback"),
        ("loop-back", "loopback"),
        ("private..", "private"),
        ("multi_cast", "multicast"),
        ("any.", "any"),
    ] {
        let err = refused(&format!("connect={host}:*"));
        assert!(
            err.contains(&format!("did you mean `{keyword}`?")),
            "{host}: {err}"
        );
    }
    // Resolve rules take names; a name spelt like a class or `any` is a mistake there too.
    let err = refused("resolve=loopback");
    assert!(
        err.contains("address class `loopback`") && err.contains("connect=loopback:*"),
        "{err}"
    );
    let err = refused("resolve=Any");
    assert!(err.contains("did you mean `resolve=*`"), "{err}");
    // Real names that merely contain a keyword are names.
    for name in [
        "loopback.example.com",
        "*.metadata",
        "private-api.test",
        "anything",
    ] {
        assert!(
            matches!(hosts(&rule(&format!("connect={name}:443"))), Hosts::Name(_)),
            "{name}"
        );
        rule(&format!("resolve={name}"));
    }
}

#[test]
fn whitespace_anywhere_is_refused_and_located() {
    for (text, what, at) in [
        ("connect= loopback:*", "a space", 9),
        ("connect=\tloopback:*", "a tab", 9),
        (" connect=127.0.0.1:80", "a space", 1),
        ("connect=127.0.0.1:80 ", "a space", 21),
        ("bind, listen=127.0.0.1:80", "a space", 6),
        ("connect=127.0.0.1 :80", "a space", 18),
        ("resolve= localhost", "a space", 9),
        ("resolve=localhost\n", "a line break", 18),
        ("connect=loopback:\u{a0}*", "the character U+00A0", 18),
    ] {
        let err = refused(text);
        assert!(
            err.contains(&format!(
                "{what} at character {at}: a rule has no whitespace"
            )),
            "{text:?}: {err}"
        );
    }
    // The finding: a space after `=` made `connect= loopback:*` a rule for the host name
    // `loopback`, which a deny list took without a word.
    assert!(
        Policy::from_texts(
            &["connect=*:*"],
            &["connect= loopback:*"],
            ambient_authority()
        )
        .is_err()
    );
}

#[test]
fn uses_are_lower_case_and_ports_digits_only() {
    let err = refused("Connect=127.0.0.1:80");
    assert!(
        err.contains("unknown use `Connect` (did you mean `connect`?)"),
        "{err}"
    );
    for ports in ["+80", "8_0", "0x50", "80-+90"] {
        let err = refused(&format!("connect=127.0.0.1:{ports}"));
        assert!(err.contains("is not a port number"), "{ports}: {err}");
    }
}

#[test]
fn names_are_valid_dns_names_kept_in_lower_case() {
    assert_eq!(
        rule("resolve=Example.COM.").to_string(),
        "resolve=example.com"
    );
    assert_eq!(
        rule("connect=*.Example.com.:443").to_string(),
        "connect=*.example.com:443"
    );
    // Two final dots used to give a rule for `example.com.` that matched no name at all.
    for text in [
        "resolve=example.com..",
        "connect=example.com..:443",
        "resolve=a..b",
        "resolve=-a.example",
        "resolve=*.*.example.com",
        "resolve=*example.com",
        "resolve=ex@mple.com",
        "resolve=exämple.com",
        "connect=10.0.0:80",
    ] {
        let err = refused(text);
        assert!(
            err.contains("not a host name") || err.contains("not an IP literal"),
            "{text}: {err}"
        );
    }
    let long = format!("resolve={}.com", vec!["a".repeat(63); 4].join("."));
    assert!(refused(&long).contains("not a host name"));
}

#[test]
fn deny_lists_refuse_host_names_with_a_way_to_write_it() {
    for text in [
        "connect=localhost:*",
        "connect=*.example.com:443",
        "bind,connect=a.test:*",
    ] {
        let err = parse_deny_rules(text).unwrap_err().to_string();
        assert!(
            err.contains("a deny rule cannot name hosts by name"),
            "{text}: {err}"
        );
        assert!(err.contains("Deny by address or class"), "{text}: {err}");
        assert!(
            err.contains("refuse the lookup itself with resolve="),
            "{text}: {err}"
        );
        assert!(parse_rules(text).is_ok(), "{text} is fine as an allow rule");
    }
    let err = parse_deny_rules("connect=localhost:*")
        .unwrap_err()
        .to_string();
    assert!(err.contains("resolve=localhost"), "{err}");
    // The finding: `deny connect=localhost:*` left 127.0.0.1 as a literal allowed. Policy
    // files refuse it; Policy::from_texts (and the builder) either refuse it too or make it
    // fail closed: never does the literal get through.
    match Policy::from_texts(
        &["connect=*:*"],
        &["connect=localhost:*"],
        ambient_authority(),
    ) {
        Err(err) => assert!(err.to_string().contains("cannot name hosts"), "{err}"),
        Ok(p) => {
            for ip in ["127.0.0.1", "::1", "93.184.216.34"] {
                assert!(denied(&p, Use::Connect, ip), "{ip}");
            }
            assert!(!denied(&p, Use::Send, "127.0.0.1"));
        }
    }
    let e = policy_file::parse(
        "allow = [\"connect=localhost:80\"]\ndeny = [\"resolve=evil.test\", \"connect=localhost:*\"]\n",
        "p.toml",
        ambient_authority(),
    )
    .unwrap_err();
    assert_eq!((e.line(), e.column()), (Some(2), Some(30)), "{e}");
    assert!(e.message().contains("cannot name hosts"), "{e}");
    // Deny lists still take names where a name is what is refused: lookups.
    let p = policy(&["connect=*.example.com:443"], &["resolve=bad.example.com"]);
    assert!(matches!(
        p.check_name("bad.example.com"),
        Decision::DeniedBy(_)
    ));
}

#[test]
fn ipv6_aliases_in_rules_are_the_ipv4_address() {
    for (written, canonical) in [
        ("[::ffff:127.0.0.1]", "127.0.0.1"),
        ("[::ffff:7f00:1]", "127.0.0.1"),
        ("[::ffff:0:127.0.0.1]", "127.0.0.1"),
        ("[::169.254.169.254]", "169.254.169.254"),
        ("[64:ff9b::a9fe:a9fe]", "169.254.169.254"),
        ("[64:ff9b:1::a9fe:a9fe]", "169.254.169.254"),
        ("[::ffff:10.0.0.0]/104", "10.0.0.0/8"),
        ("[::ffff:10.0.0.0/104]", "10.0.0.0/8"),
        ("[64:ff9b::a9fe:0]/112", "169.254.0.0/16"),
        ("[::ffff:0:0]/96", "0.0.0.0/0"),
        ("[64:ff9b::]/96", "0.0.0.0/0"),
        ("[64:ff9b:1::]/48", "0.0.0.0/0"),
        // Not made of aliases only: IPv6 networks, as written.
        ("[::1]", "[::1]"),
        ("[::]/128", "[::]"),
        ("[::]/96", "[::]/96"),
        ("[::]/0", "[::]/0"),
        ("[::fffe:0:0]/95", "[::fffe:0:0]/95"),
        ("[64:ff9b::]/95", "[64:ff9b::]/95"),
        ("[fd00::]/8", "[fd00::]/8"),
    ] {
        let r = rule(&format!("connect={written}:*"));
        assert_eq!(r.to_string(), format!("connect={canonical}:*"), "{written}");
        assert_eq!(rule(&r.to_string()), r, "{written}");
    }
    // The finding: a deny rule in an IPv6 spelling did not match the plain IPv4 address.
    let p = policy(
        &["connect=*:*"],
        &[
            "connect=[::ffff:127.0.0.1]:*",
            "connect=[64:ff9b::a9fe:a9fe]:*",
        ],
    );
    for ip in [
        "127.0.0.1",
        "::ffff:127.0.0.1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::1",
        "169.254.169.254",
        "::169.254.169.254",
        "2002:a9fe:a9fe::",
    ] {
        assert!(denied(&p, Use::Connect, ip), "{ip}");
    }
    assert!(!denied(&p, Use::Connect, "127.0.0.2"));
    // 6to4 is the network behind an IPv4 address, not the address: refused, with the fix.
    let err = refused("connect=[2002:a9fe:a9fe::]/48:*");
    assert!(
        err.contains("is 6to4") && err.contains("write 169.254.169.254 instead"),
        "{err}"
    );
    refused("connect=[2002:a9fe:a9fe::1]:*");
    refused("connect=[2002::]/16:*");
    assert_eq!(
        rule("connect=[2000::]/3:*").to_string(),
        "connect=[2000::]/3:*"
    );
}

#[test]
fn allow_rules_grant_the_address_as_given_never_an_ipv6_spelling_of_it() {
    // An IPv6 destination that embeds a granted IPv4 address is an IPv6 address to the
    // kernel (IPv6 sockets are IPV6_V6ONLY): `::127.0.0.1` and `64:ff9b::7f00:1` are routed
    // off the machine. A rule written in such a spelling is the IPv4 rule.
    let p = policy(
        &["connect=127.0.0.1:80", "connect=[64:ff9b::a9fe:a9fe]:80"],
        &[],
    );
    for ip in ["127.0.0.1", "169.254.169.254"] {
        assert!(p.check_addr(Use::Connect, sa(ip, 80)).is_allowed(), "{ip}");
    }
    for ip in [
        "::ffff:127.0.0.1",
        "::127.0.0.1",
        "::ffff:0:127.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "::ffff:169.254.169.254",
        "2002:7f00:1::1",
        "127.0.0.2",
        "::1",
    ] {
        assert!(!p.check_addr(Use::Connect, sa(ip, 80)).is_allowed(), "{ip}");
    }
    // Classes too: an IPv6 spelling of a loopback address is no IPv4 loopback to an allow rule.
    let p = policy(&["accept=loopback:*"], &[]);
    assert!(
        !p.check_addr(Use::Accept, sa("::ffff:127.0.0.1", 5))
            .is_allowed()
    );
}

#[test]
fn the_builder_keeps_rules_canonical() {
    let mapped: ipnet::IpNet = "::ffff:127.0.0.1/128".parse().unwrap();
    let p = Policy::builder()
        .allow(
            Rule::Addr {
                use_: Use::Connect,
                hosts: Hosts::Any,
                ports: usocket_host::policy::Ports::ANY,
            },
            ambient_authority(),
        )
        .allow(
            Rule::Resolve(Names::Exact("Example.COM.".into())),
            ambient_authority(),
        )
        .deny(Rule::Addr {
            use_: Use::Connect,
            hosts: Hosts::Net(mapped),
            ports: usocket_host::policy::Ports::ANY,
        })
        .build();
    assert_eq!(p.denied()[0].to_string(), "connect=127.0.0.1:*");
    assert!(denied(&p, Use::Connect, "127.0.0.1"));
    assert!(p.check_name("example.com").is_allowed());
    let req = Request {
        use_: Use::Connect,
        addr: sa("127.0.0.2", 80),
        pinned_names: &[],
    };
    assert!(p.check(&req).is_allowed());
}

mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use usocket_host::policy::Ports;

    fn use_() -> impl Strategy<Value = Use> {
        prop::sample::select(Use::ALL[1..].to_vec())
    }

    fn class() -> impl Strategy<Value = Class> {
        prop::sample::select(vec![
            Class::Loopback,
            Class::Private,
            Class::LinkLocal,
            Class::Metadata,
            Class::Multicast,
        ])
    }

    /// Valid DNS names in any case, possibly with a final dot; none spelt like a keyword.
    fn name() -> impl Strategy<Value = String> {
        let label = "[a-zA-Z_]([a-zA-Z0-9_-]{0,8}[a-zA-Z0-9_])?";
        (prop::collection::vec(label, 1..4), any::<bool>())
            .prop_map(|(labels, dot)| labels.join(".") + if dot { "." } else { "" })
            .prop_filter("spelt like a keyword", |n| {
                let squashed: String = n
                    .trim_end_matches('.')
                    .chars()
                    .filter(|c| !matches!(c, '-' | '_'))
                    .collect::<String>()
                    .to_ascii_lowercase();
                ![
                    "loopback",
                    "private",
                    "linklocal",
                    "metadata",
                    "multicast",
                    "any",
                ]
                .contains(&squashed.as_str())
            })
    }

    fn names() -> impl Strategy<Value = Names> {
        prop_oneof![
            Just(Names::Any),
            name().prop_map(Names::Exact),
            name().prop_map(Names::Below),
        ]
    }

    fn net() -> impl Strategy<Value = ipnet::IpNet> {
        let v4 = (any::<u32>(), 0u8..=32).prop_map(|(a, p)| {
            ipnet::IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(a), p).unwrap().trunc())
        });
        // IPv6 under the prefixes that carry IPv4 addresses as well as anywhere.
        let prefixes = prop::sample::select(vec![
            0u128,
            0xffff << 32,
            0xffff << 48,
            0x64_ff9b << 96,
            (0x64_ff9b << 96) | (1 << 80),
            0xfd00 << 112,
        ]);
        let v6 = (prefixes, any::<u128>(), any::<bool>(), 0u8..=128).prop_map(
            |(prefix, low, whole, p)| {
                let bits = if whole {
                    low
                } else {
                    prefix | (low & 0xffff_ffff)
                };
                ipnet::IpNet::V6(
                    ipnet::Ipv6Net::new(Ipv6Addr::from(bits), p)
                        .unwrap()
                        .trunc(),
                )
            },
        );
        prop_oneof![v4, v6]
    }

    fn hosts() -> impl Strategy<Value = Hosts> {
        prop_oneof![
            Just(Hosts::Any),
            class().prop_map(Hosts::Class),
            net().prop_map(Hosts::Net),
            names().prop_map(Hosts::Name),
        ]
    }

    fn ports() -> impl Strategy<Value = Ports> {
        prop_oneof![
            Just(Ports::ANY),
            any::<u16>().prop_map(Ports::one),
            (any::<u16>(), any::<u16>())
                .prop_map(|(a, b)| Ports::range(a.min(b), a.max(b)).unwrap()),
        ]
    }

    fn any_rule() -> impl Strategy<Value = Rule> {
        prop_oneof![
            names().prop_map(Rule::Resolve),
            (use_(), hosts(), ports()).prop_map(|(use_, hosts, ports)| Rule::Addr {
                use_,
                hosts,
                ports
            }),
        ]
    }

    fn is_6to4(rule: &Rule) -> bool {
        matches!(rule, Rule::Addr { hosts: Hosts::Net(ipnet::IpNet::V6(n)), .. }
            if usocket_host::addr::embedded_net(*n).is_some_and(|(_, f)| !f.is_alias()))
    }

    /// The spellings of an IPv4 address: (form, literal, whether it is an alias).
    fn spellings(v4: Ipv4Addr, middle: u64) -> Vec<(&'static str, String, bool)> {
        let n = u32::from(v4);
        let [a, b, c, d] = v4.octets();
        let mut out = vec![
            ("mapped", format!("::ffff:{v4}"), true),
            ("translated", format!("::ffff:0:{v4}"), true),
            ("nat64", format!("64:ff9b::{v4}"), true),
            (
                "local-nat64",
                format!(
                    "64:ff9b:1:{:x}:{:x}:{:x}:{v4}",
                    (middle >> 32) as u16,
                    (middle >> 16) as u16,
                    middle as u16
                ),
                true,
            ),
            (
                "6to4",
                format!("2002:{a:02x}{b:02x}:{c:02x}{d:02x}::{:x}", middle as u16),
                false,
            ),
        ];
        if n > 1 {
            out.push(("compatible", format!("::{v4}"), true));
        }
        out
    }

    proptest! {
        /// `policy check` prints each rule as `Display` does: that text parses back to the
        /// same (canonical) rule, and printing is a fixed point.
        #[test]
        fn printed_rules_parse_back_to_the_same_rule(r in any_rule()) {
            let r = r.canonical();
            prop_assume!(!is_6to4(&r));
            let text = r.to_string();
            let back: Rule = text.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(&back, &r, "{}", text);
            prop_assert_eq!(back.to_string(), text);
            // A deny list takes it back too, unless it names hosts by name or is a tls rule
            // (an allow-only use).
            prop_assert_eq!(
                parse_deny_rules(&r.to_string()).is_ok(),
                !r.names_hosts() && r.use_() != Some(Use::Tls)
            );
        }

        /// Texts assembled from keywords in any case, look-alikes, names and whitespace:
        /// whatever parses prints as a text that parses to the same rules; whatever holds
        /// whitespace or a look-alike is refused.
        #[test]
        fn texts_parse_strictly_and_print_back(
            use_ in use_(),
            host in prop_oneof![
                class().prop_map(|c| c.keyword().to_string()),
                Just("any".to_string()),
                Just("*".to_string()),
                name(),
                net().prop_map(|n| Hosts::Net(n).to_string()),
            ],
            upper in prop::collection::vec(any::<bool>(), 12),
            lookalike in 0usize..4,
            space in prop::option::of((0usize..30, prop::sample::select(vec![' ', '\t', '\u{a0}', '\n']))),
        ) {
            let cased: String = host
                .chars()
                .zip(upper.iter().cycle())
                .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
                .collect();
            let keywords = ["loopback", "private", "link-local", "metadata", "multicast", "any"];
            let is_keyword = keywords.contains(&host.as_str());
            let host = match lookalike {
                1 if is_keyword => format!("{}.", cased),
                2 if is_keyword => cased.replace('-', "_") + if host.contains('-') { "" } else { "_" },
                _ => cased,
            };
            let mut text = format!("{}={host}:*", use_.keyword());
            if let Some((at, c)) = space {
                let at = at.min(text.len());
                let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap();
                text.insert(at, c);
            }
            let result = parse_rules(&text);
            if space.is_some() {
                let err = result.expect_err("whitespace was accepted").to_string();
                prop_assert!(err.contains("a rule has no whitespace anywhere"), "{:?}: {}", text, err);
                return Ok(());
            }
            if is_keyword && (lookalike == 1 || lookalike == 2) {
                let err = result.expect_err("a look-alike was accepted").to_string();
                prop_assert!(err.contains("did you mean"), "{}", err);
                return Ok(());
            }
            match result {
                Ok(rules) => {
                    // The parser gives canonical rules only (lower-case names, IPv4 aliases as
                    // IPv4), the form the policy keeps and matches with.
                    for r in &rules {
                        prop_assert_eq!(&r.canonical(), r);
                    }
                    let printed: Vec<String> = rules.iter().map(ToString::to_string).collect();
                    let back: Vec<Rule> = printed
                        .iter()
                        .map(|t| t.parse::<Rule>())
                        .collect::<Result<_, _>>()
                        .map_err(|e| TestCaseError::fail(format!("{e}")))?;
                    prop_assert_eq!(back, rules);
                    if is_keyword {
                        let host = host.to_ascii_lowercase().replace("any", "*");
                        prop_assert_eq!(&printed[0], &format!("{}={host}:*", use_.keyword()));
                    }
                }
                // Only IPv6 6to4 networks are refused among these.
                Err(e) => prop_assert!(e.to_string().contains("6to4"), "{:?}: {}", text, e),
            }
        }

        /// Any text at all: the parser never panics, and what it accepts has no whitespace,
        /// is canonical and prints back to itself.
        #[test]
        fn any_text_parses_without_panic_and_what_parses_prints_back(
            text in prop_oneof![
                "[a-zA-Z0-9=:,./*_\\[\\] \t-]{0,40}",
                "(connect|send|bind|resolve|tls|Connect)=[a-fA-F0-9:.\\[\\]/*_-]{0,30}:[0-9*-]{0,8}",
                any::<String>(),
            ],
        ) {
            if let Ok(rules) = parse_rules(&text) {
                prop_assert!(!text.chars().any(char::is_whitespace), "{:?}", text);
                for r in rules {
                    prop_assert_eq!(&r.canonical(), &r);
                    prop_assert_eq!(r.to_string().parse::<Rule>().ok(), Some(r.clone()), "{:?}", text);
                }
            }
            let _ = parse_deny_rules(&text);
        }

        /// Any IPv4 address, in each of its IPv6 spellings, is refused by a deny rule for the
        /// address, and a deny rule written in any alias spelling refuses the plain address and
        /// every spelling; allow rules grant the address exactly as given, never a spelling.
        #[test]
        fn every_ipv6_spelling_of_an_ipv4_address_is_that_address(
            bits in any::<u32>(),
            middle in any::<u64>(),
            port in 1u16..,
        ) {
            let v4 = Ipv4Addr::from(bits);
            let plain = v4.to_string();
            let spelled = spellings(v4, middle);
            let deny_plain = policy(&["connect=*:*"], &[&format!("connect={plain}:{port}")]);
            let allow_plain = policy(&[&format!("connect={plain}:{port}")], &[]);
            let check = |p: &Policy, ip: &str| p.check_addr(Use::Connect, sa(ip, port));
            prop_assert!(matches!(check(&deny_plain, &plain), Decision::DeniedBy(_)));
            for (form, literal, alias) in &spelled {
                prop_assert!(
                    matches!(check(&deny_plain, literal), Decision::DeniedBy(_)),
                    "deny {} let {} `{}` through", plain, form, literal
                );
                prop_assert!(!check(&allow_plain, literal).is_allowed(), "{} {}", form, literal);
                let written = format!("connect=[{literal}]:{port}");
                if !alias {
                    prop_assert!(parse_rules(&written).is_err(), "{}", written);
                    continue;
                }
                prop_assert_eq!(rule(&written).to_string(), format!("connect={plain}:{port}"));
                let deny_written = policy(&["connect=*:*"], &[&written]);
                let allow_written = policy(&[&written], &[]);
                prop_assert!(matches!(check(&deny_written, &plain), Decision::DeniedBy(_)));
                prop_assert!(check(&allow_written, &plain).is_allowed());
                prop_assert!(!check(&allow_written, literal).is_allowed());
                for (_, other, _) in &spelled {
                    prop_assert!(
                        matches!(check(&deny_written, other), Decision::DeniedBy(_)),
                        "deny {} let `{}` through", written, other
                    );
                }
            }
            // And networks: an IPv4 network written as IPv4-mapped or NAT64 is that network.
            let prefix = (bits % 33) as u8;
            let net = ipnet::Ipv4Net::new(v4, prefix).unwrap().trunc();
            for form in ["::ffff:", "64:ff9b::"] {
                let written = format!("connect=[{form}{}]/{}:*", net.network(), prefix + 96);
                prop_assert_eq!(rule(&written).to_string(), format!("connect={}:*", Hosts::Net(net.into())));
            }
        }
    }
}
