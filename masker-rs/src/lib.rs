//! PII detection and masking for text, JSON bodies and streams (plain text and server-sent
//! events), built for an inference gateway's hot path.
//!
//! ```
//! use masker::{Config, Masker};
//! let m = Masker::new(&Config { entities: vec!["all".into()], ..Config::default() }).unwrap();
//! let (text, findings) = m.mask_text("mail bob@example.com");
//! assert_eq!(text, "mail [EMAIL]");
//! assert_eq!((findings[0].entity, findings[0].start, findings[0].end), ("email", 5, 20));
//! ```
//!
//! Matching uses the `regex` crate and its engine `regex-automata` only (finite automata,
//! linear time in the input), with checksums and boundary rules in [`validators`]. One shared
//! byte pass finds the anchors (`@`, digit runs, `:`) the character-class detectors need, so
//! text without them is not searched by those detectors at all. Streams hold back at most [`HOLD_BACK`]
//! bytes. The Python module `gateway._masker` sits behind the `python` feature.

#![warn(clippy::pedantic, missing_docs)]
#![allow(
    clippy::module_name_repetitions,
    clippy::missing_panics_doc,
    clippy::must_use_candidate,
    clippy::similar_names,
    clippy::doc_markdown,
    clippy::many_single_char_names,
    clippy::too_many_lines
)]

mod detectors;
mod error;
mod field;
mod json_text;
pub mod jsonpath;
mod masker;
mod normalize;
mod phone;
mod sse;
mod stream;
mod styles;
mod text;
mod unique_keys;
pub mod validators;

#[cfg(feature = "python")]
mod python;

pub use detectors::{builtin_ids, MAX_ENTITY_LEN};
pub use error::{Error, Result};
pub use masker::{Config, Counts, Custom, Finding, Masker};
pub use phone::{CONTEXT_BEFORE, DEFAULT_PHONE_REGIONS};
pub use sse::SseStream;
pub use stream::{JsonStream, TextStream};
pub use styles::Style;
pub use text::{HOLD_BACK, MAX_PENDING};

/// Paths the docs recommend for masking responses (OpenAI-style chat and completions,
/// streamed or not, including tool-call arguments).
pub const DEFAULT_RESPONSE_PATHS: &[&str] = &[
    "$.choices[*].message.content",
    "$.choices[*].message.content[*].text",
    "$.choices[*].message.tool_calls[*].function.arguments",
    "$.choices[*].delta.content",
    "$.choices[*].delta.tool_calls[*].function.arguments",
    "$.choices[*].text",
];

/// Paths the docs recommend for masking requests (`mask_request = true`).
pub const DEFAULT_REQUEST_PATHS: &[&str] = &[
    "$.messages[*].content",
    "$.messages[*].content[*].text",
    "$.messages[*].tool_calls[*].function.arguments",
    "$.prompt",
    "$.prompt[*]",
    "$.input",
    "$.input[*]",
];

/// Version of the masker crate, reported by the gateway's health endpoint.
#[must_use]
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_is_set() {
        assert!(!super::version().is_empty());
    }
}
