use super::*;
use crate::scope::learn::tests::{fixture, id, info, n, sign, Fixture};
use libp2p::identity::Keypair;

fn anchor(k: &Keypair) -> AnchorInfo {
    AnchorInfo {
        addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
        ..info(k)
    }
}

fn spec(k: &Keypair) -> MemberSpec {
    MemberSpec {
        anchor: anchor(k),
        labels: Default::default(),
    }
}

fn keys(count: usize) -> Vec<Keypair> {
    (0..count).map(|_| Keypair::generate_ed25519()).collect()
}

fn change(members: &[AnchorInfo], add: &[MemberSpec], remove: &[String]) -> MemberChange {
    MemberChange {
        index: 10,
        target: target_members(members, add, remove),
        added: add.to_vec(),
        removed: remove.to_vec(),
        started_ms: 1_000,
    }
}

fn uniform(members: &[AnchorInfo], last_log: u64) -> GroupView {
    let ids = node_ids(members);
    GroupView {
        voter_sets: vec![ids.clone()],
        nodes: ids.clone(),
        committed: true,
        last_log,
        matched: ids.into_iter().map(|i| (i, last_log)).collect(),
    }
}

#[test]
fn the_target_drops_the_leaving_and_appends_the_joining() {
    let k = keys(4);
    let members: Vec<AnchorInfo> = k[..3].iter().map(anchor).collect();
    let target = target_members(&members, &[spec(&k[3])], &[members[1].peer_id.clone()]);
    let peers: Vec<&str> = target.iter().map(|a| a.peer_id.as_str()).collect();
    assert_eq!(
        peers,
        vec![
            members[0].peer_id.as_str(),
            members[2].peer_id.as_str(),
            anchor(&k[3]).peer_id.as_str()
        ]
    );
}

#[test]
fn a_change_is_refused_when_busy_or_when_it_makes_no_sense() {
    let k = keys(4);
    let members: Vec<AnchorInfo> = k[..3].iter().map(anchor).collect();
    let new = spec(&k[3]);
    assert_eq!(
        change_refusal(&members, std::slice::from_ref(&new), &[], None),
        None
    );
    let busy = change_refusal(&members, std::slice::from_ref(&new), &[], Some("a split"));
    assert!(busy.unwrap().contains("a split is in flight"));
    let again = change_refusal(&members, &[spec(&k[0])], &[], None);
    assert!(again.unwrap().contains("is a member already"));
    let stranger = change_refusal(
        &members,
        &[],
        std::slice::from_ref(&new.anchor.peer_id),
        None,
    );
    assert!(stranger.unwrap().contains("is not a member"));
    let all: Vec<String> = members.iter().map(|m| m.peer_id.clone()).collect();
    let empty = change_refusal(&members, &[], &all, None);
    assert!(empty.unwrap().contains("at least one member"));
    let mut no_addr = new.clone();
    no_addr.anchor.addrs.clear();
    assert!(change_refusal(&members, &[no_addr], &[], None)
        .unwrap()
        .contains("has no address"));
    let mut bad = new;
    bad.anchor.peer_id = "not-a-peer".into();
    assert!(change_refusal(&members, &[bad], &[], None)
        .unwrap()
        .contains("is not a peer id"));
}

#[test]
fn a_move_goes_learner_then_all_voters_then_finish_then_shrink() {
    let k = keys(4);
    let members: Vec<AnchorInfo> = k[..3].iter().map(anchor).collect();
    let leaving = members[2].peer_id.clone();
    let c = change(&members, &[spec(&k[3])], &[leaving]);
    let joiner = anchor(&k[3]);
    let joiner_id = node_ids(std::slice::from_ref(&joiner));
    // 1. The joining anchor is not in the configuration yet: host it and add it.
    let mut g = uniform(&members, 100);
    assert_eq!(
        next_step(&members, Some(&c), &g, 2_000),
        Step::AddLearners(vec![joiner.clone()])
    );
    // 2. A learner far behind: wait.
    g.nodes.extend(joiner_id.iter().copied());
    g.matched.push((*joiner_id.first().unwrap(), 10));
    assert_eq!(
        next_step(&members, Some(&c), &g, 2_000),
        Step::Wait("learners are catching up")
    );
    // 3. Caught up: every old and new member votes.
    g.matched.last_mut().unwrap().1 = 99;
    let mut all = node_ids(&members);
    all.extend(joiner_id.iter().copied());
    assert_eq!(
        next_step(&members, Some(&c), &g, 2_000),
        Step::ChangeVoters(all.clone())
    );
    // An uncommitted configuration: wait.
    let pending = GroupView {
        committed: false,
        ..g.clone()
    };
    assert!(matches!(
        next_step(&members, Some(&c), &pending, 2_000),
        Step::Wait(_)
    ));
    // A joint configuration left by a leader change: finish it towards every member.
    let joint = GroupView {
        voter_sets: vec![node_ids(&members), all.clone()],
        ..g.clone()
    };
    assert_eq!(
        next_step(&members, Some(&c), &joint, 2_000),
        Step::ChangeVoters(all.clone())
    );
    // 4. Everybody votes: commit MembersChanged.
    g.voter_sets = vec![all.clone()];
    assert_eq!(next_step(&members, Some(&c), &g, 2_000), Step::Finish);
    // 5. Committed (the descriptor lists the target): shrink to it.
    assert_eq!(
        next_step(&c.target, None, &g, 2_000),
        Step::Shrink {
            voters: node_ids(&c.target),
            leaving: Vec::new()
        }
    );
    // 6. Done.
    let done = uniform(&c.target, 120);
    assert_eq!(next_step(&c.target, None, &done, 2_000), Step::Idle);
}

#[test]
fn a_joiner_that_never_catches_up_is_given_up_while_the_old_members_vote() {
    let k = keys(4);
    let members: Vec<AnchorInfo> = k[..3].iter().map(anchor).collect();
    let c = change(&members, &[spec(&k[3])], &[]);
    let g = uniform(&members, 100);
    let late = c.started_ms + CATCH_UP_MS_MAX + 1;
    assert!(matches!(
        next_step(&members, Some(&c), &g, late),
        Step::Abort(_)
    ));
    // Once the voters grew, the change can no longer be given up: it is finished.
    let mut all = node_ids(&members);
    all.extend(node_ids(&c.target));
    let grown = GroupView {
        voter_sets: vec![all],
        ..g
    };
    assert_eq!(next_step(&members, Some(&c), &grown, late), Step::Finish);
}

#[test]
fn a_removed_replica_needs_a_majority_reporting_a_newer_configuration_without_it() {
    let others = vec!["a".to_string(), "b".to_string()];
    assert!(report_shows_removed(
        "me",
        Some((1, 5)),
        true,
        Some((1, 9)),
        &others
    ));
    assert!(!report_shows_removed(
        "me",
        Some((1, 9)),
        true,
        Some((1, 9)),
        &others
    ));
    assert!(!report_shows_removed(
        "me",
        Some((1, 9)),
        true,
        Some((1, 7)),
        &others
    ));
    assert!(!report_shows_removed(
        "me",
        Some((1, 5)),
        true,
        None,
        &others
    ));
    // This replica applied the configuration that left it out: the same one counts.
    assert!(report_shows_removed(
        "me",
        Some((1, 9)),
        false,
        Some((1, 9)),
        &others
    ));
    assert!(!report_shows_removed(
        "me",
        Some((1, 9)),
        false,
        Some((1, 7)),
        &others
    ));
    let with_me = vec!["a".to_string(), "me".to_string()];
    assert!(!report_shows_removed(
        "me",
        Some((1, 5)),
        true,
        Some((1, 9)),
        &with_me
    ));
    assert!(report_shows_removed(
        "me",
        None,
        false,
        Some((1, 1)),
        &others
    ));
    assert!(confirms_removal(2, 3));
    assert!(!confirms_removal(1, 3));
    assert!(!confirms_removal(1, 2));
    assert!(!confirms_removal(0, 0));
}

/// The root's delegation of `/users` (scope 1) lists `f.keys`; each signs `members`.
fn word(f: &Fixture, signers: &[usize], epoch: u64, members: &[AnchorInfo]) -> Vec<SignedAnswer> {
    signers
        .iter()
        .map(|i| {
            sign(
                &f.keys[*i],
                &Answer::Members {
                    scope: id(1),
                    name: n("/users"),
                    epoch,
                    members: members.to_vec(),
                },
            )
        })
        .collect()
}

#[test]
fn a_parent_takes_a_childs_new_members_on_the_word_of_a_majority_it_lists() {
    let f = fixture();
    let d = f.delegations.get(&n("/users"));
    let newcomer = Keypair::generate_ed25519();
    let new_members: Vec<AnchorInfo> = vec![info(&f.keys[0]), info(&f.keys[1]), info(&newcomer)];
    let updated = check_child_members(d, id(1), &word(&f, &[0, 1], 2, &new_members))
        .unwrap()
        .unwrap();
    assert_eq!(updated.referral.members, new_members);
    assert_eq!(updated.referral.epoch, 2);
    // Already listed at that epoch: nothing to do.
    assert_eq!(
        check_child_members(Some(&updated), id(1), &word(&f, &[0, 1], 2, &new_members)),
        Ok(None)
    );
    // One member is not a majority.
    assert!(matches!(
        check_child_members(d, id(1), &word(&f, &[0], 2, &new_members)),
        Err(LearnRefusal::Minority { .. })
    ));
    // Members that disagree.
    let mut split = word(&f, &[0], 2, &new_members);
    split.extend(word(&f, &[1], 3, &new_members));
    assert!(matches!(
        check_child_members(d, id(1), &split),
        Err(LearnRefusal::BadProof(_))
    ));
    // The newcomer cannot vouch for itself: it is not listed by the parent.
    let mut forged = word(&f, &[0], 2, &new_members);
    forged.push(sign(
        &newcomer,
        &Answer::Members {
            scope: id(1),
            name: n("/users"),
            epoch: 2,
            members: new_members.clone(),
        },
    ));
    assert!(matches!(
        check_child_members(d, id(1), &forged),
        Err(LearnRefusal::BadProof(_))
    ));
    // Another scope's word, or no delegation to that child.
    assert!(check_child_members(d, id(9), &word(&f, &[0, 1], 2, &new_members)).is_err());
    assert!(check_child_members(None, id(1), &word(&f, &[0, 1], 2, &new_members)).is_err());
}

#[test]
fn only_a_newer_configuration_listing_the_peer_vouches_for_it() {
    let nodes = vec!["a".to_string(), "d".to_string()];
    assert!(report_vouches("d", Some((1, 3)), Some((1, 9)), &nodes));
    assert!(
        !report_vouches("d", Some((1, 9)), Some((1, 9)), &nodes),
        "not newer"
    );
    assert!(
        !report_vouches("d", Some((1, 12)), Some((1, 9)), &nodes),
        "older"
    );
    assert!(
        !report_vouches("x", Some((1, 3)), Some((1, 9)), &nodes),
        "not listed"
    );
    assert!(
        !report_vouches("d", None, Some((1, 9)), &nodes),
        "no configuration here"
    );
    assert!(
        !report_vouches("d", Some((1, 3)), None, &nodes),
        "no configuration there"
    );
}

#[test]
fn a_configuration_at_the_same_index_from_a_later_term_shows_removal() {
    // A leader cut off appended its own configuration at index 360 (term 3), listing
    // itself; the others hold another one there, from term 4, without it.
    let others = vec!["b".to_string(), "c".to_string(), "d".to_string()];
    assert!(report_shows_removed(
        "a",
        Some((3, 360)),
        true,
        Some((4, 360)),
        &others
    ));
    assert!(!report_shows_removed(
        "a",
        Some((4, 360)),
        true,
        Some((3, 360)),
        &others
    ));
    assert!(report_vouches("d", Some((3, 360)), Some((4, 360)), &others));
}
