//! The rendering tests: a sample hierarchy (/ with /eu active and delegating /eu/payments,
//! frozen, and /us aborted), a traced walk and watch events, and what each renders to.

use std::collections::BTreeMap;
use std::time::Duration;

use proto::msg::{AnchorStatus, ChangeEvent, Load, PeerLoad, ScopeInfo, ScopeStatus, SplitView};
use proto::{
    AnchorInfo, Delegation, DelegationState, MemberSpec, Name, Record, RecordSet, Referral,
    ScopeDescriptor, ScopeId,
};
use resolver::{Hop, HopOutcome, Trace, WatchEvent};

use super::answer::{answer_json, answer_lines, version_json, version_line};
use super::delegated::Delegated;
use super::scope::{delegation_lines, info_json, policy_summary, show_lines};
use super::status::{bytes_text, peer_lines, status_lines};
use super::trace::{hop_json, trace_lines};
use super::tree::{build_tree, find_in_tree, render_tree, tree_json, ChildNode, Found};
use super::watch::{watch_json, watch_line};
use super::{short_id, short_peer};

const P1: &str = "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAaaa111";
const P2: &str = "12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBbbb222";
const P3: &str = "12D3KooWCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCccc333";

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn anchor(p: &str) -> AnchorInfo {
    AnchorInfo {
        peer_id: p.into(),
        addrs: vec!["/ip4/127.0.0.1/tcp/7401".into()],
    }
}

fn info(id: ScopeId, prefix: &str, members: &[&str], names: u64) -> ScopeInfo {
    let members: Vec<AnchorInfo> = members.iter().map(|p| anchor(p)).collect();
    ScopeInfo {
        status: ScopeStatus {
            id,
            prefix: name(prefix),
            role: "leader".into(),
            term: 2,
            leader: Some(members[0].peer_id.clone()),
            last_applied: Some(40),
            last_log: Some(40),
            snapshot: None,
            members: members.iter().map(|m| m.peer_id.clone()).collect(),
            names,
            membership_log: Some(1),
            membership_term: Some(1),
            sleep: "awake".into(),
        },
        descriptor: ScopeDescriptor {
            id,
            prefix: name(prefix),
            epoch: 1,
            members,
            range: proto::KeyRange::all(),
        },
        parent: None,
        policy_toml: Some(policy::Policy::development(None).to_toml()),
        delegations: vec![],
        active: true,
        load: Load {
            reads: 12,
            writes: 3,
        },
        split: None,
        member_change: None,
    }
}

fn delegation(child: &ScopeInfo, index: u64, state: DelegationState) -> Delegation {
    Delegation {
        referral: Referral {
            scope: child.descriptor.id,
            prefix: child.descriptor.prefix.clone(),
            epoch: 1,
            members: child.descriptor.members.clone(),
            ttl_s: 600,
            range: proto::KeyRange::all(),
        },
        members: child
            .descriptor
            .members
            .iter()
            .map(|a| MemberSpec {
                anchor: a.clone(),
                labels: BTreeMap::from([("jurisdiction".into(), "eu".into())]),
            })
            .collect(),
        policy_toml: policy::Policy::development(None).to_toml(),
        index,
        state,
    }
}

/// / with /eu (active, itself delegating /eu/payments, frozen) and /us (aborted).
fn sample() -> (ScopeInfo, BTreeMap<ScopeId, Result<ScopeInfo, String>>) {
    let root_id = ScopeId::root();
    let eu_id = ScopeId::child(&root_id, &name("/eu"), 17);
    let mut root = info(root_id, "/", &[P1, P2, P3], 3);
    let mut eu = info(eu_id, "/eu", &[P2, P3], 2);
    eu.parent = Some(root.descriptor.clone());
    let pay = info(
        ScopeId::child(&eu_id, &name("/eu/payments"), 42),
        "/eu/payments",
        &[P3],
        0,
    );
    let us = info(ScopeId::child(&root_id, &name("/us"), 9), "/us", &[P1], 0);
    eu.delegations = vec![delegation(&pay, 42, DelegationState::Frozen)];
    root.delegations = vec![
        delegation(&us, 9, DelegationState::Aborted),
        delegation(&eu, 17, DelegationState::Active),
    ];
    let fetched = BTreeMap::from([(eu_id, Ok(eu))]);
    (root, fetched)
}

#[test]
fn short_forms() {
    assert_eq!(short_peer(P1), "…aaa111");
    assert_eq!(short_peer("abc"), "abc");
    assert_eq!(short_id(&ScopeId::root()).len(), 12);
    assert!(ScopeId::root()
        .to_hex()
        .starts_with(&short_id(&ScopeId::root())));
}

#[test]
fn tree_renders_hierarchy_with_annotations() {
    let (root, fetched) = sample();
    let tree = build_tree(root, &fetched);
    let lines = render_tree(&tree);
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let root_id = short_id(&ScopeId::root());
    assert!(lines[0].starts_with("/ "), "{}", lines[0]);
    assert!(lines[0].contains(&root_id));
    assert!(lines[0].contains("members …aaa111,…bbb222,…ccc333"));
    assert!(lines[0].contains("leader …aaa111"));
    assert!(lines[0].contains("names 3"));
    assert!(lines[0].contains("load 12r/3w per 10s"));
    // children sorted by prefix: /eu before /us
    assert!(lines[1].starts_with("├── /eu "), "{}", lines[1]);
    assert!(lines[1].contains("members …bbb222,…ccc333"));
    assert!(lines[2].starts_with("│   └── /eu/payments"), "{}", lines[2]);
    assert!(lines[2].contains("[frozen since v42"));
    assert!(lines[3].starts_with("└── /us"), "{}", lines[3]);
    assert!(lines[3].contains("[aborted delegation of v9"));
    // columns aligned: the id starts at the same column on every line
    let ids: Vec<String> = {
        let mut v = vec![tree.info.descriptor.id];
        for c in &tree.children {
            match c {
                ChildNode::Active(n) => {
                    v.push(n.info.descriptor.id);
                    for cc in &n.children {
                        if let ChildNode::Annotation(d) = cc {
                            v.push(d.referral.scope);
                        }
                    }
                }
                ChildNode::Annotation(d) => v.push(d.referral.scope),
                ChildNode::Unreachable { .. } => {}
            }
        }
        v.iter().map(short_id).collect()
    };
    let id_cols: Vec<usize> = lines
        .iter()
        .zip(&ids)
        .map(|(l, id)| l[..l.find(id.as_str()).unwrap()].chars().count())
        .collect();
    assert!(id_cols.windows(2).all(|w| w[0] == w[1]), "{lines:#?}");
}

#[test]
fn tree_marks_unreachable_children_and_loops() {
    let (mut root, mut fetched) = sample();
    let eu_id = root.delegations[1].referral.scope;
    fetched.insert(eu_id, Err("no member of scope answered".into()));
    let lines = render_tree(&build_tree(root.clone(), &fetched));
    assert!(
        lines[1].contains("[unreachable: no member of scope answered]"),
        "{lines:#?}"
    );
    // a child claiming to be the root again is a loop, not infinite recursion
    let again = root.clone();
    root.delegations
        .push(delegation(&again, 50, DelegationState::Active));
    let lines = render_tree(&build_tree(root, &BTreeMap::new()));
    assert!(lines.iter().any(|l| l.contains("loop")), "{lines:#?}");
}

#[test]
fn tree_json_nests_children_and_keeps_annotations() {
    let (root, fetched) = sample();
    let v = tree_json(&build_tree(root, &fetched));
    assert_eq!(v["prefix"], "/");
    assert_eq!(v["scope"], ScopeId::root().to_hex());
    assert_eq!(v["children"].as_array().unwrap().len(), 1);
    assert_eq!(v["children"][0]["prefix"], "/eu");
    assert_eq!(v["children"][0]["delegations"][0]["state"], "frozen");
    assert_eq!(v["delegations"][0]["state"], "aborted");
    assert_eq!(v["load"]["window_s"], Load::WINDOW_S);
    assert!(v.get("policy_toml").is_none());
}

#[test]
fn find_by_id_prefix() {
    let (root, fetched) = sample();
    let eu_id = root.delegations[1].referral.scope;
    let us_id = root.delegations[0].referral.scope;
    let tree = build_tree(root, &fetched);
    let mut found = Vec::new();
    find_in_tree(&tree, &eu_id.to_hex(), &mut found);
    assert!(matches!(found.as_slice(), [Found::Scope(i)] if i.descriptor.id == eu_id));
    let mut found = Vec::new();
    find_in_tree(&tree, &us_id.to_hex()[..12], &mut found);
    assert!(
        matches!(found.as_slice(), [Found::Delegation { delegation, .. }]
        if delegation.state == DelegationState::Aborted)
    );
    let mut found = Vec::new();
    find_in_tree(&tree, "", &mut found);
    assert_eq!(found.len(), 4);
}

#[test]
fn show_prints_descriptor_policy_and_delegations() {
    let (_, fetched) = sample();
    let eu = fetched.values().next().unwrap().as_ref().unwrap();
    let lines = show_lines(eu);
    let text = lines.join("\n");
    assert!(
        lines[0].contains("prefix /eu") && lines[0].contains("active"),
        "{text}"
    );
    assert!(text.contains("parent       / ("), "{text}");
    assert!(
        text.contains(&format!("{P2}  /ip4/127.0.0.1/tcp/7401  (leader)")),
        "{text}"
    );
    assert!(
        text.contains("12 reads, 3 writes in the last 10 s"),
        "{text}"
    );
    assert!(text.contains("policy       frozen (no admin)"), "{text}");
    assert!(text.contains("/eu/payments  frozen"), "{text}");
    assert!(text.contains("[jurisdiction=eu]"), "{text}");
}

#[test]
fn show_prints_the_split_view() {
    let (_, fetched) = sample();
    let mut eu = fetched.values().next().unwrap().as_ref().unwrap().clone();
    assert!(show_lines(&eu)
        .join("\n")
        .contains("split        not known"));
    eu.split = Some(SplitView {
        reads_per_s: 200,
        writes_per_s: 1,
        reads_peak: 210,
        writes_peak: 2,
        peak_window_s: 300,
        peak_reliable: false,
        names: 3,
        bytes: None,
        scanned: 2,
        complete: false,
        children: vec![("hot".into(), 2, 40)],
        median: Some(name("/eu/hot")),
        key: None,
        key_text: "none qualifies: the best candidate /eu/hot (0 left, 300 right, imbalance 1.00)"
            .into(),
        would_split: false,
        decision: "stay: no qualifying split key: one hot name /eu/hot carries 100% of reads"
            .into(),
        auto: true,
        merges: vec!["/eu/hot: stay: automatic merges are off".into()],
    });
    let text = show_lines(&eu).join("\n");
    assert!(
        text.contains("split load   reads 200/s (peak 210/s), writes 1/s (peak 2/s); peaks over 300 s, not reliable yet"),
        "{text}"
    );
    assert!(
        text.contains(
            "split size   3 names, bytes unknown; median /eu/hot (scan stopped after 2 names"
        ),
        "{text}"
    );
    assert!(text.contains("children     hot 2 names/40 B"), "{text}");
    assert!(
        text.contains("merge        /eu/hot: stay: automatic merges are off"),
        "{text}"
    );
    assert!(text.contains("split key    none qualifies"), "{text}");
    assert!(
        text.contains("split        stay: no qualifying split key: one hot name /eu/hot carries 100% of reads (auto on)"),
        "{text}"
    );
    let j = info_json(&eu);
    assert_eq!(j["split"]["load"]["reads_peak"], 210);
    assert_eq!(j["split"]["size"]["bytes"], serde_json::Value::Null);
    assert_eq!(j["split"]["size"]["children"][0]["label"], "hot");
    assert_eq!(j["split"]["would_split"], false);
    assert!(j["split"]["decision"]
        .as_str()
        .unwrap()
        .contains("one hot name"));
}

#[test]
fn delegation_lines_without_policy_text() {
    let (root, _) = sample();
    let mut d = root.delegations[0].clone();
    let text = delegation_lines(&root, &d).join("\n");
    assert!(
        text.contains("prefix /us  aborted delegation of / ("),
        "{text}"
    );
    assert!(text.contains("labels jurisdiction=eu"), "{text}");
    assert!(text.contains("policy       frozen (no admin)"), "{text}");
    d.policy_toml.clear();
    let text = delegation_lines(&root, &d).join("\n");
    assert!(text.contains("not sent by the parent"), "{text}");
}

#[test]
fn policy_summary_reads_admins_and_placement() {
    let key = policy::PublicKey::from_bytes(
        &ed25519_dalek::SigningKey::from_bytes(&[7; 32])
            .verifying_key()
            .to_bytes(),
    )
    .unwrap();
    let mut p = policy::Policy::development(Some(key));
    p.placement
        .labels
        .insert("jurisdiction".into(), "eu".into());
    let s = policy_summary(&p.to_toml());
    assert!(s.starts_with("1 of 1 admin keys"), "{s}");
    assert!(s.contains("labels jurisdiction=eu"), "{s}");
    assert!(policy_summary("not toml [").starts_with("unreadable"));
}

#[test]
fn child_id_matches_the_spec_derivation() {
    let p = ScopeId::root();
    let id = ScopeId::child(&p, &name("/eu"), 17);
    let want = ScopeId::derive(&[&p.0, b"/eu", &17u64.to_be_bytes()]);
    assert_eq!(id, want);
    assert_ne!(id, ScopeId::child(&p, &name("/eu"), 18));
}

fn set(version: u64) -> RecordSet {
    RecordSet {
        records: vec![Record::Text("hi".into())],
        ttl_s: 30,
        version,
        writer: [1; 32],
    }
}

#[test]
fn watch_lines_and_json() {
    let changed = WatchEvent::Changed(ChangeEvent {
        name: name("/eu/a"),
        version: 17,
        set: Some(set(17)),
    });
    let line = watch_line(&changed);
    assert!(line.starts_with("v17  /eu/a  "), "{line}");
    assert!(line.contains("ttl 30s"));
    let deleted = WatchEvent::Changed(ChangeEvent {
        name: name("/eu/a"),
        version: 18,
        set: None,
    });
    assert_eq!(watch_line(&deleted), "v18  /eu/a  deleted");
    let compacted = WatchEvent::Compacted {
        oldest: 100,
        up_to: 250,
    };
    assert!(watch_line(&compacted).starts_with("compacted: "));
    assert!(watch_line(&compacted).starts_with("compacted: resync from 250 "));
    let r = Referral {
        scope: ScopeId::root(),
        prefix: name("/eu"),
        epoch: 1,
        members: vec![anchor(P1)],
        ttl_s: 60,
        range: proto::KeyRange::all(),
    };
    let followed = WatchEvent::Followed(Referral {
        range: proto::KeyRange {
            start: Some(name("/eu/m")),
            end: None,
        },
        ..r.clone()
    });
    let line = watch_line(&followed);
    assert!(
        line.starts_with("following child scope /eu [/eu/m, -) "),
        "{line}"
    );
    assert_eq!(watch_json(&followed)["event"], "followed");
    assert_eq!(watch_json(&followed)["range"], "[/eu/m, -)");
    let merged = WatchEvent::Merged(ScopeId::root());
    assert!(watch_line(&merged).starts_with("child scope "));
    assert_eq!(watch_json(&merged)["event"], "merged");
    let moved = WatchEvent::Moved(r);
    assert!(
        watch_line(&moved).starts_with("moved to child scope /eu"),
        "{}",
        watch_line(&moved)
    );
    assert_eq!(watch_json(&changed)["event"], "changed");
    assert_eq!(watch_json(&changed)["version"], 17);
    assert_eq!(watch_json(&deleted)["event"], "deleted");
    assert_eq!(watch_json(&compacted)["up_to"], 250);
    assert_eq!(watch_json(&moved)["members"][0], P1);
    // JSON lines: one object per line
    assert!(!watch_json(&changed).to_string().contains('\n'));
}

#[test]
fn trace_lines_like_dig() {
    let peer: libp2p::PeerId = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let eu = ScopeId::child(&ScopeId::root(), &name("/eu"), 17);
    let trace = Trace {
        hops: vec![
            Hop {
                scope: ScopeId::root(),
                prefix: Name::root(),
                peer: Some(peer),
                rtt: Duration::from_micros(1850),
                outcome: HopOutcome::Referral(Referral {
                    scope: eu,
                    prefix: name("/eu"),
                    epoch: 1,
                    members: vec![anchor(P2), anchor(P3)],
                    ttl_s: 600,
                    range: proto::KeyRange::all(),
                }),
            },
            Hop {
                scope: eu,
                prefix: name("/eu"),
                peer: Some(peer),
                rtt: Duration::from_millis(2),
                outcome: HopOutcome::Found { version: 17 },
            },
            Hop {
                scope: eu,
                prefix: name("/eu"),
                peer: None,
                rtt: Duration::ZERO,
                outcome: HopOutcome::CachedAnswer,
            },
        ],
    };
    let lines = trace_lines(&trace);
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(lines[0].starts_with(";; scope"));
    assert!(lines[1].starts_with(";; /  "), "{}", lines[1]);
    assert!(lines[1].contains(&short_id(&ScopeId::root())));
    assert!(lines[1].contains("1.9 ms"), "{}", lines[1]);
    assert!(lines[1].contains("referral to /eu"), "{}", lines[1]);
    assert!(lines[1].contains("[…bbb222,…ccc333]"), "{}", lines[1]);
    assert!(lines[2].contains("answer v17"));
    assert!(lines[2].contains("2.0 ms"));
    assert!(lines[3].contains("(cache)") && lines[3].contains("cached answer"));
    // the outcome column starts at the same place on every line
    let at: Vec<usize> = lines[1..]
        .iter()
        .map(|l| {
            let i = l
                .find("referral")
                .or(l.find("answer v"))
                .or(l.find("cached"))
                .unwrap();
            l[..i].chars().count()
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] == w[1]), "{lines:#?}");
    let j = hop_json(&trace.hops[0]);
    assert_eq!(j["outcome"], "referral");
    assert_eq!(j["detail"]["prefix"], "/eu");
    assert_eq!(j["peer"], peer.to_string());
}

#[test]
fn answer_output() {
    let lines = answer_lines("/hello", &set(5));
    assert_eq!(lines[0], "/hello  version 5  ttl 30s");
    assert_eq!(answer_json("/hello", &set(5))["version"], 5);
}

#[test]
fn version_and_status_output() {
    assert_eq!(version_line("/a", 3), "/a: committed at version 3");
    assert_eq!(
        version_json("/a", 3).to_string(),
        r#"{"name":"/a","version":3}"#
    );
    let (root, _) = sample();
    let s = AnchorStatus {
        peer_id: P1.into(),
        node_id: 1,
        addrs: vec!["/ip4/127.0.0.1/tcp/7401".into()],
        labels: BTreeMap::from([("zone".into(), "a".into())]),
        scopes: vec![root.status.clone()],
        peers: vec![],
        peers_omitted: 0,
    };
    let lines = status_lines(&s);
    assert_eq!(
        lines[0],
        format!("anchor {P1} /ip4/127.0.0.1/tcp/7401  labels zone=a")
    );
    assert!(
        lines[1].starts_with(&format!("  scope {} /  ", short_id(&ScopeId::root()))),
        "{}",
        lines[1]
    );
    assert!(lines[1].contains("snapshot -"), "{}", lines[1]);
    assert!(lines[1].ends_with(&format!("leader {P1}")), "{}", lines[1]);
    assert_eq!(lines[2], "  peers: none heard from yet");
}

#[test]
fn peer_table_output() {
    let summary = |anchor: &str| proto::gossip::LoadSummary {
        anchor: anchor.into(),
        seq: 1,
        sent_at_ms: 0,
        interval_ms: 5_000,
        cpu_millicores: 250,
        cores: 2,
        mem_bytes: 64 << 20,
        disk_free_bytes: 3 << 30,
        disk_total_bytes: 4 << 30,
        scopes: 3,
        leaderships: 1,
        reads_per_s: 120,
        writes_per_s: 7,
        hot: vec![],
        labels: BTreeMap::from([("zone".into(), "a".into())]),
        addrs: vec![],
    };
    let peers = vec![
        PeerLoad {
            summary: summary(P1),
            age_ms: 1_200,
        },
        PeerLoad {
            summary: summary("other"),
            age_ms: 3_000,
        },
    ];
    let lines = peer_lines(P1, &peers, 2);
    assert!(lines[0].trim_start().starts_with("peer"), "{}", lines[0]);
    assert!(lines[1].starts_with(&format!("* {P1}")), "{}", lines[1]);
    for want in [
        "1.2s", " 3 ", "0.25", "64.0 MiB", "3.0 GiB", "120", "zone=a",
    ] {
        assert!(lines[1].contains(want), "{want:?} in {}", lines[1]);
    }
    assert!(lines[2].starts_with("  other"), "{}", lines[2]);
    assert!(lines[3].contains("2 more"), "{}", lines[3]);
    assert_eq!(bytes_text(512), "512 B");
    assert_eq!(bytes_text(1536), "1.5 KiB");
}

#[test]
fn delegated_output() {
    let (root, _) = sample();
    let d = &root.delegations[1];
    let done = Delegated {
        prefix: &d.referral.prefix,
        scope: d.referral.scope,
        parent: root.descriptor.id,
        parent_prefix: &root.descriptor.prefix,
        index: d.index,
        state: DelegationState::Active,
        members: &d.members,
    };
    let lines = done.lines();
    assert_eq!(
        lines[0],
        format!(
            "/eu: scope {} active (delegated by / at v17)",
            d.referral.scope
        )
    );
    assert_eq!(
        lines[1],
        format!("  {P2}  /ip4/127.0.0.1/tcp/7401  labels jurisdiction=eu")
    );
    let v = done.json();
    assert_eq!(v["state"], "active");
    assert_eq!(v["parent_prefix"], "/");
    assert_eq!(v["members"][1]["peer_id"], P3);
}
