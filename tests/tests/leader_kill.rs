//! Writers running; kill -9 the root scope's leader; a new leader is elected and writes
//! resume within a bound; the old leader restarts and catches up; every acknowledged write
//! reads back with its value (writes that errored may or may not be there).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anchorage_tests::{bounded, check_all, random_key, wait_for, Cluster, Written};
use proto::{ReadLevel, Record};

/// A new leader must be elected and a write started after the kill acknowledged within this.
const FAILOVER_MAX: Duration = Duration::from_secs(15);
const WRITERS: usize = 4;

struct Acked {
    write: Written,
    started: Instant,
    done: Instant,
}

#[derive(Default)]
struct Log {
    acked: Vec<Acked>,
    errors: Vec<(Instant, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kill() {
    bounded(Duration::from_secs(120), async {
        let mut c = Cluster::start(3).await?;
        c.init(None).await?;
        let client = c.client().await?;
        let key = random_key();

        let log = Arc::new(Mutex::new(Log::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = tokio::task::JoinSet::new();
        for t in 0..WRITERS {
            let (client, key, log, stop) = (client.clone(), key.clone(), log.clone(), stop.clone());
            writers.spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("/lk/w{t}-{i}");
                    let value = format!("value-{t}-{i}");
                    i += 1;
                    let started = Instant::now();
                    let r = client
                        .put(&name, vec![Record::Text(value.clone())], 300, &key)
                        .await;
                    let done = Instant::now();
                    {
                        let mut log = log.lock().unwrap();
                        match r {
                            Ok(version) => log.acked.push(Acked {
                                write: Written {
                                    name,
                                    value,
                                    version,
                                },
                                started,
                                done,
                            }),
                            Err(e) => log.errors.push((done, format!("{name}: {e}"))),
                        }
                    }
                    if done - started < Duration::from_millis(5) {
                        // An instant failure: do not spin.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            });
        }
        let acked = |n: usize| {
            let log = log.clone();
            move || {
                let log = log.clone();
                async move { Ok((log.lock().unwrap().acked.len() >= n).then_some(())) }
            }
        };
        wait_for(
            "100 acknowledged writes",
            Duration::from_secs(30),
            acked(100),
        )
        .await?;

        let old = c.wait_settled(Duration::from_secs(10)).await?;
        let old_term = c.root_status(old).await?.term;
        let killed_at = Instant::now();
        c.kill(old);
        eprintln!("killed leader {old} (term {old_term})");

        // A new leader at a higher term...
        let new = wait_for("a new leader", FAILOVER_MAX, || {
            let c = &c;
            async move {
                for i in (0..3).filter(|&i| i != old) {
                    let s = c.root_status(i).await?;
                    if s.role == "leader" && s.term > old_term {
                        return Ok(Some(i));
                    }
                }
                Ok(None)
            }
        })
        .await?;
        let elected = killed_at.elapsed();
        // ...and a write that started after the kill is acknowledged (only a new leader
        // can have committed it).
        let resumed = wait_for(
            "a write after the kill",
            FAILOVER_MAX.saturating_sub(elected),
            || {
                let log = log.clone();
                async move {
                    let log = log.lock().unwrap();
                    Ok(log
                        .acked
                        .iter()
                        .filter(|a| a.started > killed_at)
                        .map(|a| a.done)
                        .min())
                }
            },
        )
        .await?;
        eprintln!(
            "new leader {new} after {:.2} s; writes resumed after {:.2} s",
            elected.as_secs_f64(),
            (resumed - killed_at).as_secs_f64()
        );

        // The old leader comes back and catches up while the writers go on.
        c.restart(old).await?;
        let leader = c.wait_leader(Duration::from_secs(10)).await?;
        c.wait_caught_up(old, leader, Duration::from_secs(30))
            .await?;
        let n = log.lock().unwrap().acked.len();
        wait_for(
            "50 more acknowledged writes",
            Duration::from_secs(20),
            acked(n + 50),
        )
        .await?;

        stop.store(true, Ordering::Relaxed);
        while let Some(r) = writers.join_next().await {
            r?;
        }
        let (writes, errors) = {
            let log = log.lock().unwrap();
            let writes: Vec<Written> = log.acked.iter().map(|a| a.write.clone()).collect();
            (writes, log.errors.clone())
        };
        eprintln!(
            "{} acknowledged writes, {} errors",
            writes.len(),
            errors.len()
        );
        for (_, e) in errors.iter().take(5) {
            eprintln!("  error: {e}");
        }

        // Every acknowledged write, linearizably...
        check_all(&client, &writes, ReadLevel::Linearizable, 8).await?;
        // ...and from the restarted old leader's own replica once it has caught up.
        let leader = c.wait_leader(Duration::from_secs(10)).await?;
        c.wait_caught_up(old, leader, Duration::from_secs(30))
            .await?;
        check_all(&c.client_of(old).await?, &writes, ReadLevel::Replica, 8).await?;
        Ok(())
    })
    .await;
}
