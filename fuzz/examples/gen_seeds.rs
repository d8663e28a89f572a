//! Writes the seed corpus of every fuzz target to `fuzz/seeds/<target>/`: valid encodings
//! of each wire type, names in all three forms, snapshots and policies. Run it again when a
//! format changes (`cargo run --example gen_seeds` in fuzz/, plain build, no fuzz flags);
//! the output is deterministic and committed.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anchor::raft::{ScopeCommand, TypeConfig};
use anchorage_fuzz::{encode_snapshot, fuzz_key, WIRE_TYPES};
use ed25519_dalek::Signer;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, SnapshotMeta, Vote};
use proto::msg::*;
use proto::{
    AnchorInfo, Delegation, DelegationState, KeyRange, MemberSpec, Mutation, Name, Op, Record,
    RecordSet, Referral, ScopeDescriptor, ScopeId,
};
use proto::{SignedMutation, WireError};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let _ = fs::remove_dir_all(&root);
    names(&root.join("name"));
    wire(&root.join("wire"));
    snapshots(&root.join("snapshot"));
    policies(&root.join("policy_toml"));
    println!("seeds written to {}", root.display());
}

fn write(dir: &Path, file: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(file), bytes).unwrap();
}

fn n(text: &str) -> Name {
    Name::parse(text).unwrap()
}

fn names(dir: &Path) {
    let texts = [
        "/",
        "/eu",
        "/eu/payments/api",
        "/EU/Pay_1/a-b",
        "/a/b/c/d/e/f/g/h",
    ];
    for (i, t) in texts.iter().enumerate() {
        write(
            dir,
            &format!("parse-{i}"),
            &[&[0u8][..], t.as_bytes()].concat(),
        );
        let key = n(t).key();
        write(dir, &format!("key-{i}"), &[&[1u8][..], &key].concat());
        let dns = format!("anchorage.test\n{}", n(t).to_dns("anchorage.test"));
        write(
            dir,
            &format!("dns-{i}"),
            &[&[2u8][..], dns.as_bytes()].concat(),
        );
    }
    write(dir, "parse-bad", b"\x00/eu/Pay$");
    write(dir, "dns-bare", b"\x02API.payments.eu.anchorage.test.");
}

fn key_bytes() -> [u8; 32] {
    fuzz_key().verifying_key().to_bytes()
}

fn records() -> Vec<Record> {
    vec![
        Record::Addr("10.0.0.1:8080".parse().unwrap()),
        Record::Addr("[2001:db8::1]:443".parse().unwrap()),
        Record::Text("hello".into()),
        Record::Service {
            target: n("/eu/host"),
            port: 443,
            priority: 1,
            weight: 2,
        },
        Record::Alias(n("/eu/other")),
        Record::Object {
            peer: "12D3KooWExample".into(),
        },
        Record::Blob(vec![1, 2, 3]),
    ]
}

fn set() -> RecordSet {
    RecordSet {
        records: records(),
        ttl_s: 60,
        version: 7,
        writer: key_bytes(),
    }
}

fn mutations() -> Vec<Mutation> {
    let at = |op| Mutation {
        op,
        nonce: 42,
        expires_at_ms: 1_700_000_000_000,
    };
    vec![
        at(Op::Put {
            name: n("/eu/api"),
            records: records(),
            ttl_s: 60,
        }),
        at(Op::Delete { name: n("/eu/api") }),
        at(Op::Cas {
            name: n("/eu/api"),
            expected_version: 3,
            records: vec![Record::Text("x".into())],
            ttl_s: 10,
        }),
        at(Op::SetPolicy {
            prefix: n("/eu"),
            policy_toml: "[[writers]]\npattern = \"/**\"\nkeys = [\"*\"]\n".into(),
        }),
        at(Op::Delegate {
            prefix: n("/eu/payments"),
            members: vec![member_spec()],
            policy_toml: "[[writers]]\npattern = \"/**\"\nkeys = [\"*\"]\n".into(),
            referral_ttl_s: 600,
        }),
    ]
}

fn member_spec() -> MemberSpec {
    MemberSpec {
        anchor: descriptor().members[0].clone(),
        labels: BTreeMap::from([("jurisdiction".into(), "eu".into())]),
    }
}

fn child() -> ScopeId {
    ScopeId::derive(&[&ScopeId::root().0, b"/eu/payments", &9u64.to_be_bytes()])
}

fn referral() -> Referral {
    Referral {
        scope: child(),
        prefix: n("/eu/payments"),
        epoch: 1,
        members: descriptor().members,
        ttl_s: 600,
        range: KeyRange::all(),
    }
}

fn answers() -> Vec<Answer> {
    vec![
        Answer::Found {
            scope: ScopeId::root(),
            name: n("/eu/api"),
            set: set(),
        },
        Answer::NotFound {
            scope: ScopeId::root(),
            name: n("/eu/api"),
        },
        Answer::Referral {
            scope: ScopeId::root(),
            name: n("/eu/payments/api"),
            referral: referral(),
        },
    ]
}

/// An answer signed the way anchors sign (here with the fuzz key's raw ed25519 form; the
/// decoders do not care which key).
fn signed_answer(a: &Answer) -> SignedAnswer {
    let body = enc(a);
    SignedAnswer {
        signature: fuzz_key()
            .sign(&Answer::signing_bytes(&body))
            .to_bytes()
            .to_vec(),
        public_key: key_bytes().to_vec(),
        body,
    }
}

fn signed(m: &Mutation) -> SignedMutation {
    SignedMutation::sign(m, &fuzz_key()).unwrap()
}

fn descriptor() -> ScopeDescriptor {
    ScopeDescriptor {
        id: ScopeId::root(),
        prefix: n("/eu"),
        epoch: 2,
        members: vec![AnchorInfo {
            peer_id: "12D3KooWExample".into(),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
        }],
        range: KeyRange::all(),
    }
}

fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    proto::codec::encode(v).unwrap()
}

fn wire(dir: &Path) {
    let mut out: Vec<(usize, &str, Vec<u8>)> = Vec::new();
    let sel = |name: &str| WIRE_TYPES.iter().position(|t| *t == name).unwrap();
    for level in [ReadLevel::Cached, ReadLevel::Linearizable] {
        let r = ResolveRequest {
            name: n("/eu/payments/api"),
            level,
            scope: child(),
        };
        out.push((sel("ResolveRequest"), "resolve", enc(&r)));
    }
    for a in answers() {
        out.push((sel("Answer"), "answer", enc(&a)));
    }
    let mut responses: Vec<ResolveResponse> = answers()
        .iter()
        .map(|a| ResolveResponse::Signed(signed_answer(a)))
        .collect();
    responses.extend([
        ResolveResponse::Error(WireError::NotLeader {
            scope: ScopeId::root(),
            leader: None,
        }),
        ResolveResponse::Error(WireError::Invalid {
            reason: "bad".into(),
        }),
        ResolveResponse::Error(WireError::NoScope { name: n("/eu/api") }),
    ]);
    for r in &responses {
        out.push((sel("ResolveResponse"), "resolve-resp", enc(r)));
    }
    for m in mutations() {
        let req = MutateRequest {
            mutation: signed(&m),
            forwarded: false,
        };
        out.push((sel("MutateRequest"), "mutate", enc(&req)));
        out.push((sel("Mutation"), "mutation", enc(&m)));
    }
    let responses = [
        MutateResponse::Committed {
            scope: ScopeId::root(),
            version: 9,
            leader: Some(descriptor().members[0].clone()),
        },
        MutateResponse::Error(WireError::Conflict { current: 3 }),
        MutateResponse::Error(WireError::Expired {
            expires_at_ms: 5,
            reason: "past".into(),
        }),
        MutateResponse::Error(WireError::Delegated {
            name: n("/eu/payments/api"),
            referral: Box::new(referral()),
        }),
        MutateResponse::Error(WireError::Moving {
            prefix: n("/eu/payments"),
        }),
    ];
    for r in &responses {
        out.push((sel("MutateResponse"), "mutate-resp", enc(r)));
    }
    let admin = [
        AdminRequest::Status,
        AdminRequest::Snapshot,
        AdminRequest::CreateScope {
            descriptor: descriptor(),
            policy_toml: String::new(),
            bootstrap: true,
        },
        AdminRequest::ScopeInfo {
            target: ScopeTarget::Id(ScopeId::root()),
        },
        AdminRequest::ScopeInfo {
            target: ScopeTarget::Name(n("/eu/payments/api")),
        },
        AdminRequest::SeedScope(SeedScope {
            parent: descriptor(),
            index: 9,
            proof: signed(&mutations()[4]),
            child: child(),
            chunk_no: 0,
            records: vec![(n("/eu/payments/api"), set())],
            nonces: vec![proto::msg::SeededNonce {
                writer: [7; 32],
                nonce: 42,
                expires_at_ms: 1_800_000_000_000,
                name: n("/eu/payments/api"),
            }],
            last: true,
            join_only: false,
        }),
    ];
    for a in &admin {
        out.push((sel("AdminRequest"), "admin", enc(a)));
    }
    let status = AnchorStatus {
        peer_id: "12D3KooWExample".into(),
        node_id: 1,
        addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
        labels: BTreeMap::from([("jurisdiction".into(), "eu".into())]),
        scopes: vec![ScopeStatus {
            id: ScopeId::root(),
            prefix: Name::root(),
            role: "leader".into(),
            term: 3,
            leader: Some("12D3KooWExample".into()),
            last_applied: Some(10),
            last_log: Some(11),
            snapshot: None,
            members: vec!["12D3KooWExample".into()],
            names: 5,
            membership_log: Some(1),
            membership_term: Some(1),
            sleep: "awake".into(),
        }],
        peers: vec![],
        peers_omitted: 0,
    };
    let info = ScopeInfo {
        status: status.scopes[0].clone(),
        descriptor: descriptor(),
        parent: None,
        policy_toml: Some(policy_texts()[2].clone()),
        delegations: vec![Delegation {
            referral: referral(),
            members: vec![member_spec()],
            policy_toml: policy_texts()[2].clone(),
            index: 9,
            state: DelegationState::Active,
        }],
        active: true,
        load: Load {
            reads: 10,
            writes: 2,
        },
        split: None,
        member_change: None,
    };
    for a in [
        AdminResponse::Status(status),
        AdminResponse::Scope(Box::new(info)),
        AdminResponse::Ok,
    ] {
        out.push((sel("AdminResponse"), "admin-resp", enc(&a)));
    }
    let vote = Vote::new_committed(2, 1);
    let log_id = |i| LogId::new(CommittedLeaderId::new(2, 1), i);
    let entries: Vec<Entry<TypeConfig>> = vec![
        Entry {
            log_id: log_id(1),
            payload: EntryPayload::Normal(ScopeCommand::Genesis {
                descriptor: descriptor(),
                policy_toml: "[[writers]]\npattern = \"/**\"\nkeys = [\"*\"]\n".into(),
            }),
        },
        Entry {
            log_id: log_id(2),
            payload: EntryPayload::Normal(ScopeCommand::Writes {
                mutations: mutations().iter().map(signed).collect(),
                proposed_at_ms: 1_700_000_000_000,
            }),
        },
        Entry {
            log_id: log_id(3),
            payload: EntryPayload::Blank,
        },
    ];
    let append = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id(0)),
        entries,
        leader_commit: Some(log_id(1)),
    };
    let vote_req = VoteRequest::new(vote, Some(log_id(3)));
    let snap = InstallSnapshotRequest::<TypeConfig> {
        vote,
        meta: SnapshotMeta {
            last_log_id: Some(log_id(3)),
            last_membership: Default::default(),
            snapshot_id: "2-1-3".into(),
        },
        offset: 0,
        data: snapshot_data(),
        done: true,
    };
    let raft_payloads = [
        (RaftRpc::Append, enc(&append)),
        (RaftRpc::Vote, enc(&vote_req)),
        (RaftRpc::Snapshot, enc(&snap)),
    ];
    out.push((sel("AppendEntriesRequest"), "append", enc(&append)));
    out.push((sel("VoteRequest"), "vote", enc(&vote_req)));
    out.push((sel("InstallSnapshotRequest"), "install", enc(&snap)));
    for (rpc, payload) in raft_payloads {
        let req = RaftRequest {
            scope: ScopeId::root(),
            rpc,
            payload,
        };
        out.push((sel("RaftRequest"), "raft", enc(&req)));
    }
    for r in [
        RaftResponse::Ok(vec![0, 1, 2]),
        RaftResponse::Refused(WireError::Refused {
            reason: "not a member".into(),
        }),
    ] {
        out.push((sel("RaftResponse"), "raft-resp", enc(&r)));
    }
    out.push((sel("RecordSet"), "record-set", enc(&set())));
    for after in [None, Some(9)] {
        let w = WatchRequest {
            scope: ScopeId::root(),
            prefix: n("/eu"),
            after,
            wait_ms: 4_000,
            children: after.map(|_| vec![ScopeId::child(&ScopeId::root(), &n("/eu/a"), 7)]),
        };
        out.push((sel("WatchRequest"), "watch", enc(&w)));
    }
    let watch_responses = [
        WatchResponse::Changes {
            scope: ScopeId::root(),
            events: vec![
                ChangeEvent {
                    name: n("/eu/api"),
                    version: 10,
                    set: Some(set()),
                },
                ChangeEvent {
                    name: n("/eu/old"),
                    version: 11,
                    set: None,
                },
            ],
            up_to: 12,
        },
        WatchResponse::Compacted {
            scope: ScopeId::root(),
            oldest: 100,
            up_to: 200,
        },
        WatchResponse::Referral(referral()),
        WatchResponse::Error(WireError::NoScope { name: n("/eu") }),
        WatchResponse::Children {
            scope: ScopeId::root(),
            children: vec![WatchChild {
                referral: referral(),
                index: 7,
            }],
            at: 12,
        },
    ];
    for r in &watch_responses {
        out.push((sel("WatchResponse"), "watch-resp", enc(r)));
    }
    for (i, text) in policy_texts().iter().enumerate() {
        let p = policy::Policy::from_toml(text).unwrap();
        out.push((
            sel("Policy"),
            if i == 0 { "policy" } else { "policy-n" },
            enc(&p),
        ));
    }
    for (i, (selector, stem, bytes)) in out.iter().enumerate() {
        let framed = [&[*selector as u8][..], bytes].concat();
        write(dir, &format!("{i:02}-{stem}"), &framed);
    }
}

fn snapshot_data() -> Vec<u8> {
    let mut record_key = b"r".to_vec();
    record_key.extend_from_slice(&n("/eu/api").key());
    let kvs = vec![
        (b"mpolicy".to_vec(), enc(&policy_texts()[0])),
        (b"mdescriptor".to_vec(), enc(&descriptor())),
        (b"mnames".to_vec(), enc(&1u64)),
        (record_key, enc(&set())),
        (b"n\x00\x01".to_vec(), Vec::new()),
    ];
    encode_snapshot(&kvs)
}

fn snapshots(dir: &Path) {
    let data = snapshot_data();
    // Mode 0: as stored (digest included); mode 1: body only, the harness adds the digest.
    write(dir, "full", &[&[0u8][..], &data].concat());
    write(dir, "body", &[&[1u8][..], &data[32..]].concat());
    write(dir, "empty-body", &[1u8]);
    write(
        dir,
        "one-pair",
        &[
            &[1u8][..],
            &encode_snapshot(&[(b"k".to_vec(), b"v".to_vec())])[32..],
        ]
        .concat(),
    );
}

fn policy_texts() -> Vec<String> {
    let hex = |seed: u8| {
        let k = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        hex::encode(k.verifying_key().to_bytes())
    };
    vec![
        format!(
            r#"[admin]
keys = ["{a}", "{b}", "{c}"]
threshold = 2

[[writers]]
pattern = "/eu/**"
ops = ["put", "cas"]
keys = ["{a}"]

[[writers]]
pattern = "/eu/*/api"
keys = ["*"]

[limits]
kinds = ["addr", "service"]
ttl_s_max = 3600
record_bytes_max = 1024
names_max = 10

[reads]
access = "keyed"
keys = ["{b}"]

[split]
names_max = 5000
bytes_max = 1000000
writes_per_s_max = 50
reads_per_s_max = 500
window_s = 30

[placement]
replicas = 5
labels = {{ jurisdiction = "eu", tier = "gold" }}
"#,
            a = hex(1),
            b = hex(2),
            c = hex(3)
        ),
        String::new(),
        "[[writers]]\npattern = \"/**\"\nkeys = [\"*\"]\n".into(),
        policy::Policy::development(None).to_toml(),
        "[placement.labels]\nzone = \"a.b-c_d\"\n[reads]\naccess = \"anonymous\"\n".into(),
    ]
}

fn policies(dir: &Path) {
    for (i, text) in policy_texts().iter().enumerate() {
        write(dir, &format!("policy-{i}.toml"), text.as_bytes());
    }
    write(
        dir,
        "bad-pattern.toml",
        b"[[writers]]\npattern = \"/eu/**/x\"\nkeys = [\"*\"]\n",
    );
}
