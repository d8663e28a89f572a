//! Network partitions between anchor *processes* (the process-level fault tests): three
//! `anchorage` processes, each in its own Linux network namespace (see
//! `anchorage_tests::netns` and docs/reliability-netns.md), while resolver clients in the
//! root namespace put, compare-and-set, delete and read linearizably on a few names and
//! record every operation:
//!
//! 1. the leader is cut from both followers: the majority side elects a new leader and
//!    commits writes within a bound; the old leader commits nothing (its applied index
//!    stays put, a write sent to it alone is not acknowledged and takes no effect
//!    during the partition);
//! 2. healed: the old leader steps down and catches up;
//! 3. a follower is cut off, killed with `kill -9` while cut off (the pid is the anchor
//!    process itself, in its namespace), restarted still cut off, then healed: it catches
//!    up while the majority kept committing;
//! 4. the leader is killed with `kill -9`: a new leader commits within a bound; the old one
//!    restarts in its namespace and catches up.
//!
//! At the end, linearizable reads of every name after healing; the history must be
//! linearizable and no acknowledged write may be lost.
//!
//! The test needs root, `ip` and `iptables-restore`; without them it fails saying so.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anchorage_tests::linearizability::{Budget, Input, Output, Recorder};
use anchorage_tests::recorded::{
    lost_acknowledged, record_read, run_client, write_output, Mix, FINAL_READER,
};
use anchorage_tests::{anchorage_bin, bounded, random_key, wait_for, Cluster, Options};
use proto::Record;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use resolver::{Client, ClientConfig, Error};

/// The whole test body.
const LIMIT: Duration = Duration::from_secs(120);
/// From a cut or a kill until a new leader commits a write invoked after it.
const FAILOVER_MAX: Duration = Duration::from_secs(15);
/// From healing until the old leader has stepped down / a restarted anchor caught up.
const RECOVER_MAX: Duration = Duration::from_secs(20);
/// How long a partition is held after the majority side has committed again.
const HOLD: Duration = Duration::from_secs(2);
const CLIENTS: usize = 4;
const NAMES: usize = 4;
/// The name the write sent to the isolated old leader alone goes to.
const PROBE: &str = "/pp/probe-old-leader";
/// Client id of the probe write.
const PROBE_CLIENT: u32 = 1_000;

fn name(n: usize) -> String {
    format!("/pp/k{n}")
}

fn client_config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_millis(1500),
        operation_timeout: Duration::from_secs(4),
        cache_entries_max: 0,
        ..ClientConfig::default()
    }
}

/// Acknowledged writes (their invoke times) and error kinds seen by the workload.
#[derive(Default)]
struct Progress {
    acked_invoked_ns: Mutex<Vec<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Progress {
    /// Counts the result of a write invoked at `invoked_ns`.
    fn count(&self, result: &Result<u64, Error>, invoked_ns: u64) {
        match result {
            Ok(_) => self.acked_invoked_ns.lock().unwrap().push(invoked_ns),
            Err(Error::Conflict { .. }) => {}
            Err(e) => {
                *self
                    .errors
                    .lock()
                    .unwrap()
                    .entry(error_kind(e))
                    .or_insert(0) += 1
            }
        }
    }

    fn acked_after(&self, t_ns: u64) -> usize {
        self.acked_invoked_ns
            .lock()
            .unwrap()
            .iter()
            .filter(|&&t| t > t_ns)
            .count()
    }
}

/// What happened when, for the report.
struct Timeline {
    start: Instant,
    events: Mutex<Vec<(f64, String)>>,
}

impl Timeline {
    fn note(&self, what: impl Into<String>) {
        let t = self.start.elapsed().as_secs_f64();
        let what = what.into();
        eprintln!("[{t:7.2} s] {what}");
        self.events.lock().unwrap().push((t, what));
    }
}

fn error_kind(e: &Error) -> String {
    let s = format!("{e:?}");
    s.split([' ', '{', '(']).next().unwrap_or("?").to_string()
}

/// Waits until, among `among`, one anchor leads at a term above `above` and the others
/// name it. Returns its index and term.
async fn wait_leader_among(
    c: &Cluster,
    among: &[usize],
    above: u64,
    within: Duration,
) -> anyhow::Result<(usize, u64)> {
    wait_for(
        &format!("a leader above term {above} among anchors {among:?}"),
        within,
        || async move {
            let mut seen = Vec::new();
            for &i in among {
                seen.push((i, c.root_status(i).await?));
            }
            let Some((l, s)) = seen
                .iter()
                .find(|(_, s)| s.role == "leader" && s.term > above)
            else {
                return Ok(None);
            };
            let peer = c.anchors[*l].peer.map(|p| p.to_base58());
            let agree = seen
                .iter()
                .all(|(_, o)| o.leader == peer && o.term == s.term);
            Ok(agree.then_some((*l, s.term)))
        },
    )
    .await
}

/// Waits until a write invoked after `t_ns` (recorder time) is acknowledged.
async fn wait_acked_after(progress: &Progress, t_ns: u64, what: &str) -> anyhow::Result<()> {
    wait_for(what, FAILOVER_MAX, move || async move {
        Ok((progress.acked_after(t_ns) > 0).then_some(()))
    })
    .await
}

/// Checks that anchor `i`'s pid is an `anchorage` process in a network namespace other
/// than the test's, and the only process in its namespace. Returns the pid.
fn check_anchor_process(c: &mut Cluster, i: usize) -> anyhow::Result<u32> {
    let pid = c.anchors[i]
        .pid()
        .ok_or_else(|| anyhow::anyhow!("anchor {i} is not running"))?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))?;
    anyhow::ensure!(
        comm.trim() == "anchorage",
        "anchor {i}: pid {pid} is {:?}, not the anchorage process (so kill -9 would not hit \
         the anchor)",
        comm.trim()
    );
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/net"))?;
    let ours = std::fs::read_link("/proc/self/ns/net")?;
    anyhow::ensure!(
        ns != ours,
        "anchor {i} (pid {pid}) runs in the test's own network namespace"
    );
    let in_ns = c.netns()?.pids(i);
    anyhow::ensure!(
        in_ns == vec![pid],
        "anchor {i}: processes in its namespace are {in_ns:?}, expected only {pid}"
    );
    Ok(pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn process_partition() {
    // Build the binary outside the time bound (the target dir may be busy).
    anchorage_bin();
    bounded(LIMIT, async {
        let tl = Timeline {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
        };
        let mut c = Cluster::start_netns(3, Options::default()).await?;
        let slot = c.netns()?.slot();
        tl.note(format!(
            "3 anchors listening in namespaces {:?} (10.200.{slot}.0/24)",
            (0..3)
                .map(|i| c.anchors[i].netns.clone())
                .collect::<Vec<_>>()
        ));
        for i in 0..3 {
            check_anchor_process(&mut c, i)?;
        }
        c.init(None).await?;
        let l0 = c.wait_settled(Duration::from_secs(20)).await?;
        let term0 = c.root_status(l0).await?.term;
        tl.note(format!("initialized; leader {l0} at term {term0}"));
        // HTTP is served on the namespace's address too.
        let metrics = c.metrics(l0).await?;
        anyhow::ensure!(
            metrics.contains("anchorage_"),
            "anchor {l0}'s /metrics over the fabric has no anchorage_ metric"
        );

        // The workload.
        let seed: u64 = std::env::var("ANCHORAGE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| rand::thread_rng().gen());
        eprintln!("workload seed {seed} (ANCHORAGE_SEED={seed} replays the client choices)");
        let recorder = Recorder::new();
        let progress = Arc::new(Progress::default());
        let stop = Arc::new(AtomicBool::new(false));
        let key = random_key();
        let addrs = c.addrs()?;
        let mut clients = tokio::task::JoinSet::new();
        for k in 0..CLIENTS {
            let client = Client::connect(&addrs, client_config()).await?;
            let mix = Mix {
                names: NAMES,
                name,
                cas_below: 92,
                pause_on_failure: true,
            };
            let (progress, stop) = (progress.clone(), stop.clone());
            clients.spawn(run_client(
                k as u32,
                client,
                key.clone(),
                recorder.clone(),
                StdRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(k as u64)),
                mix,
                move || !stop.load(Ordering::Relaxed),
                move |result, invoked| progress.count(result, invoked),
            ));
        }
        let pr = &*progress;
        wait_for(
            "20 acknowledged writes",
            Duration::from_secs(15),
            move || async move { Ok((pr.acked_after(0) >= 20).then_some(())) },
        )
        .await?;
        tl.note("workload running");

        // ---- Round 1: the leader is cut from both followers.
        let others0: Vec<usize> = (0..3).filter(|&i| i != l0).collect();
        c.netns()?.isolate(l0)?;
        let cut1 = Instant::now();
        let cut1_ns = recorder.now_ns();
        tl.note(format!("round 1: leader {l0} cut from {others0:?}"));
        // A write sent to the old leader alone (one attempt, no redirect): it must not be
        // acknowledged, nor take effect while the partition lasts.
        let probe = {
            let cfg = ClientConfig {
                attempts_max: 1,
                request_timeout: Duration::from_secs(3),
                operation_timeout: Duration::from_secs(3),
                cache_entries_max: 0,
                ..ClientConfig::default()
            };
            let old = Client::connect(&[c.anchors[l0].addr()?], cfg).await?;
            let (recorder, key) = (recorder.clone(), key.clone());
            tokio::spawn(async move {
                let value = "written-to-the-isolated-old-leader".to_string();
                let id = recorder.invoke(
                    PROBE_CLIENT,
                    PROBE,
                    Input::Put {
                        value: value.clone(),
                    },
                );
                let r = old.put(PROBE, vec![Record::Text(value)], 60, &key).await;
                match write_output(&r) {
                    Some(out) => recorder.complete(id, out),
                    None => recorder.unknown(id),
                }
                r
            })
        };
        let (l1, term1) = wait_leader_among(&c, &others0, term0, FAILOVER_MAX).await?;
        tl.note(format!(
            "round 1: anchor {l1} leads the majority side at term {term1} after {:.2} s",
            cut1.elapsed().as_secs_f64()
        ));
        wait_acked_after(&progress, cut1_ns, "a write on the majority side").await?;
        tl.note(format!(
            "round 1: majority side committed a write invoked after the cut, {:.2} s after it",
            cut1.elapsed().as_secs_f64()
        ));
        // The old leader commits nothing: whatever it applies after a short grace (entries
        // committed just before the cut) is all it ever applies while cut off.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let frozen = c.root_status(l0).await?;
        tokio::time::sleep(HOLD).await;
        let later = c.root_status(l0).await?;
        tl.note(format!(
            "round 1: old leader {l0}: role {} term {} applied {:?} log {:?} -> role {} term {} \
             applied {:?} log {:?}",
            frozen.role,
            frozen.term,
            frozen.last_applied,
            frozen.last_log,
            later.role,
            later.term,
            later.last_applied,
            later.last_log
        ));
        anyhow::ensure!(
            later.last_applied == frozen.last_applied,
            "the isolated old leader {l0} applied entries while cut off from both followers: \
             {:?} -> {:?}",
            frozen.last_applied,
            later.last_applied
        );
        let probe = probe.await?;
        tl.note(format!(
            "round 1: the write sent to the old leader alone: {probe:?}"
        ));
        anyhow::ensure!(
            probe.is_err(),
            "the isolated old leader acknowledged a write: {probe:?}"
        );
        // ... and the majority side does not have it.
        let majority = c.client_of(l1).await?;
        let (mj, rc) = (&majority, &recorder);
        let seen = wait_for(
            "a linearizable read of the probe on the majority side",
            RECOVER_MAX,
            move || async move { Ok(record_read(mj, rc, PROBE_CLIENT + 1, PROBE).await) },
        )
        .await?;
        anyhow::ensure!(
            seen == Output::NotFound,
            "the write sent to the isolated old leader alone is visible on the majority side \
             during the partition: {seen:?}"
        );
        // Everything committed during the partition is at or below this index (read just
        // before healing; entries committed after it are later than the partition).
        let applied_before_heal = c.last_applied(l1).await?;

        // ---- Round 2: heal; the old leader steps down and catches up.
        c.netns()?.heal_all()?;
        let heal1 = Instant::now();
        tl.note("round 2: healed");
        let l1_peer = c.anchors[l1].peer.map(|p| p.to_base58());
        let cr = &c;
        wait_for("the old leader to step down", RECOVER_MAX, || async move {
            let s = cr.root_status(l0).await?;
            Ok((s.role != "leader" && s.term >= term1 && s.leader.is_some()).then_some(()))
        })
        .await?;
        tl.note(format!(
            "round 2: old leader {l0} stepped down after {:.2} s (leader: {})",
            heal1.elapsed().as_secs_f64(),
            if c.root_status(l0).await?.leader == l1_peer {
                format!("{l1}")
            } else {
                "another anchor".into()
            }
        ));
        let l2 = c.wait_settled(RECOVER_MAX).await?;
        let target = c.wait_caught_up(l0, l2, RECOVER_MAX).await?;
        tl.note(format!(
            "round 2: old leader {l0} caught up to index {target} (leader {l2}) {:.2} s after \
             healing",
            heal1.elapsed().as_secs_f64()
        ));

        // ---- Round 3: a follower is cut off, killed, restarted cut off, healed.
        let f = (0..3).find(|&i| i != l2).expect("3 anchors");
        c.netns()?.isolate(f)?;
        let cut3 = Instant::now();
        let cut3_ns = recorder.now_ns();
        tl.note(format!(
            "round 3: follower {f} cut from the others (leader {l2})"
        ));
        wait_acked_after(&progress, cut3_ns, "a write while a follower is cut off").await?;
        tl.note(format!(
            "round 3: majority committed a write {:.2} s after the cut",
            cut3.elapsed().as_secs_f64()
        ));
        let pid = check_anchor_process(&mut c, f)?;
        c.kill(f);
        let left = c.netns()?.pids(f);
        anyhow::ensure!(
            left.is_empty(),
            "after kill -9 of anchor {f} (pid {pid}) its namespace still holds {left:?}"
        );
        tl.note(format!(
            "round 3: kill -9 follower {f} (pid {pid}); its namespace is empty"
        ));
        let restart = Instant::now();
        c.restart(f).await?;
        let pid2 = check_anchor_process(&mut c, f)?;
        tl.note(format!(
            "round 3: follower {f} restarted (pid {pid2}) in {:.2} s, still cut off",
            restart.elapsed().as_secs_f64()
        ));
        tokio::time::sleep(HOLD).await;
        c.netns()?.heal_all()?;
        let heal3 = Instant::now();
        let l3 = c.wait_settled(RECOVER_MAX).await?;
        let target = c.wait_caught_up(f, l3, RECOVER_MAX).await?;
        tl.note(format!(
            "round 3: healed; leader {l3}; follower {f} caught up to {target} after {:.2} s",
            heal3.elapsed().as_secs_f64()
        ));

        // ---- Round 4: kill -9 the leader.
        let term3 = c.root_status(l3).await?.term;
        let pid = check_anchor_process(&mut c, l3)?;
        c.kill(l3);
        let kill4 = Instant::now();
        let kill4_ns = recorder.now_ns();
        tl.note(format!("round 4: kill -9 leader {l3} (pid {pid})"));
        let others3: Vec<usize> = (0..3).filter(|&i| i != l3).collect();
        let (l4, term4) = wait_leader_among(&c, &others3, term3, FAILOVER_MAX).await?;
        let elected4 = kill4.elapsed().as_secs_f64();
        wait_acked_after(&progress, kill4_ns, "a write after the leader's kill").await?;
        tl.note(format!(
            "round 4: anchor {l4} leads at term {term4} {elected4:.2} s after the kill; writes \
             commit {:.2} s after it",
            kill4.elapsed().as_secs_f64()
        ));
        c.restart(l3).await?;
        check_anchor_process(&mut c, l3)?;
        let l5 = c.wait_settled(RECOVER_MAX).await?;
        let target = c.wait_caught_up(l3, l5, RECOVER_MAX).await?;
        tl.note(format!(
            "round 4: old leader {l3} restarted and caught up to {target} {:.2} s after the kill",
            kill4.elapsed().as_secs_f64()
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;

        // ---- The end: stop, read everything linearizably, check.
        stop.store(true, Ordering::Relaxed);
        while let Some(r) = clients.join_next().await {
            r?;
        }
        tl.note("workload stopped");
        let reader = c.client().await?;
        let mut names: Vec<String> = (0..NAMES).map(name).collect();
        names.push(PROBE.to_string());
        let mut finals = BTreeMap::new();
        let (rd, rc) = (&reader, &recorder);
        for n in &names {
            let out = wait_for(
                &format!("a definite linearizable read of {n}"),
                RECOVER_MAX,
                move || async move { Ok(record_read(rd, rc, FINAL_READER, n).await) },
            )
            .await?;
            finals.insert(n.clone(), out);
        }
        tl.note(format!("final reads: {finals:?}"));
        // The old leader cannot commit: the probe's entry in its log is overwritten when it
        // rejoins. The anchor then forwards the still-pending mutation to the new leader
        // (node.rs `propose` -> `forward` on NotLeader), so it may take effect after the
        // heal, which its "unknown" outcome allows; never at an index of the partition.
        let probe_final = finals[PROBE].clone();
        match &probe_final {
            Output::NotFound => {}
            Output::Value { version, .. } if *version > applied_before_heal => tl.note(format!(
                "the probe took effect at v{version} after the heal (the partition ended at or \
                 below v{applied_before_heal}): forwarded to the new leader by the old one"
            )),
            other => anyhow::bail!(
                "the write sent only to the isolated old leader took effect during the \
                 partition (which ended at or below v{applied_before_heal}): {other:?}"
            ),
        }
        // Every anchor applied the same, and agrees with the final reads.
        let leader = c.wait_settled(RECOVER_MAX).await?;
        for i in 0..3 {
            c.wait_caught_up(i, leader, RECOVER_MAX).await?;
        }

        let history = recorder.history();
        let unknown = history.ops.iter().filter(|o| o.is_unknown()).count();
        let acked = progress.acked_after(0);
        let lost = lost_acknowledged(&history);
        let check_started = Instant::now();
        let outcome = history.check(Budget {
            max_states: 5_000_000,
            max_time: Some(Duration::from_secs(40)),
        });
        tl.note(format!(
            "history: {} operations ({acked} acknowledged writes, {unknown} of unknown outcome); \
             errors by kind {:?}; checker: {outcome} in {:.2} s",
            history.len(),
            progress.errors.lock().unwrap(),
            check_started.elapsed().as_secs_f64()
        ));
        anyhow::ensure!(
            lost.is_empty(),
            "{} acknowledged writes lost: {}",
            lost.len(),
            lost.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        );
        anyhow::ensure!(
            outcome.is_ok(),
            "the history is not linearizable: {outcome}"
        );
        Ok(())
    })
    .await;
}
