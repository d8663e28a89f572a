//! What a chaos campaign is asked to do ([`CampaignConfig`]) and what it reports
//! ([`Report`]).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Merges, Moves, Splits};

/// What one campaign does.
#[derive(Clone, Debug)]
pub struct CampaignConfig {
    /// How long clients run while the nemesis acts.
    pub duration: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// Names they share.
    pub names: usize,
    /// Delegate `/chaos` to a child scope this long after the clients start.
    pub delegate_at: Option<Duration>,
    /// Let scopes split by themselves at this many names (see the module docs); not
    /// together with `delegate_at`.
    pub split_names_max: Option<u32>,
    /// With `split_names_max`: let split-off scopes merge back under this many names, and
    /// delete names in the campaign's later part so they do (see the module docs).
    pub merge_names_min: Option<u32>,
    /// Move `/chaos`'s members between four anchors during the faults (see the module
    /// docs); not together with delegations or splits.
    pub member_moves: bool,
    /// Short quiescence and hibernation timers (sleep after 400 ms idle, stop the group
    /// 600 ms later), so groups sleep, hibernate and reopen under the faults.
    pub hibernate: bool,
}

impl Default for CampaignConfig {
    fn default() -> Self {
        CampaignConfig {
            duration: Duration::from_secs(8),
            clients: 4,
            names: 4,
            delegate_at: None,
            split_names_max: None,
            merge_names_min: None,
            member_moves: false,
            hibernate: false,
        }
    }
}

/// The outcome of one campaign.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Operations recorded (including the final reads).
    pub ops: usize,
    /// Operations whose outcome the client could not know.
    pub unknown: usize,
    /// Nemesis actions by kind.
    pub nemesis: BTreeMap<&'static str, u64>,
    /// Messages affected by the fault layer, by kind.
    pub injected: BTreeMap<&'static str, u64>,
    /// Acknowledged writes whose effect the final state does not contain.
    pub lost_acked: usize,
    /// The checker's verdict.
    pub verdict: String,
    /// The checker found a violation.
    pub violation: bool,
    /// The checker ran out of budget.
    pub checker_gave_up: bool,
    /// True when the history is linearizable and nothing acknowledged was lost.
    pub passed: bool,
    /// With `delegate_at`: the log index of the delegation, once it was active.
    pub delegated_at_index: Option<u64>,
    /// With `split_names_max`: the splits the scopes made.
    pub splits: Option<Splits>,
    /// With `merge_names_min`: the merges back.
    pub merges: Option<Merges>,
    /// With `member_moves`: the member changes.
    pub moves: Option<Moves>,
    /// Groups reopened after hibernating, summed over the anchors (with `hibernate`, the
    /// proof that hibernation happened under the faults).
    pub reopened: u64,
}
