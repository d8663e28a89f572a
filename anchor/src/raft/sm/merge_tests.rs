//! The merge entries at apply: the parent's `Merge`, `MergeDone` and `MergeAborted`, the
//! child's `Retire` and its resumption.

use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership};
use policy::Policy;
use proto::msg::SeededNonce;
use proto::split::{LoadEvidence, MergeEvidence, MergeSide};
use proto::{
    DelegationState, Mutation, Name, Op, Record, RecordSet, ScopeDescriptor, ScopeId,
    SignedMutation, WireError,
};

use super::super::{seed, Seed, StateMachine};
use crate::raft::{ScopeCommand, TypeConfig};
use crate::scope::sig_cache::SigCache;

const T0: u64 = 1_000_000;

fn entry(index: u64, cmd: ScopeCommand) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn put(path: &str, nonce: u64, at_ms: u64) -> ScopeCommand {
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let m = Mutation {
        op: Op::Put {
            name: name(path),
            records: vec![Record::Text("x".into())],
            ttl_s: 60,
        },
        nonce,
        expires_at_ms: at_ms + 100_000,
    };
    ScopeCommand::Writes {
        mutations: vec![SignedMutation::sign(&m, &key).unwrap()],
        proposed_at_ms: at_ms,
    }
}

fn policy() -> Policy {
    let mut p = Policy::development(None);
    p.split.auto = true;
    p.split.names_max = 4;
    p.split.interval_s_min = 1;
    p.merge.auto = true;
    p.merge.names_min = Some(2);
    p.merge.age_s_min = 10;
    p.validate().unwrap();
    p
}

fn member() -> proto::AnchorInfo {
    proto::AnchorInfo {
        peer_id: "12D3KooWexample".into(),
        addrs: vec![],
    }
}

fn open(db: &sled::Db, id: ScopeId, prefix: Name) -> StateMachine {
    StateMachine::open(db, id, prefix, Arc::new(SigCache::default())).unwrap()
}

/// A root that split `/eu` off at index 4 (handed over at 5): returns it and the child id.
async fn split_root(db: &sled::Db) -> (StateMachine, ScopeId) {
    let mut sm = open(db, ScopeId::root(), Name::root());
    let genesis = ScopeCommand::Genesis {
        descriptor: ScopeDescriptor {
            id: ScopeId::root(),
            prefix: Name::root(),
            epoch: 1,
            members: vec![member()],
            range: proto::KeyRange::all(),
        },
        policy_toml: policy().to_toml(),
    };
    use proto::split::{Basis, SplitEvidence, SplitPlan, Trigger};
    let split = ScopeCommand::Split {
        evidence: SplitEvidence {
            plan: SplitPlan::Subtree {
                label: "eu".into(),
                basis: Basis::Size,
                part: 4,
                whole: 5,
            },
            trigger: Trigger::Names,
            decided_at_ms: T0,
            names: 5,
            bytes: 0,
            load: LoadEvidence::default(),
        },
        proposed_at_ms: T0,
    };
    let mut entries = vec![entry(1, genesis)];
    for (i, n) in ["/eu/a", "/eu/b", "/eu/c", "/eu/d", "/us/a"]
        .iter()
        .enumerate()
    {
        entries.push(entry(2, put(n, 100 + i as u64, T0 - 10)));
        let last = entries.len() - 1;
        entries[last].log_id.index = 2 + i as u64;
    }
    // Indexes 2..=6 are the puts; the split is 7 and its hand-over 8.
    entries.push(entry(7, split));
    sm.apply(entries).await.unwrap();
    let child = ScopeId::child(&ScopeId::root(), &name("/eu"), 7);
    sm.apply(vec![entry(8, ScopeCommand::DelegationActive { child })])
        .await
        .unwrap();
    (sm, child)
}

fn side(prefix: &str, names: u64) -> MergeSide {
    MergeSide {
        prefix: name(prefix),
        start: None,
        end: None,
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

fn merge(child: ScopeId, child_names: u64, at_ms: u64) -> ScopeCommand {
    ScopeCommand::Merge {
        child,
        evidence: MergeEvidence {
            left: side("/", 1),
            right: side("/eu", child_names),
            split_at_ms: T0,
            decided_at_ms: at_ms,
        },
        proposed_at_ms: at_ms,
    }
}

fn refused(out: &[crate::raft::ApplyOutcome]) -> bool {
    matches!(out[0].results[0], Err(WireError::Refused { .. }))
}

fn set(version: u64) -> RecordSet {
    RecordSet {
        records: vec![Record::Text(format!("v{version}"))],
        ttl_s: 60,
        version,
        writer: [3; 32],
    }
}

#[tokio::test]
async fn a_justified_merge_takes_the_childs_final_state_back_at_an_index_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let (mut sm, child) = split_root(&db).await;
    let eu = name("/eu");
    assert_eq!(sm.reader().view().names, 1, "the hand-over dropped /eu");
    // Too young (age_s_min 10 s), then too big: no-ops.
    let out = sm
        .apply(vec![entry(9, merge(child, 1, T0 + 5_000))])
        .await
        .unwrap();
    assert!(refused(&out), "{out:?}");
    let out = sm
        .apply(vec![entry(10, merge(child, 3, T0 + 20_000))])
        .await
        .unwrap();
    assert!(refused(&out), "{out:?}");
    assert_eq!(
        sm.reader().view().delegations[&eu].state,
        DelegationState::Active
    );
    // Justified: Merging, still referring; writes under /eu are the child's.
    let out = sm
        .apply(vec![entry(11, merge(child, 1, T0 + 20_000))])
        .await
        .unwrap();
    assert!(matches!(out[0].results[0], Ok(11)), "{out:?}");
    assert_eq!(
        sm.reader().view().delegations[&eu].state,
        DelegationState::Merging { index: 11 }
    );
    assert!(sm.reader().view().delegations[&eu].state.refers());
    // No second merge, and no split, while this one is in flight.
    let out = sm
        .apply(vec![entry(12, merge(child, 1, T0 + 20_000))])
        .await
        .unwrap();
    assert!(refused(&out), "{out:?}");
    // The child's final state, read at its index 40.
    let records = vec![(name("/eu/a"), set(9)), (name("/eu/z"), set(40))];
    let nonces = vec![SeededNonce {
        writer: [7; 32],
        nonce: 5,
        expires_at_ms: T0 + 500_000,
        name: name("/eu/z"),
    }];
    let done = |index, records: Vec<(Name, RecordSet)>| {
        entry(
            index,
            ScopeCommand::MergeDone {
                child,
                retired_at: 40,
                records,
                nonces: nonces.clone(),
            },
        )
    };
    // At an index not past the child's: versions would go back.
    let out = sm.apply(vec![done(13, records.clone())]).await.unwrap();
    assert!(refused(&out), "{out:?}");
    // A record outside the child's prefix, or newer than its index: refused whole.
    let mut outside = records.clone();
    outside.push((name("/us/x"), set(9)));
    let out = sm.apply(vec![done(41, outside)]).await.unwrap();
    assert!(refused(&out), "{out:?}");
    let mut newer = records.clone();
    newer.push((name("/eu/y"), set(41)));
    let out = sm.apply(vec![done(42, newer)]).await.unwrap();
    assert!(refused(&out), "{out:?}");
    // Past it: the records come in with their versions, the delegation is gone.
    let out = sm.apply(vec![done(43, records.clone())]).await.unwrap();
    assert!(matches!(out[0].results[0], Ok(43)), "{out:?}");
    let st = sm.reader();
    let view = st.view();
    assert!(view.delegations.is_empty());
    assert_eq!(view.names, 3);
    assert_eq!(
        st.records_in(&eu, &proto::KeyRange::all()).unwrap(),
        records
    );
    // The watch history has them at the merge's index; the nonce moved too.
    let (events, _) = st.changes(&eu, 42, 43, 100, 1 << 20).unwrap();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.version == 43));
    assert!(st
        .nonces_in(&eu, &proto::KeyRange::all(), 0)
        .unwrap()
        .contains(&nonces[0]));
    // Applying it again changes nothing (no delegation any more).
    let out = sm.apply(vec![done(44, records)]).await.unwrap();
    assert!(refused(&out), "{out:?}");
    assert_eq!(sm.reader().view().names, 3);
}

#[tokio::test]
async fn an_aborted_merge_makes_the_delegation_active_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let (mut sm, child) = split_root(&db).await;
    let eu = name("/eu");
    let abort = |index| {
        entry(
            index,
            ScopeCommand::MergeAborted {
                child,
                reason: "too big".into(),
            },
        )
    };
    let out = sm.apply(vec![abort(9)]).await.unwrap();
    assert!(refused(&out), "not merging: a no-op");
    sm.apply(vec![entry(10, merge(child, 1, T0 + 20_000)), abort(11)])
        .await
        .unwrap();
    assert_eq!(
        sm.reader().view().delegations[&eu].state,
        DelegationState::Active
    );
}

#[tokio::test]
async fn a_retired_child_refuses_writes_until_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let parent = ScopeDescriptor {
        id: ScopeId::root(),
        prefix: Name::root(),
        epoch: 1,
        members: vec![member()],
        range: proto::KeyRange::all(),
    };
    let id = ScopeId::child(&ScopeId::root(), &name("/eu"), 7);
    let descriptor = ScopeDescriptor {
        id,
        prefix: name("/eu"),
        epoch: 1,
        members: vec![member()],
        range: proto::KeyRange::all(),
    };
    let toml = policy().to_toml();
    seed(
        &db,
        &Seed {
            child: &descriptor,
            parent: &parent,
            policy_toml: &toml,
            records: &[],
            nonces: &[],
            log_id: LogId::new(CommittedLeaderId::new(0, 0), 7),
            membership: Membership::new(vec![], None),
            proof: None,
            split_at_ms: Some(T0),
        },
    )
    .unwrap();
    let mut sm = open(&db, id, name("/eu"));
    sm.apply(vec![
        entry(8, ScopeCommand::Activate),
        entry(9, put("/eu/a", 1, T0)),
    ])
    .await
    .unwrap();
    let wrong = ScopeCommand::Retire {
        into: id,
        merge_index: 20,
    };
    let out = sm.apply(vec![entry(10, wrong)]).await.unwrap();
    assert!(refused(&out), "only into its parent");
    let retire = ScopeCommand::Retire {
        into: ScopeId::root(),
        merge_index: 20,
    };
    let out = sm
        .apply(vec![entry(11, retire), entry(12, put("/eu/b", 2, T0))])
        .await
        .unwrap();
    assert!(matches!(out[0].results[0], Ok(11)), "{out:?}");
    assert!(
        matches!(out[1].results[0], Err(WireError::Moving { .. })),
        "{out:?}"
    );
    let st = sm.reader();
    let state = st.retired_state().unwrap().expect("retired");
    assert_eq!(state.retired.merge_index, 20);
    assert_eq!(state.applied, 12);
    assert_eq!(state.records.len(), 1);
    assert_eq!(state.nonces.len(), 1);
    assert!(!state.delegates);
    assert!(!st.view().writable());
    // Activate (a new child's step) does not end a retirement, nor a Resume for another
    // merge; the Resume for the aborted merge does, for good (it survives a reopen).
    let out = sm
        .apply(vec![
            entry(13, ScopeCommand::Activate),
            entry(14, ScopeCommand::Resume { merge_index: 19 }),
            entry(15, put("/eu/b", 3, T0)),
        ])
        .await
        .unwrap();
    assert!(refused(&out[1..]), "{out:?}");
    assert!(
        matches!(out[2].results[0], Err(WireError::Moving { .. })),
        "{out:?}"
    );
    let out = sm
        .apply(vec![
            entry(16, ScopeCommand::Resume { merge_index: 20 }),
            entry(17, put("/eu/b", 4, T0)),
        ])
        .await
        .unwrap();
    assert!(matches!(out[1].results[0], Ok(17)), "{out:?}");
    drop(sm);
    let sm = open(&db, id, name("/eu"));
    assert!(sm.reader().view().writable());
    assert!(sm.reader().retired_state().unwrap().is_none());
}
