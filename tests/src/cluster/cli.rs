//! The cluster through the `anchorage` CLI: `--anchor` arguments, running a command, `init`
//! (on every anchor or on a subset) and `status --json`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use proto::ScopeId;
use resolver::Multiaddr;

use super::Cluster;
use crate::binary::anchorage_bin;

/// How long one CLI command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

impl Cluster {
    /// Every anchor's `/ip4/127.0.0.1/tcp/<port>/p2p/<peer>`.
    pub fn addrs(&self) -> Result<Vec<Multiaddr>> {
        self.anchors.iter().map(|a| a.addr()).collect()
    }

    /// `/ip4/../tcp/../p2p/..` of the anchors `members`.
    pub fn addrs_of(&self, members: &[usize]) -> Result<Vec<Multiaddr>> {
        members.iter().map(|&i| self.anchors[i].addr()).collect()
    }

    /// `--anchor X` arguments for every anchor.
    pub fn anchor_args(&self) -> Result<Vec<String>> {
        let mut args = Vec::new();
        for a in self.addrs()? {
            args.push("--anchor".to_string());
            args.push(a.to_string());
        }
        Ok(args)
    }

    /// Runs `anchorage <args>` and returns its output (whatever the exit status).
    pub async fn cli(&self, args: &[String]) -> Result<std::process::Output> {
        let mut cmd = tokio::process::Command::new(anchorage_bin());
        cmd.args(args)
            .env_remove("ANCHORAGE_ANCHORS")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(CLI_TIMEOUT, cmd.output())
            .await
            .map_err(|_| anyhow!("`anchorage {}` took over {CLI_TIMEOUT:?}", args.join(" ")))??;
        Ok(out)
    }

    /// Runs `anchorage <args>` and fails unless it exits 0; returns stdout.
    pub async fn cli_ok(&self, args: &[String]) -> Result<String> {
        let out = self.cli(args).await?;
        if !out.status.success() {
            bail!(
                "`anchorage {}` failed ({}):\nstdout: {}\nstderr: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `anchorage init` on every anchor (optionally with a policy file), then waits until the
    /// root scope has a leader that every anchor knows.
    pub async fn init(&mut self, policy: Option<&Path>) -> Result<()> {
        let mut args = vec!["init".to_string()];
        args.extend(self.anchor_args()?);
        if let Some(p) = policy {
            args.push("--policy".into());
            args.push(p.display().to_string());
        }
        self.cli_ok(&args).await?;
        self.wait_settled(Duration::from_secs(20)).await?;
        Ok(())
    }

    /// `anchorage init` on the anchors `members` only (the root scope's members, which are
    /// then the trust anchors) with the root policy `policy_toml`; waits for a root leader.
    pub async fn init_on(&self, members: &[usize], policy_toml: &str) -> Result<usize> {
        policy::Policy::from_toml(policy_toml).context("the root policy is invalid")?;
        let path = self.write_file("root-policy.toml", policy_toml)?;
        let mut args = vec!["init".to_string()];
        for a in self.addrs_of(members)? {
            args.push("--anchor".into());
            args.push(a.to_string());
        }
        args.push("--policy".into());
        args.push(path.display().to_string());
        self.cli_ok(&args).await?;
        self.wait_scope_leader(ScopeId::root(), Duration::from_secs(20))
            .await
    }

    /// `anchorage status --json` over every anchor, parsed.
    pub async fn status_json_cli(&self) -> Result<serde_json::Value> {
        let mut args = vec!["status".to_string(), "--json".to_string()];
        args.extend(self.anchor_args()?);
        let out = self.cli_ok(&args).await?;
        serde_json::from_str(&out).with_context(|| format!("status output is not JSON: {out}"))
    }
}
