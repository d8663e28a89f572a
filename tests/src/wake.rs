//! Wake latency of sleeping scopes (`idle_scopes --wake-samples`): the first write and the
//! first linearizable read to scopes that sleep, each sent straight to the scope's leader,
//! against a second write to the same scope once awake.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use proto::msg::{Answer, MutateResponse, ScopeTarget};
use proto::{Mutation, Name, Op, ReadLevel, Record, ScopeId, SignedMutation};

use crate::cluster::Cluster;
use crate::keys::random_key;

/// Latencies of one kind, ms, sorted.
#[derive(Clone, Debug, Default)]
pub struct Latencies(pub Vec<f64>);

impl Latencies {
    /// The p-quantile (0..=1), ms.
    pub fn quantile(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let i = ((self.0.len() - 1) as f64 * p).round() as usize;
        self.0[i.min(self.0.len() - 1)]
    }

    fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1000.0);
    }

    fn sort(&mut self) {
        self.0.sort_by(|a, b| a.total_cmp(b));
    }

    /// "p50 / p99 / max ms (n)".
    pub fn summary(&self) -> String {
        format!(
            "{:.2} / {:.2} / {:.2} ms (n = {})",
            self.quantile(0.5),
            self.quantile(0.99),
            self.quantile(1.0),
            self.0.len()
        )
    }
}

/// What [`wake_latencies`] measured.
#[derive(Clone, Debug, Default)]
pub struct WakeFigures {
    /// First write to a sleeping scope.
    pub first_write: Latencies,
    /// The next write to the same scope, awake.
    pub awake_write: Latencies,
    /// First linearizable read of a sleeping scope.
    pub first_read: Latencies,
}

fn put(prefix: &Name, label: &str) -> Result<SignedMutation> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let m = Mutation {
        op: Op::Put {
            name: Name::parse(&format!("{prefix}/{label}"))?,
            records: vec![Record::Text(label.into())],
            ttl_s: 60,
        },
        nonce: rand::random(),
        expires_at_ms: now + 60_000,
    };
    Ok(SignedMutation::sign(&m, &random_key())?)
}

async fn timed_write(c: &Cluster, at: usize, prefix: &Name, label: &str) -> Result<Duration> {
    let m = put(prefix, label)?;
    let started = Instant::now();
    match c.mutate_at(at, m).await? {
        MutateResponse::Committed { .. } => Ok(started.elapsed()),
        other => bail!("put {prefix}/{label} at anchor {at}: {other:?}"),
    }
}

/// The anchor that says it leads scope `id` (asked one scope at a time: the status of an
/// anchor hosting thousands of scopes does not fit one admin frame).
async fn leader_of(c: &Cluster, id: ScopeId) -> Option<usize> {
    for i in 0..c.len() {
        if let Ok(info) = c.scope_info_at(i, ScopeTarget::Id(id)).await {
            if info.status.role == "leader" {
                return Some(i);
            }
        }
    }
    None
}

/// For each scope of `writes` (sleeping): a write at its leader, then a second one; for each
/// scope of `reads` (sleeping): a linearizable read at its leader. One at a time, so each
/// measures one wake alone.
pub async fn wake_latencies(
    c: &Cluster,
    writes: &[(ScopeId, Name)],
    reads: &[(ScopeId, Name)],
) -> Result<WakeFigures> {
    let mut f = WakeFigures::default();
    for (id, prefix) in writes {
        let at = leader_of(c, *id)
            .await
            .ok_or_else(|| anyhow!("{prefix} has no leader"))?;
        f.first_write
            .push(timed_write(c, at, prefix, "wake").await?);
        f.awake_write
            .push(timed_write(c, at, prefix, "again").await?);
    }
    for (id, prefix) in reads {
        let at = leader_of(c, *id)
            .await
            .ok_or_else(|| anyhow!("{prefix} has no leader"))?;
        let name = Name::parse(&format!("{prefix}/absent"))?;
        let started = Instant::now();
        match c
            .resolve_at(at, *id, &name, ReadLevel::Linearizable)
            .await?
        {
            Answer::NotFound { .. } | Answer::Found { .. } => f.first_read.push(started.elapsed()),
            other => bail!("linearizable read of {name}: {other:?}"),
        }
    }
    f.first_write.sort();
    f.awake_write.sort();
    f.first_read.sort();
    Ok(f)
}
