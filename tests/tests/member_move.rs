//! Member changes on real anchor processes: `anchorage scope move`, as an operator uses it.
//!
//! `/app` is delegated to anchors 0, 1, 2 of a four-anchor cluster; writers keep writing
//! under it and a reader keeps resolving what they wrote while:
//! 1. `leader_moves_away_under_load`: its leader's replica moves to anchor 3 (the leader
//!    removes itself);
//! 2. `mover_killed_mid_move`: a follower's replica moves to anchor 3 and the follower is
//!    SIGKILLed while the move runs, then started again once the move is done.
//!
//! Both check: 0 acknowledged writes lost (each reads back linearizably), the reader never
//! saw an acknowledged name missing or with another value (it reads at the `replica` level,
//! and reads again linearizably when a member answers from behind the write, which that
//! level allows), the root refers to the new
//! members, the anchor that left drops its replica (the killed one once it is back), and a
//! cold client resolves through the new members.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anchorage_tests::{
    bounded, check_all, policy_toml, random_key, text_of, wait_for, Cluster, Delegated, Options,
    Written,
};
use anyhow::{ensure, Context, Result};
use proto::msg::ScopeTarget;
use proto::{ReadLevel, Record, ScopeId};
use resolver::{Client, ClientConfig, Error};

/// The tests of this file run one at a time: each starts four anchors.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Acknowledged writes, and the names the reader found wrong.
#[derive(Default)]
struct Book {
    acked: Mutex<Vec<Written>>,
    wrong: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// Four anchors, the root on 0, 1, 2 and `/app` delegated to 0, 1, 2; the admin key of
/// `/app` written to a file for the CLI.
async fn setup() -> Result<(Cluster, Client, Delegated, std::path::PathBuf)> {
    let c = Cluster::start_with(4, Options::default()).await?;
    let root_admin = random_key();
    c.init_on(
        &[0, 1, 2],
        &policy_toml(&[&root_admin], 1, &[("/**", &[])], 3, &[])?,
    )
    .await?;
    let client = c
        .client_trusting(&[0, 1, 2], ClientConfig::default())
        .await?;
    let keygen = vec![
        "keygen".to_string(),
        "--out".into(),
        c.dir().join("app-admin.key").display().to_string(),
    ];
    let admin_hex = c.cli_ok(&keygen).await?.trim().to_string();
    let app_policy = format!(
        "[admin]\nkeys = [\"{admin_hex}\"]\nthreshold = 1\n\n[[writers]]\npattern = \"/app/**\"\nkeys = [\"*\"]\n\n[placement]\nreplicas = 3\n"
    );
    let app = c
        .delegate(&client, "/app", &[0, 1, 2], &app_policy, &[&root_admin])
        .await?;
    let key = c.dir().join("app-admin.key");
    Ok((c, client, app, key))
}

/// Writers and a reader under `/app` until `book.stop`.
fn load(client: &Client, book: &Arc<Book>) -> tokio::task::JoinSet<Result<()>> {
    let mut set = tokio::task::JoinSet::new();
    for w in 0..2 {
        let (client, book) = (client.clone(), book.clone());
        set.spawn(async move {
            let key = random_key();
            let mut i = 0u64;
            while !book.stop.load(Ordering::Relaxed) && i < 5_000 {
                let name = format!("/app/w{w}/n{i}");
                let value = format!("v{i}-{w}");
                if let Ok(version) = client
                    .put(&name, vec![Record::Text(value.clone())], 300, &key)
                    .await
                {
                    if let Ok(mut a) = book.acked.lock() {
                        a.push(Written {
                            name,
                            value,
                            version,
                        });
                    }
                }
                i += 1;
            }
            Ok(())
        });
    }
    let (client, book) = (client.clone(), book.clone());
    set.spawn(async move {
        let mut k = 0usize;
        while !book.stop.load(Ordering::Relaxed) {
            let pick = book
                .acked
                .lock()
                .ok()
                .and_then(|a| (!a.is_empty()).then(|| a[k % a.len()].clone()));
            k = k.wrapping_add(7919);
            let Some(w) = pick else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            // A replica read may come from a member that has not applied the write yet (a
            // new member catching up, say): that is the read level's staleness, not a wrong
            // answer. A linearizable read of the same name settles it.
            let replica = client.resolve(&w.name, ReadLevel::Replica).await;
            if matches!(&replica, Ok(set) if text_of(set) == Some(w.value.as_str())) {
                continue;
            }
            if !matches!(replica, Ok(_) | Err(Error::NotFound { .. })) {
                // Unavailable for a moment is not a wrong answer.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            match client.resolve(&w.name, ReadLevel::Linearizable).await {
                Ok(set) if text_of(&set) == Some(w.value.as_str()) => {}
                Ok(set) => {
                    if let Ok(mut wrong) = book.wrong.lock() {
                        wrong.push(format!("{} read {:?}", w.name, text_of(&set)));
                    }
                }
                Err(Error::NotFound { .. }) => {
                    if let Ok(mut wrong) = book.wrong.lock() {
                        wrong.push(format!("{} not found", w.name));
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        Ok(())
    });
    set
}

/// Waits until `/app`'s descriptor, as anchor `at` has it, lists exactly `members` (peer ids)
/// with no change in flight, and its group's configuration too.
async fn wait_members(c: &Cluster, at: usize, app: ScopeId, members: &[String]) -> Result<()> {
    let mut want = members.to_vec();
    want.sort();
    wait_for("the move to finish", Duration::from_secs(90), || {
        let want = want.clone();
        async move {
            let info = c.scope_info_at(at, ScopeTarget::Id(app)).await?;
            let mut listed: Vec<String> = info
                .descriptor
                .members
                .iter()
                .map(|m| m.peer_id.clone())
                .collect();
            listed.sort();
            let mut voting = info.status.members.clone();
            voting.sort();
            Ok((info.member_change.is_none() && listed == want && voting == want).then_some(()))
        }
    })
    .await
}

/// The checks after a move of `/app` from `left` to anchor 3.
async fn after_move(c: &Cluster, book: &Book, app: ScopeId, left: usize) -> Result<()> {
    let wrong = book.wrong.lock().map(|w| w.clone()).unwrap_or_default();
    ensure!(wrong.is_empty(), "the reader saw wrong answers: {wrong:?}");
    let acked = book.acked.lock().map(|a| a.clone()).unwrap_or_default();
    ensure!(
        acked.len() > 20,
        "too few writes acknowledged: {}",
        acked.len()
    );
    let cold = c
        .client_trusting(&[0, 1, 2], ClientConfig::default())
        .await?;
    check_all(&cold, &acked, ReadLevel::Linearizable, 4)
        .await
        .context("an acknowledged write is lost")?;
    // The root refers to the new members.
    let new_peer = c.anchor_info(3).await?.peer_id;
    let left_peer = c.anchor_info(left).await?.peer_id;
    wait_for(
        "the root to refer to the new members",
        Duration::from_secs(30),
        || {
            let (new_peer, left_peer) = (new_peer.clone(), left_peer.clone());
            async move {
                let info = c.scope_info_at(0, ScopeTarget::Id(ScopeId::root())).await?;
                let d = info
                    .delegations
                    .iter()
                    .find(|d| d.referral.scope == app)
                    .context("the root lost its delegation of /app")?;
                let peers: Vec<&str> = d
                    .referral
                    .members
                    .iter()
                    .map(|m| m.peer_id.as_str())
                    .collect();
                Ok(
                    (peers.contains(&new_peer.as_str()) && !peers.contains(&left_peer.as_str()))
                        .then_some(()),
                )
            }
        },
    )
    .await?;
    // The anchor that left dropped its replica.
    wait_for(
        "the anchor that left to drop its replica",
        Duration::from_secs(60),
        || async { Ok(c.scope_status(left, app).await?.is_none().then_some(())) },
    )
    .await?;
    // A cold client trusting only the root resolves through the new members.
    let fresh = c
        .client_trusting(&[0, 1, 2], ClientConfig::default())
        .await?;
    let last = acked.last().context("no write")?;
    let set = fresh.resolve(&last.name, ReadLevel::Linearizable).await?;
    ensure!(text_of(&set) == Some(last.value.as_str()));
    Ok(())
}

/// Runs `anchorage scope move /app --from <left> --to <anchor 3>`.
async fn cli_move(c: &Cluster, key: &std::path::Path, left: usize, wait: bool) -> Result<String> {
    let from = c.addrs_of(&[left])?[0].to_string();
    let to = c.addrs_of(&[3])?[0].to_string();
    let mut args: Vec<String> = ["scope", "move", "/app", "--from", &from, "--to", &to]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--sign".to_string(), key.display().to_string()]);
    if !wait {
        args.push("--no-wait".into());
    }
    args.extend(c.anchor_args()?);
    c.cli_ok(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_moves_away_under_load() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(180), async {
        let (c, client, app, key) = setup().await?;
        let leader = c
            .wait_scope_leader(app.child, Duration::from_secs(20))
            .await?;
        let book = Arc::new(Book::default());
        let mut tasks = load(&client, &book);
        wait_for("some writes", Duration::from_secs(20), || async {
            Ok((book.acked.lock().map(|a| a.len()).unwrap_or(0) > 20).then_some(()))
        })
        .await?;
        let out = cli_move(&c, &key, leader, true).await?;
        eprintln!("scope move: {out}");
        let mut members = Vec::new();
        for i in (0..4).filter(|i| *i != leader) {
            members.push(c.anchor_info(i).await?.peer_id);
        }
        let survivor = (0..3).find(|i| *i != leader).context("no survivor")?;
        wait_members(&c, survivor, app.child, &members).await?;
        // Writes keep working on the new members.
        let before = book.acked.lock().map(|a| a.len()).unwrap_or(0);
        wait_for("writes after the move", Duration::from_secs(20), || async {
            Ok((book.acked.lock().map(|a| a.len()).unwrap_or(0) > before + 10).then_some(()))
        })
        .await?;
        book.stop.store(true, Ordering::Relaxed);
        while let Some(t) = tasks.join_next().await {
            t??;
        }
        after_move(&c, &book, app.child, leader).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mover_killed_mid_move() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(180), async {
        let (mut c, client, app, key) = setup().await?;
        let leader = c
            .wait_scope_leader(app.child, Duration::from_secs(20))
            .await?;
        let left = (0..3).find(|i| *i != leader).context("no follower")?;
        let book = Arc::new(Book::default());
        let mut tasks = load(&client, &book);
        wait_for("some writes", Duration::from_secs(20), || async {
            Ok((book.acked.lock().map(|a| a.len()).unwrap_or(0) > 20).then_some(()))
        })
        .await?;
        cli_move(&c, &key, left, false).await?;
        // Mid-move: anchor 3 hosts its replica (the learner is being added); kill -9 the one
        // that leaves.
        wait_for(
            "anchor 3 to join as a learner",
            Duration::from_secs(30),
            || async { Ok(c.scope_status(3, app.child).await?.map(|_| ())) },
        )
        .await?;
        c.kill(left);
        let mut members = Vec::new();
        for i in (0..4).filter(|i| *i != left) {
            members.push(c.anchor_info(i).await?.peer_id);
        }
        wait_members(&c, leader, app.child, &members).await?;
        c.restart(left).await?;
        book.stop.store(true, Ordering::Relaxed);
        while let Some(t) = tasks.join_next().await {
            t??;
        }
        after_move(&c, &book, app.child, left).await
    })
    .await;
}
