//! One leg of a [`crate::Watch`]: the task that long-polls one scope's members for the
//! changes under the leg's prefix, follows the scope when the prefix moves, opens a leg on
//! each child scope the anchor lists under the prefix, and (for a child's leg) drains and
//! ends once its parent no longer lists it (see [`crate::watch`] for the protocol).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proto::msg::{WatchChild, WatchRequest, WatchResponse};
use proto::{KeyRange, Name, Referral, ScopeId, WireError};
use tokio::sync::{mpsc, watch};

use crate::addr::AnchorAddr;
use crate::error::Error;
use crate::net::{CallError, Protocol};
use crate::verify::check_referral;
use crate::watch::{check_changes, check_children, positions, wait_for, Item, Legs};
use crate::watch::{WatchEvent, WatchLink};

/// Pause after a full round of failed polls, doubled each round up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What one poll came to.
enum Polled {
    /// Events delivered; `after` moved on.
    Progress,
    /// This member failed; try the next.
    Failed(String),
    /// A final error: report it and stop the watch.
    Fatal(Error),
    /// The caller dropped the watch.
    Closed,
    /// An ending leg has delivered everything its scope still serves.
    Drained,
}

/// One leg's task state.
pub(crate) struct Leg {
    link: WatchLink,
    tx: mpsc::Sender<Item>,
    legs: Arc<Legs>,
    id: u64,
    scope: ScopeId,
    scope_prefix: Name,
    scope_range: KeyRange,
    /// The referral that named the current scope (none for the root), to re-learn its
    /// members if the client forgot them.
    referral: Option<Referral>,
    prefix: Name,
    after: u64,
    /// The child scopes this leg opened legs on, with the signal that ends each (`None`
    /// for a scope another leg follows).
    children: BTreeMap<ScopeId, Option<watch::Sender<bool>>>,
    /// The applied index of the last list of children taken.
    listed_at: u64,
    /// For a child's leg: set when its parent no longer lists it.
    end: Option<watch::Receiver<bool>>,
    ending: bool,
}

impl Leg {
    /// A leg `id` on `scope` (governing `scope_range` of `scope_prefix`) for the changes
    /// under `prefix` after `after`.
    pub(crate) fn new(
        link: WatchLink,
        tx: mpsc::Sender<Item>,
        legs: Arc<Legs>,
        id: u64,
        (scope, scope_prefix, scope_range): (ScopeId, Name, KeyRange),
        prefix: Name,
        after: u64,
    ) -> Leg {
        Leg {
            link,
            tx,
            legs,
            id,
            scope,
            scope_prefix,
            scope_range,
            referral: None,
            prefix,
            after,
            children: BTreeMap::new(),
            listed_at: 0,
            end: None,
            ending: false,
        }
    }

    /// Runs the leg in a task of its own, stopped with the watch.
    pub(crate) fn start(self) {
        let legs = self.legs.clone();
        let task = tokio::spawn(self.run());
        legs.keep(task.abort_handle());
    }

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
                if self.ending {
                    return self.finish().await;
                }
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
                        if self.ending {
                            // The merged child is gone everywhere: its parent reported its
                            // final records.
                            return self.finish().await;
                        }
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
                    self.legs.stop_all();
                    return;
                }
                Polled::Closed => return,
                Polled::Drained => return self.finish().await,
            }
        }
    }

    /// Ends this child's leg (and its own children's): the child merged back.
    async fn finish(mut self) {
        self.end_children(|_| true);
        if let Ok(mut book) = self.legs.book.lock() {
            book.close(&self.scope);
        }
        tracing::info!(scope = %self.scope, prefix = %self.prefix, position = self.after, "watch leg ends: the child scope merged back into its parent");
        let _ = self.emit(Some(Ok(WatchEvent::Merged(self.scope)))).await;
    }

    /// Signals the end to the legs of the children `which` selects, and forgets them.
    fn end_children(&mut self, mut which: impl FnMut(&ScopeId) -> bool) {
        self.children.retain(|scope, end| {
            if !which(scope) {
                return true;
            }
            if let Some(end) = end {
                let _ = end.send(true);
            }
            false
        });
    }

    /// Sends an item at the current scope and position; false once the watch is dropped.
    async fn emit(&self, event: Option<Result<WatchEvent, Error>>) -> bool {
        self.emit_at(self.after, event).await
    }

    async fn emit_at(&self, position: u64, event: Option<Result<WatchEvent, Error>>) -> bool {
        let item = Item {
            leg: self.id,
            scope: self.scope,
            position,
            event,
        };
        self.tx.send(item).await.is_ok()
    }

    async fn poll(&mut self, target: &AnchorAddr) -> Polled {
        let wait = if self.ending {
            Duration::ZERO
        } else {
            wait_for(self.link.request_timeout)
        };
        let request = WatchRequest {
            scope: self.scope,
            prefix: self.prefix.clone(),
            after: Some(self.after),
            wait_ms: wait.as_millis() as u32,
            children: Some(self.children.keys().copied().collect()),
        };
        let bytes = match proto::codec::encode(&request) {
            Ok(b) => b,
            Err(e) => return Polled::Fatal(Error::from_proto(e)),
        };
        let timeout = wait + self.link.request_timeout;
        let net = &self.link.net;
        let ending = self.ending;
        let end = self.end.as_mut().filter(|_| !ending);
        let told_to_end = async move {
            match end {
                Some(end) => end.wait_for(|e| *e).await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let reply = tokio::select! {
            r = net.call_encoded::<WatchResponse>(target, Protocol::Watch, bytes, timeout) => Some(r),
            _ = self.tx.closed() => return Polled::Closed,
            true = told_to_end => None,
        };
        let Some(reply) = reply else {
            // Ask again without waiting: drain what the child still serves.
            self.ending = true;
            return Polled::Progress;
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
                let drained = self.ending && events.is_empty();
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
                if drained {
                    return Polled::Drained;
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
            WatchResponse::Referral(referral) => self.moved(referral).await,
            WatchResponse::Children {
                scope,
                children,
                at,
            } => self.children_listed(scope, children, at).await,
            WatchResponse::Error(w) => match w {
                WireError::NotLeader { .. }
                | WireError::Unavailable { .. }
                | WireError::NoScope { .. }
                | WireError::Refused { .. } => Polled::Failed(w.to_string()),
                w => Polled::Fatal(w.into()),
            },
        }
    }

    /// The prefix moved to the child `referral` names: the leg follows it there.
    async fn moved(&mut self, referral: Referral) -> Polled {
        if let Err(reason) = check_referral(
            &referral,
            &self.scope_prefix,
            &self.scope_range,
            &self.prefix,
        ) {
            return Polled::Failed(format!("unusable watch referral: {reason}"));
        }
        self.link.known.take_referral(&referral);
        tracing::debug!(from = %self.scope, to = %referral.scope, prefix = %referral.prefix, "watch follows the prefix to its new scope");
        // No live delegation lies under a prefix when it is delegated itself: the children
        // followed from here merged back before.
        self.end_children(|_| true);
        if let Ok(mut book) = self.legs.book.lock() {
            book.moved(self.id, &self.scope, referral.scope);
        }
        self.scope = referral.scope;
        self.scope_prefix = referral.prefix.clone();
        self.scope_range = referral.range.clone();
        self.referral = Some(referral.clone());
        self.listed_at = 0;
        if !self.emit(Some(Ok(WatchEvent::Moved(referral)))).await {
            return Polled::Closed;
        }
        Polled::Progress
    }

    /// The scope listed the child scopes under the prefix: a leg on each new one, the end
    /// for each one no longer listed.
    async fn children_listed(
        &mut self,
        scope: ScopeId,
        children: Vec<WatchChild>,
        at: u64,
    ) -> Polled {
        if scope != self.scope {
            return Polled::Failed(format!("answered for scope {scope}"));
        }
        if at < self.listed_at {
            return Polled::Failed(format!(
                "a list of child scopes as of index {at}, older than the one taken at {}",
                self.listed_at
            ));
        }
        let checked = check_children(
            &self.scope,
            &self.scope_prefix,
            &self.scope_range,
            &self.prefix,
            &children,
        );
        if let Err(reason) = checked {
            return Polled::Failed(format!("unusable list of child scopes: {reason}"));
        }
        self.listed_at = at;
        self.end_children(|s| !children.iter().any(|c| c.referral.scope == *s));
        for child in children {
            let referral = &child.referral;
            if self.children.contains_key(&referral.scope) {
                continue;
            }
            let opened = match self.legs.book.lock() {
                Ok(mut book) => book.open(referral.scope),
                Err(_) => Ok(None),
            };
            let id = match opened {
                Ok(Some(id)) => id,
                Ok(None) => {
                    self.children.insert(referral.scope, None);
                    continue;
                }
                Err(reason) => return Polled::Fatal(Error::Invalid { reason }),
            };
            self.link.known.take_referral(referral);
            tracing::info!(parent = %self.scope, child = %referral.scope, prefix = %referral.prefix, range = %referral.range, from = child.index, "watch follows a child scope under its prefix");
            if !self
                .emit(Some(Ok(WatchEvent::Followed(referral.clone()))))
                .await
            {
                return Polled::Closed;
            }
            let (end_tx, end_rx) = watch::channel(false);
            self.children.insert(referral.scope, Some(end_tx));
            let mut leg = Leg::new(
                self.link.clone(),
                self.tx.clone(),
                self.legs.clone(),
                id,
                (
                    referral.scope,
                    referral.prefix.clone(),
                    referral.range.clone(),
                ),
                referral.prefix.clone(),
                child.index,
            );
            leg.referral = Some(child.referral);
            leg.end = Some(end_rx);
            leg.start();
        }
        Polled::Progress
    }
}
