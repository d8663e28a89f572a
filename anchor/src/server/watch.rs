//! The watch protocol: a long poll for the changes under a prefix after a given index,
//! waiting (bounded) until there are some; a referral once the prefix was delegated,
//! "compacted" when the history asked for is gone, and the list of child scopes under the
//! prefix when the watcher follows others than those (`WatchRequest::children`).

use std::time::Duration;

use proto::limits::{WATCH_EVENT_BYTES_MAX, WATCH_LEGS_MAX};
use proto::msg::{WatchChild, WatchRequest, WatchResponse};
use proto::{AnchorInfo, WireError};
use resolver::net::Protocol;

use super::Server;
use crate::raft::sm::ScopeView;
use crate::raft::NodeId;
use crate::replica::Replica;
use crate::scope::decide;
use crate::scope::watch_children::{children_under, same_children};
use crate::AnchorError;

impl Server {
    pub(super) async fn handle_watch(&self, bytes: &[u8]) -> WatchResponse {
        let req: WatchRequest = match self.decode(Protocol::Watch, bytes) {
            Ok(r) => r,
            Err(e) => return WatchResponse::Error(e),
        };
        let resp = self.watch(req).await;
        let outcome = match &resp {
            WatchResponse::Changes { events, .. } if events.is_empty() => "empty",
            WatchResponse::Changes { .. } => "changes",
            WatchResponse::Compacted { .. } => "compacted",
            WatchResponse::Referral(_) => "referral",
            WatchResponse::Children { .. } => "children",
            WatchResponse::Error(e) => decide::refusal_label(e),
        };
        self.inner
            .metrics
            .watches
            .with_label_values(&[outcome])
            .inc();
        resp
    }

    /// Long poll: the changes under the prefix after `req.after`, waiting for some when there
    /// are none yet (see [`WatchRequest`]).
    async fn watch(&self, req: WatchRequest) -> WatchResponse {
        use proto::limits::{WATCH_EVENTS_MAX, WATCH_WAIT_MS_MAX};
        // A scope born from a range split governs part of its prefix's subtree, not the
        // prefix itself: a watch of that prefix there is one of its parent's legs.
        let probe = match self.inner.registry.get(&req.scope) {
            Some(r) if r.descriptor.prefix == req.prefix => r.descriptor.range.start.clone(),
            _ => None,
        };
        let replica = match self.serving(&req.scope, probe.as_ref().unwrap_or(&req.prefix)) {
            Ok(r) => r,
            Err(e) => return WatchResponse::Error(e),
        };
        let mut metrics = replica.metrics();
        let applied =
            |m: &openraft::RaftMetrics<NodeId, AnchorInfo>| m.last_applied.map_or(0, |l| l.index);
        let Some(mut after) = req.after else {
            let up_to = applied(&metrics.borrow());
            return WatchResponse::Changes {
                scope: replica.id,
                events: Vec::new(),
                up_to,
            };
        };
        let unavailable = |e: AnchorError| {
            WatchResponse::Error(WireError::Unavailable {
                reason: e.to_string(),
            })
        };
        let view = replica.state.view();
        if let Some(d) =
            decide::delegation_over(&view.delegations, &req.prefix).filter(|d| d.state.refers())
        {
            if after >= d.index {
                return WatchResponse::Referral(d.referral.clone());
            }
        }
        if let Some(answer) = self.children_news(&replica, &view, &req) {
            return answer;
        }
        if let Some(d) =
            decide::delegation_over(&view.delegations, &req.prefix).filter(|d| d.state.refers())
        {
            // History before the move still comes from here.
            return match replica.state.changes(
                &req.prefix,
                after,
                d.index,
                WATCH_EVENTS_MAX,
                WATCH_EVENT_BYTES_MAX,
            ) {
                Ok((events, up_to)) => WatchResponse::Changes {
                    scope: replica.id,
                    events,
                    up_to,
                },
                Err(e) => unavailable(e),
            };
        }
        if after < view.watch_floor {
            return WatchResponse::Compacted {
                scope: replica.id,
                oldest: view.watch_floor,
                up_to: applied(&metrics.borrow()),
            };
        }
        drop(view);
        let wait = Duration::from_millis(u64::from(req.wait_ms.min(WATCH_WAIT_MS_MAX)));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let up_to = applied(&metrics.borrow_and_update());
            if up_to > after {
                match replica.state.changes(
                    &req.prefix,
                    after,
                    up_to,
                    WATCH_EVENTS_MAX,
                    WATCH_EVENT_BYTES_MAX,
                ) {
                    Ok((events, covered)) if !events.is_empty() => {
                        return WatchResponse::Changes {
                            scope: replica.id,
                            events,
                            up_to: covered,
                        }
                    }
                    Ok((_, covered)) => after = covered,
                    Err(e) => return unavailable(e),
                }
                // A delegation under the prefix became Active (or merged back) meanwhile.
                let news = replica
                    .state
                    .with_view(|v| self.children_news(&replica, v, &req))
                    .flatten();
                if let Some(answer) = news {
                    return answer;
                }
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return WatchResponse::Changes {
                        scope: replica.id,
                        events: Vec::new(),
                        up_to: after,
                    }
                }
            }
        }
    }

    /// `Children` when the watcher asked for the list and follows other children than the
    /// live ones under its prefix; a refusal when there are more than a watch may follow.
    fn children_news(
        &self,
        replica: &Replica,
        view: &ScopeView,
        req: &WatchRequest,
    ) -> Option<WatchResponse> {
        let known = req.children.as_ref()?;
        let children = children_under(&view.delegations, &req.prefix);
        if same_children(&children, known) {
            return None;
        }
        if let Err(reason) = fits(&children) {
            tracing::warn!(scope = %replica.id, prefix = %req.prefix, %reason, "watch refused");
            return Some(WatchResponse::Error(WireError::Invalid { reason }));
        }
        tracing::debug!(scope = %replica.id, prefix = %req.prefix, children = children.len(), "watch told of the child scopes under its prefix");
        Some(WatchResponse::Children {
            scope: replica.id,
            children,
            at: view.applied.map_or(0, |l| l.index),
        })
    }
}

/// A list of children fits one answer: at most [`WATCH_LEGS_MAX`] of them, and their
/// encoding within the events' share of a frame.
fn fits(children: &[WatchChild]) -> Result<(), String> {
    if children.len() > WATCH_LEGS_MAX {
        return Err(format!(
            "the prefix spans {} child scopes, more than the {WATCH_LEGS_MAX} a watch may follow; watch narrower prefixes",
            children.len()
        ));
    }
    let bytes = proto::codec::encode(&children.to_vec()).map_or(usize::MAX, |b| b.len());
    if bytes > WATCH_EVENT_BYTES_MAX {
        return Err(format!(
            "the referrals to the {} child scopes under the prefix take {bytes} bytes, more than one watch answer carries",
            children.len()
        ));
    }
    Ok(())
}
