//! The crate's one error type.

use std::fmt;

/// Everything that can go wrong while building a [`crate::Masker`] or masking input.
///
/// Messages name the offending item (entity id, path, detector name) but never echo the
/// content being masked or secret material such as the hash key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// An entity id that is neither built in nor a custom detector.
    UnknownEntity(String),
    /// A custom detector that cannot be used (bad regex, duplicate name, unbounded length...).
    InvalidCustom {
        /// Name of the custom detector.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A validator name other than `luhn` or `mod97`.
    UnknownValidator {
        /// Name of the custom detector.
        name: String,
        /// The validator that was asked for.
        validator: String,
    },
    /// A masking style other than `tag`, `partial`, `hash`, `redact`.
    UnknownStyle(String),
    /// Style `hash` without a key, or an empty key.
    MissingHashKey,
    /// A phone region id the libphonenumber metadata does not know.
    UnknownPhoneRegion(String),
    /// A JSONPath expression that does not parse.
    InvalidPath {
        /// The expression as given.
        path: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A JSON document (body or SSE event data) that does not parse.
    InvalidJson(String),
    /// Input that is not valid UTF-8; `offset` is the byte offset of the first bad byte
    /// within the input seen so far.
    InvalidUtf8 {
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// A malformed server-sent event stream.
    InvalidSse(String),
    /// The streaming hold-back exceeded [`crate::MAX_PENDING`]; see `docs/masking.md`.
    HoldBackExceeded(usize),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownEntity(e) => write!(f, "unknown entity {e:?}"),
            Error::InvalidCustom { name, reason } => {
                write!(f, "custom detector {name:?}: {reason}")
            }
            Error::UnknownValidator { name, validator } => write!(
                f,
                "custom detector {name:?}: unknown validator {validator:?} (expected \"luhn\" or \"mod97\")"
            ),
            Error::UnknownStyle(s) => write!(
                f,
                "unknown mask style {s:?} (expected \"tag\", \"partial\", \"hash\" or \"redact\")"
            ),
            Error::UnknownPhoneRegion(r) => {
                write!(f, "unknown phone region {r:?} (expected an ISO 3166 code such as \"DE\")")
            }
            Error::MissingHashKey => write!(f, "mask style \"hash\" needs a non-empty hash_key"),
            Error::InvalidPath { path, reason } => write!(f, "invalid JSONPath {path:?}: {reason}"),
            Error::InvalidJson(m) => write!(f, "malformed JSON: {m}"),
            Error::InvalidUtf8 { offset } => write!(f, "invalid UTF-8 at byte {offset}"),
            Error::InvalidSse(m) => write!(f, "malformed event stream: {m}"),
            Error::HoldBackExceeded(n) => write!(
                f,
                "stream hold-back exceeded {n} bytes (an unbroken chain of overlapping candidates)"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        // serde_json's messages carry a category, line and column, never the offending text.
        Error::InvalidJson(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    }
}

impl From<std::str::Utf8Error> for Error {
    fn from(e: std::str::Utf8Error) -> Self {
        Error::InvalidUtf8 {
            offset: e.valid_up_to(),
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
