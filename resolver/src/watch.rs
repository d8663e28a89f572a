//! Watches: every committed change under a prefix, in version order per scope, pulled
//! by long polls on `/anchorage/watch/1`, from every scope that governs part of the prefix.
//!
//! A [`Watch`] runs one background task per **leg**: a scope it follows. The **home** leg
//! follows the scope governing the prefix itself; each other leg follows a child scope that
//! governs part of the prefix (a subtree delegated or split off below it, a range split off
//! it). A leg sends `WatchRequest { scope, prefix, after, wait_ms, children }` to one member
//! of its scope at a time. The anchor answers at once when changes in `(after, up_to]`
//! exist, or after `wait_ms` with none; the leg hands the changes to [`Watch::next`] and asks
//! again from `up_to`. So a leg never has a gap:
//!
//! - a member that fails (no answer, `Unavailable`, `NoScope`...) is skipped and the *same*
//!   `after` is asked of the next member; a full round of failures is reported as an
//!   [`Error`] item (the leg keeps trying, with backoff);
//! - history the scope no longer keeps comes back as [`WatchEvent::Compacted`]: re-read what
//!   you need, the leg goes on from `up_to`;
//! - when the prefix itself was delegated to a child scope, the parent first delivers its
//!   changes up to the move, then a referral: the home leg emits [`WatchEvent::Moved`] and
//!   continues at the child's members with the same `after` (versions keep growing across
//!   a move).
//!
//! **Legs.** Each request lists the child scopes the leg already follows; when the scope's
//! live delegations under the prefix are other ones, the anchor answers with the list
//! instead (`WatchResponse::Children`, as of its applied index; an older list than one
//! already taken is refused). Each listed child is checked as a walk's referral would be
//! (`check_referral`, and its id must be the one its parent derives from its first name and
//! delegation index), and a new leg is opened on it from the delegation index D with
//! [`WatchEvent::Followed`]: the parent's history holds the changes to those names up to D,
//! the child's starts at D (its seeded records are not changes), so nothing is lost or
//! delivered twice across the hand-over. A watch follows at most
//! [`proto::limits::WATCH_LEGS_MAX`] scopes; one more ends it with [`Error::Invalid`].
//! A child that is no longer listed merged back into its parent, which reports the child's
//! final records as changes at its merge index: its leg drains what the child still serves
//! and ends with [`WatchEvent::Merged`] (changes the leg had not fetched before the child
//! was removed are covered by that report of the final records).
//!
//! Events of one scope come in that scope's version order; events of different scopes
//! interleave (their versions are indexes of different logs). [`Watch::last_scope`] says
//! which scope the last event came from, [`Watch::positions`] where each leg stands.
//!
//! Every [`WatchEvent::Changed`] drops the client's cached answer for that name, so cached
//! reads are invalidated by the same committed change (before `next` returns it).
//! Watch answers are not signed: the legs only ask members of their scopes (authenticated
//! libp2p connections) and check every batch (`check_changes`, `check_children`). The
//! tasks stop when the [`Watch`] is dropped, even in the middle of a long poll.
//!
//! The tasks do not hold the client: they hold a `WatchLink`, the network and what the
//! client knows (members, referrals, cached answers), which keeps the network running while
//! the watch lives.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::limits::{WATCH_LEGS_MAX, WATCH_WAIT_MS_MAX};
use proto::msg::{ChangeEvent, WatchChild};
use proto::{KeyRange, Name, Referral, ScopeId};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::error::Error;
use crate::known::Known;
use crate::net_owner::NetOwner;
use crate::verify::check_referral;
use crate::watch_book::{LegBook, Positions, HOME_LEG};
use crate::watch_leg::Leg;

/// Items buffered between the legs' tasks and [`Watch::next`]; the tasks wait when the
/// caller falls behind.
const WATCH_BUFFER: usize = 256;
/// Shortest long-poll wait.
const WAIT_MIN: Duration = Duration::from_millis(500);

/// One thing a watch saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A committed change to a name under the prefix.
    Changed(ChangeEvent),
    /// The history after the leg's position is gone: changes up to `up_to` may have been
    /// missed. Re-read what matters; the leg continues after `up_to`.
    Compacted {
        /// Oldest index the scope can still resume from.
        oldest: u64,
        /// Where the leg continues from.
        up_to: u64,
    },
    /// The prefix moved to this child scope; the home leg continues there.
    Moved(Referral),
    /// Part of the prefix is governed by this child scope (a subtree or a range under the
    /// prefix, delegated or split off); the watch follows it too, from its delegation on.
    /// (Appended last.)
    Followed(Referral),
    /// The watch no longer follows this child scope: it merged back into its parent, which
    /// reports the child's final records as changes at the merge. (Appended last.)
    Merged(ScopeId),
}

/// What a leg's task hands to [`Watch::next`]: an event (or error) and where the leg stands
/// once it is consumed; position-only items advance past empty polls.
#[derive(Debug)]
pub(crate) struct Item {
    pub leg: u64,
    pub scope: ScopeId,
    pub position: u64,
    pub event: Option<Result<WatchEvent, Error>>,
}

/// What the legs of one watch share: the book of scopes followed and the tasks to stop.
#[derive(Debug)]
pub(crate) struct Legs {
    pub book: Mutex<LegBook>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Legs {
    /// Keeps `task` to stop with the watch.
    pub(crate) fn keep(&self, task: AbortHandle) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
    }

    /// Stops every leg.
    pub(crate) fn stop_all(&self) {
        if let Ok(tasks) = self.tasks.lock() {
            for t in tasks.iter() {
                t.abort();
            }
        }
    }
}

/// A running watch of one prefix. Dropping it stops its tasks.
#[derive(Debug)]
pub struct Watch {
    rx: mpsc::Receiver<Item>,
    positions: Positions,
    last_scope: ScopeId,
    legs: Arc<Legs>,
}

impl Watch {
    /// The next event, in version order per scope; an `Err` reports a failure a leg is
    /// retrying past (or, for a final error such as `Invalid`, the last item). `None` once
    /// the watch has closed.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, Error>> {
        loop {
            let item = self.rx.recv().await?;
            self.positions.advance(item.leg, item.scope, item.position);
            if let Some(event) = item.event {
                self.last_scope = item.scope;
                if matches!(event, Ok(WatchEvent::Merged(_))) {
                    self.positions.end(item.leg);
                }
                return Some(event);
            }
        }
    }

    /// The scope the home leg watches: the one governing the prefix itself (it changes
    /// after [`WatchEvent::Moved`]).
    pub fn scope(&self) -> ScopeId {
        self.positions.home().0
    }

    /// The home leg's `after` to resume from: every change of [`Watch::scope`] up to it has
    /// been returned by [`Watch::next`] (or reported as compacted), none after it. A watch
    /// started again from it ([`crate::Client::watch_from`]) follows child scopes from their
    /// delegations again, so it may return changes of child scopes a second time.
    pub fn position(&self) -> u64 {
        self.positions.home().1
    }

    /// The scope of the last event [`Watch::next`] returned: where a
    /// [`WatchEvent::Changed`] was committed (its version is an index of that scope's log).
    pub fn last_scope(&self) -> ScopeId {
        self.last_scope
    }

    /// Every scope the watch follows and the position of its leg, the home leg first.
    pub fn positions(&self) -> Vec<(ScopeId, u64)> {
        self.positions.all()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.legs.stop_all();
    }
}

/// What a watch task needs of the client that started it: the network (kept running while
/// the watch lives), what the client knows of scopes and members (updated as the watch
/// follows a move, and whose cached answers each change drops), and the request timeout.
#[derive(Clone, Debug)]
pub(crate) struct WatchLink {
    pub net: Arc<NetOwner>,
    pub known: Arc<Known>,
    pub request_timeout: Duration,
}

/// Starts the home leg at `scope` (governing `scope_prefix`) for changes under `prefix`
/// after `after`.
pub(crate) fn spawn(
    link: WatchLink,
    scope: ScopeId,
    scope_prefix: Name,
    prefix: Name,
    after: u64,
) -> Watch {
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    let legs = Arc::new(Legs {
        book: Mutex::new(LegBook::new(scope)),
        tasks: Mutex::new(Vec::new()),
    });
    let scope_range = (link.known.directory().get(&scope))
        .map(|s| s.range.clone())
        .unwrap_or_default();
    let home = Leg::new(
        link,
        tx,
        legs.clone(),
        HOME_LEG,
        (scope, scope_prefix, scope_range),
        prefix,
        after,
    );
    home.start();
    Watch {
        rx,
        positions: Positions::new(scope, after),
        last_scope: scope,
        legs,
    }
}

/// Checks a list of the child scopes under `prefix` that the scope `scope` (governing
/// `scope_range` of `scope_prefix`) answered: at most [`WATCH_LEGS_MAX`], each one's first
/// name strictly under the prefix, each a referral a walk would accept from that scope, and
/// each child's id the one the scope derives from the child's first name and delegation
/// index.
pub(crate) fn check_children(
    scope: &ScopeId,
    scope_prefix: &Name,
    scope_range: &KeyRange,
    prefix: &Name,
    children: &[WatchChild],
) -> Result<(), String> {
    if children.len() > WATCH_LEGS_MAX {
        return Err(format!(
            "{} child scopes listed, more than {WATCH_LEGS_MAX}",
            children.len()
        ));
    }
    for c in children {
        let first = c.referral.first();
        if !first.is_under(prefix) || first == prefix {
            return Err(format!("child scope at {first} is not below {prefix}"));
        }
        check_referral(&c.referral, scope_prefix, scope_range, first)?;
        if ScopeId::child(scope, first, c.index) != c.referral.scope {
            return Err(format!(
                "child scope {} at {first} is not the one delegated at index {}",
                c.referral.scope, c.index
            ));
        }
    }
    Ok(())
}

/// How long the anchor may hold a poll: the request timeout less a second, at least
/// [`WAIT_MIN`], at most [`WATCH_WAIT_MS_MAX`].
pub(crate) fn wait_for(request_timeout: Duration) -> Duration {
    request_timeout
        .saturating_sub(Duration::from_secs(1))
        .max(WAIT_MIN)
        .min(Duration::from_millis(u64::from(WATCH_WAIT_MS_MAX)))
}

/// Checks one `Changes` batch asked with `after`: every event under `prefix`, in version
/// order, within `(after, up_to]`, and `up_to` not behind `after`.
pub(crate) fn check_changes(
    after: u64,
    prefix: &Name,
    events: &[ChangeEvent],
    up_to: u64,
) -> Result<(), String> {
    if up_to < after {
        return Err(format!("up_to {up_to} is behind after {after}"));
    }
    let mut last = after;
    for e in events {
        if !e.name.is_under(prefix) {
            return Err(format!("change to {} is not under {prefix}", e.name));
        }
        if e.version <= after || e.version > up_to || e.version < last {
            return Err(format!(
                "change at version {} is out of order or outside ({after}, {up_to}]",
                e.version
            ));
        }
        last = e.version;
    }
    Ok(())
}

/// The position after each event of a checked batch: its version, unless the next event
/// has the same version (one log entry may change several names), where resuming from the
/// version would skip the next one.
pub(crate) fn positions(after: u64, events: &[ChangeEvent]) -> Vec<u64> {
    let mut out = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let shared = events.get(i + 1).is_some_and(|n| n.version == e.version);
        let at = if shared { e.version - 1 } else { e.version };
        out.push(at.max(after));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn change(name: &str, version: u64) -> ChangeEvent {
        ChangeEvent {
            name: n(name),
            version,
            set: None,
        }
    }

    #[test]
    fn batches_are_checked_for_order_range_and_prefix() {
        let eu = n("/eu");
        let ok = [
            change("/eu/a", 11),
            change("/eu/b", 11),
            change("/eu/a", 14),
        ];
        assert!(check_changes(10, &eu, &ok, 15).is_ok());
        assert!(check_changes(10, &eu, &[], 10).is_ok());
        assert!(
            check_changes(10, &eu, &[], 9).is_err(),
            "up_to behind after"
        );
        assert!(check_changes(10, &eu, &[change("/us/a", 11)], 15).is_err());
        assert!(check_changes(10, &eu, &[change("/eu/a", 10)], 15).is_err());
        assert!(check_changes(10, &eu, &[change("/eu/a", 16)], 15).is_err());
        let unordered = [change("/eu/a", 13), change("/eu/b", 12)];
        assert!(check_changes(10, &eu, &unordered, 15).is_err());
    }

    #[test]
    fn position_never_skips_an_event_sharing_a_version() {
        let events = [
            change("/eu/a", 11),
            change("/eu/b", 11),
            change("/eu/c", 12),
            change("/eu/d", 14),
        ];
        assert_eq!(positions(10, &events), vec![10, 11, 12, 14]);
        assert!(positions(10, &[]).is_empty());
    }

    fn child(scope: &ScopeId, prefix: &str, start: Option<&str>, index: u64) -> WatchChild {
        let range = KeyRange {
            start: start.map(n),
            end: None,
        };
        let first = range.start.clone().unwrap_or_else(|| n(prefix));
        WatchChild {
            referral: Referral {
                scope: ScopeId::child(scope, &first, index),
                prefix: n(prefix),
                epoch: 1,
                members: Vec::new(),
                ttl_s: 60,
                range,
            },
            index,
        }
    }

    #[test]
    fn listed_children_are_checked_like_referrals_and_by_their_ids() {
        let root = ScopeId::root();
        let all = KeyRange::all();
        let users = child(&root, "/users", None, 7);
        let range = child(&users.referral.scope, "/users", Some("/users/m"), 9);
        let check = |scope: &ScopeId, prefix: &str, watched: &str, c: &[WatchChild]| {
            check_children(scope, &n(prefix), &all, &n(watched), c)
        };
        assert!(check(&root, "/", "/", std::slice::from_ref(&users)).is_ok());
        let at_users = &users.referral.scope;
        assert!(check(at_users, "/users", "/users", std::slice::from_ref(&range)).is_ok());
        let err = check(&root, "/", "/users", std::slice::from_ref(&users)).unwrap_err();
        assert!(err.contains("not below /users"), "{err}");
        assert!(
            check(&root, "/", "/eu", std::slice::from_ref(&users)).is_err(),
            "not under the watched prefix"
        );
        let mut wrong_index = users.clone();
        wrong_index.index = 8;
        let err = check(&root, "/", "/", &[wrong_index]).unwrap_err();
        assert!(err.contains("delegated at index 8"), "{err}");
        assert!(
            check(&root, "/", "/", std::slice::from_ref(&range)).is_err(),
            "a range of /users is not the root's child"
        );
        let too_many = vec![users; WATCH_LEGS_MAX + 1];
        assert!(check(&root, "/", "/", &too_many).is_err());
    }

    #[test]
    fn long_poll_wait_stays_under_the_request_timeout() {
        assert_eq!(wait_for(Duration::from_secs(5)), Duration::from_secs(4));
        assert_eq!(wait_for(Duration::from_millis(800)), WAIT_MIN);
        assert_eq!(
            wait_for(Duration::from_secs(600)),
            Duration::from_millis(u64::from(WATCH_WAIT_MS_MAX))
        );
    }
}
