//! The state machine's split tests: a range split moves the names from the cut to the
//! scope's end and nothing else; an operator's admin-signed split.

use policy::Policy;
use proto::{DelegationState, Op, ScopeDescriptor, WireError};

use super::tests::{batch, entry, put, size_split, subtree_split};
use super::*;

fn range_split(at: &str, left: u64, right: u64, at_ms: u64) -> ScopeCommand {
    use proto::split::{Basis, SplitPlan};
    let plan = SplitPlan::Range {
        at: Name::parse(at).unwrap(),
        basis: Basis::Size,
        left,
        right,
    };
    size_split(plan, left + right, at_ms)
}

#[tokio::test]
async fn a_range_split_moves_the_names_from_the_cut_to_the_end_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let mut sm = StateMachine::open(
        &db,
        ScopeId::root(),
        Name::root(),
        Arc::new(SigCache::default()),
    )
    .unwrap();
    let mut policy = Policy::development(None);
    policy.split.auto = true;
    policy.split.names_max = 2;
    policy.split.interval_s_min = 1;
    let genesis = ScopeCommand::Genesis {
        descriptor: ScopeDescriptor {
            id: ScopeId::root(),
            prefix: Name::root(),
            epoch: 1,
            members: vec![],
            range: proto::KeyRange::all(),
        },
        policy_toml: policy.to_toml(),
    };
    let names = ["/a/1", "/b/1", "/c/1", "/d/1", "/d/2/x", "/e/1", "/f/1"];
    let writes = batch(names.iter().map(|n| put(n, "1")).collect(), 10);
    sm.apply(vec![entry(1, genesis), entry(2, writes)])
        .await
        .unwrap();
    let n = |s: &str| Name::parse(s).unwrap();
    // The cut at /d/2/x is carried out at /d: /d's subtree moves whole.
    let out = sm
        .apply(vec![entry(3, range_split("/d/2/x", 3, 4, 1_000_000))])
        .await
        .unwrap();
    assert!(matches!(out[0].results[0], Ok(3)), "{out:?}");
    let right = ScopeId::child(&ScopeId::root(), &n("/d"), 3);
    let view = sm.reader().view();
    let d = &view.delegations[&n("/d")];
    assert_eq!(d.referral.scope, right);
    assert_eq!(d.referral.prefix, Name::root());
    assert_eq!(d.referral.range.start, Some(n("/d")));
    assert_eq!(d.referral.range.end, None);
    assert_eq!(d.state, DelegationState::Frozen);
    assert_eq!(view.bounds().end, Some(n("/d")));
    let over = |view: &ScopeView, s: &str| {
        crate::scope::decide::delegation_over(&view.delegations, &n(s)).map(|d| d.referral.scope)
    };
    assert_eq!(over(&view, "/e/1"), Some(right));
    assert_eq!(over(&view, "/d"), Some(right));
    assert_eq!(over(&view, "/c/1"), None);
    assert_eq!(over(&view, "/"), None);
    // Frozen: a write to a moving name is refused (retryable), one to the left half lands.
    let out = sm
        .apply(vec![entry(
            4,
            batch(vec![put("/e/1", "2"), put("/a/1", "2")], 30),
        )])
        .await
        .unwrap();
    assert!(
        matches!(out[0].results[0], Err(WireError::Moving { .. })),
        "{out:?}"
    );
    assert!(matches!(out[0].results[1], Ok(4)), "{out:?}");
    match sm.reader().split_child(&right).unwrap() {
        Some(SplitChild::Frozen {
            records, nonces, ..
        }) => {
            let moved: Vec<String> = records.iter().map(|(n, _)| n.to_string()).collect();
            assert_eq!(moved, vec!["/d/1", "/d/2/x", "/e/1", "/f/1"]);
            assert!(nonces.iter().all(|x| x.name >= n("/d")), "{nonces:?}");
        }
        other => panic!("{other:?}"),
    }
    sm.apply(vec![entry(
        5,
        ScopeCommand::DelegationActive { child: right },
    )])
    .await
    .unwrap();
    let st = sm.reader();
    assert!(st.get(&n("/f/1")).unwrap().is_none());
    assert!(st.get(&n("/d/2/x")).unwrap().is_none());
    assert!(st.get(&n("/c/1")).unwrap().is_some());
    assert_eq!(st.view().names, 3);
    // A subtree inside the moved range is not this scope's to split off any more.
    let out = sm
        .apply(vec![entry(6, subtree_split("e", 2, 3, 1_002_000))])
        .await
        .unwrap();
    assert!(
        matches!(out[0].results[0], Err(WireError::Refused { .. })),
        "{out:?}"
    );
    // The left half splits again, left of the first cut: [/b, /d).
    let out = sm
        .apply(vec![entry(7, range_split("/b", 1, 2, 1_003_000))])
        .await
        .unwrap();
    assert!(matches!(out[0].results[0], Ok(7)), "{out:?}");
    let view = sm.reader().view();
    let middle = &view.delegations[&n("/b")];
    assert_eq!(middle.referral.range.end, Some(n("/d")));
    assert_eq!(view.bounds().end, Some(n("/b")));
    assert_eq!(over(&view, "/c/1"), Some(middle.referral.scope));
    assert_eq!(over(&view, "/e/1"), Some(right));
    assert_eq!(over(&view, "/a/1"), None);
}

#[tokio::test]
async fn an_operators_split_needs_the_admins_and_a_part_that_can_move() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let mut sm = StateMachine::open(
        &db,
        ScopeId::root(),
        Name::root(),
        Arc::new(SigCache::default()),
    )
    .unwrap();
    // The test signer ([3; 32]) is the admin; automatic splits stay off.
    let admin = ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key();
    let policy = Policy::development(Some(
        policy::PublicKey::from_bytes(&admin.to_bytes()).unwrap(),
    ));
    let genesis = ScopeCommand::Genesis {
        descriptor: ScopeDescriptor {
            id: ScopeId::root(),
            prefix: Name::root(),
            epoch: 1,
            members: vec![],
            range: proto::KeyRange::all(),
        },
        policy_toml: policy.to_toml(),
    };
    let names = ["/a/1", "/shop/eu/x", "/shop/us/y", "/z/1"];
    let writes = batch(names.iter().map(|n| put(n, "1")).collect(), 10);
    sm.apply(vec![entry(1, genesis), entry(2, writes)])
        .await
        .unwrap();
    let n = |s: &str| Name::parse(s).unwrap();
    let split = |at: &str, by_range: bool| Op::Split {
        at: n(at),
        by_range,
    };
    // A subtree two levels down, and a range cut, in one entry; then one that is refused
    // because its part holds a delegation in flight.
    let out = sm
        .apply(vec![entry(
            3,
            batch(
                vec![
                    split("/shop/eu", false),
                    put("/shop/eu/late", "1"),
                    split("/m", true),
                ],
                30,
            ),
        )])
        .await
        .unwrap();
    assert!(matches!(out[0].results[0], Ok(3)), "{out:?}");
    assert!(
        matches!(out[0].results[1], Err(WireError::Moving { .. })),
        "{out:?}"
    );
    assert!(
        matches!(&out[0].results[2], Err(WireError::Refused { reason }) if reason.contains("in flight")),
        "{out:?}"
    );
    let view = sm.reader().view();
    let d = &view.delegations[&n("/shop/eu")];
    assert_eq!(d.state, DelegationState::Frozen);
    assert!(!d.referral.range.is_bounded());
    assert_eq!(view.last_split_ms, Some(1_000_000));
    // Once handed over, the range cut goes through: [/m, -) holds /shop and /z.
    let child = d.referral.scope;
    sm.apply(vec![entry(4, ScopeCommand::DelegationActive { child })])
        .await
        .unwrap();
    let out = sm
        .apply(vec![entry(5, batch(vec![split("/m/x", true)], 40))])
        .await
        .unwrap();
    assert!(
        matches!(&out[0].results[0], Err(WireError::Refused { reason }) if reason.contains("holds a delegated scope")),
        "the range from /m holds the /shop/eu child: {out:?}"
    );
    let out = sm
        .apply(vec![entry(6, batch(vec![split("/shop/us", false)], 50))])
        .await
        .unwrap();
    assert!(matches!(out[0].results[0], Ok(6)), "{out:?}");
    // Outside the scope, or the scope's own prefix: refused or denied.
    let out = sm
        .apply(vec![entry(7, batch(vec![split("/a", true)], 60))])
        .await
        .unwrap();
    assert!(
        matches!(&out[0].results[0], Err(WireError::Refused { .. })),
        "a delegation is in flight: {out:?}"
    );
}
