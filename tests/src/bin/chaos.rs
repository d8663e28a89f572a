//! `scripts/chaos`: runs many seeded chaos campaigns and prints a summary; any failure
//! prints its seed and the command that replays it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anchorage_tests::chaos::{campaign, CampaignConfig, Merges, Moves, Report, Splits};
use clap::Parser;

/// Seeded chaos campaigns against three in-process anchors.
#[derive(Parser, Debug)]
struct Args {
    /// How many seeds to run (ignored with --seed).
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// First seed of the run (default: from the clock, printed).
    #[arg(long)]
    first_seed: Option<u64>,
    /// Run exactly this seed (replay).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop starting new seeds after this many minutes.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Seconds of faults and load per campaign (default 8; 30 with --merge-names-min).
    #[arg(long)]
    duration_s: Option<u64>,
    /// Concurrent clients per campaign.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Delegate the clients' prefix to a child scope this many seconds into each campaign.
    #[arg(long, conflicts_with = "split_names_max")]
    delegate_at_s: Option<f64>,
    /// Let scopes split by themselves at this many names (`[split] auto = true`): the
    /// clients' names nest three levels under `/chaos`, which split off one after another
    /// during the faults.
    #[arg(long)]
    split_names_max: Option<u32>,
    /// Let split-off scopes merge back under this many names (`[merge] auto = true`, at
    /// most half of --split-names-max): a filler client writes names beside the checked
    /// ones, then deletes them from 35% of the campaign on, so the scopes split and then
    /// merge back while the faults are on.
    #[arg(long, requires = "split_names_max")]
    merge_names_min: Option<u32>,
    /// Start a fourth anchor, delegate `/chaos` to three of the four, and keep moving one
    /// of its members (often the leader) to the anchor left out during the faults.
    #[arg(long, conflicts_with_all = ["split_names_max", "delegate_at_s"])]
    member_moves: bool,
    /// Short quiescence and hibernation timers: a group idle for 400 ms sleeps and one
    /// asleep for 600 ms more is stopped, so scopes the clients leave alone for a moment
    /// sleep, hibernate and are reopened while the faults are on.
    #[arg(long)]
    hibernate: bool,
}

impl Args {
    /// The campaign length: `--duration-s`, else 8 s, or 30 s with merges (a new scope's
    /// peak load is known only after a 6 s window, so merges come late).
    fn duration_s(&self) -> u64 {
        let default = match self.merge_names_min {
            Some(_) => 30,
            None => 8,
        };
        self.duration_s.unwrap_or(default)
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // Logs only when asked (RUST_LOG=anchor=info, for example): they go to stderr.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cfg = CampaignConfig {
        duration: Duration::from_secs(args.duration_s()),
        clients: args.clients,
        delegate_at: args.delegate_at_s.map(Duration::from_secs_f64),
        split_names_max: args.split_names_max,
        merge_names_min: args.merge_names_min,
        member_moves: args.member_moves,
        hibernate: args.hibernate,
        ..CampaignConfig::default()
    };
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => {
            let first = args.first_seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(1)
            });
            println!("seeds {first}..{}", first + args.seeds);
            (first..first + args.seeds).collect()
        }
    };
    let budget = Duration::from_secs_f64(args.minutes * 60.0);
    let started = Instant::now();
    let mut reports: Vec<Report> = Vec::new();
    let mut errors = Vec::new();
    for seed in seeds {
        if started.elapsed() > budget {
            println!("time budget reached");
            break;
        }
        match rt.block_on(campaign(seed, &cfg)) {
            Ok(r) => {
                let splits = r
                    .splits
                    .map(|s| {
                        format!(
                            ", splits {} active ({} during faults)/{} aborted/{} frozen",
                            s.active, s.during_faults, s.aborted, s.frozen
                        )
                    })
                    .unwrap_or_default();
                let merges = r
                    .merges
                    .map(|m| {
                        format!(
                            ", merges {} ({} begun during faults, {} done during faults)/{} \
                             aborted/{} merging",
                            m.merged,
                            m.begun_during_faults,
                            m.merged_during_faults,
                            m.aborted,
                            m.merging
                        )
                    })
                    .unwrap_or_default();
                let moves = r
                    .moves
                    .map(|m| {
                        format!(
                            ", moves {} asked ({} of the leader)/{} acknowledged/{} done \
                             ({} during faults)",
                            m.asked, m.of_leader, m.acknowledged, m.done, m.done_during_faults
                        )
                    })
                    .unwrap_or_default();
                let reopened = if args.hibernate {
                    format!(", {} groups reopened from hibernation", r.reopened)
                } else {
                    String::new()
                };
                println!(
                    "seed {seed}: {} ops ({} unknown), lost {}{splits}{merges}{moves}{reopened}, {}",
                    r.ops,
                    r.unknown,
                    r.lost_acked,
                    if r.passed { "ok" } else { r.verdict.as_str() }
                );
                reports.push(r);
            }
            Err(e) => {
                println!("seed {seed}: harness error: {e:#}");
                errors.push((seed, format!("{e:#}")));
            }
        }
    }
    summary(&reports, &errors, &args, started.elapsed())
}

fn summary(
    reports: &[Report],
    errors: &[(u64, String)],
    args: &Args,
    took: Duration,
) -> std::process::ExitCode {
    let mut nemesis: BTreeMap<&str, u64> = BTreeMap::new();
    let mut injected: BTreeMap<&str, u64> = BTreeMap::new();
    for r in reports {
        for (k, v) in &r.nemesis {
            *nemesis.entry(k).or_insert(0) += v;
        }
        for (k, v) in &r.injected {
            *injected.entry(k).or_insert(0) += v;
        }
    }
    let failed: Vec<&Report> = reports.iter().filter(|r| !r.passed).collect();
    println!("\n== chaos summary ({:.1} min)", took.as_secs_f64() / 60.0);
    println!(
        "seeds run:                  {}",
        reports.len() + errors.len()
    );
    println!(
        "operations:                 {}",
        reports.iter().map(|r| r.ops).sum::<usize>()
    );
    println!(
        "unknown outcomes:           {}",
        reports.iter().map(|r| r.unknown).sum::<usize>()
    );
    println!("nemesis actions:            {nemesis:?}");
    println!("messages faulted:           {injected:?}");
    println!(
        "acknowledged writes lost:   {}",
        reports.iter().map(|r| r.lost_acked).sum::<usize>()
    );
    println!(
        "linearizability violations: {}",
        reports.iter().filter(|r| r.violation).count()
    );
    println!(
        "checker gave up (budget):   {}",
        reports.iter().filter(|r| r.checker_gave_up).count()
    );
    if args.hibernate {
        println!(
            "groups reopened:            {} (from hibernation, all seeds)",
            reports.iter().map(|r| r.reopened).sum::<u64>()
        );
    }
    if args.split_names_max.is_some() {
        let splits: Vec<_> = reports.iter().filter_map(|r| r.splits).collect();
        let sum = |f: fn(&Splits) -> u64| splits.iter().map(f).sum::<u64>();
        println!(
            "splits:                     {} handed over ({} begun during the faults; {} seeds \
             with none), {} aborted, {} still frozen; {} split entries committed, {} proposals \
             refused or unknown",
            sum(|s| s.active as u64),
            sum(|s| s.during_faults as u64),
            splits.iter().filter(|s| s.active == 0).count(),
            sum(|s| s.aborted as u64),
            sum(|s| s.frozen as u64),
            sum(|s| s.committed),
            sum(|s| s.not_committed)
        );
    }
    if args.merge_names_min.is_some() {
        let merges: Vec<Merges> = reports.iter().filter_map(|r| r.merges).collect();
        println!("merges:                     {}", merges_line(&merges));
    }
    if args.member_moves {
        let moves: Vec<Moves> = reports.iter().filter_map(|r| r.moves).collect();
        let total = |f: fn(&Moves) -> u64| -> u64 { moves.iter().map(f).sum() };
        println!(
            "member moves:               {} asked ({} of the leader), {} acknowledged, {} not; \
             {} member sets reached ({} during the faults; {} seeds with none); {} seeds left \
             a change in flight, {} a replica on an anchor that left",
            total(|m| m.asked),
            total(|m| m.of_leader),
            total(|m| m.acknowledged),
            total(|m| m.not_acknowledged),
            total(|m| m.done as u64),
            total(|m| m.done_during_faults as u64),
            moves.iter().filter(|m| m.done == 0).count(),
            moves.iter().filter(|m| m.in_flight).count(),
            moves.iter().filter(|m| m.left_over > 0).count()
        );
    }
    println!("harness errors:             {}", errors.len());
    let merge = args
        .merge_names_min
        .map(|m| format!(" --merge-names-min {m}"))
        .unwrap_or_default();
    let delegate = args
        .delegate_at_s
        .map(|s| format!(" --delegate-at-s {s}"))
        .or(args
            .split_names_max
            .map(|n| format!(" --split-names-max {n}{merge}")))
        .or(args.member_moves.then(|| " --member-moves".to_string()))
        .unwrap_or_default();
    let delegate = if args.hibernate {
        format!("{delegate} --hibernate")
    } else {
        delegate
    };
    for r in &failed {
        println!(
            "FAILED seed {}: lost {} — {}",
            r.seed, r.lost_acked, r.verdict
        );
        println!(
            "  replay: scripts/chaos --seed {} --duration-s {} --clients {}{delegate}",
            r.seed,
            args.duration_s(),
            args.clients
        );
    }
    for (seed, e) in errors {
        println!("ERROR seed {seed}: {e}");
        println!(
            "  replay: scripts/chaos --seed {seed} --duration-s {} --clients {}{delegate}",
            args.duration_s(),
            args.clients
        );
    }
    if failed.is_empty() && errors.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// The summary's merge figures, summed over the seeds.
fn merges_line(merges: &[Merges]) -> String {
    let total = |f: fn(&Merges) -> u64| -> u64 { merges.iter().map(f).sum() };
    let without = merges.iter().filter(|m| m.merged == 0).count();
    format!(
        "{} merged back ({} begun during the faults, {} done during them; {without} seeds \
         with none), {} aborted, {} still merging; metrics: {} proposed, {} merged, {} \
         aborted or too big, {} refused or unknown",
        total(|m| m.merged as u64),
        total(|m| m.begun_during_faults as u64),
        total(|m| m.merged_during_faults as u64),
        total(|m| m.aborted as u64),
        total(|m| m.merging as u64),
        total(|m| m.proposed),
        total(|m| m.committed),
        total(|m| m.aborted_steps),
        total(|m| m.refused_or_error)
    )
}
