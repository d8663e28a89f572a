//! Write N names, kill -9 all three anchors, restart all three: everything acknowledged is
//! still there, and the cluster takes new writes.

use std::time::Duration;

use anchorage_tests::{bounded, check_all, random_key, text_of, write_many, Cluster};
use proto::{ReadLevel, Record};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_restart() {
    bounded(Duration::from_secs(120), async {
        let mut c = Cluster::start(3).await?;
        c.init(None).await?;
        let key = random_key();
        let writes = {
            let client = c.client().await?;
            write_many(&client, &key, "/fr", 300, 8).await?
        };
        let last = writes.last().map(|w| w.version).unwrap_or(0);

        for i in 0..3 {
            c.kill(i);
        }
        for i in 0..3 {
            c.restart(i).await?;
        }
        c.wait_settled(Duration::from_secs(30)).await?;

        let client = c.client().await?;
        check_all(&client, &writes, ReadLevel::Linearizable, 8).await?;
        for i in 0..3 {
            c.wait_applied(i, last, Duration::from_secs(20)).await?;
            check_all(&c.client_of(i).await?, &writes, ReadLevel::Replica, 8).await?;
        }

        let v = client
            .put("/fr/after", vec![Record::Text("after".into())], 60, &key)
            .await?;
        anyhow::ensure!(v > last, "new write at {v}, not after {last}");
        let set = client.resolve("/fr/after", ReadLevel::Linearizable).await?;
        anyhow::ensure!(text_of(&set) == Some("after") && set.version == v);
        Ok(())
    })
    .await;
}
