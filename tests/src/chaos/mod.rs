//! Seeded chaos campaigns: three in-process anchors behind [`SeededFaults`], concurrent
//! clients doing puts, deletes, compare-and-sets and linearizable reads on a few names,
//! a nemesis cutting and healing links from the same seed, then a linearizability check of
//! the whole history and a count of acknowledged writes lost.
//!
//! With [`CampaignConfig::delegate_at`], the prefix every client writes under (`/chaos`) is
//! delegated to a new child scope mid-campaign, while faults are injected: the history must
//! stay linearizable across the hand-over (`docs/design.md`, "Properties the tests hold").
//!
//! With [`CampaignConfig::split_names_max`], the root's policy lets scopes split by
//! themselves (`[split] auto = true`, that `names_max`, `interval_s_min = 1`) and the clients
//! write three levels deeper (`/chaos/s/t/k<n>`): the root splits `/chaos` off, which splits
//! `/chaos/s` off, which splits `/chaos/s/t` off, each as soon as its size limit is exceeded
//! and the last split is a second old, while the nemesis acts. The report counts the splits
//! (`splits.rs`), and how many of them started while the faults were on.
//!
//! With [`CampaignConfig::merge_names_min`] as well, the policy also lets split-off scopes
//! merge back (`[merge] auto = true`, that `names_min`, `age_s_min = 1`; the anchors keep a
//! 6 s peak load window, the shortest allowed, so a new scope's peak is known soon). The
//! checked names are spread over a deep subtree and a flat part (`/chaos/s/t/k<n>`,
//! `/chaos/u/k<n>`), and a filler client (`filler.rs`) writes enough names beside them for
//! every level and both parts to split (the flat part by range), then, from 35% of the
//! campaign on, deletes them, so the scopes shrink under `names_min` and merge back (ranges
//! into their left neighbour, children into their parent) while the nemesis still acts. The
//! filler's puts and deletes are in the history like every other operation. The report
//! counts the merges and how many began while the faults were on.
//!
//! With [`CampaignConfig::member_moves`], a fourth anchor is started, `/chaos` is delegated
//! to three of the four before the clients start, and a mover keeps moving one of its
//! members (often the leader) to the anchor left out while the nemesis acts (`moves.rs`).
//! The report counts the moves asked, acknowledged and done, and how many finished during
//! the faults; after healing, no change may be left in flight and no anchor that left may
//! still hold a replica.
//!
//! With [`CampaignConfig::hibernate`] (any of the above), groups sleep after 400 ms idle and
//! hibernate 600 ms later, so the scopes the clients leave alone for a moment (a parent
//! whose names moved down, the root once `/chaos` is delegated) are stopped and reopened
//! while the nemesis acts; the report counts the reopenings.
//!
//! One seed replays one campaign: `scripts/chaos --seed N`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anchor::{Anchor, AnchorConfig, StartOptions};
use anyhow::{bail, Context, Result};
use proto::Record;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use resolver::net::NetConfig;
use resolver::{Client, ClientConfig, Multiaddr, PeerId};

use crate::faults::{Noise, SeededFaults};
use crate::linearizability::{Budget, Outcome, Recorder};
use crate::recorded::{lost_acknowledged, record_read, run_client, Mix, FINAL_READER};

mod config;
mod filler;
mod moves;
mod splits;

pub use config::{CampaignConfig, Report};
pub use filler::FILLER;
pub use moves::Moves;
pub use splits::{Merges, Splits};

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Cluster {
    anchors: Vec<Anchor>,
    peers: Vec<PeerId>,
    addrs: Vec<Multiaddr>,
    _dir: tempfile::TempDir,
}

async fn start_cluster(faults: &Arc<SeededFaults>, cfg: &CampaignConfig) -> Result<Cluster> {
    let merge_names_min = cfg.merge_names_min;
    let dir = tempfile::tempdir()?;
    let mut anchors = Vec::new();
    let count = if cfg.member_moves { 4 } else { 3 };
    let member_moves = cfg.member_moves;
    let hibernate = cfg.hibernate;
    for i in 0..count {
        let mut cfg = AnchorConfig::new(dir.path().join(format!("a{i}")));
        cfg.listen = format!("/ip4/127.0.0.1/tcp/{}", free_port()?);
        cfg.raft.heartbeat_ms = 50;
        cfg.raft.election_min_ms = 300;
        cfg.raft.election_max_ms = 600;
        cfg.raft.snapshot_logs = 200;
        cfg.raft.logs_kept_after_snapshot = 50;
        if merge_names_min.is_some() {
            // The shortest window: a new scope's peak load is known (and it may merge) soon.
            cfg.load.peak_window_s = MERGE_PEAK_WINDOW_S;
        }
        if member_moves {
            // The moves are the mover's: no rebalancer adds its own.
            cfg.placement.rebalance = false;
        }
        if hibernate {
            cfg.raft.quiesce_after_ms = 400;
            cfg.raft.hibernate_after_ms = 600;
            cfg.raft.liveness_ms = 200;
            cfg.raft.dead_after_ms = 800;
        }
        let opts = StartOptions {
            faults: Some(faults.clone()),
            ..StartOptions::default()
        };
        anchors.push(Anchor::start_with(cfg, opts).await?);
    }
    let addrs: Vec<Multiaddr> = anchors
        .iter()
        .map(|a| a.dial_addr().parse())
        .collect::<Result<_, _>>()?;
    let peers = anchors
        .iter()
        .map(|a| a.info().peer_id.parse())
        .collect::<Result<_, _>>()?;
    let admin = policy::PublicKey::from_bytes(&admin_key().verifying_key().to_bytes())?;
    let mut root_policy = policy::Policy::development(Some(admin));
    if let Some(names_max) = cfg.split_names_max {
        root_policy.split.auto = true;
        root_policy.split.names_max = names_max;
        root_policy.split.interval_s_min = 1;
        if let Some(names_min) = cfg.merge_names_min {
            root_policy.merge.auto = true;
            root_policy.merge.names_min = Some(names_min);
            root_policy.merge.age_s_min = 1;
        }
        root_policy.validate()?;
    }
    anchor::operator::init_root(&addrs, root_policy.to_toml()).await?;
    Ok(Cluster {
        anchors,
        peers,
        addrs,
        _dir: dir,
    })
}

impl Cluster {
    fn leader(&self) -> Option<usize> {
        self.anchors
            .iter()
            .position(|a| a.status().scopes.iter().any(|s| s.role == "leader"))
    }

    async fn shutdown(&self) {
        for a in &self.anchors {
            a.shutdown().await;
        }
    }
}

fn client_config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_millis(1500),
        operation_timeout: Duration::from_secs(4),
        ..ClientConfig::default()
    }
}

/// Runs one campaign.
pub async fn campaign(seed: u64, cfg: &CampaignConfig) -> Result<Report> {
    if cfg.delegate_at.is_some() && cfg.split_names_max.is_some() {
        bail!("a campaign either delegates /chaos or lets it split by itself, not both");
    }
    if cfg.merge_names_min.is_some() && cfg.split_names_max.is_none() {
        bail!("a campaign with merges needs splits (split_names_max) first");
    }
    if cfg.member_moves && (cfg.delegate_at.is_some() || cfg.split_names_max.is_some()) {
        bail!("a campaign with member moves neither delegates mid-way nor splits");
    }
    let name: fn(usize) -> String = match (cfg.split_names_max, cfg.merge_names_min) {
        (Some(_), Some(_)) => filler::checked_name,
        (Some(_), None) => deep_name,
        (None, _) => name,
    };
    let filler_names = match (cfg.split_names_max, cfg.merge_names_min) {
        (Some(max), Some(_)) => filler::names(filler::per_part(max)),
        _ => Vec::new(),
    };
    let faults = SeededFaults::new(seed);
    let cluster = start_cluster(&faults, cfg)
        .await
        .context("starting the cluster")?;
    if cfg.member_moves {
        delegate_for_moves(&cluster).await?;
    }
    let recorder = Recorder::new();
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed as u8; 32]);
    let deadline = Instant::now() + cfg.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..cfg.clients {
        let net = NetConfig {
            faults: Some(faults.clone()),
            ..NetConfig::client()
        };
        let client = Client::connect_with_net(&cluster.addrs, client_config(), net).await?;
        let (recorder, key, names) = (recorder.clone(), key.clone(), cfg.names);
        let rng = StdRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(c as u64));
        let mix = Mix {
            names,
            name,
            cas_below: 90,
            pause_on_failure: false,
        };
        let keep_going = move || Instant::now() < deadline;
        tasks.spawn(run_client(
            c as u32,
            client,
            key,
            recorder,
            rng,
            mix,
            keep_going,
            |_, _| {},
        ));
    }
    if !filler_names.is_empty() {
        let net = NetConfig {
            faults: Some(faults.clone()),
            ..NetConfig::client()
        };
        let client = Client::connect_with_net(&cluster.addrs, client_config(), net).await?;
        let shrink_at = Instant::now() + cfg.duration.mul_f64(SHRINK_AT);
        tasks.spawn(filler::run(
            client,
            key.clone(),
            recorder.clone(),
            filler_names.clone(),
            shrink_at,
            deadline,
        ));
    }
    let delegation = match cfg.delegate_at {
        Some(at) => {
            let net = NetConfig {
                faults: Some(faults.clone()),
                ..NetConfig::client()
            };
            let client = Client::connect_with_net(&cluster.addrs, client_config(), net).await?;
            Some((at, client))
        }
        None => None,
    };
    let mover = match cfg.member_moves {
        true => {
            let net = NetConfig {
                faults: Some(faults.clone()),
                ..NetConfig::client()
            };
            Some(Client::connect_with_net(&cluster.addrs, client_config(), net).await?)
        }
        false => None,
    };
    let moving = async {
        match mover {
            Some(client) => {
                let rng = StdRng::seed_from_u64(seed ^ MOVER_SEED);
                let asked = moves::run(&cluster.anchors, client, admin_key(), rng, deadline);
                let (asked, seen) = tokio::join!(asked, moves::watch(&cluster.anchors, deadline));
                Some((asked, seen))
            }
            None => None,
        }
    };
    let delegate = async {
        match delegation {
            Some((at, client)) => {
                tokio::time::sleep(at).await;
                delegate_chaos(&cluster, client, deadline + Duration::from_secs(20)).await
            }
            None => Ok(()),
        }
    };
    // The faults end with the nemesis, even while a delegation is still being retried.
    let nemesis = async {
        let done = run_nemesis(&cluster, &faults, StdRng::seed_from_u64(seed), deadline).await;
        faults.heal();
        done
    };
    // With splits, note each one as it appears (did it start while the faults were on?),
    // and each merge.
    let split_watch = async {
        match cfg.split_names_max {
            Some(_) => splits::watch(&cluster.anchors, deadline).await,
            None => Default::default(),
        }
    };
    let (nemesis, delegated, timeline, moved) =
        tokio::join!(nemesis, delegate, split_watch, moving);
    delegated?;
    while tasks.join_next().await.is_some() {}
    faults.heal();
    let (moves, stuck) = match moved {
        Some((mut asked, seen)) => {
            let stuck = moves::settle(&cluster.anchors, seen, &mut asked, MOVES_SETTLE).await;
            (Some(asked), stuck)
        }
        None => (None, None),
    };
    let delegated_at_index = match cfg.delegate_at {
        Some(_) => Some(wait_delegated(&cluster, Duration::from_secs(60)).await?),
        None => None,
    };
    let final_client = Client::connect(&cluster.addrs, client_config()).await?;
    settle(&final_client, &key).await?;
    for n in (0..cfg.names).map(name).chain(filler_names) {
        record_read(&final_client, &recorder, FINAL_READER, &n).await;
    }
    // With merges, the number of splits due is not known (scopes merge and split again):
    // wait only for the splits and merges in flight.
    let levels = match cfg.merge_names_min {
        Some(_) => 0,
        None => SPLIT_LEVELS,
    };
    let (splits, merges) = match cfg.split_names_max {
        Some(_) => {
            let (s, m) =
                splits::count(&cluster.anchors, levels, timeline, Duration::from_secs(20)).await;
            (Some(s), cfg.merge_names_min.map(|_| m))
        }
        None => (None, None),
    };
    let injected = faults.injected();
    let reopened = cluster
        .anchors
        .iter()
        .map(|a| {
            a.metrics()
                .scope_hibernations
                .with_label_values(&["reopened"])
                .get()
        })
        .sum();
    cluster.shutdown().await;
    let history = recorder.history();
    let lost_acked = lost_acknowledged(&history).len();
    let outcome = history.check(Budget {
        max_states: 5_000_000,
        max_time: Some(Duration::from_secs(120)),
    });
    let moves_settled = moves.is_none_or(|m| !m.in_flight && m.left_over == 0);
    let passed = outcome.is_ok() && lost_acked == 0 && moves_settled;
    Ok(Report {
        seed,
        ops: history.len(),
        unknown: history.ops.iter().filter(|o| o.is_unknown()).count(),
        nemesis,
        injected,
        lost_acked,
        verdict: match moves_settled {
            true => outcome_text(&outcome),
            false => format!(
                "{}; a member change did not settle: {moves:?}; {}",
                outcome_text(&outcome),
                stuck.unwrap_or_default()
            ),
        },
        violation: outcome.is_violation(),
        checker_gave_up: matches!(outcome, Outcome::Unknown),
        passed,
        delegated_at_index,
        splits,
        merges,
        moves,
        reopened,
    })
}

fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Ok => "linearizable".into(),
        other => other.to_string(),
    }
}

/// The root scope's admin key in campaigns.
fn admin_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[0xad; 32])
}

/// Delegates `/chaos` to a child scope on the same anchors, through a client that suffers
/// the campaign's faults; retries (a fresh nonce each time) until the root answers that the
/// prefix is moving or delegated, or `deadline`.
async fn delegate_chaos(cluster: &Cluster, client: Client, deadline: Instant) -> Result<()> {
    let members = cluster.anchors.iter().map(member_spec).collect();
    let policy_toml = policy::Policy::development(None).to_toml();
    delegate_with(cluster, client, deadline, members, policy_toml).await
}

fn member_spec(a: &Anchor) -> proto::MemberSpec {
    proto::MemberSpec {
        anchor: a.info(),
        labels: a.status().labels,
    }
}

/// Before a campaign with member moves: delegates `/chaos` to the first three anchors,
/// with the campaign's admin key as the child's admin, and waits until it is active.
async fn delegate_for_moves(cluster: &Cluster) -> Result<()> {
    let client = Client::connect(&cluster.addrs, client_config()).await?;
    let members = cluster.anchors[..3].iter().map(member_spec).collect();
    let admin = policy::PublicKey::from_bytes(&admin_key().verifying_key().to_bytes())?;
    let policy_toml = policy::Policy::development(Some(admin)).to_toml();
    let deadline = Instant::now() + Duration::from_secs(30);
    delegate_with(cluster, client, deadline, members, policy_toml).await?;
    wait_delegated(cluster, Duration::from_secs(30)).await?;
    Ok(())
}

async fn delegate_with(
    cluster: &Cluster,
    client: Client,
    deadline: Instant,
    members: Vec<proto::MemberSpec>,
    policy_toml: String,
) -> Result<()> {
    let op = proto::Op::Delegate {
        prefix: proto::Name::parse("/chaos")?,
        members,
        policy_toml,
        referral_ttl_s: 600,
    };
    loop {
        // An attempt whose outcome the client could not learn may have committed: look
        // before signing a new one (which would then be refused, or routed to the child).
        if delegation_of_chaos(cluster).is_some() {
            return Ok(());
        }
        match client.mutate(op.clone(), &admin_key()).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => bail!("delegating /chaos: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The root scope's live delegation of `/chaos`, as any anchor has applied it.
fn delegation_of_chaos(cluster: &Cluster) -> Option<proto::Delegation> {
    let target = proto::msg::ScopeTarget::Id(proto::ScopeId::root());
    cluster.anchors.iter().find_map(|a| {
        a.scope_info(&target).ok().and_then(|info| {
            info.delegations.into_iter().find(|d| {
                d.state != proto::DelegationState::Aborted
                    && d.referral.prefix.to_string() == "/chaos"
            })
        })
    })
}

/// Waits until the root scope (as any anchor sees it) holds an active delegation of
/// `/chaos`; returns its index.
async fn wait_delegated(cluster: &Cluster, within: Duration) -> Result<u64> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(d) = delegation_of_chaos(cluster) {
            if d.state == proto::DelegationState::Active {
                return Ok(d.index);
            }
        }
        if Instant::now() > deadline {
            bail!("/chaos was not delegated within {} s", within.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn name(n: usize) -> String {
    format!("/chaos/k{n}")
}

/// The names of a campaign with splits: [`SPLIT_LEVELS`] labels above the last, so each
/// level holds every name and splits the next one off.
fn deep_name(n: usize) -> String {
    format!("/chaos/s/t/k{n}")
}

/// The scopes a campaign with splits can split off: `/chaos`, `/chaos/s`, `/chaos/s/t`.
const SPLIT_LEVELS: usize = 3;

/// The anchors' peak load window in a campaign with merges (the shortest allowed).
const MERGE_PEAK_WINDOW_S: u64 = 6;

/// Mixed into the seed for the mover's choices.
const MOVER_SEED: u64 = 0x6d6f_7665;

/// How long a campaign with member moves waits after healing for the last change to end
/// and the anchors that left to drop their replica (a replica added as a learner that was
/// never configured is dropped only after its 60 s grace).
const MOVES_SETTLE: Duration = Duration::from_secs(90);

/// The share of a campaign with merges after which the filler deletes its names.
const SHRINK_AT: f64 = 0.35;

/// Waits until the healed cluster commits a write again.
async fn settle(client: &Client, key: &ed25519_dalek::SigningKey) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client
            .put("/chaos/settled", vec![Record::Text("ok".into())], 60, key)
            .await
            .is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the cluster did not accept a write within 30 s of healing");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_nemesis(
    cluster: &Cluster,
    faults: &SeededFaults,
    mut rng: StdRng,
    deadline: Instant,
) -> BTreeMap<&'static str, u64> {
    let mut done: BTreeMap<&'static str, u64> = BTreeMap::new();
    while Instant::now() < deadline {
        let pause = Duration::from_millis(rng.gen_range(200..1200));
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        let kind = match rng.gen_range(0..6) {
            0 => {
                let i = rng.gen_range(0..cluster.peers.len());
                let others: Vec<PeerId> = cluster
                    .peers
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| *p)
                    .collect();
                faults.isolate(cluster.peers[i], &others);
                "isolate_random"
            }
            1 => match cluster.leader() {
                Some(i) => {
                    let others: Vec<PeerId> = cluster
                        .peers
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, p)| *p)
                        .collect();
                    faults.isolate(cluster.peers[i], &others);
                    "isolate_leader"
                }
                None => "isolate_leader_none",
            },
            2 => {
                faults.set_noise(Noise {
                    drop_request: rng.gen_range(0.02..0.2),
                    drop_response: rng.gen_range(0.02..0.2),
                    delay: 0.0,
                    delay_max: Duration::ZERO,
                });
                "drop_messages"
            }
            3 => {
                faults.set_noise(Noise {
                    drop_request: 0.0,
                    drop_response: 0.0,
                    delay: rng.gen_range(0.1..0.6),
                    delay_max: Duration::from_millis(rng.gen_range(5..120)),
                });
                "delay_reorder"
            }
            _ => {
                faults.heal();
                "heal"
            }
        };
        *done.entry(kind).or_insert(0) += 1;
    }
    done
}
