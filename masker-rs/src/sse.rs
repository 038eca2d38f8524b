//! [`SseStream`]: a `text/event-stream` body masked event by event.
//!
//! Events are split on blank lines (LF, CRLF or CR line ends, per the WHATWG spec), never on
//! chunk boundaries. An event's `data:` lines are joined and parsed as JSON; every concrete
//! location selected by the masker's paths (e.g. `$['choices'][0]['delta']['content']`) has
//! its own stream masker. The location's string is fed to it and replaced by the released
//! text, so held text travels in the next event for that location. When an event carries a
//! non-null `finish_reason` in an object on the location's path, that location is finished
//! and its remainder goes into this event's string; a location that is not in that event is
//! flushed into a synthesized event just before it. `data: [DONE]` and the end of the stream
//! flush every open location the same way. Events without data, comments and other fields
//! pass through verbatim; an event whose data is not JSON (other than `[DONE]`) is an error.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::field::Field;
use crate::jsonpath::{get, get_mut, Location, Paths, Seg};
use crate::masker::{Counts, Masker};
use crate::unique_keys::has_repeated_name;

struct Loc {
    path: Location,
    field: Field,
    /// Data of the last event that carried this location (skeleton for a flush event).
    template: String,
}

/// Masks a server-sent event stream. Output is whole events only; the concatenation of all
/// outputs is the same however the input bytes were cut.
pub struct SseStream {
    masker: Arc<Masker>,
    buf: Vec<u8>,
    /// Offset in `buf` where the current line starts / where scanning resumes.
    line_start: usize,
    locs: Vec<Loc>,
    retired: Vec<u64>,
    model: Option<String>,
    events: u64,
    failed: bool,
    /// After a failure: the masked bytes of the events that completed before the failing one.
    released: Vec<u8>,
}

impl std::fmt::Debug for SseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseStream")
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

fn finishing(doc: &Value, loc: &[Seg]) -> bool {
    (0..loc.len()).any(|k| {
        matches!(get(doc, &loc[..k]), Some(Value::Object(o))
            if o.get("finish_reason").is_some_and(|f| !f.is_null()))
    })
}

/// A minimal event carrying `text` at `loc`: the template's top-level members, and along the
/// path only the next step plus `index`/`type` members (so SDKs merge it into the right
/// choice or tool call without repeating names or ids). The template is the last event's
/// data as the upstream sent it, so every other masked location in the copy is emptied: its
/// text was already released (masked) in that event, and the raw copy would leak it.
fn flush_event(template: &str, loc: &[Seg], text: String, paths: &Paths) -> Option<String> {
    fn build(node: &Value, loc: &[Seg], text: String, top: bool) -> Value {
        let Some((first, rest)) = loc.split_first() else {
            return Value::String(text);
        };
        match (first, node) {
            (Seg::Name(n), Value::Object(o)) => {
                let mut out = Map::new();
                for (k, v) in o {
                    if k == n {
                        out.insert(k.clone(), build(v, rest, text.clone(), false));
                    } else if top || k == "index" || k == "type" {
                        out.insert(k.clone(), v.clone());
                    }
                }
                Value::Object(out)
            }
            (Seg::Index(i), Value::Array(a)) => Value::Array(
                a.get(*i)
                    .map(|v| vec![build(v, rest, text, false)])
                    .unwrap_or_default(),
            ),
            _ => Value::Null,
        }
    }
    let tpl: Value = serde_json::from_str(template).ok()?;
    let mut v = build(&tpl, loc, text, true);
    for other in paths.locate(&v) {
        if other.as_slice() != loc {
            if let Some(Value::String(s)) = get_mut(&mut v, &other) {
                s.clear();
            }
        }
    }
    let mut s = String::from("data: ");
    s.push_str(&serde_json::to_string(&v).ok()?);
    s.push_str("\n\n");
    Some(s)
}

impl SseStream {
    pub(crate) fn new(masker: Arc<Masker>) -> SseStream {
        let n = masker.detectors.len();
        SseStream {
            masker,
            buf: Vec::new(),
            line_start: 0,
            locs: Vec::new(),
            retired: vec![0; n],
            model: None,
            events: 0,
            failed: false,
            released: Vec::new(),
        }
    }

    /// The first top-level `"model"` string seen in an event's JSON.
    #[must_use]
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Masking counts so far.
    #[must_use]
    pub fn counts(&self) -> Counts {
        let mut raw = self.retired.clone();
        let n = raw.len();
        for l in &self.locs {
            for (a, b) in raw.iter_mut().zip(&l.field.counts(n)) {
                *a += b;
            }
        }
        self.masker.counts(&raw)
    }

    /// Feed raw bytes; returns the masked bytes of every event completed by them.
    ///
    /// # Errors
    /// Invalid UTF-8 in an event, event data that is not JSON, the hold-back cap. After an
    /// error the stream refuses further input (the gateway ends the response), and
    /// [`SseStream::take_released`] has the events masked before the failing one, so what a
    /// client receives does not depend on how the input was cut.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>> {
        if self.failed {
            return Err(Error::InvalidSse("stream already failed".into()));
        }
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        self.drain(false, &mut out).map(|()| out)
    }

    /// The masked events released by the failing call before its failure (once).
    pub fn take_released(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.released)
    }

    /// End of input: flush every open location. An incomplete trailing event is an error.
    ///
    /// # Errors
    /// As [`SseStream::push`], and a trailing event without its blank line.
    pub fn finish(&mut self) -> Result<Vec<u8>> {
        if self.failed {
            return Err(Error::InvalidSse("stream already failed".into()));
        }
        let mut out = Vec::new();
        self.drain(true, &mut out)?;
        let before = out.len();
        let end = if self.buf.is_empty() {
            self.flush_all(&mut out)
        } else {
            Err(Error::InvalidSse(
                "stream ended inside an event (no blank line)".into(),
            ))
        };
        if let Err(e) = end {
            out.truncate(before);
            self.failed = true;
            self.released = out;
            return Err(e);
        }
        Ok(out)
    }

    /// Split complete events off `buf` and process them into `out`. On a failure `out` is
    /// moved to `released`, cut back to the events before the failing one.
    fn drain(&mut self, eof: bool, out: &mut Vec<u8>) -> Result<()> {
        let mut consumed = 0; // start of the current event in buf
        let mut i = self.line_start;
        while i < self.buf.len() {
            let b = self.buf[i];
            if b != b'\n' && b != b'\r' {
                i += 1;
                continue;
            }
            let term_end = if b == b'\r' {
                match self.buf.get(i + 1) {
                    Some(b'\n') => i + 2,
                    Some(_) => i + 1,
                    None if eof => i + 1,
                    None => break, // CR at the end: maybe CRLF
                }
            } else {
                i + 1
            };
            let blank = i == self.line_start;
            self.line_start = term_end;
            i = term_end;
            if blank {
                let raw = self.buf[consumed..term_end].to_vec();
                let before = out.len();
                if let Err(e) = self.event(&raw, out) {
                    out.truncate(before);
                    self.failed = true;
                    self.released = std::mem::take(out);
                    return Err(e);
                }
                consumed = term_end;
            }
        }
        self.buf.drain(..consumed);
        self.line_start -= consumed;
        Ok(())
    }

    fn event(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.events += 1;
        let n = self.events;
        let text = std::str::from_utf8(raw)
            .map_err(|_| Error::InvalidSse(format!("event {n}: invalid UTF-8")))?;
        let mut data: Option<String> = None;
        for line in lines(text) {
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.find(':').map_or((line, ""), |p| {
                (
                    &line[..p],
                    line[p + 1..].strip_prefix(' ').unwrap_or(&line[p + 1..]),
                )
            });
            if field == "data" {
                match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_owned()),
                }
            }
        }
        let Some(data) = data else {
            out.extend_from_slice(raw);
            return Ok(());
        };
        if data.trim() == "[DONE]" {
            self.flush_all(out)?;
            out.extend_from_slice(raw);
            return Ok(());
        }
        let mut doc: Value = serde_json::from_str(&data).map_err(|e| {
            Error::InvalidSse(format!(
                "event {n}: data is not valid JSON ({:?} error at column {})",
                e.classify(),
                e.column()
            ))
        })?;
        if has_repeated_name(&data) {
            return Err(Error::InvalidSse(format!(
                "event {n}: data JSON repeats a member name (a client could read the copy that \
                 was not masked)"
            )));
        }
        if self.model.is_none() {
            if let Some(Value::String(m)) = doc.get("model") {
                self.model = Some(m.clone());
            }
        }
        // Locations not in this event whose choice finishes here: flush first.
        let present = self.masker.paths.locate(&doc);
        let mut k = 0;
        while k < self.locs.len() {
            let l = &self.locs[k];
            let here =
                present.contains(&l.path) && matches!(get(&doc, &l.path), Some(Value::String(_)));
            if !here && finishing(&doc, &l.path) {
                let l = self.locs.remove(k);
                self.retire(l, out)?;
            } else {
                k += 1;
            }
        }
        let mut changed = false;
        for loc in present {
            if !matches!(get(&doc, &loc), Some(Value::String(_))) {
                continue;
            }
            let fin = finishing(&doc, &loc);
            let idx = if let Some(i) = self.locs.iter().position(|l| l.path == loc) {
                i
            } else {
                self.locs.push(Loc {
                    path: loc.clone(),
                    field: Field::new(),
                    template: String::new(),
                });
                self.locs.len() - 1
            };
            let m = Arc::clone(&self.masker);
            let l = &mut self.locs[idx];
            l.template.clear();
            l.template.push_str(&data);
            let Some(Value::String(s)) = get_mut(&mut doc, &loc) else {
                continue;
            };
            let mut released = String::new();
            l.field.push(&m, s, &mut released)?;
            if fin {
                l.field.finish(&m, &mut released)?;
            }
            if released != *s {
                *s = released;
                changed = true;
            }
            if fin {
                let l = self.locs.remove(idx);
                for (a, b) in self
                    .retired
                    .iter_mut()
                    .zip(&l.field.counts(m.detectors.len()))
                {
                    *a += b;
                }
            }
        }
        if !changed {
            out.extend_from_slice(raw);
            return Ok(());
        }
        let json = serde_json::to_string(&doc)?;
        let mut wrote = false;
        for (line, term) in lines_with_terms(text) {
            let is_data = !line.starts_with(':') && (line == "data" || line.starts_with("data:"));
            if is_data {
                if !wrote {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(json.as_bytes());
                    out.extend_from_slice(term.as_bytes());
                    wrote = true;
                }
            } else {
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(term.as_bytes());
            }
        }
        Ok(())
    }

    /// Finish one location and emit its remainder as a flush event (if any).
    fn retire(&mut self, mut l: Loc, out: &mut Vec<u8>) -> Result<()> {
        let mut rem = String::new();
        l.field.finish(&self.masker, &mut rem)?;
        let n = self.masker.detectors.len();
        for (a, b) in self.retired.iter_mut().zip(&l.field.counts(n)) {
            *a += b;
        }
        if !rem.is_empty() {
            let ev = flush_event(&l.template, &l.path, rem, &self.masker.paths)
                .ok_or_else(|| Error::InvalidSse("cannot build flush event".into()))?;
            out.extend_from_slice(ev.as_bytes());
        }
        Ok(())
    }

    fn flush_all(&mut self, out: &mut Vec<u8>) -> Result<()> {
        for l in std::mem::take(&mut self.locs) {
            self.retire(l, out)?;
        }
        Ok(())
    }
}

/// Lines of an event (terminators removed; the final blank line excluded).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    lines_with_terms(text)
        .map(|(l, _)| l)
        .filter(|l| !l.is_empty())
}

/// Lines with their terminators (`\n`, `\r\n` or `\r`).
fn lines_with_terms(text: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let b = rest.as_bytes();
        let p = b
            .iter()
            .position(|&c| c == b'\n' || c == b'\r')
            .unwrap_or(b.len());
        let tl = if p == b.len() {
            0
        } else if b[p] == b'\r' && b.get(p + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        let (line, term) = (&rest[..p], &rest[p..p + tl]);
        rest = &rest[p + tl..];
        Some((line, term))
    })
}
