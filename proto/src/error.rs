//! The one error type of the `proto` crate: bad names, bad records, bad frames, bad signatures.

use thiserror::Error;

/// Everything that can be wrong with a name, a record, a frame or a signature.
///
/// Each variant carries the numbers a user needs to fix the input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The name was the empty string.
    #[error("name is empty: write `/` for the root or `/label/label...`")]
    EmptyName,
    /// The name does not start with `/`.
    #[error("name {name:?} must start with '/' (names are absolute paths, root first)")]
    NotAbsolute {
        /// The offending input.
        name: String,
    },
    /// Two slashes in a row, or a trailing slash.
    #[error("label {label} is empty (two '/' in a row or a trailing '/')")]
    EmptyLabel {
        /// 1-based position of the label.
        label: usize,
    },
    /// A label longer than [`crate::limits::LABEL_BYTES_MAX`].
    #[error("label {label} is {len} bytes long; at most {max} are allowed")]
    LabelTooLong {
        /// 1-based position of the label.
        label: usize,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A character outside `[a-z0-9_-]` (after lowercasing).
    #[error(
        "label {label} {text:?} has {ch:?} at byte {byte}; labels allow only a-z, 0-9, '_' and '-'"
    )]
    BadChar {
        /// 1-based position of the label.
        label: usize,
        /// The label as written.
        text: String,
        /// The offending character.
        ch: char,
        /// 0-based byte offset of the character within the label.
        byte: usize,
    },
    /// More labels than [`crate::limits::NAME_LABELS_MAX`].
    #[error("name has {count} labels; at most {max} are allowed")]
    TooManyLabels {
        /// How many labels the input had.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A name longer than [`crate::limits::NAME_BYTES_MAX`].
    #[error("name is {len} bytes long; at most {max} are allowed")]
    NameTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A DNS name outside the gateway's zone.
    #[error("DNS name {name:?} is not under zone {zone:?}")]
    NotInZone {
        /// The DNS name.
        name: String,
        /// The zone.
        zone: String,
    },
    /// A record set or record that breaks a limit.
    #[error("invalid record set: {reason}")]
    InvalidRecords {
        /// What is wrong, with the numbers.
        reason: String,
    },
    /// A frame longer than the limit for its protocol; it was not decoded.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes that do not decode as the expected message.
    #[error("malformed message: {reason}")]
    Malformed {
        /// What the decoder said.
        reason: String,
    },
    /// A value that could not be encoded (a bug, or a value over a limit).
    #[error("cannot encode message: {reason}")]
    Encode {
        /// What the encoder said.
        reason: String,
    },
    /// An ed25519 public key that is not a valid curve point, or of the wrong length.
    #[error("invalid ed25519 public key: {reason}")]
    BadKey {
        /// Details.
        reason: String,
    },
    /// A signature that does not verify against the given key and message.
    #[error("signature does not verify for key {key}")]
    BadSignature {
        /// The key, hex.
        key: String,
    },
}
