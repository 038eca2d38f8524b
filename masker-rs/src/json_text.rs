//! JSON text masked string by string: every string (values and member names) is decoded
//! (escapes resolved), masked as text, and re-encoded; everything outside strings is kept
//! byte for byte. So a replacement never lands inside an escape, escaped text (`\n` in a PEM
//! key, `\u00e9` in a name) is seen as what it means, and valid JSON stays valid JSON.
//!
//! The lexer is resumable at any character, so a stream of JSON text cut anywhere (tool-call
//! arguments arriving in deltas) gives the same output as the whole text. It never fails:
//! text that is not JSON only has its quoted parts masked; an unterminated string is masked
//! to its end; a lone surrogate escape decodes to U+FFFD.

use std::fmt::Write as _;

use crate::error::Result;
use crate::masker::Masker;
use crate::text::{Core, Hit};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Outside,
    InString,
    /// After a backslash.
    Escape,
    /// Inside `\uXXXX`: digits read so far and their value.
    Unicode(u8, u32),
}

/// The lexer and the text engine of the string being read.
pub(crate) struct JsonCore {
    lex: Lex,
    /// A high surrogate waiting for its low half.
    high: Option<u32>,
    core: Option<Core>,
    /// Counts of finished strings.
    pub(crate) done_counts: Vec<u64>,
    decoded: String,
    released: String,
}

fn encode_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

impl JsonCore {
    pub(crate) fn new(m: &Masker) -> JsonCore {
        JsonCore {
            lex: Lex::Outside,
            high: None,
            core: None,
            done_counts: vec![0; m.detectors.len()],
            decoded: String::new(),
            released: String::new(),
        }
    }

    /// Counts so far (finished strings and the one being read).
    pub(crate) fn counts(&self) -> Vec<u64> {
        let mut c = self.done_counts.clone();
        if let Some(core) = &self.core {
            for (a, b) in c.iter_mut().zip(&core.counts) {
                *a += b;
            }
        }
        c
    }

    fn decoded_char(&mut self, c: char) {
        if self.high.take().is_some() {
            self.decoded.push('\u{FFFD}');
        }
        self.decoded.push(c);
    }

    fn code_unit(&mut self, u: u32) {
        match u {
            0xD800..=0xDBFF => {
                if self.high.replace(u).is_some() {
                    self.decoded.push('\u{FFFD}');
                }
            }
            0xDC00..=0xDFFF => match self.high.take() {
                Some(h) => {
                    let c = 0x10000 + ((h - 0xD800) << 10) + (u - 0xDC00);
                    self.decoded.push(char::from_u32(c).unwrap_or('\u{FFFD}'));
                }
                None => self.decoded.push('\u{FFFD}'),
            },
            u => self.decoded_char(char::from_u32(u).unwrap_or('\u{FFFD}')),
        }
    }

    /// Hand the decoded text read so far to the string's engine; encode what it releases.
    fn flush(
        &mut self,
        m: &Masker,
        end: bool,
        out: &mut String,
        hits: Option<&mut Vec<Hit>>,
    ) -> Result<()> {
        let mut hits = hits;
        let core = self.core.get_or_insert_with(|| Core::new(m));
        self.released.clear();
        if !self.decoded.is_empty() {
            core.push(m, &self.decoded, &mut self.released, hits.as_deref_mut())?;
            self.decoded.clear();
        }
        if end {
            core.finish(m, &mut self.released, hits)?;
            let core = self.core.take().expect("string engine");
            for (a, b) in self.done_counts.iter_mut().zip(&core.counts) {
                *a += b;
            }
        }
        encode_into(&self.released, out);
        Ok(())
    }

    /// Feed JSON text; appends the masked text released so far to `out`. Hit offsets, if
    /// asked for, are in decoded string text (each string counted from its own start).
    pub(crate) fn push(
        &mut self,
        m: &Masker,
        text: &str,
        out: &mut String,
        hits: Option<&mut Vec<Hit>>,
    ) -> Result<()> {
        let mut hits = hits;
        for c in text.chars() {
            match self.lex {
                Lex::Outside => {
                    out.push(c);
                    if c == '"' {
                        self.lex = Lex::InString;
                        self.core = Some(Core::new(m));
                    }
                }
                Lex::InString => match c {
                    '"' => {
                        if self.high.take().is_some() {
                            self.decoded.push('\u{FFFD}');
                        }
                        self.flush(m, true, out, hits.as_deref_mut())?;
                        out.push('"');
                        self.lex = Lex::Outside;
                    }
                    '\\' => self.lex = Lex::Escape,
                    c => self.decoded_char(c),
                },
                Lex::Escape => {
                    self.lex = Lex::InString;
                    match c {
                        'u' => self.lex = Lex::Unicode(0, 0),
                        'n' => self.decoded_char('\n'),
                        't' => self.decoded_char('\t'),
                        'r' => self.decoded_char('\r'),
                        'b' => self.decoded_char('\u{8}'),
                        'f' => self.decoded_char('\u{c}'),
                        // `\"`, `\\`, `\/`, and (not JSON) any other escaped char as itself.
                        c => self.decoded_char(c),
                    }
                }
                Lex::Unicode(n, v) => match c.to_digit(16) {
                    Some(d) if n == 3 => {
                        self.lex = Lex::InString;
                        self.code_unit(v * 16 + d);
                    }
                    Some(d) => self.lex = Lex::Unicode(n + 1, v * 16 + d),
                    None => {
                        // Not JSON: the broken escape becomes U+FFFD, the char is kept.
                        self.lex = Lex::InString;
                        self.decoded_char('\u{FFFD}');
                        if c == '"' {
                            self.flush(m, true, out, hits.as_deref_mut())?;
                            out.push('"');
                            self.lex = Lex::Outside;
                        } else if c == '\\' {
                            self.lex = Lex::Escape;
                        } else {
                            self.decoded_char(c);
                        }
                    }
                },
            }
        }
        if self.lex != Lex::Outside && !self.decoded.is_empty() {
            self.flush(m, false, out, hits)?;
        }
        Ok(())
    }

    /// End of input: an unterminated string is masked to its end (no quote is added).
    pub(crate) fn finish(
        &mut self,
        m: &Masker,
        out: &mut String,
        hits: Option<&mut Vec<Hit>>,
    ) -> Result<()> {
        if self.lex != Lex::Outside {
            if self.high.take().is_some() || matches!(self.lex, Lex::Unicode(..)) {
                self.decoded.push('\u{FFFD}');
            }
            self.flush(m, true, out, hits)?;
            self.lex = Lex::Outside;
        }
        Ok(())
    }
}
