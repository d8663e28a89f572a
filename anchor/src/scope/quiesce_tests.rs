use super::*;

fn leader() -> LeaderFacts {
    LeaderFacts {
        me: 1,
        term: 4,
        leading: true,
        last_log: Some((4, 10)),
        applied: Some(10),
        voters: [1, 2, 3].into(),
        joint: false,
        matched: [(2, Some(10)), (3, Some(10))].into(),
        kept_awake: false,
        idle_ms: 5_000,
    }
}

const AFTER: u64 = 3_000;

fn alive(_: Node) -> bool {
    false
}

#[test]
fn an_idle_caught_up_leader_sleeps_and_tells_every_live_member() {
    assert_eq!(
        leader_verdict(&leader(), AFTER, alive),
        LeaderVerdict::Sleep { tell: vec![2, 3] }
    );
}

#[test]
fn a_busy_or_kept_or_changing_group_stays_awake() {
    let mut f = leader();
    f.idle_ms = 2_999;
    assert_eq!(
        leader_verdict(&f, AFTER, alive),
        LeaderVerdict::Stay(Stay::Busy)
    );
    let mut f = leader();
    f.kept_awake = true;
    assert_eq!(
        leader_verdict(&f, AFTER, alive),
        LeaderVerdict::Stay(Stay::KeptAwake)
    );
    let mut f = leader();
    f.joint = true;
    assert_eq!(
        leader_verdict(&f, AFTER, alive),
        LeaderVerdict::Stay(Stay::MembershipChanging)
    );
    let mut f = leader();
    f.applied = Some(9);
    assert_eq!(
        leader_verdict(&f, AFTER, alive),
        LeaderVerdict::Stay(Stay::NotApplied)
    );
    let mut f = leader();
    f.leading = false;
    assert_eq!(
        leader_verdict(&f, AFTER, alive),
        LeaderVerdict::Stay(Stay::NotLeader)
    );
    assert_eq!(
        leader_verdict(&leader(), 0, alive),
        LeaderVerdict::Stay(Stay::Off)
    );
}

#[test]
fn a_live_lagging_member_keeps_the_group_awake_a_dead_one_does_not() {
    let mut f = leader();
    f.matched.insert(3, Some(7));
    assert_eq!(
        leader_verdict(&f, AFTER, alive),
        LeaderVerdict::Stay(Stay::Lagging(3))
    );
    // Anchor of node 3 is dead: the leader sleeps with node 2 only.
    assert_eq!(
        leader_verdict(&f, AFTER, |n| n == 3),
        LeaderVerdict::Sleep { tell: vec![2] }
    );
    // A learner that lags keeps it awake too.
    let mut f = leader();
    f.matched.insert(4, None);
    assert_eq!(
        leader_verdict(&f, AFTER, alive),
        LeaderVerdict::Stay(Stay::Lagging(4))
    );
}

#[test]
fn without_a_live_quorum_the_leader_stays_awake() {
    let f = leader();
    assert_eq!(
        leader_verdict(&f, AFTER, |n| n != 1),
        LeaderVerdict::Stay(Stay::NoLiveQuorum)
    );
    // A voter missing from the replication report counts as lagging unless dead.
    let mut f = leader();
    f.matched.remove(&3);
    assert_eq!(
        leader_verdict(&f, AFTER, alive),
        LeaderVerdict::Stay(Stay::Lagging(3))
    );
    assert_eq!(
        leader_verdict(&f, AFTER, |n| n == 3),
        LeaderVerdict::Sleep { tell: vec![2] }
    );
}

#[test]
fn a_single_voter_group_sleeps_alone() {
    let f = LeaderFacts {
        voters: [1].into(),
        matched: BTreeMap::new(),
        ..leader()
    };
    assert_eq!(
        leader_verdict(&f, AFTER, alive),
        LeaderVerdict::Sleep { tell: vec![] }
    );
}

fn follower() -> FollowerFacts {
    FollowerFacts {
        term: 4,
        leader: Some(1),
        leading: false,
        last_log: Some((4, 10)),
        applied: Some(10),
    }
}

const MSG: QuiesceMsg = QuiesceMsg {
    term: 4,
    leader: 1,
    last_log: Some((4, 10)),
};

#[test]
fn a_follower_sleeps_only_when_term_leader_and_log_match() {
    assert_eq!(follower_verdict(&follower(), &MSG, 1), Ok(()));
    assert_eq!(
        follower_verdict(&follower(), &MSG, 2),
        Err(Mismatch::Sender)
    );
    let f = FollowerFacts {
        term: 5,
        ..follower()
    };
    assert_eq!(follower_verdict(&f, &MSG, 1), Err(Mismatch::Term));
    let f = FollowerFacts {
        leader: Some(3),
        ..follower()
    };
    assert_eq!(follower_verdict(&f, &MSG, 1), Err(Mismatch::Leader));
    let f = FollowerFacts {
        leader: None,
        ..follower()
    };
    assert_eq!(follower_verdict(&f, &MSG, 1), Err(Mismatch::Leader));
    let f = FollowerFacts {
        leading: true,
        ..follower()
    };
    assert_eq!(follower_verdict(&f, &MSG, 1), Err(Mismatch::Leader));
    let f = FollowerFacts {
        last_log: Some((4, 9)),
        applied: Some(9),
        ..follower()
    };
    assert_eq!(follower_verdict(&f, &MSG, 1), Err(Mismatch::Log));
    // Same index, another term: not the same log.
    let f = FollowerFacts {
        last_log: Some((3, 10)),
        ..follower()
    };
    assert_eq!(follower_verdict(&f, &MSG, 1), Err(Mismatch::Log));
    let f = FollowerFacts {
        applied: Some(8),
        ..follower()
    };
    assert_eq!(follower_verdict(&f, &MSG, 1), Err(Mismatch::NotApplied));
}

#[test]
fn survivors_of_a_dead_leader_elect_one_after_the_other() {
    let voters: BTreeSet<Node> = [10, 20, 30].into();
    let leader_dead = |n: Node| n == 10;
    assert_eq!(elect_delay_ms(20, &voters, leader_dead, 1_000), 0);
    assert_eq!(elect_delay_ms(30, &voters, leader_dead, 1_000), 1_000);
    // With 20 dead as well, 30 goes at once.
    assert_eq!(elect_delay_ms(30, &voters, |n| n != 30, 1_000), 0);
}

#[test]
fn a_peer_dies_after_the_grace_and_comes_back() {
    let mut l: Liveness<&str> = Liveness::new(1_500);
    assert!(!l.is_dead(&"a"));
    assert_eq!(l.answered(&"a", 7, 0), PeerEvent::None);
    assert_eq!(l.failed(&"a", 1_000), PeerEvent::None);
    assert!(!l.is_dead(&"a"));
    assert_eq!(l.failed(&"a", 1_500), PeerEvent::Died);
    assert!(l.is_dead(&"a"));
    // Dying is reported once.
    assert_eq!(l.failed(&"a", 2_000), PeerEvent::None);
    assert_eq!(l.answered(&"a", 7, 2_500), PeerEvent::Back);
    assert!(!l.is_dead(&"a"));
    assert_eq!(l.answered(&"a", 7, 3_000), PeerEvent::None);
}

#[test]
fn a_restart_faster_than_the_grace_is_seen_by_its_incarnation() {
    let mut l: Liveness<&str> = Liveness::new(1_500);
    l.answered(&"a", 7, 0);
    assert_eq!(l.failed(&"a", 500), PeerEvent::None);
    assert_eq!(l.answered(&"a", 8, 1_000), PeerEvent::Back);
}

#[test]
fn a_peer_that_never_answers_dies_from_the_first_try() {
    let mut l: Liveness<&str> = Liveness::new(1_500);
    assert_eq!(l.failed(&"b", 100), PeerEvent::None);
    assert_eq!(l.failed(&"b", 1_600), PeerEvent::Died);
    l.retain(|p| *p != "b");
    assert!(!l.is_dead(&"b"));
}

#[test]
fn a_busy_peer_whose_pings_time_out_gets_a_longer_grace() {
    let mut l: Liveness<&str> = Liveness::new(1_500);
    l.answered(&"a", 7, 0);
    assert_eq!(l.timed_out(&"a", 1_500), PeerEvent::None);
    assert_eq!(l.timed_out(&"a", 29_999), PeerEvent::None);
    assert!(!l.is_dead(&"a"));
    assert_eq!(l.timed_out(&"a", 30_000), PeerEvent::Died);
    // Unreachable after a long silence: dead at once.
    let mut l: Liveness<&str> = Liveness::new(1_500);
    l.answered(&"b", 7, 0);
    l.timed_out(&"b", 1_000);
    assert_eq!(l.failed(&"b", 1_600), PeerEvent::Died);
}

#[test]
fn followers_of_a_dead_leader_wake_in_batches() {
    assert_eq!(wake_batch_delay_ms(0), 0);
    assert_eq!(wake_batch_delay_ms(WAKE_BATCH - 1), 0);
    assert_eq!(wake_batch_delay_ms(WAKE_BATCH), WAKE_BATCH_GAP_MS);
    assert_eq!(
        wake_batch_delay_ms(33 * WAKE_BATCH + 35),
        33 * WAKE_BATCH_GAP_MS
    );
}
