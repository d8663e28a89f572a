//! The short chaos campaign run by `cargo test`: a few fixed seeds of partitions, drops and
//! delays against three in-process anchors; each must stay linearizable and lose no
//! acknowledged write, also across a delegation of the names' prefix to a child scope and
//! while the scopes split by themselves, while they merge back, while the members of a
//! scope move between anchors, and while idle scopes sleep and hibernate.
//! `scripts/chaos` runs the long campaign.

use std::time::Duration;

use anchorage_tests::chaos::{campaign, CampaignConfig, Report};

const SEEDS: [u64; 3] = [11, 22, 33];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_chaos_campaign() {
    let cfg = CampaignConfig {
        duration: Duration::from_secs(6),
        ..CampaignConfig::default()
    };
    for seed in SEEDS {
        let report = tokio::time::timeout(Duration::from_secs(240), campaign(seed, &cfg))
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: campaign did not finish in 240 s"))
            .unwrap_or_else(|e| panic!("seed {seed}: harness error: {e:#}"));
        println!(
            "seed {seed}: {} ops ({} unknown), nemesis {:?}, faulted {:?}, lost {}, {}",
            report.ops,
            report.unknown,
            report.nemesis,
            report.injected,
            report.lost_acked,
            report.verdict
        );
        assert!(
            report.ops > 20,
            "seed {seed}: too few operations ran ({})",
            report.ops
        );
        assert!(
            report.passed,
            "seed {seed} failed: lost {} acknowledged writes; {}\nreplay: scripts/chaos --seed {seed} --duration-s 6",
            report.lost_acked, report.verdict
        );
    }
}

/// One campaign in which `/chaos`, where every client writes, moves to a child scope while
/// faults are injected: still linearizable, nothing acknowledged lost, and the move done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_campaign_across_a_delegation() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let seed = 44;
    let cfg = CampaignConfig {
        duration: Duration::from_secs(6),
        delegate_at: Some(Duration::from_secs(2)),
        ..CampaignConfig::default()
    };
    let report = tokio::time::timeout(Duration::from_secs(240), campaign(seed, &cfg))
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: campaign did not finish in 240 s"))
        .unwrap_or_else(|e| panic!("seed {seed}: harness error: {e:#}"));
    println!(
        "seed {seed} (delegation at index {:?}): {} ops ({} unknown), nemesis {:?}, lost {}, {}",
        report.delegated_at_index,
        report.ops,
        report.unknown,
        report.nemesis,
        report.lost_acked,
        report.verdict
    );
    assert!(
        report.delegated_at_index.is_some(),
        "the delegation completed"
    );
    assert!(report.ops > 20, "too few operations ran ({})", report.ops);
    assert!(
        report.passed,
        "seed {seed} failed: lost {} acknowledged writes; {}\nreplay: scripts/chaos --seed {seed} --duration-s 6 --delegate-at-s 2",
        report.lost_acked, report.verdict
    );
}

/// Runs one campaign with tracing to the test's output (`RUST_LOG`), bounded in time;
/// prints its figures and checks it ran, stayed linearizable and lost nothing. `replay` is
/// the `scripts/chaos` flags that replay it.
async fn checked_campaign(seed: u64, cfg: CampaignConfig, replay: &str) -> Report {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let report = tokio::time::timeout(Duration::from_secs(240), campaign(seed, &cfg))
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: campaign did not finish in 240 s"))
        .unwrap_or_else(|e| panic!("seed {seed}: harness error: {e:#}"));
    println!(
        "seed {seed} (splits {:?}, merges {:?}): {} ops ({} unknown), nemesis {:?}, lost {}, {}",
        report.splits,
        report.merges,
        report.ops,
        report.unknown,
        report.nemesis,
        report.lost_acked,
        report.verdict
    );
    assert!(report.ops > 20, "too few operations ran ({})", report.ops);
    assert!(
        report.passed,
        "seed {seed} failed: lost {} acknowledged writes; {}\nreplay: scripts/chaos --seed {seed} {replay}",
        report.lost_acked, report.verdict
    );
    report
}

/// One campaign in which the scopes split by themselves while faults are injected: the
/// root's policy has `[split] auto = true` and `names_max = 2`, the clients write under
/// `/chaos/s/t`, and the root, `/chaos` and `/chaos/s` each split the next level off.
/// Still linearizable, nothing acknowledged lost, and the splits done, at least one of them
/// begun while the faults were on (10 s of them: the first split comes 1 to 3 s in, the
/// others a second or more apart, later on a loaded machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_campaign_with_automatic_splits() {
    let cfg = CampaignConfig {
        duration: Duration::from_secs(10),
        split_names_max: Some(2),
        ..CampaignConfig::default()
    };
    let report = checked_campaign(55, cfg, "--duration-s 10 --split-names-max 2").await;
    let splits = report.splits.expect("a campaign with splits counts them");
    assert!(
        splits.during_faults >= 1,
        "no split was made while the faults were on: {splits:?}"
    );
    assert_eq!(splits.frozen, 0, "a split never finished: {splits:?}");
}

/// One campaign in which split-off scopes merge back by themselves while faults are
/// injected: `[split] names_max = 8`, `[merge] auto = true`, `names_min = 4`; a filler
/// client writes names beside the checked ones (every level and the flat part split), then
/// deletes them from 35% of the 30 s on, and the scopes merge back (the first merges come
/// once a new scope's 6 s peak window is known, about 15 s in). Still linearizable,
/// nothing acknowledged lost, a merge begun while the faults were on, none left halfway.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_campaign_with_automatic_merges() {
    let cfg = CampaignConfig {
        duration: Duration::from_secs(30),
        split_names_max: Some(8),
        merge_names_min: Some(4),
        ..CampaignConfig::default()
    };
    let report = checked_campaign(66, cfg, "--split-names-max 8 --merge-names-min 4").await;
    let merges = report.merges.expect("a campaign with merges counts them");
    assert!(
        merges.begun_during_faults >= 1,
        "no merge began while the faults were on: {merges:?}"
    );
    assert_eq!(merges.merging, 0, "a merge never finished: {merges:?}");
    let splits = report.splits.expect("a campaign with splits counts them");
    assert_eq!(splits.frozen, 0, "a split never finished: {splits:?}");
}

/// One campaign in which `/chaos`'s members move between four anchors (the leader among
/// them) while faults are injected: linearizable, nothing acknowledged lost, at least one
/// move done, none left halfway, and no anchor that left still holding a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_campaign_with_member_moves() {
    let seed = 77;
    let cfg = CampaignConfig {
        duration: Duration::from_secs(12),
        member_moves: true,
        ..CampaignConfig::default()
    };
    let report = tokio::time::timeout(Duration::from_secs(300), campaign(seed, &cfg))
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: campaign did not finish in 300 s"))
        .unwrap_or_else(|e| panic!("seed {seed}: harness error: {e:#}"));
    let moves = report
        .moves
        .expect("a campaign with member moves reports them");
    println!(
        "seed {seed}: {} ops ({} unknown), lost {}, moves {moves:?}, {}",
        report.ops, report.unknown, report.lost_acked, report.verdict
    );
    assert!(
        report.passed,
        "seed {seed} failed: lost {}; {}\nreplay: scripts/chaos --seed {seed} --duration-s 12 --member-moves",
        report.lost_acked, report.verdict
    );
    assert!(
        moves.done >= 1,
        "seed {seed}: no member change finished: {moves:?}"
    );
}

/// One campaign with short quiescence and hibernation timers while the scopes split: the
/// scopes the clients leave (the parents, once their names moved down) sleep, hibernate
/// and are reopened by the faults' traffic and the splits. Linearizable, nothing
/// acknowledged lost, the splits done, and some group reopened from hibernation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_campaign_with_hibernation() {
    let cfg = CampaignConfig {
        duration: Duration::from_secs(10),
        split_names_max: Some(2),
        hibernate: true,
        ..CampaignConfig::default()
    };
    let report = checked_campaign(88, cfg, "--duration-s 10 --split-names-max 2 --hibernate").await;
    let splits = report.splits.expect("a campaign with splits counts them");
    assert_eq!(splits.frozen, 0, "a split never finished: {splits:?}");
    assert!(
        report.reopened >= 1,
        "no group was reopened from hibernation: {report:?}"
    );
}
