//! Records: the typed values a name holds (`docs/design.md`, "Records"), and their limits.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::error::ProtoError;
use crate::limits::{
    BLOB_BYTES_MAX, PEER_ID_BYTES_MAX, RECORDS_PER_SET_MAX, TEXT_BYTES_MAX, TTL_S_MAX,
};
use crate::name::Name;

/// One typed record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// An IP address and port.
    Addr(SocketAddr),
    /// Free text (UTF-8, at most [`TEXT_BYTES_MAX`] bytes).
    Text(String),
    /// A service endpoint, SRV-style.
    Service {
        /// The name of the host providing the service.
        target: Name,
        /// Port.
        port: u16,
        /// Lower is preferred.
        priority: u16,
        /// Share among equal priorities.
        weight: u16,
    },
    /// This name is another name.
    Alias(Name),
    /// A stateful object hosted by the anchor with this libp2p peer id.
    Object {
        /// The hosting anchor's peer id (base58 text).
        peer: String,
    },
    /// Opaque bytes, at most [`BLOB_BYTES_MAX`].
    Blob(Vec<u8>),
}

/// The kind of a record, used by policy to allow or refuse kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// [`Record::Addr`]
    Addr,
    /// [`Record::Text`]
    Text,
    /// [`Record::Service`]
    Service,
    /// [`Record::Alias`]
    Alias,
    /// [`Record::Object`]
    Object,
    /// [`Record::Blob`]
    Blob,
}

impl RecordKind {
    /// Every kind, in a fixed order.
    pub const ALL: [RecordKind; 6] = [
        RecordKind::Addr,
        RecordKind::Text,
        RecordKind::Service,
        RecordKind::Alias,
        RecordKind::Object,
        RecordKind::Blob,
    ];

    /// The lowercase name used in TOML and on the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Addr => "addr",
            RecordKind::Text => "text",
            RecordKind::Service => "service",
            RecordKind::Alias => "alias",
            RecordKind::Object => "object",
            RecordKind::Blob => "blob",
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Record {
    /// This record's kind.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Addr(_) => RecordKind::Addr,
            Record::Text(_) => RecordKind::Text,
            Record::Service { .. } => RecordKind::Service,
            Record::Alias(_) => RecordKind::Alias,
            Record::Object { .. } => RecordKind::Object,
            Record::Blob(_) => RecordKind::Blob,
        }
    }

    /// Approximate payload size in bytes (what policy's record-byte limit counts).
    pub fn payload_bytes(&self) -> usize {
        match self {
            Record::Addr(_) => 18,
            Record::Text(t) => t.len(),
            Record::Service { target, .. } => target.key().len() + 6,
            Record::Alias(n) => n.key().len(),
            Record::Object { peer } => peer.len(),
            Record::Blob(b) => b.len(),
        }
    }

    fn validate(&self) -> Result<(), ProtoError> {
        let bad = |reason: String| Err(ProtoError::InvalidRecords { reason });
        match self {
            Record::Text(t) if t.len() > TEXT_BYTES_MAX => bad(format!(
                "text record is {} bytes; at most {TEXT_BYTES_MAX}",
                t.len()
            )),
            Record::Blob(b) if b.len() > BLOB_BYTES_MAX => bad(format!(
                "blob record is {} bytes; at most {BLOB_BYTES_MAX}",
                b.len()
            )),
            Record::Object { peer } if peer.is_empty() || peer.len() > PEER_ID_BYTES_MAX => {
                bad(format!(
                    "object peer id is {} bytes; it must be 1..={PEER_ID_BYTES_MAX}",
                    peer.len()
                ))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Addr(a) => write!(f, "addr {a}"),
            Record::Text(t) => write!(f, "text {t:?}"),
            Record::Service {
                target,
                port,
                priority,
                weight,
            } => {
                write!(
                    f,
                    "service {target}:{port} priority={priority} weight={weight}"
                )
            }
            Record::Alias(n) => write!(f, "alias {n}"),
            Record::Object { peer } => write!(f, "object {peer}"),
            Record::Blob(b) => write!(f, "blob ({} bytes)", b.len()),
        }
    }
}

/// Checks a list of records and a TTL against the protocol limits (not policy).
pub fn validate_records(records: &[Record], ttl_s: u32) -> Result<(), ProtoError> {
    if records.is_empty() {
        return Err(ProtoError::InvalidRecords {
            reason: "a put needs at least one record; use delete to remove a name".into(),
        });
    }
    if records.len() > RECORDS_PER_SET_MAX {
        return Err(ProtoError::InvalidRecords {
            reason: format!("{} records; at most {RECORDS_PER_SET_MAX}", records.len()),
        });
    }
    if ttl_s > TTL_S_MAX {
        return Err(ProtoError::InvalidRecords {
            reason: format!("ttl {ttl_s}s; at most {TTL_S_MAX}s"),
        });
    }
    records.iter().try_for_each(Record::validate)
}

/// The record set a name holds, as stored and as answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSet {
    /// The records.
    pub records: Vec<Record>,
    /// Time to live for caches, seconds.
    pub ttl_s: u32,
    /// The Raft log index of the entry that last changed this name.
    pub version: u64,
    /// The ed25519 public key of the writer of that entry.
    pub writer: [u8; 32],
}
