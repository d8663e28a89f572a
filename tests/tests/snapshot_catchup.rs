//! A follower is down while the cluster writes and the other anchors snapshot and purge their
//! logs past what the follower has; restarted, the follower catches up from a snapshot (its
//! status shows a snapshot index) and serves every name from its own replica.

use std::time::Duration;

use anchorage_tests::{bounded, check_all, random_key, write_many, Cluster, Options};
use proto::ReadLevel;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_catchup() {
    bounded(Duration::from_secs(120), async {
        let options = Options {
            logs_kept_after_snapshot: 0,
            ..Options::default()
        };
        let mut c = Cluster::start_with(3, options).await?;
        c.init(None).await?;
        let key = random_key();
        let client = c.client().await?;
        let mut writes = write_many(&client, &key, "/early", 50, 4).await?;

        let leader = c.wait_settled(Duration::from_secs(10)).await?;
        let follower = (0..3).find(|&i| i != leader).expect("3 anchors");
        let other = (0..3)
            .find(|&i| i != leader && i != follower)
            .expect("3 anchors");
        let before = c
            .wait_caught_up(follower, leader, Duration::from_secs(10))
            .await?;
        c.kill(follower);
        eprintln!("leader {leader}; killed follower {follower} at applied index {before}");

        writes.extend(write_many(&client, &key, "/late", 400, 8).await?);
        let last = writes.iter().map(|w| w.version).max().unwrap_or(0);
        c.wait_applied(other, last, Duration::from_secs(10)).await?;

        // Snapshot and purge on the two live anchors.
        let mut args = vec!["snapshot".to_string()];
        for i in [leader, other] {
            args.push("--anchor".into());
            args.push(c.anchors[i].addr()?.to_string());
        }
        let out = c.cli_ok(&args).await?;
        eprintln!("{}", out.trim());
        for i in [leader, other] {
            let s = c.root_status(i).await?;
            let snap = s.snapshot.unwrap_or(0);
            anyhow::ensure!(
                snap >= last,
                "anchor {i} snapshot at {snap:?}, below the last write {last}: {s:?}"
            );
        }

        c.restart(follower).await?;
        let target = c.last_applied(leader).await?;
        let s = c
            .wait_applied(follower, target, Duration::from_secs(30))
            .await?;
        let snap = s.snapshot.unwrap_or(0);
        anyhow::ensure!(
            snap > before,
            "follower caught up without a snapshot past its old index {before}: {s:?}"
        );
        eprintln!(
            "follower {follower} caught up: snapshot {snap}, applied {:?}",
            s.last_applied
        );
        let leader_names = c.root_status(leader).await?.names;
        anyhow::ensure!(
            s.names == leader_names,
            "follower holds {} names, leader {leader_names}",
            s.names
        );

        check_all(
            &c.client_of(follower).await?,
            &writes,
            ReadLevel::Replica,
            8,
        )
        .await?;
        Ok(())
    })
    .await;
}
