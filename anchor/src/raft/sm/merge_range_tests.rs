//! The state machine's merges of ranges and operators' merges: a range merges back into
//! the scope whose own names end where it starts (the ranges between merge first), only
//! with evidence about exactly these two scopes; an operator's admin-signed merge starts the
//! same merge without evidence.

use policy::Policy;
use proto::split::{LoadEvidence, MergeEvidence, MergeSide};
use proto::{DelegationState, KeyRange, Op, RecordSet, ScopeDescriptor, WireError};

use super::tests::{batch, entry, put};
use super::*;

const T: u64 = 1_000_000;

fn n(s: &str) -> Name {
    Name::parse(s).unwrap()
}

/// A root holding `/a/1` .. `/e/1` on one member, that split `[/d, -)` off (index 3) and
/// then `[/b, /d)` (index 5), both handed over: its own names are `[-, /b)`. The test
/// signer is an admin; automatic merges are on, with a 10 s minimum age.
async fn twice_split_root(db: &sled::Db) -> StateMachine {
    let mut sm =
        StateMachine::open(db, ScopeId::root(), Name::root(), Default::default()).expect("open");
    let admin = ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key();
    let mut policy = Policy::development(Some(
        policy::PublicKey::from_bytes(&admin.to_bytes()).unwrap(),
    ));
    policy.merge.auto = true;
    policy.merge.names_min = Some(3);
    policy.merge.age_s_min = 10;
    policy.validate().unwrap();
    let genesis = ScopeCommand::Genesis {
        descriptor: ScopeDescriptor {
            id: ScopeId::root(),
            prefix: Name::root(),
            epoch: 1,
            members: vec![proto::AnchorInfo {
                peer_id: "12D3KooWexample".into(),
                addrs: vec![],
            }],
            range: KeyRange::all(),
        },
        policy_toml: policy.to_toml(),
    };
    let names = ["/a/1", "/b/1", "/c/1", "/d/1", "/e/1"];
    let writes = batch(names.iter().map(|s| put(s, "1")).collect(), 10);
    let split = |at: &str| Op::Split {
        at: n(at),
        by_range: true,
    };
    sm.apply(vec![entry(1, genesis), entry(2, writes)])
        .await
        .unwrap();
    for (index, at) in [(3, "/d"), (5, "/b")] {
        let out = sm
            .apply(vec![entry(index, batch(vec![split(at)], 20 + index))])
            .await
            .unwrap();
        assert!(out[0].results[0].is_ok(), "{out:?}");
        let child = ScopeId::child(&ScopeId::root(), &n(at), index);
        sm.apply(vec![entry(
            index + 1,
            ScopeCommand::DelegationActive { child },
        )])
        .await
        .unwrap();
    }
    sm
}

fn side(start: Option<&str>, end: Option<&str>, names: u64) -> MergeSide {
    MergeSide {
        prefix: Name::root(),
        start: start.map(n),
        end: end.map(n),
        names,
        bytes: names * 10,
        load: LoadEvidence {
            reads_peak: 1,
            writes_peak: 1,
            peak_reliable: true,
            over_ms: 0,
            over_low: 0,
        },
    }
}

fn merge(child: ScopeId, left: MergeSide, right: MergeSide) -> ScopeCommand {
    ScopeCommand::Merge {
        child,
        evidence: MergeEvidence {
            left,
            right,
            split_at_ms: T,
            decided_at_ms: T + 20_000,
        },
        proposed_at_ms: T + 20_000,
    }
}

fn refused(out: &[crate::raft::ApplyOutcome], what: &str) -> bool {
    matches!(&out[0].results[0], Err(WireError::Refused { reason }) if reason.contains(what))
}

fn set(version: u64) -> RecordSet {
    RecordSet {
        records: vec![proto::Record::Text(format!("v{version}"))],
        ttl_s: 60,
        version,
        writer: [3; 32],
    }
}

#[tokio::test]
async fn a_range_merges_back_into_the_scope_whose_names_end_where_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let mut sm = twice_split_root(&db).await;
    let far = ScopeId::child(&ScopeId::root(), &n("/d"), 3);
    let near = ScopeId::child(&ScopeId::root(), &n("/b"), 5);
    assert_eq!(sm.reader().view().bounds().end, Some(n("/b")));
    // [/d, -) does not border [-, /b): the range between merges first.
    let out = sm
        .apply(vec![entry(
            7,
            merge(far, side(None, Some("/b"), 1), side(Some("/d"), None, 2)),
        )])
        .await
        .unwrap();
    assert!(refused(&out, "does not border"), "{out:?}");
    // Evidence about other bounds than the two scopes' own: a no-op.
    let out = sm
        .apply(vec![entry(
            8,
            merge(
                near,
                side(None, Some("/b"), 1),
                side(Some("/b"), Some("/e"), 2),
            ),
        )])
        .await
        .unwrap();
    assert!(refused(&out, "other scopes"), "{out:?}");
    // The right evidence: Merging, still referring.
    let out = sm
        .apply(vec![entry(
            9,
            merge(
                near,
                side(None, Some("/b"), 1),
                side(Some("/b"), Some("/d"), 2),
            ),
        )])
        .await
        .unwrap();
    assert!(matches!(out[0].results[0], Ok(9)), "{out:?}");
    let view = sm.reader().view();
    assert_eq!(
        view.delegations[&n("/b")].state,
        DelegationState::Merging { index: 9 }
    );
    assert_eq!(
        crate::scope::decide::delegation_over(&view.delegations, &n("/c/1"))
            .map(|d| d.referral.scope),
        Some(near)
    );
    // The child's final state: a record outside its range is refused whole.
    let done = |index, records: Vec<(Name, RecordSet)>| {
        entry(
            index,
            ScopeCommand::MergeDone {
                child: near,
                retired_at: 30,
                records,
                nonces: Vec::new(),
            },
        )
    };
    let records = vec![(n("/b/1"), set(2)), (n("/c/2"), set(30))];
    let mut outside = records.clone();
    outside.push((n("/d/9"), set(12)));
    let out = sm.apply(vec![done(31, outside)]).await.unwrap();
    assert!(refused(&out, "outside"), "{out:?}");
    let out = sm.apply(vec![done(32, records.clone())]).await.unwrap();
    assert!(matches!(out[0].results[0], Ok(32)), "{out:?}");
    let st = sm.reader();
    let view = st.view();
    assert_eq!(view.bounds().end, Some(n("/d")), "its names reach /d again");
    assert_eq!(view.names, 3, "/a/1 and the two taken back");
    assert_eq!(
        st.records_in(
            &Name::root(),
            &KeyRange {
                start: Some(n("/b")),
                end: Some(n("/d"))
            }
        )
        .unwrap(),
        records,
        "/c/1, deleted in the child, is gone"
    );
    assert!(view.delegations.contains_key(&n("/d")));
    // Now [/d, -) borders it and may merge too.
    let out = sm
        .apply(vec![entry(
            33,
            merge(far, side(None, Some("/d"), 2), side(Some("/d"), None, 2)),
        )])
        .await
        .unwrap();
    assert!(matches!(out[0].results[0], Ok(33)), "{out:?}");
}

#[tokio::test]
async fn an_operators_merge_starts_the_merge_of_a_bordering_part_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let mut sm = twice_split_root(&db).await;
    let op = |part: &str| Op::Merge {
        scope: n("/a"),
        part: n(part),
    };
    let out = sm
        .apply(vec![entry(
            7,
            batch(vec![op("/d"), op("/c"), op("/b")], 40),
        )])
        .await
        .unwrap();
    let results = &out[0].results;
    assert!(
        matches!(&results[0], Err(WireError::Refused { reason }) if reason.contains("does not border")),
        "{results:?}"
    );
    assert!(
        matches!(&results[1], Err(WireError::Refused { reason }) if reason.contains("no scope split off at /c")),
        "{results:?}"
    );
    assert!(matches!(results[2], Ok(7)), "{results:?}");
    let view = sm.reader().view();
    assert_eq!(
        view.delegations[&n("/b")].state,
        DelegationState::Merging { index: 7 }
    );
    // One merge at a time.
    let out = sm
        .apply(vec![entry(8, batch(vec![op("/b")], 50))])
        .await
        .unwrap();
    assert!(refused(&out, "not active"), "{out:?}");
}
