//! The state machine's member changes: an admin-signed change starts only on a quiet scope
//! and one at a time; it ends (`MembersChanged`) only once the configuration applied has
//! the old and the new members as voters, and is given up (`MembersAborted`) only while
//! the old members alone vote; splits wait for it.

use std::collections::{BTreeMap, BTreeSet};

use libp2p::identity::Keypair;
use openraft::{CommittedLeaderId, Entry, Membership};
use policy::Policy;
use proto::{AnchorInfo, KeyRange, MemberSpec, Op, ScopeDescriptor, WireError};

use super::tests::{batch, entry};
use super::*;
use crate::identity::node_id_of_str;

fn anchors(count: usize) -> Vec<AnchorInfo> {
    (0..count)
        .map(|_| AnchorInfo {
            peer_id: Keypair::generate_ed25519()
                .public()
                .to_peer_id()
                .to_base58(),
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
        })
        .collect()
}

fn membership(index: u64, voters: &[AnchorInfo]) -> Entry<TypeConfig> {
    let nodes: BTreeMap<u64, AnchorInfo> = voters
        .iter()
        .map(|a| (node_id_of_str(&a.peer_id).unwrap(), a.clone()))
        .collect();
    let ids: BTreeSet<u64> = nodes.keys().copied().collect();
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
        payload: EntryPayload::Membership(Membership::new(vec![ids], nodes)),
    }
}

/// A root on the first three of `all`, whose admin is the test signer.
async fn root_on(db: &sled::Db, members: &[AnchorInfo]) -> StateMachine {
    let mut sm =
        StateMachine::open(db, ScopeId::root(), Name::root(), Default::default()).expect("open");
    let admin = ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key();
    let policy = Policy::development(Some(
        policy::PublicKey::from_bytes(&admin.to_bytes()).unwrap(),
    ));
    let genesis = ScopeCommand::Genesis {
        descriptor: ScopeDescriptor {
            id: ScopeId::root(),
            prefix: Name::root(),
            epoch: 1,
            members: members.to_vec(),
            range: KeyRange::all(),
        },
        policy_toml: policy.to_toml(),
    };
    sm.apply(vec![membership(1, members), entry(2, genesis)])
        .await
        .unwrap();
    sm
}

fn members_op(add: &[AnchorInfo], remove: &[AnchorInfo]) -> Op {
    Op::Members {
        scope: Name::root(),
        add: add
            .iter()
            .map(|a| MemberSpec {
                anchor: a.clone(),
                labels: Default::default(),
            })
            .collect(),
        remove: remove.iter().map(|a| a.peer_id.clone()).collect(),
    }
}

fn refused(out: &[ApplyOutcome]) -> String {
    match &out[0].results[0] {
        Err(WireError::Refused { reason }) => reason.clone(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_move_ends_once_old_and_new_members_vote_and_the_descriptor_takes_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let all = anchors(4);
    let mut sm = root_on(&db, &all[..3]).await;
    // Move all[2] -> all[3].
    let out = sm
        .apply(vec![entry(
            3,
            batch(vec![members_op(&all[3..], &all[2..3])], 1),
        )])
        .await
        .unwrap();
    assert_eq!(out[0].results[0], Ok(3));
    let change = sm.reader().view().member_change.expect("in flight");
    assert_eq!(change.index, 3);
    let target: Vec<AnchorInfo> = vec![all[0].clone(), all[1].clone(), all[3].clone()];
    assert_eq!(change.target, target);
    // Another change, or a split, waits for this one.
    let out = sm
        .apply(vec![entry(4, batch(vec![members_op(&[], &all[1..2])], 2))])
        .await
        .unwrap();
    assert!(refused(&out).contains("another member change is in flight"));
    let split = Op::Split {
        at: Name::parse("/a").unwrap(),
        by_range: false,
    };
    sm.apply(vec![entry(5, batch(vec![split], 3))])
        .await
        .unwrap();
    assert!(sm.reader().view().delegations.is_empty());
    // Not done while only the old members vote.
    let out = sm
        .apply(vec![entry(6, ScopeCommand::MembersChanged { index: 3 })])
        .await
        .unwrap();
    assert!(refused(&out).contains("do not all vote yet"));
    // Nor for another change's index.
    sm.apply(vec![membership(7, &all)]).await.unwrap();
    let out = sm
        .apply(vec![entry(8, ScopeCommand::MembersChanged { index: 4 })])
        .await
        .unwrap();
    assert!(refused(&out).contains("no member change started at 4"));
    // Too late to give up once the voters grew.
    let out = sm
        .apply(vec![entry(
            9,
            ScopeCommand::MembersAborted {
                index: 3,
                reason: "test".into(),
            },
        )])
        .await
        .unwrap();
    assert!(refused(&out).contains("must be finished"));
    let out = sm
        .apply(vec![entry(10, ScopeCommand::MembersChanged { index: 3 })])
        .await
        .unwrap();
    assert_eq!(out[0].results[0], Ok(10));
    let view = sm.reader().view();
    assert!(view.member_change.is_none());
    let d = view.descriptor.unwrap();
    assert_eq!(d.members, target);
    assert_eq!(d.epoch, 2);
}

#[tokio::test]
async fn a_change_is_given_up_while_the_old_members_alone_vote() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let all = anchors(4);
    let mut sm = root_on(&db, &all[..3]).await;
    sm.apply(vec![entry(3, batch(vec![members_op(&all[3..], &[])], 1))])
        .await
        .unwrap();
    assert!(sm.reader().view().member_change.is_some());
    let out = sm
        .apply(vec![entry(
            4,
            ScopeCommand::MembersAborted {
                index: 3,
                reason: "did not catch up".into(),
            },
        )])
        .await
        .unwrap();
    assert_eq!(out[0].results[0], Ok(4));
    let view = sm.reader().view();
    assert!(view.member_change.is_none());
    assert_eq!(view.descriptor.unwrap().members, all[..3].to_vec());
    // A change naming a stranger to remove, or a member to add, is refused at apply.
    let out = sm
        .apply(vec![entry(5, batch(vec![members_op(&[], &all[3..])], 2))])
        .await
        .unwrap();
    assert!(refused(&out).contains("is not a member"));
    let out = sm
        .apply(vec![entry(6, batch(vec![members_op(&all[..1], &[])], 3))])
        .await
        .unwrap();
    assert!(refused(&out).contains("is a member already"));
}

#[tokio::test]
async fn the_scopes_own_member_change_adds_one_anchor_and_only_when_its_policy_lets_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let all = anchors(5);
    let mut sm = root_on(&db, &all[..3]).await;
    let spec = |a: &AnchorInfo| MemberSpec {
        anchor: a.clone(),
        labels: Default::default(),
    };
    let place = |index: u64, add: Vec<MemberSpec>, remove: Vec<String>| {
        entry(
            index,
            ScopeCommand::Place {
                add,
                remove,
                why: "balance".into(),
                proposed_at_ms: 1_000_000,
            },
        )
    };
    let out = sm
        .apply(vec![place(3, vec![spec(&all[3]), spec(&all[4])], vec![])])
        .await
        .unwrap();
    assert!(refused(&out).contains("adds one anchor"));
    let out = sm
        .apply(vec![place(4, vec![], vec![all[2].peer_id.clone()])])
        .await
        .unwrap();
    assert!(refused(&out).contains("adds one anchor"));
    let out = sm
        .apply(vec![place(
            5,
            vec![spec(&all[3])],
            vec![all[2].peer_id.clone()],
        )])
        .await
        .unwrap();
    assert_eq!(out[0].results[0], Ok(5));
    let change = sm.reader().view().member_change.expect("in flight");
    assert_eq!(change.removed, vec![all[2].peer_id.clone()]);
    // One at a time.
    let out = sm
        .apply(vec![place(6, vec![spec(&all[4])], vec![])])
        .await
        .unwrap();
    assert!(refused(&out).contains("in flight"));
}

#[tokio::test]
async fn a_policy_with_automatic_placement_off_refuses_the_scopes_own_changes() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let all = anchors(4);
    let mut sm = root_on(&db, &all[..3]).await;
    let admin = ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key();
    let mut policy = Policy::development(Some(
        policy::PublicKey::from_bytes(&admin.to_bytes()).unwrap(),
    ));
    policy.placement.auto = false;
    let set = Op::SetPolicy {
        prefix: Name::root(),
        policy_toml: policy.to_toml(),
    };
    let out = sm.apply(vec![entry(3, batch(vec![set], 1))]).await.unwrap();
    assert_eq!(out[0].results[0], Ok(3));
    let out = sm
        .apply(vec![entry(
            4,
            ScopeCommand::Place {
                add: vec![MemberSpec {
                    anchor: all[3].clone(),
                    labels: Default::default(),
                }],
                remove: vec![],
                why: "short".into(),
                proposed_at_ms: 1_000_000,
            },
        )])
        .await
        .unwrap();
    assert!(refused(&out).contains("automatic placement off"));
}
