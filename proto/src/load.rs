//! Load reports: what a follower tells its scope's leader about the requests it served.
//!
//! Reads can be served by any member, so the leader's own counts miss part of a scope's
//! load. Each follower sends its per-second counts since its last report; the leader adds
//! them into its load accounting before it decides whether the scope is hot. The report is
//! plain counts (no names), so it is cheap to send on traffic that already flows.

use serde::{Deserialize, Serialize};

use crate::error::ProtoError;

/// Seconds one [`FollowerReport`] may cover: a follower that has not reported for longer
/// sends only its most recent seconds.
pub const REPORT_SECONDS_MAX: usize = 64;

/// A follower's request counts for consecutive whole seconds, oldest first.
///
/// `reads[i]` and `writes[i]` are the resolves answered and the mutations received in the
/// second `start_s + i` (seconds since the epoch, the follower's clock).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerReport {
    /// The second the first count belongs to.
    pub start_s: u64,
    /// Reads per second.
    pub reads: Vec<u32>,
    /// Writes per second.
    pub writes: Vec<u32>,
}

impl FollowerReport {
    /// Checks the shape: both lists have the same length, at most [`REPORT_SECONDS_MAX`].
    pub fn validate(&self) -> Result<(), ProtoError> {
        if self.reads.len() != self.writes.len() {
            return Err(ProtoError::Malformed {
                reason: format!(
                    "follower report has {} read counts but {} write counts; send one of each per second",
                    self.reads.len(),
                    self.writes.len()
                ),
            });
        }
        if self.reads.len() > REPORT_SECONDS_MAX {
            return Err(ProtoError::Malformed {
                reason: format!(
                    "follower report covers {} seconds; at most {REPORT_SECONDS_MAX} are allowed",
                    self.reads.len()
                ),
            });
        }
        Ok(())
    }

    /// The counts as `(second, reads, writes)`, oldest first.
    pub fn seconds(&self) -> impl Iterator<Item = (u64, u32, u32)> + '_ {
        self.reads
            .iter()
            .zip(&self.writes)
            .enumerate()
            .map(|(i, (r, w))| (self.start_s + i as u64, *r, *w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_is_checked() {
        let ok = FollowerReport {
            start_s: 10,
            reads: vec![1, 2],
            writes: vec![0, 3],
        };
        ok.validate().unwrap();
        assert_eq!(
            ok.seconds().collect::<Vec<_>>(),
            vec![(10, 1, 0), (11, 2, 3)]
        );
        let uneven = FollowerReport {
            writes: vec![0],
            ..ok.clone()
        };
        assert!(uneven.validate().is_err());
        let long = FollowerReport {
            start_s: 0,
            reads: vec![0; REPORT_SECONDS_MAX + 1],
            writes: vec![0; REPORT_SECONDS_MAX + 1],
        };
        assert!(long.validate().is_err());
    }

    #[test]
    fn codec_round_trip() {
        let r = FollowerReport {
            start_s: 7,
            reads: vec![5; 3],
            writes: vec![1; 3],
        };
        let bytes = crate::codec::encode(&r).unwrap();
        assert_eq!(
            crate::codec::decode::<FollowerReport>(&bytes, bytes.len()).unwrap(),
            r
        );
    }
}
