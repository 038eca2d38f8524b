//! [`TextStream`]: plain text (e.g. chunked `text/plain`) masked as one stream;
//! [`JsonStream`]: JSON text masked string by string as it streams.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::json_text::JsonCore;
use crate::masker::{Counts, Masker};
use crate::text::Core;

/// Incremental UTF-8 decoding: keeps an incomplete trailing sequence (at most 3 bytes).
#[derive(Debug, Default)]
pub(crate) struct Utf8Carry {
    carry: Vec<u8>,
    seen: usize,
}

impl Utf8Carry {
    /// Decode `chunk` (after any carried bytes) and hand the complete text to `f`.
    pub(crate) fn decode<R>(&mut self, chunk: &[u8], f: impl FnOnce(&str) -> R) -> Result<R> {
        let owned;
        let data: &[u8] = if self.carry.is_empty() {
            chunk
        } else {
            let mut v = std::mem::take(&mut self.carry);
            v.extend_from_slice(chunk);
            owned = v;
            &owned
        };
        let (text, rest) = match std::str::from_utf8(data) {
            Ok(t) => (t, &[][..]),
            Err(e) if e.error_len().is_none() => {
                let (a, b) = data.split_at(e.valid_up_to());
                // SAFETY-free: the prefix was just validated.
                (std::str::from_utf8(a).expect("valid prefix"), b)
            }
            Err(e) => {
                return Err(Error::InvalidUtf8 {
                    offset: self.seen + e.valid_up_to(),
                })
            }
        };
        self.seen += text.len();
        let r = f(text);
        self.carry = rest.to_vec();
        Ok(r)
    }

    /// End of input: an incomplete sequence is an error.
    pub(crate) fn finish(&self) -> Result<()> {
        if self.carry.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidUtf8 { offset: self.seen })
        }
    }
}

/// Masks a text stream chunk by chunk. The concatenated output of every `push` and the final
/// `finish` equals [`Masker::mask_text`] of the whole input, however it was cut.
pub struct TextStream {
    masker: Arc<Masker>,
    engine: Engine,
    utf8: Utf8Carry,
    failed: bool,
}

enum Engine {
    Text(Core),
    Json(JsonCore),
}

impl Engine {
    fn push(&mut self, m: &Masker, text: &str, out: &mut String) -> Result<()> {
        match self {
            Engine::Text(core) => core.push(m, text, out, None),
            Engine::Json(json) => json.push(m, text, out, None),
        }
    }

    fn finish(&mut self, m: &Masker, out: &mut String) -> Result<()> {
        match self {
            Engine::Text(core) => core.finish(m, out, None),
            Engine::Json(json) => json.finish(m, out, None),
        }
    }

    fn counts(&self) -> Vec<u64> {
        match self {
            Engine::Text(core) => core.counts.clone(),
            Engine::Json(json) => json.counts(),
        }
    }
}

impl std::fmt::Debug for TextStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextStream").finish_non_exhaustive()
    }
}

impl TextStream {
    pub(crate) fn new(masker: Arc<Masker>) -> TextStream {
        let engine = Engine::Text(Core::new(&masker));
        TextStream {
            masker,
            engine,
            utf8: Utf8Carry::default(),
            failed: false,
        }
    }

    fn guard(&self) -> Result<()> {
        if self.failed {
            return Err(Error::InvalidSse("stream already failed".into()));
        }
        Ok(())
    }

    /// Feed raw bytes (UTF-8 sequences may be split across pushes); returns the text that can
    /// be released now, masked.
    ///
    /// # Errors
    /// Invalid UTF-8, or the hold-back cap ([`crate::MAX_PENDING`]). After an error the stream
    /// refuses further input.
    pub fn push(&mut self, chunk: &[u8]) -> Result<String> {
        self.guard()?;
        let mut out = String::new();
        let (m, engine) = (&self.masker, &mut self.engine);
        let r = self
            .utf8
            .decode(chunk, |t| engine.push(m, t, &mut out))
            .and_then(|r| r);
        self.failed = r.is_err();
        r.map(|()| out)
    }

    /// Feed text that is already a `str`.
    ///
    /// # Errors
    /// The hold-back cap ([`crate::MAX_PENDING`]).
    pub fn push_str(&mut self, text: &str) -> Result<String> {
        self.push(text.as_bytes())
    }

    /// End of input: release the held tail.
    ///
    /// # Errors
    /// An incomplete UTF-8 sequence at the end.
    pub fn finish(&mut self) -> Result<String> {
        self.guard()?;
        self.utf8.finish()?;
        let mut out = String::new();
        self.engine.finish(&self.masker, &mut out)?;
        Ok(out)
    }

    /// Masking counts so far.
    #[must_use]
    pub fn counts(&self) -> Counts {
        self.masker.counts(&self.engine.counts())
    }
}

/// Masks JSON text chunk by chunk, string by string: the concatenated output equals
/// [`Masker::mask_json_strings`] of the whole input, however it was cut.
#[derive(Debug)]
pub struct JsonStream(TextStream);

impl JsonStream {
    pub(crate) fn new(masker: Arc<Masker>) -> JsonStream {
        let engine = Engine::Json(JsonCore::new(&masker));
        JsonStream(TextStream {
            masker,
            engine,
            utf8: Utf8Carry::default(),
            failed: false,
        })
    }

    /// Feed raw bytes (UTF-8 sequences may be split across pushes); returns the JSON text
    /// that can be released now, its strings masked.
    ///
    /// # Errors
    /// Invalid UTF-8, or the hold-back cap ([`crate::MAX_PENDING`]).
    pub fn push(&mut self, chunk: &[u8]) -> Result<String> {
        self.0.push(chunk)
    }

    /// End of input: release the held tail.
    ///
    /// # Errors
    /// An incomplete UTF-8 sequence at the end.
    pub fn finish(&mut self) -> Result<String> {
        self.0.finish()
    }

    /// Masking counts so far.
    #[must_use]
    pub fn counts(&self) -> Counts {
        self.0.counts()
    }
}
