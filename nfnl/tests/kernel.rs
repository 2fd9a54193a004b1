//! Against the real kernel, in a network namespace the test creates (and removes): what the
//! encoder writes is accepted, `nft` (the kernel's other client) lists it as meant, and the
//! decoder reads back what was written. Needs root; fails loudly without it.

use std::process::Command;

use nfnl::expr::{cmp, meta, payload, REG32_00};
use nfnl::object::{hook, msg, set_flags, Hook, DATA_VERDICT, ELEM_INTERVAL_END};
use nfnl::{family, Batch, Chain, Data, Elem, Expr, Rule, Set, Socket, Table, Verdict};

struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("nfnl-{tag}-{}", std::process::id());
        testkit::add_netns(&name);
        Netns(name)
    }

    fn nft(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip").args(["netns", "exec", &self.0, "nft"]).args(args).output().unwrap();
        let text = String::from_utf8_lossy(if out.status.success() { &out.stdout } else { &out.stderr });
        (out.status.success(), text.into_owned())
    }

    fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        testkit::enter(&self.0, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        testkit::del_netns(&self.0);
    }
}

const T: &str = "nfnl-test";

fn set(name: &str, flags: u32, key_type: u32, key_len: u32, id: u32) -> Set {
    Set {
        table: T.into(),
        name: name.into(),
        flags,
        key_type,
        key_len,
        data: None,
        concat: vec![],
        id,
        size: 0,
    }
}

fn ruleset() -> Batch {
    let mut b = Batch::new();
    let inet = family::INET;
    b.add(
        msg::NEWTABLE,
        inet,
        true,
        &Table { name: T.into(), flags: 0, comment: Some("nfnl/1".into()) }.encode(),
        "table",
    );
    b.add(msg::NEWSET, inet, true, &set("addrs", 0, 7, 4, 1).encode(), "set addrs");
    b.add(msg::NEWSET, inet, true, &set("nets", set_flags::INTERVAL, 7, 4, 2).encode(), "set nets");
    let ports = Set { concat: vec![], ..set("ports", 0, (7 << 12) | (12 << 6) | 13, 12, 3) };
    b.add(msg::NEWSET, inet, true, &ports.encode(), "set ports");
    let chain = |name: &str| Chain { table: T.into(), name: name.into(), hook: None };
    b.add(msg::NEWCHAIN, inet, true, &chain("group").encode(), "chain group");
    let vmap = Set { data: Some((DATA_VERDICT, 0)), ..set("dispatch", set_flags::MAP, 7, 4, 4) };
    b.add(msg::NEWSET, inet, true, &vmap.encode(), "map dispatch");
    let base = Chain {
        table: T.into(),
        name: "forward".into(),
        hook: Some(Hook { num: hook::FORWARD, priority: 0, kind: "filter".into(), policy: 1 }),
    };
    b.add(msg::NEWCHAIN, inet, true, &base.encode(), "chain forward");
    let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap().octets().to_vec();
    b.elems(inet, T, "addrs", false, &[Elem::key(ip("10.0.0.1")), Elem::key(ip("10.0.0.2"))], &[]);
    let nets =
        [Elem::key(ip("10.1.0.0")), Elem { key: ip("10.2.0.0"), data: None, flags: ELEM_INTERVAL_END }];
    b.elems(inet, T, "nets", false, &nets, &[]);
    let mut port = ip("10.0.0.1");
    port.extend_from_slice(&[6, 0, 0, 0, 0, 80, 0, 0]);
    b.elems(inet, T, "ports", false, &[Elem::key(port)], &[]);
    let goto =
        Elem { key: ip("10.0.0.1"), data: Some(Data::Verdict(Verdict::Goto("group".into()))), flags: 0 };
    b.elems(inet, T, "dispatch", false, &[goto], &[]);
    let rule = |chain: &str, exprs: Vec<Expr>, comment: &str| Rule {
        table: T.into(),
        chain: chain.into(),
        handle: None,
        exprs,
        comment: Some(comment.into()),
    };
    let nfproto = vec![
        Expr::Meta { dreg: REG32_00, key: meta::NFPROTO },
        Expr::Cmp { sreg: REG32_00, op: cmp::EQ, data: vec![2] },
    ];
    let saddr = Expr::Payload { dreg: REG32_00, base: payload::NETWORK, offset: 12, len: 4 };
    let mut dispatch = nfproto.clone();
    dispatch.extend([
        saddr.clone(),
        Expr::Lookup { set: "dispatch".into(), sreg: REG32_00, dreg: Some(0), inverted: false },
    ]);
    b.add(msg::NEWRULE, inet, true, &rule("forward", dispatch, "dispatch").encode(), "rule");
    let mut named = nfproto.clone();
    named.extend([
        Expr::Payload { dreg: 8, base: payload::NETWORK, offset: 16, len: 4 },
        Expr::Meta { dreg: 9, key: meta::L4PROTO },
        Expr::Payload { dreg: 10, base: payload::TRANSPORT, offset: 2, len: 2 },
        Expr::Lookup { set: "ports".into(), sreg: 8, dreg: None, inverted: false },
        Expr::verdict(Verdict::Return),
    ]);
    b.add(msg::NEWRULE, inet, true, &rule("group", named, "ns/p ingress[0]").encode(), "rule");
    let mut ranged = nfproto;
    ranged.extend([
        saddr,
        Expr::Lookup { set: "nets".into(), sreg: REG32_00, dreg: None, inverted: false },
        Expr::Meta { dreg: REG32_00, key: meta::L4PROTO },
        Expr::Cmp { sreg: REG32_00, op: cmp::EQ, data: vec![6] },
        Expr::Payload { dreg: REG32_00, base: payload::TRANSPORT, offset: 2, len: 2 },
        Expr::Range { sreg: REG32_00, op: 0, from: vec![0, 80], to: vec![0, 90] },
        Expr::verdict(Verdict::Return),
    ]);
    b.add(msg::NEWRULE, inet, true, &rule("group", ranged, "ns/p ingress[1]").encode(), "rule");
    b.add(
        msg::NEWRULE,
        inet,
        true,
        &rule("group", vec![Expr::Counter { packets: 0, bytes: 0 }, Expr::verdict(Verdict::Drop)], "drop")
            .encode(),
        "rule",
    );
    b
}

#[test]
fn a_ruleset_is_committed_listed_by_nft_and_read_back() {
    let ns = Netns::new("roundtrip");
    ns.enter(|| Socket::open().unwrap().commit(&ruleset()).unwrap());
    let (ok, listed) = ns.nft(&["list", "table", "inet", T]);
    assert!(ok, "{listed}");
    println!("{listed}");
    for want in [
        "comment \"nfnl/1\"",
        "set addrs {",
        "type ipv4_addr",
        "elements = { 10.0.0.1, 10.0.0.2 }",
        "elements = { 10.1.0.0/16 }",
        "type ipv4_addr . inet_proto . inet_service",
        "elements = { 10.0.0.1 . tcp . 80 }",
        "map dispatch {",
        "elements = { 10.0.0.1 : goto group }",
        "type filter hook forward priority filter; policy accept;",
        "ip saddr vmap @dispatch comment \"dispatch\"",
        "ip daddr . meta l4proto . th dport @ports return comment \"ns/p ingress[0]\"",
        "ip saddr @nets tcp dport 80-90 return",
        "counter packets 0 bytes 0 drop comment \"drop\"",
    ] {
        assert!(listed.contains(want), "nft lists no {want:?}:\n{listed}");
    }
    let rules = ns.enter(|| {
        let mut s = Socket::open().unwrap();
        let mut rules = Vec::new();
        s.dump(msg::GETRULE, family::INET, &Table::named(T), |m| {
            rules.push(Rule::decode(&m.nf()?.1)?);
            Ok(())
        })
        .unwrap();
        rules
    });
    assert_eq!(rules.len(), 4);
    assert!(rules.iter().all(|r| r.handle.is_some()));
    let group: Vec<&str> =
        rules.iter().filter(|r| r.chain == "group").filter_map(|r| r.comment.as_deref()).collect();
    assert_eq!(group, ["ns/p ingress[0]", "ns/p ingress[1]", "drop"], "in the order written");
}

#[test]
fn a_refused_batch_changes_nothing_and_names_the_element() {
    let ns = Netns::new("refused");
    ns.enter(|| Socket::open().unwrap().commit(&ruleset()).unwrap());
    let before = ns.nft(&["list", "table", "inet", T]).1;
    let err = ns.enter(|| {
        let mut b = Batch::new();
        let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap().octets().to_vec();
        b.elems(family::INET, T, "addrs", false, &[Elem::key(ip("10.0.0.9"))], &["10.0.0.9".into()]);
        // A key of the wrong length for the set: the kernel refuses it, and so the batch.
        b.elems(family::INET, T, "addrs", false, &[Elem::key(vec![1, 2])], &["the short one".into()]);
        Socket::open().unwrap().commit(&b).unwrap_err()
    });
    let text = err.to_string();
    assert!(text.contains("the short one"), "{text}");
    assert_eq!(ns.nft(&["list", "table", "inet", T]).1, before, "nothing of the batch was applied");
}
