use anchorage_tests::{bounded, random_key, Cluster};
use proto::Record;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probe() {
    bounded(Duration::from_secs(120), async {
        std::env::set_var("ANCHORAGE_LOG", "info,openraft=debug"); std::env::set_var("ANCHORAGE_TEST_KEEP", "1");
        let mut c = Cluster::start(3).await?;
        c.init(None).await?;
        let client = c.client().await?;
        let key = random_key();
        for i in 0..20 {
            let t = Instant::now();
            let v = client
                .put(
                    &format!("/p/n{i}"),
                    vec![Record::Text("x".into())],
                    60,
                    &key,
                )
                .await?;
            eprintln!("write {i} v{v} {:?}", t.elapsed());
        }
        let l = c.wait_leader(Duration::from_secs(5)).await?;
        for i in 0..3 {
            let m = c.metrics(i).await?;
            for line in m.lines().filter(|l| {
                (l.contains("flush_seconds_sum")
                    || l.contains("flush_seconds_count")
                    || l.contains("request_seconds_sum")
                    || l.contains("request_seconds_count"))
            }) {
                eprintln!("a{i}{} {line}", if i == l { "*" } else { "" });
            }
        }
        anyhow::bail!("keep")
    })
    .await;
}
