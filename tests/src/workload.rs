//! The client workload of the write/read tests: [`write_many`] writes names from
//! concurrent tasks and [`check_all`] reads every acknowledged write back; [`Acked`] keeps
//! the book of writes retried until acknowledged, one name at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ed25519_dalek::SigningKey;
use proto::{ReadLevel, Record};
use resolver::Client;

use crate::wait::POLL;

/// The single `text` record of a record set, if that is what it holds.
pub fn text_of(set: &proto::RecordSet) -> Option<&str> {
    match set.records.as_slice() {
        [proto::Record::Text(t)] => Some(t),
        _ => None,
    }
}

/// One acknowledged write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The name.
    pub name: String,
    /// Its single text record.
    pub value: String,
    /// The version the put returned.
    pub version: u64,
}

/// Writes `/<prefix>/n<i>` = `v<i>-<prefix>` for `i` in `0..n` from `tasks` concurrent tasks
/// through `client`; fails on the first error. Returns the writes sorted by version.
pub async fn write_many(
    client: &Client,
    key: &ed25519_dalek::SigningKey,
    prefix: &str,
    n: usize,
    tasks: usize,
) -> Result<Vec<Written>> {
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let client = client.clone();
        let key = key.clone();
        let prefix = prefix.to_string();
        set.spawn(async move {
            let mut out = Vec::new();
            for i in (t..n).step_by(tasks) {
                let name = format!("{prefix}/n{i}");
                let value = format!("v{i}{}", prefix.replace('/', "-"));
                let records = vec![proto::Record::Text(value.clone())];
                let version = client
                    .put(&name, records, 300, &key)
                    .await
                    .with_context(|| format!("put {name}"))?;
                out.push(Written {
                    name,
                    value,
                    version,
                });
            }
            Ok::<_, anyhow::Error>(out)
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    // Several names may share a version: the leader may batch mutations into one log entry.
    all.sort_by_key(|w| w.version);
    if let Some(w) = all.iter().find(|w| w.version == 0) {
        bail!("{} was acknowledged at version 0", w.name);
    }
    Ok(all)
}

/// Resolves every write at `level` through `client` (`tasks` at a time) and checks its value
/// and version. Fails listing the first few mismatches.
pub async fn check_all(
    client: &Client,
    writes: &[Written],
    level: proto::ReadLevel,
    tasks: usize,
) -> Result<()> {
    let writes = std::sync::Arc::new(writes.to_vec());
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let client = client.clone();
        let writes = writes.clone();
        set.spawn(async move {
            let mut bad = Vec::new();
            for w in writes.iter().skip(t).step_by(tasks) {
                match client.resolve(&w.name, level).await {
                    Ok(set)
                        if text_of(&set) == Some(w.value.as_str()) && set.version == w.version => {}
                    Ok(set) => bad.push(format!(
                        "{} at {level}: want {:?}@{}, got {:?}@{}",
                        w.name, w.value, w.version, set.records, set.version
                    )),
                    Err(e) => bad.push(format!("{} at {level}: {e}", w.name)),
                }
            }
            bad
        });
    }
    let mut bad = Vec::new();
    while let Some(r) = set.join_next().await {
        bad.extend(r?);
    }
    if !bad.is_empty() {
        bail!(
            "{} of {} reads wrong; first: {}",
            bad.len(),
            writes.len(),
            bad.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        );
    }
    Ok(())
}

/// Acknowledged writes (name → version and value) and every name a write was tried on.
#[derive(Debug, Default)]
pub struct Acked {
    /// The last acknowledged put of each name: its version and its text value.
    pub acked: BTreeMap<String, (u64, String)>,
    /// Every name a put was tried on (acknowledged or not).
    pub tried: BTreeSet<String>,
}

impl Acked {
    /// Puts `n` through `client` until a put of it is acknowledged (each attempt with a new
    /// value, `<n>#<attempt>`), for at most `within`; an attempt that failed may still have
    /// taken effect, before the acknowledged one. Returns the acknowledged version.
    pub async fn put(
        &mut self,
        client: &Client,
        key: &SigningKey,
        n: &str,
        within: Duration,
    ) -> Result<u64> {
        self.tried.insert(n.to_string());
        let deadline = Instant::now() + within;
        let mut attempt = 0u32;
        loop {
            let value = format!("{n}#{attempt}");
            match client
                .put(n, vec![Record::Text(value.clone())], 300, key)
                .await
            {
                Ok(version) => {
                    self.acked.insert(n.to_string(), (version, value));
                    return Ok(version);
                }
                Err(e) if Instant::now() >= deadline => bail!("put {n}: {e}"),
                Err(e) => eprintln!("put {n} (attempt {attempt}): {e}; again"),
            }
            attempt += 1;
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every acknowledged write reads back linearizably through `client`, with its version
    /// and value (linearizable reads never come from the client's answer cache; its
    /// referrals are used).
    pub async fn check_linearizable(&self, client: &Client) -> Result<()> {
        for (n, (version, value)) in &self.acked {
            let set = client
                .resolve(n, ReadLevel::Linearizable)
                .await
                .with_context(|| format!("resolving {n}"))?;
            ensure!(
                set.version == *version && text_of(&set) == Some(value.as_str()),
                "{n}: acknowledged {value:?} at version {version}, read {:?} at {}",
                set.records,
                set.version
            );
        }
        Ok(())
    }
}
