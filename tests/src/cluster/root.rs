//! The root scope as the running anchors see it: its status, the leader they agree on, and
//! waits for a leader, for agreement and for a replica to catch up.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use proto::msg::ScopeStatus;
use proto::ScopeId;

use super::Cluster;
use crate::wait::{wait_for, POLL};

impl Cluster {
    /// The root scope as anchor `i` sees it.
    pub async fn root_status(&self, i: usize) -> Result<ScopeStatus> {
        let s = self.status(i).await?;
        s.scopes
            .into_iter()
            .find(|sc| sc.id == ScopeId::root())
            .ok_or_else(|| anyhow!("anchor {i} hosts no root scope"))
    }

    /// The index of the root scope's leader, if the running anchors agree on one: an
    /// anchor that says it leads, at the highest term seen, that a majority of the running
    /// anchors also name as leader.
    pub async fn leader(&mut self) -> Result<Option<usize>> {
        let running = self.running();
        let mut seen = Vec::new();
        for &i in &running {
            if let Ok(s) = self.root_status(i).await {
                seen.push((i, s));
            }
        }
        Ok(self.agreed_leader(&seen, self.anchors.len()))
    }

    /// Waits for a root-scope leader (see [`Cluster::leader`]).
    pub async fn wait_leader(&mut self, within: Duration) -> Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.leader().await? {
                return Ok(l);
            }
            if Instant::now() >= deadline {
                let mut report = String::new();
                for i in self.running() {
                    report.push_str(&format!("\n  anchor {i}: {:?}", self.root_status(i).await));
                }
                bail!("no root-scope leader within {within:?}:{report}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until a leader exists and every running anchor names it.
    pub async fn wait_settled(&mut self, within: Duration) -> Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.leader().await? {
                let want = self.anchors[l].peer.map(|p| p.to_base58());
                let mut all = true;
                for i in self.running() {
                    match self.root_status(i).await {
                        Ok(s) if s.leader == want => {}
                        _ => all = false,
                    }
                }
                if all {
                    return Ok(l);
                }
            }
            if Instant::now() >= deadline {
                bail!("the running anchors did not agree on a leader within {within:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The leader's index, which anchor it is, by peer id (from anchor `i`'s status).
    pub async fn leader_seen_by(&self, i: usize) -> Result<Option<usize>> {
        let s = self.root_status(i).await?;
        Ok(s.leader.as_deref().and_then(|p| self.index_of(p)))
    }

    /// Root-scope `last_applied` of anchor `i` (0 when none).
    pub async fn last_applied(&self, i: usize) -> Result<u64> {
        Ok(self.root_status(i).await?.last_applied.unwrap_or(0))
    }

    /// Waits until anchor `i` has applied at least `index` in the root scope.
    pub async fn wait_applied(
        &self,
        i: usize,
        index: u64,
        within: Duration,
    ) -> Result<ScopeStatus> {
        wait_for(
            &format!("anchor {i} to apply index {index}"),
            within,
            || async move {
                let s = self.root_status(i).await?;
                Ok((s.last_applied.unwrap_or(0) >= index).then_some(s))
            },
        )
        .await
    }

    /// Waits until anchor `i` has applied everything the leader `leader` had applied when
    /// this was called (re-reading the leader each poll: the target is the leader's value
    /// at that moment, so it terminates while writes continue).
    pub async fn wait_caught_up(&self, i: usize, leader: usize, within: Duration) -> Result<u64> {
        let target = self.last_applied(leader).await?;
        self.wait_applied(i, target, within).await?;
        Ok(target)
    }
}
