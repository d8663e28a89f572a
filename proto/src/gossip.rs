//! Load summaries: what each anchor tells the others about itself on the gossipsub topic
//! [`LOAD_TOPIC`], for placement decisions.
//!
//! A summary is small and lossy: anchor totals (CPU, memory, disk, scopes hosted, scopes
//! led, request rates), the [`HOT_SCOPES_MAX`] hottest scopes at most, its labels and its
//! addresses. Every field is bounded ([`crate::limits::LOAD_SUMMARY_BYTES_MAX`] in all).
//! The gossipsub message carrying it is signed with the anchor's identity; a receiver takes
//! it only when the signer (the message's source) is the anchor the summary names
//! ([`decode_summary`]). Summaries are never stored and expire at the receiver.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::ProtoError;
use crate::limits::{
    ADDR_BYTES_MAX, ANCHOR_ADDRS_MAX, HOT_SCOPES_MAX, LABELS_MAX, LABEL_TEXT_BYTES_MAX,
    LOAD_SUMMARY_BYTES_MAX, PEER_ID_BYTES_MAX, SUMMARY_INTERVAL_MS_MAX,
};
use crate::name::Name;
use crate::scope::ScopeId;

/// The gossipsub topic of load summaries.
pub const LOAD_TOPIC: &str = "anchorage/load";

/// One anchor's load, as it publishes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadSummary {
    /// The anchor's peer id (base58); must be the message's signer.
    pub anchor: String,
    /// Increases with every summary the anchor sends (it starts at the anchor's start-up
    /// time in ms, so it also increases across restarts); a receiver ignores a summary
    /// older than the one it holds.
    pub seq: u64,
    /// The anchor's clock when it built the summary, ms since the epoch (shown, not trusted:
    /// receivers age summaries by their own clock).
    pub sent_at_ms: u64,
    /// How often the anchor publishes, ms; receivers expire the summary after a few of these.
    pub interval_ms: u32,
    /// CPU time the anchor process used per second of the last interval, in thousandths of
    /// a core (1000 = one core busy).
    pub cpu_millicores: u32,
    /// Cores of the machine.
    pub cores: u16,
    /// Resident memory of the anchor process, bytes.
    pub mem_bytes: u64,
    /// Free bytes on the data directory's file system.
    pub disk_free_bytes: u64,
    /// Size of that file system, bytes.
    pub disk_total_bytes: u64,
    /// Scope replicas hosted.
    pub scopes: u32,
    /// Of those, the ones this anchor leads.
    pub leaderships: u32,
    /// Reads per second served, all scopes, last settled second.
    pub reads_per_s: u64,
    /// Writes per second received, all scopes, last settled second.
    pub writes_per_s: u64,
    /// The hottest scopes (reads + writes), hottest first, at most [`HOT_SCOPES_MAX`].
    pub hot: Vec<HotScope>,
    /// The anchor's placement labels.
    pub labels: BTreeMap<String, String>,
    /// Where to dial it (multiaddrs without `/p2p`).
    pub addrs: Vec<String>,
}

/// One hot scope in a [`LoadSummary`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotScope {
    /// Scope id.
    pub id: ScopeId,
    /// Scope prefix.
    pub prefix: Name,
    /// True when the publishing anchor leads it.
    pub leader: bool,
    /// Reads per second this anchor served for it.
    pub reads_per_s: u64,
    /// Writes per second this anchor received for it.
    pub writes_per_s: u64,
}

/// Why a received summary was dropped. [`SummaryRefusal::label`] is the metric label.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SummaryRefusal {
    /// Longer than [`LOAD_SUMMARY_BYTES_MAX`]; not decoded.
    #[error("summary of {len} bytes exceeds {max} bytes")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Does not decode.
    #[error("malformed summary: {reason}")]
    Malformed {
        /// What the decoder said.
        reason: String,
    },
    /// The message carries no signer.
    #[error("summary without a signed source")]
    Unsigned,
    /// Signed by another peer than the anchor it describes.
    #[error("summary about {anchor} signed by {signer}")]
    WrongSource {
        /// The anchor the summary names.
        anchor: String,
        /// The signer.
        signer: String,
    },
    /// A field over its bound.
    #[error("summary field out of bounds: {what}")]
    OutOfBounds {
        /// Which field and the numbers.
        what: String,
    },
    /// On a topic other than [`LOAD_TOPIC`].
    #[error("message on unexpected topic {topic}")]
    WrongTopic {
        /// The topic.
        topic: String,
    },
}

impl SummaryRefusal {
    /// Every label, in [`SummaryRefusal::index`] order.
    pub const LABELS: [&'static str; 6] = [
        "too_large",
        "malformed",
        "unsigned",
        "wrong_source",
        "out_of_bounds",
        "wrong_topic",
    ];

    /// Position of this refusal's label in [`SummaryRefusal::LABELS`].
    pub fn index(&self) -> usize {
        match self {
            SummaryRefusal::TooLarge { .. } => 0,
            SummaryRefusal::Malformed { .. } => 1,
            SummaryRefusal::Unsigned => 2,
            SummaryRefusal::WrongSource { .. } => 3,
            SummaryRefusal::OutOfBounds { .. } => 4,
            SummaryRefusal::WrongTopic { .. } => 5,
        }
    }

    /// Metric label.
    pub fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }
}

impl LoadSummary {
    /// Checks every bound, and that `source` (the signer, base58) is the anchor named.
    pub fn check(&self, source: &str) -> Result<(), SummaryRefusal> {
        let oob = |what: String| Err(SummaryRefusal::OutOfBounds { what });
        if self.anchor != source {
            return Err(SummaryRefusal::WrongSource {
                anchor: truncated(&self.anchor),
                signer: source.to_string(),
            });
        }
        if self.anchor.len() > PEER_ID_BYTES_MAX {
            return oob(format!("anchor id of {} bytes", self.anchor.len()));
        }
        if self.interval_ms == 0 || u64::from(self.interval_ms) > SUMMARY_INTERVAL_MS_MAX {
            return oob(format!(
                "interval {} ms (1..={SUMMARY_INTERVAL_MS_MAX})",
                self.interval_ms
            ));
        }
        if self.leaderships > self.scopes {
            return oob(format!(
                "{} leaderships of {} scopes",
                self.leaderships, self.scopes
            ));
        }
        if self.disk_free_bytes > self.disk_total_bytes {
            return oob("disk free exceeds disk total".into());
        }
        if self.hot.len() > HOT_SCOPES_MAX {
            return oob(format!(
                "{} hot scopes (at most {HOT_SCOPES_MAX})",
                self.hot.len()
            ));
        }
        if self.labels.len() > LABELS_MAX {
            return oob(format!(
                "{} labels (at most {LABELS_MAX})",
                self.labels.len()
            ));
        }
        if let Some((k, _)) = self
            .labels
            .iter()
            .find(|(k, v)| k.len() > LABEL_TEXT_BYTES_MAX || v.len() > LABEL_TEXT_BYTES_MAX)
        {
            return oob(format!("label {:?} too long", truncated(k)));
        }
        if self.addrs.len() > ANCHOR_ADDRS_MAX {
            return oob(format!(
                "{} addresses (at most {ANCHOR_ADDRS_MAX})",
                self.addrs.len()
            ));
        }
        if self.addrs.iter().any(|a| a.len() > ADDR_BYTES_MAX) {
            return oob(format!("an address over {ADDR_BYTES_MAX} bytes"));
        }
        Ok(())
    }

    /// Encodes the summary for publishing; fails when it is over its bound (a bug in the
    /// builder, which keeps every field within bounds).
    pub fn encode(&self) -> Result<Vec<u8>, ProtoError> {
        let bytes = codec::encode(self)?;
        if bytes.len() > LOAD_SUMMARY_BYTES_MAX {
            return Err(ProtoError::FrameTooLarge {
                len: bytes.len(),
                max: LOAD_SUMMARY_BYTES_MAX,
            });
        }
        Ok(bytes)
    }
}

/// Decodes and checks a received summary. `source` is the gossipsub message's signer
/// (base58), `None` for an unsigned message.
pub fn decode_summary(bytes: &[u8], source: Option<&str>) -> Result<LoadSummary, SummaryRefusal> {
    if bytes.len() > LOAD_SUMMARY_BYTES_MAX {
        return Err(SummaryRefusal::TooLarge {
            len: bytes.len(),
            max: LOAD_SUMMARY_BYTES_MAX,
        });
    }
    let source = source.ok_or(SummaryRefusal::Unsigned)?;
    let summary: LoadSummary =
        codec::decode(bytes, LOAD_SUMMARY_BYTES_MAX).map_err(|e| SummaryRefusal::Malformed {
            reason: e.to_string(),
        })?;
    summary.check(source)?;
    Ok(summary)
}

fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> LoadSummary {
        LoadSummary {
            anchor: "12D3KooWexample".into(),
            seq: 7,
            sent_at_ms: 1_000,
            interval_ms: 5_000,
            cpu_millicores: 250,
            cores: 2,
            mem_bytes: 64 << 20,
            disk_free_bytes: 10 << 30,
            disk_total_bytes: 20 << 30,
            scopes: 3,
            leaderships: 1,
            reads_per_s: 100,
            writes_per_s: 10,
            hot: vec![HotScope {
                id: ScopeId::root(),
                prefix: Name::root(),
                leader: true,
                reads_per_s: 90,
                writes_per_s: 9,
            }],
            labels: [("zone".to_string(), "a".to_string())].into(),
            addrs: vec!["/ip4/127.0.0.1/tcp/7400".into()],
        }
    }

    #[test]
    fn round_trip_from_its_signer() {
        let s = summary();
        let bytes = s.encode().unwrap();
        assert!(
            bytes.len() < 512,
            "a typical summary is small: {}",
            bytes.len()
        );
        assert_eq!(decode_summary(&bytes, Some(&s.anchor)).unwrap(), s);
    }

    #[test]
    fn refusals_are_labelled() {
        let s = summary();
        let bytes = s.encode().unwrap();
        let e = decode_summary(&bytes, Some("someone-else")).unwrap_err();
        assert_eq!(e.label(), "wrong_source");
        assert_eq!(
            decode_summary(&bytes, None).unwrap_err().label(),
            "unsigned"
        );
        let e = decode_summary(&bytes[..bytes.len() - 3], Some(&s.anchor)).unwrap_err();
        assert_eq!(e.label(), "malformed");
        let big = vec![0u8; LOAD_SUMMARY_BYTES_MAX + 1];
        assert_eq!(
            decode_summary(&big, Some(&s.anchor)).unwrap_err().label(),
            "too_large"
        );
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            decode_summary(&trailing, Some(&s.anchor))
                .unwrap_err()
                .label(),
            "malformed"
        );
    }

    #[test]
    fn bounds_are_checked() {
        let hot = summary().hot[0].clone();
        type Edit = Box<dyn Fn(&mut LoadSummary)>;
        let cases: Vec<Edit> = vec![
            Box::new(move |s: &mut LoadSummary| s.hot = vec![hot.clone(); HOT_SCOPES_MAX + 1]),
            Box::new(|s: &mut LoadSummary| s.interval_ms = 0),
            Box::new(|s: &mut LoadSummary| s.leaderships = s.scopes + 1),
            Box::new(|s: &mut LoadSummary| s.disk_free_bytes = s.disk_total_bytes + 1),
            Box::new(|s: &mut LoadSummary| {
                s.addrs = vec!["/ip4/1.2.3.4/tcp/1".into(); ANCHOR_ADDRS_MAX + 1]
            }),
            Box::new(|s: &mut LoadSummary| {
                s.labels
                    .insert("k".into(), "v".repeat(LABEL_TEXT_BYTES_MAX + 1));
            }),
        ];
        for (i, f) in cases.iter().enumerate() {
            let mut s = summary();
            f(&mut s);
            let bytes = codec::encode(&s).unwrap();
            let e = decode_summary(&bytes, Some(&s.anchor)).unwrap_err();
            assert_eq!(e.label(), "out_of_bounds", "case {i}: {e}");
        }
    }

    #[test]
    fn the_largest_summary_fits_its_bound() {
        let mut s = summary();
        s.anchor = "p".repeat(PEER_ID_BYTES_MAX);
        let long = Name::parse(&format!("/{x}/{x}/{x}/{x}", x = "x".repeat(62))).unwrap();
        s.hot = vec![
            HotScope {
                id: ScopeId::root(),
                prefix: long,
                leader: false,
                reads_per_s: u64::MAX,
                writes_per_s: u64::MAX,
            };
            HOT_SCOPES_MAX
        ];
        s.labels = (0..LABELS_MAX)
            .map(|i| {
                (
                    format!("{i:0>width$}", width = LABEL_TEXT_BYTES_MAX),
                    "v".repeat(LABEL_TEXT_BYTES_MAX),
                )
            })
            .collect();
        s.addrs = vec!["a".repeat(ADDR_BYTES_MAX); ANCHOR_ADDRS_MAX];
        let bytes = s.encode().unwrap();
        assert!(bytes.len() <= LOAD_SUMMARY_BYTES_MAX);
        assert_eq!(decode_summary(&bytes, Some(&s.anchor)).unwrap(), s);
    }
}
