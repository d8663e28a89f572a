//! The watch protocol: a long poll for the changes under a prefix after a given index,
//! waiting (bounded) until there are some; a referral once the prefix was delegated, and
//! "compacted" when the history asked for is gone.

use std::time::Duration;

use proto::msg::{WatchRequest, WatchResponse};
use proto::{AnchorInfo, WireError};
use resolver::net::Protocol;

use super::Server;
use crate::raft::NodeId;
use crate::scope::decide;
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
        use proto::limits::{WATCH_EVENTS_MAX, WATCH_EVENT_BYTES_MAX, WATCH_WAIT_MS_MAX};
        let replica = match self.serving(&req.scope, &req.prefix) {
            Ok(r) => r,
            Err(e) => return WatchResponse::Error(e),
        };
        let mut metrics = replica.raft.metrics();
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
}
