//! Watches: every committed change under a prefix, in version order, pulled
//! by long polls on `/anchorage/watch/1`.
//!
//! A [`Watch`] owns a background task that sends `WatchRequest { scope, prefix, after,
//! wait_ms }` to one member of the watched scope at a time. The anchor answers at once when
//! changes in `(after, up_to]` exist, or after `wait_ms` with none; the task hands the changes
//! to [`Watch::next`] and asks again from `up_to`. So a watch never has a gap:
//!
//! - a member that fails (no answer, `Unavailable`, `NoScope`...) is skipped and the *same*
//!   `after` is asked of the next member; a full round of failures is reported as an
//!   [`Error`] item (the watch keeps trying, with backoff);
//! - [`Watch::position`] is the `after` a new watch ([`crate::Client::watch_from`]) must start
//!   from to see exactly the events not yet returned by `next`;
//! - history the scope no longer keeps comes back as [`WatchEvent::Compacted`]: re-read what
//!   you need, the watch goes on from `up_to`;
//! - when the prefix was delegated to a child scope, the parent first delivers its changes up
//!   to the move, then a referral: the watch emits [`WatchEvent::Moved`] and continues at the
//!   child's members with the same `after` (versions keep growing across a move).
//!
//! Every [`WatchEvent::Changed`] drops the client's cached answer for that name, so cached
//! reads are invalidated by the same committed change (before `next` returns it).
//! Watch answers are not signed: the task only asks members of the scope (authenticated
//! libp2p connections) and checks every batch (`check_changes`). The task stops when the
//! [`Watch`] is dropped, even in the middle of a long poll.
//!
//! The task does not hold the client: it holds a `WatchLink`, the network and what the
//! client knows (members, referrals, cached answers), which keeps the network running while
//! the watch lives.

use std::sync::Arc;
use std::time::Duration;

use proto::limits::WATCH_WAIT_MS_MAX;
use proto::msg::{ChangeEvent, WatchRequest, WatchResponse};
use proto::{Name, Referral, ScopeId, WireError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::addr::AnchorAddr;
use crate::error::Error;
use crate::known::Known;
use crate::net::{CallError, Protocol};
use crate::net_owner::NetOwner;
use crate::verify::check_referral;

/// Items buffered between the long-poll task and [`Watch::next`]; the task waits when the
/// caller falls behind.
const WATCH_BUFFER: usize = 256;
/// Pause after a full round of failed polls, doubled each round up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Shortest long-poll wait.
const WAIT_MIN: Duration = Duration::from_millis(500);

/// One thing a watch saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A committed change to a name under the prefix.
    Changed(ChangeEvent),
    /// The history after the watch's position is gone: changes up to `up_to` may have been
    /// missed. Re-read what matters; the watch continues after `up_to`.
    Compacted {
        /// Oldest index the scope can still resume from.
        oldest: u64,
        /// Where the watch continues from.
        up_to: u64,
    },
    /// The prefix moved to this child scope; the watch continues there.
    Moved(Referral),
}

/// What the task hands to [`Watch::next`]: an event (or error) and where the watch stands
/// once it is consumed; position-only items advance past empty polls.
#[derive(Debug)]
struct Item {
    scope: ScopeId,
    position: u64,
    event: Option<Result<WatchEvent, Error>>,
}

/// A running watch of one prefix. Dropping it stops its task.
#[derive(Debug)]
pub struct Watch {
    rx: mpsc::Receiver<Item>,
    scope: ScopeId,
    position: u64,
    task: JoinHandle<()>,
}

impl Watch {
    /// The next event, in version order; an `Err` reports a failure the watch is retrying
    /// past (or, for a final error such as `Invalid`, the last item). `None` once the watch
    /// has closed.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, Error>> {
        loop {
            let item = self.rx.recv().await?;
            self.scope = item.scope;
            self.position = item.position;
            if let Some(event) = item.event {
                return Some(event);
            }
        }
    }

    /// The scope currently watched (it changes after [`WatchEvent::Moved`]).
    pub fn scope(&self) -> ScopeId {
        self.scope
    }

    /// The `after` to resume from: every change up to it has been returned by
    /// [`Watch::next`] (or reported as compacted), none after it.
    pub fn position(&self) -> u64 {
        self.position
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
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

/// Starts the long-poll task at `scope` (governing `scope_prefix`) for changes under
/// `prefix` after `after`.
pub(crate) fn spawn(
    link: WatchLink,
    scope: ScopeId,
    scope_prefix: Name,
    prefix: Name,
    after: u64,
) -> Watch {
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    let poller = Poller {
        link,
        tx,
        scope,
        scope_prefix,
        referral: None,
        prefix,
        after,
    };
    Watch {
        rx,
        scope,
        position: after,
        task: tokio::spawn(poller.run()),
    }
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

/// What one poll came to.
enum Polled {
    /// Events delivered; `after` moved on.
    Progress,
    /// This member failed; try the next.
    Failed(String),
    /// A final error: report it and stop.
    Fatal(Error),
    /// The caller dropped the watch.
    Closed,
}

struct Poller {
    link: WatchLink,
    tx: mpsc::Sender<Item>,
    scope: ScopeId,
    scope_prefix: Name,
    /// The referral that named the current scope (none for the root), to re-learn its
    /// members if the client forgot them.
    referral: Option<Referral>,
    prefix: Name,
    after: u64,
}

impl Poller {
    async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        let mut failures = 0usize;
        loop {
            let known = &self.link.known;
            let mut plan = known.plan(&self.scope, false);
            if plan.is_empty() {
                if let Some(r) = &self.referral {
                    known.adopt(r);
                    plan = known.plan(&self.scope, false);
                }
            }
            let Some(target) = plan.first().cloned() else {
                let e = Error::unavailable(format!("no known member of scope {}", self.scope));
                let _ = self.emit(Some(Err(e))).await;
                return;
            };
            match self.poll(&target).await {
                Polled::Progress => {
                    failures = 0;
                    backoff = BACKOFF_MIN;
                }
                Polled::Failed(reason) => {
                    tracing::debug!(peer = %target.peer, scope = %self.scope, %reason, "watch poll failed; trying the next member");
                    self.link.known.failed(&self.scope, &target.peer);
                    failures += 1;
                    if failures >= plan.len() {
                        failures = 0;
                        let e = Error::unavailable(format!(
                            "every member of scope {} failed the watch of {}; last: anchor {}: {reason}; retrying",
                            self.scope, self.prefix, target.peer
                        ));
                        if !self.emit(Some(Err(e))).await {
                            return;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = self.tx.closed() => return,
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
                Polled::Fatal(e) => {
                    let _ = self.emit(Some(Err(e))).await;
                    return;
                }
                Polled::Closed => return,
            }
        }
    }

    /// Sends an item at the current scope and position; false once the watch is dropped.
    async fn emit(&self, event: Option<Result<WatchEvent, Error>>) -> bool {
        self.emit_at(self.after, event).await
    }

    async fn emit_at(&self, position: u64, event: Option<Result<WatchEvent, Error>>) -> bool {
        let item = Item {
            scope: self.scope,
            position,
            event,
        };
        self.tx.send(item).await.is_ok()
    }

    async fn poll(&mut self, target: &AnchorAddr) -> Polled {
        let wait = wait_for(self.link.request_timeout);
        let request = WatchRequest {
            scope: self.scope,
            prefix: self.prefix.clone(),
            after: Some(self.after),
            wait_ms: wait.as_millis() as u32,
        };
        let bytes = match proto::codec::encode(&request) {
            Ok(b) => b,
            Err(e) => return Polled::Fatal(Error::from_proto(e)),
        };
        let timeout = wait + self.link.request_timeout;
        let net = &self.link.net;
        let reply = tokio::select! {
            r = net.call_encoded::<WatchResponse>(target, Protocol::Watch, bytes, timeout) => r,
            _ = self.tx.closed() => return Polled::Closed,
        };
        let response = match reply {
            Ok(r) => r,
            Err(CallError::Decode { reason, .. }) => {
                return Polled::Failed(format!("undecodable watch answer: {reason}"))
            }
            Err(e) => return Polled::Failed(e.to_string()),
        };
        match response {
            WatchResponse::Changes {
                scope,
                events,
                up_to,
            } => {
                if scope != self.scope {
                    return Polled::Failed(format!("answered for scope {scope}"));
                }
                if let Err(reason) = check_changes(self.after, &self.prefix, &events, up_to) {
                    return Polled::Failed(reason);
                }
                let at = positions(self.after, &events);
                for (event, position) in events.into_iter().zip(at) {
                    self.link.known.cache().remove(&event.name);
                    if !self
                        .emit_at(position, Some(Ok(WatchEvent::Changed(event))))
                        .await
                    {
                        return Polled::Closed;
                    }
                }
                self.after = up_to;
                if !self.emit(None).await {
                    return Polled::Closed;
                }
                Polled::Progress
            }
            WatchResponse::Compacted {
                scope,
                oldest,
                up_to,
            } => {
                if scope != self.scope || up_to < self.after {
                    return Polled::Failed(format!(
                        "bad compaction notice (scope {scope}, up_to {up_to})"
                    ));
                }
                self.after = up_to;
                if !self
                    .emit(Some(Ok(WatchEvent::Compacted { oldest, up_to })))
                    .await
                {
                    return Polled::Closed;
                }
                Polled::Progress
            }
            WatchResponse::Referral(referral) => {
                let range = (self.link.known.directory().get(&self.scope))
                    .map(|s| s.range.clone())
                    .unwrap_or_default();
                if let Err(reason) =
                    check_referral(&referral, &self.scope_prefix, &range, &self.prefix)
                {
                    return Polled::Failed(format!("unusable watch referral: {reason}"));
                }
                self.link.known.take_referral(&referral);
                tracing::debug!(from = %self.scope, to = %referral.scope, prefix = %referral.prefix, "watch follows the prefix to its new scope");
                self.scope = referral.scope;
                self.scope_prefix = referral.prefix.clone();
                self.referral = Some(referral.clone());
                if !self.emit(Some(Ok(WatchEvent::Moved(referral)))).await {
                    return Polled::Closed;
                }
                Polled::Progress
            }
            WatchResponse::Error(w) => match w {
                WireError::NotLeader { .. }
                | WireError::Unavailable { .. }
                | WireError::NoScope { .. }
                | WireError::Refused { .. } => Polled::Failed(w.to_string()),
                w => Polled::Fatal(w.into()),
            },
        }
    }
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
