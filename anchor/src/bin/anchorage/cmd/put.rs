//! The writes of a name's record set: `anchorage put`, `cas` and `delete`, each signed with
//! a key file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use proto::{Name, Record};

use crate::keys::load_key;
use crate::render;
use crate::target::Target;

/// The records of a put or cas.
#[derive(Args, Debug, Clone)]
pub struct RecordArgs {
    /// An `addr` record, IP:PORT (repeatable).
    #[arg(long)]
    addr: Vec<std::net::SocketAddr>,
    /// A `text` record (repeatable).
    #[arg(long)]
    text: Vec<String>,
    /// An `alias` record: another name.
    #[arg(long)]
    alias: Vec<String>,
    /// A `service` record: NAME:PORT[:PRIORITY[:WEIGHT]].
    #[arg(long)]
    service: Vec<String>,
    /// An `object` record: the peer id of the anchor hosting the object.
    #[arg(long)]
    object: Vec<String>,
    /// A `blob` record read from a file (at most 64 KiB).
    #[arg(long)]
    blob_file: Vec<PathBuf>,
    /// Time to live, seconds.
    #[arg(long, default_value_t = 300)]
    ttl: u32,
}

/// Runs `anchorage put`.
pub async fn put(target: &Target, name: &str, records: &RecordArgs, key: &Path) -> Result<()> {
    let client = target.client().await?;
    let key = load_key(key)?;
    let v = client
        .put(name, records.build()?, records.ttl, &key)
        .await?;
    print_version(target, name, v);
    Ok(())
}

/// Runs `anchorage cas`.
pub async fn cas(
    target: &Target,
    name: &str,
    expect: u64,
    records: &RecordArgs,
    key: &Path,
) -> Result<()> {
    let client = target.client().await?;
    let key = load_key(key)?;
    let v = client
        .cas(name, expect, records.build()?, records.ttl, &key)
        .await?;
    print_version(target, name, v);
    Ok(())
}

/// Runs `anchorage delete`.
pub async fn delete(target: &Target, name: &str, key: &Path) -> Result<()> {
    let client = target.client().await?;
    let v = client.delete(name, &load_key(key)?).await?;
    print_version(target, name, v);
    Ok(())
}

fn print_version(target: &Target, name: &str, version: u64) {
    if target.json {
        println!("{}", render::answer::version_json(name, version));
    } else {
        println!("{}", render::answer::version_line(name, version));
    }
}

impl RecordArgs {
    fn build(&self) -> Result<Vec<Record>> {
        let mut out: Vec<Record> = self.addr.iter().map(|a| Record::Addr(*a)).collect();
        out.extend(self.text.iter().map(|t| Record::Text(t.clone())));
        for a in &self.alias {
            out.push(Record::Alias(Name::parse(a)?));
        }
        for s in &self.service {
            out.push(parse_service(s)?);
        }
        out.extend(
            self.object
                .iter()
                .map(|p| Record::Object { peer: p.clone() }),
        );
        for f in &self.blob_file {
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            out.push(Record::Blob(bytes));
        }
        if out.is_empty() {
            bail!("give at least one record: --addr, --text, --alias, --service, --object or --blob-file");
        }
        proto::record::validate_records(&out, self.ttl)?;
        Ok(out)
    }
}

fn parse_service(s: &str) -> Result<Record> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |i: usize, what: &str, default: u16| -> Result<u16> {
        parts.get(i).map_or(Ok(default), |p| {
            p.parse()
                .with_context(|| format!("service {s:?}: bad {what}"))
        })
    };
    if parts.len() < 2 || parts.len() > 4 {
        bail!("service {s:?} must be NAME:PORT[:PRIORITY[:WEIGHT]]");
    }
    Ok(Record::Service {
        target: Name::parse(parts[0])?,
        port: num(1, "port", 0)?,
        priority: num(2, "priority", 10)?,
        weight: num(3, "weight", 10)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_take_defaults_and_refuse_bad_numbers() {
        let r = parse_service("/eu/db1:5432").unwrap();
        assert!(matches!(
            r,
            Record::Service {
                port: 5432,
                priority: 10,
                weight: 10,
                ..
            }
        ));
        let r = parse_service("/eu/db1:5432:1:2").unwrap();
        assert!(matches!(
            r,
            Record::Service {
                priority: 1,
                weight: 2,
                ..
            }
        ));
        assert!(parse_service("/eu/db1").is_err());
        let e = parse_service("/eu/db1:x").unwrap_err();
        assert!(format!("{e:#}").contains("bad port"), "{e:#}");
    }
}
