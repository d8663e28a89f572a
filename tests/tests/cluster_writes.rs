//! 3 anchors; 1000 signed writes from 16 concurrent tasks through the resolver library; then
//! every write is read back linearizably through each anchor, and at the replica level from
//! each anchor once it has applied the last version.

use std::time::Duration;

use anchorage_tests::{bounded, check_all, random_key, write_many, Cluster};
use proto::ReadLevel;

// 1000 writes dominate this test: with the anchors built in the dev profile, each costs
// several ed25519 verifications at ~15 ms each (see the report); hence the wider bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_writes() {
    bounded(Duration::from_secs(180), async {
        let mut c = Cluster::start(3).await?;
        c.init(None).await?;

        // `init` runs once: a second one is refused with a clear message.
        let mut again = vec!["init".to_string()];
        again.extend(c.anchor_args()?);
        let out = c.cli(&again).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(!out.status.success(), "second init succeeded: {stderr}");
        anyhow::ensure!(
            stderr.contains("already"),
            "second init error unclear: {stderr}"
        );

        // `anchorage status --json`: one entry per anchor, one leader among them.
        let js = c.status_json_cli().await?;
        let arr = js
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("status is not an array"))?;
        anyhow::ensure!(arr.len() == 3, "status has {} entries", arr.len());
        let leaders = arr
            .iter()
            .filter(|a| a["scopes"][0]["role"] == "leader")
            .count();
        anyhow::ensure!(leaders == 1, "{leaders} leaders in {js}");

        let client = c.client().await?;
        let key = random_key();
        let started = std::time::Instant::now();
        let writes = write_many(&client, &key, "/cw", 1000, 16).await?;
        eprintln!("1000 writes in {:.1} s", started.elapsed().as_secs_f64());
        let last = writes.last().map(|w| w.version).unwrap_or(0);

        for i in 0..3 {
            let ci = c.client_of(i).await?;
            let t = std::time::Instant::now();
            check_all(&ci, &writes, ReadLevel::Linearizable, 16).await?;
            eprintln!(
                "linearizable reads via anchor {i}: {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
        for i in 0..3 {
            c.wait_applied(i, last, Duration::from_secs(20)).await?;
            let ci = c.client_of(i).await?;
            check_all(&ci, &writes, ReadLevel::Replica, 16).await?;
        }

        let committed = c
            .metric_sum("anchorage_mutations_total", &[("outcome", "committed")])
            .await?;
        anyhow::ensure!(committed >= 1000.0, "committed counter is {committed}");
        Ok(())
    })
    .await;
}
