//! One selected JSON string value, masked as text or, when it holds JSON itself (tool-call
//! arguments), string by string through [`JsonCore`]. The choice is made on the value's
//! first non-whitespace character (`{` or `[`: JSON), the same for a whole value
//! ([`crate::Masker::mask_json`]) and for a value streamed in deltas ([`crate::SseStream`]).

use crate::error::Result;
use crate::json_text::JsonCore;
use crate::masker::Masker;
use crate::text::Core;

/// JSON whitespace (RFC 8259).
const JSON_WS: [char; 4] = [' ', '\t', '\n', '\r'];

/// Whether a value whose text starts (after JSON whitespace) with `first` is JSON text.
fn is_json_start(first: char) -> bool {
    first == '{' || first == '['
}

/// True when `s` is masked as JSON text.
pub(crate) fn holds_json(s: &str) -> bool {
    s.trim_start_matches(JSON_WS)
        .chars()
        .next()
        .is_some_and(is_json_start)
}

/// The engine of one streamed value.
pub(crate) enum Field {
    /// Only whitespace so far (held: it goes to whichever engine the next char picks).
    Undecided(String),
    Text(Core),
    Json(JsonCore),
}

impl Field {
    pub(crate) fn new() -> Field {
        Field::Undecided(String::new())
    }

    /// Feed text; appends released masked text to `out`.
    pub(crate) fn push(&mut self, m: &Masker, text: &str, out: &mut String) -> Result<()> {
        if let Field::Undecided(ws) = self {
            let Some(first) = text.trim_start_matches(JSON_WS).chars().next() else {
                ws.push_str(text);
                return Ok(());
            };
            let mut held = std::mem::take(ws);
            held.push_str(text);
            *self = if is_json_start(first) {
                Field::Json(JsonCore::new(m))
            } else {
                Field::Text(Core::new(m))
            };
            return self.push(m, &held, out);
        }
        match self {
            Field::Text(core) => core.push(m, text, out, None),
            Field::Json(json) => json.push(m, text, out, None),
            Field::Undecided(_) => unreachable!("decided above"),
        }
    }

    /// End of the value: release everything.
    pub(crate) fn finish(&mut self, m: &Masker, out: &mut String) -> Result<()> {
        match self {
            Field::Undecided(ws) => {
                out.push_str(ws);
                ws.clear();
                Ok(())
            }
            Field::Text(core) => core.finish(m, out, None),
            Field::Json(json) => json.finish(m, out, None),
        }
    }

    /// Counts by detector index so far.
    pub(crate) fn counts(&self, n: usize) -> Vec<u64> {
        match self {
            Field::Undecided(_) => vec![0; n],
            Field::Text(core) => core.counts.clone(),
            Field::Json(json) => json.counts(),
        }
    }
}
