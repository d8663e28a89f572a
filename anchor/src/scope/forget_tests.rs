use super::*;
use crate::scope::decide::delegation_over;
use crate::scope::learn::tests::{fixture, id, learn, n, range, sign, vouch, Fixture};

/// The root learned `/users [/users/m, -)` → scope 2 and `[/users/t, -)` → scope 3 (split
/// off scope 2).
fn learned_twice() -> Fixture {
    let mut f = fixture();
    let right = range(2, "/users/m", None, &f);
    let proofs: Vec<_> = f.keys.iter().map(|k| vouch(k, id(1), &right)).collect();
    learn(&mut f, &right, &proofs).unwrap();
    let further = range(3, "/users/t", None, &f);
    let proofs: Vec<_> = f.keys.iter().map(|k| vouch(k, id(2), &further)).collect();
    learn(&mut f, &further, &proofs).unwrap();
    f
}

/// `k`'s signed answer from scope `asked` that holds `name` itself.
fn governs(k: &libp2p::identity::Keypair, asked: ScopeId, name: &str) -> SignedAnswer {
    sign(
        k,
        &Answer::NotFound {
            scope: asked,
            name: n(name),
        },
    )
}

#[test]
fn a_majority_answering_the_first_name_from_another_scope_forgets_the_range() {
    let mut f = learned_twice();
    // Scope 3 merged back into scope 2: scope 2's members answer /users/t themselves.
    let proofs: Vec<_> = f.keys[..2]
        .iter()
        .map(|k| governs(k, id(2), "/users/t"))
        .collect();
    assert_eq!(
        check_forget(&f.delegations, &n("/users/t"), &proofs),
        Ok(true)
    );
    f.delegations.remove(&n("/users/t"));
    let over = |s: &str| delegation_over(&f.delegations, &n(s)).map(|d| d.referral.scope);
    assert_eq!(
        over("/users/z"),
        Some(id(2)),
        "the range before it holds it again"
    );
    // Nothing learned there any more: a no-op.
    assert_eq!(
        check_forget(&f.delegations, &n("/users/t"), &proofs),
        Ok(false)
    );
}

#[test]
fn a_live_range_is_not_forgotten_on_weak_proofs() {
    let f = learned_twice();
    let first = n("/users/t");
    // A minority, or one member counted twice.
    let one = governs(&f.keys[0], id(2), "/users/t");
    assert!(matches!(
        check_forget(&f.delegations, &first, &[one.clone(), one.clone()]),
        Err(LearnRefusal::Minority { vouched: 1, .. })
    ));
    // Answers from the stale scope itself, about another name, or referrals (scope 1 refers
    // /users/t on to scope 2 while scope 3 lives): not proofs.
    let from_stale: Vec<_> = f
        .keys
        .iter()
        .map(|k| governs(k, id(3), "/users/t"))
        .collect();
    assert!(matches!(
        check_forget(&f.delegations, &first, &from_stale),
        Err(LearnRefusal::BadProof(_))
    ));
    let other_name: Vec<_> = f
        .keys
        .iter()
        .map(|k| governs(k, id(2), "/users/u"))
        .collect();
    assert!(matches!(
        check_forget(&f.delegations, &first, &other_name),
        Err(LearnRefusal::BadProof(_))
    ));
    let to_two = range(2, "/users/m", None, &f);
    let referrals: Vec<_> = f
        .keys
        .iter()
        .map(|k| {
            sign(
                k,
                &Answer::Referral {
                    scope: id(1),
                    name: first.clone(),
                    referral: to_two.clone(),
                },
            )
        })
        .collect();
    assert!(matches!(
        check_forget(&f.delegations, &first, &referrals),
        Err(LearnRefusal::BadProof(_))
    ));
    // Signed by keys that are not the delegation's members.
    let outsiders: Vec<_> = (0..3)
        .map(|_| {
            governs(
                &libp2p::identity::Keypair::generate_ed25519(),
                id(2),
                "/users/t",
            )
        })
        .collect();
    assert!(matches!(
        check_forget(&f.delegations, &first, &outsiders),
        Err(LearnRefusal::BadProof(_))
    ));
    // A forged signature.
    let mut forged = governs(&f.keys[0], id(2), "/users/t");
    forged.signature[0] ^= 1;
    let proofs = vec![forged, governs(&f.keys[1], id(2), "/users/t")];
    assert!(matches!(
        check_forget(&f.delegations, &first, &proofs),
        Err(LearnRefusal::BadProof(_))
    ));
}
