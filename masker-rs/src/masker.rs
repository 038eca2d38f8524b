//! [`Masker`]: detectors, style and JSONPath expressions compiled once.

use std::collections::BTreeMap;
use std::sync::Arc;

use regex_automata::hybrid::dfa::DFA;
use serde_json::Value;

use crate::detectors::{builtin_ids, Detector};
use crate::error::{Error, Result};
use crate::field::holds_json;
use crate::json_text::JsonCore;
use crate::jsonpath::{get_mut, Paths};
use crate::phone::{PhoneRules, DEFAULT_PHONE_REGIONS};
use crate::sse::SseStream;
use crate::stream::{JsonStream, TextStream};
use crate::styles::Style;
use crate::text::{Core, Hit};

/// A custom detector from config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Custom {
    /// Entity id: lower-case letters, digits, `_`; must not clash with a built-in.
    pub name: String,
    /// Regex (Rust `regex` syntax); its longest match must be bounded by
    /// [`crate::MAX_ENTITY_LEN`] bytes and it must not match the empty string.
    pub pattern: String,
    /// Optional checksum: `"luhn"` or `"mod97"`.
    pub validator: Option<String>,
}

/// Everything a [`Masker`] is built from.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Detector ids (built-in or custom), or `["all"]`; `ssn` is an alias of `us_ssn`.
    pub entities: Vec<String>,
    /// `tag` (default when empty), `partial`, `hash` or `redact`.
    pub style: String,
    /// HMAC key for style `hash`.
    pub hash_key: Option<Vec<u8>>,
    /// Custom detectors; their names may be used in `entities`.
    pub custom: Vec<Custom>,
    /// RFC 9535 JSONPath expressions selecting the strings [`Masker::mask_json`] and
    /// [`SseStream`] mask.
    pub paths: Vec<String>,
    /// Regions (ISO 3166 alpha-2) tried for phone numbers written without a country code;
    /// empty: [`crate::DEFAULT_PHONE_REGIONS`]. International numbers are always checked
    /// against their own country.
    pub phone_regions: Vec<String>,
}

/// One finding: entity id and byte span in the original input. Never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding<'m> {
    /// Entity id, e.g. `"email"`.
    pub entity: &'m str,
    /// Byte offset of the first byte (UTF-8, original input).
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
}

/// Masking counts by entity id (only entities seen).
pub type Counts = BTreeMap<String, u64>;

/// Detectors, style and paths, compiled once; cheap to share behind an [`Arc`].
#[derive(Debug)]
pub struct Masker {
    pub(crate) detectors: Vec<Detector>,
    pub(crate) style: Style,
    pub(crate) paths: Paths,
    /// Anchored multi-pattern lazy DFA over all detectors: "could an entity start here?"
    pub(crate) probe: DFA,
    /// Some detector uses the shared prefilter pass.
    pub(crate) anchored: bool,
}

impl Masker {
    /// Compile a masker.
    ///
    /// # Errors
    /// A bad entity id, custom detector, style, missing hash key or JSONPath, named in the
    /// error.
    pub fn new(cfg: &Config) -> Result<Masker> {
        let style = Style::parse(
            if cfg.style.is_empty() {
                "tag"
            } else {
                &cfg.style
            },
            cfg.hash_key.as_deref(),
        )?;
        let mut customs = Vec::with_capacity(cfg.custom.len());
        for c in &cfg.custom {
            if customs.iter().any(|d: &Detector| d.id == c.name) {
                return Err(Error::InvalidCustom {
                    name: c.name.clone(),
                    reason: "duplicate name".into(),
                });
            }
            customs.push(Detector::custom(
                &c.name,
                &c.pattern,
                c.validator.as_deref(),
            )?);
        }
        let mut wanted: Vec<String> = Vec::new();
        for e in &cfg.entities {
            let id = if e == "ssn" { "us_ssn" } else { e.as_str() };
            if id == "all" {
                wanted.extend(builtin_ids().into_iter().map(str::to_owned));
                wanted.extend(customs.iter().map(|d| d.id.clone()));
            } else if builtin_ids().contains(&id) || customs.iter().any(|d| d.id == id) {
                wanted.push(id.to_owned());
            } else {
                return Err(Error::UnknownEntity(e.clone()));
            }
        }
        // Built-ins in table (priority) order, then customs in config order.
        let mut detectors: Vec<Detector> = builtin_ids()
            .into_iter()
            .filter(|id| wanted.iter().any(|w| w == id))
            .map(|id| Detector::builtin(id).expect("built-in"))
            .collect();
        detectors.extend(customs.into_iter().filter(|d| wanted.contains(&d.id)));
        let rules = Arc::new(if cfg.phone_regions.is_empty() {
            PhoneRules::new(DEFAULT_PHONE_REGIONS)?
        } else {
            PhoneRules::new(&cfg.phone_regions)?
        });
        for d in detectors.iter_mut().filter(|d| d.id == "phone") {
            d.phone = Some(Arc::clone(&rules));
        }
        let pats: Vec<&str> = detectors.iter().map(|d| d.pattern.as_str()).collect();
        let probe = DFA::builder()
            // `All`: every pattern stays alive until it cannot match; leftmost-first would drop a
            // lower-priority pattern once a higher one matched (ghp_… inside a longer email).
            .configure(
                DFA::config()
                    .cache_capacity(4 << 20)
                    .match_kind(regex_automata::MatchKind::All),
            )
            .build_many(&pats)
            .map_err(|e| Error::InvalidCustom {
                name: "(all)".into(),
                reason: e.to_string(),
            })?;
        let anchored = detectors.iter().any(|d| d.anchor.is_some());
        Ok(Masker {
            anchored,
            detectors,
            style,
            paths: Paths::new(&cfg.paths)?,
            probe,
        })
    }

    /// Ids of the enabled detectors, in priority order.
    pub fn entities(&self) -> impl Iterator<Item = &str> {
        self.detectors.iter().map(|d| d.id.as_str())
    }

    /// The compiled JSONPath expressions.
    #[must_use]
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    pub(crate) fn counts(&self, raw: &[u64]) -> Counts {
        self.detectors
            .iter()
            .zip(raw)
            .filter(|(_, &n)| n > 0)
            .map(|(d, &n)| (d.id.clone(), n))
            .collect()
    }

    /// Mask a whole text. Returns the masked text and the findings, spans in the original.
    #[must_use]
    pub fn mask_text(&self, text: &str) -> (String, Vec<Finding<'_>>) {
        let mut hits = Vec::new();
        let out = self.mask_into(text, &mut hits);
        let findings = hits
            .into_iter()
            .map(|h: Hit| Finding {
                entity: &self.detectors[h.det].id,
                start: h.start,
                end: h.end,
            })
            .collect();
        (out, findings)
    }

    /// [`Masker::mask_text`] with detector indexes instead of ids (for the Python binding).
    #[cfg(feature = "python")]
    pub(crate) fn mask_text_hits(&self, text: &str) -> (String, Vec<Hit>) {
        let mut hits = Vec::new();
        let out = self.mask_into(text, &mut hits);
        (out, hits)
    }

    fn mask_into(&self, text: &str, hits: &mut Vec<Hit>) -> String {
        let mut core = Core::new(self);
        let mut out = String::with_capacity(text.len() + 16);
        // Whole input at once: `finish` releases everything and cannot hit the hold cap.
        core.push_final(self, text, &mut out, Some(hits));
        out
    }

    /// Mask the string values selected by the paths in a JSON body. The rest of the document
    /// is kept (key order preserved); if nothing is selected or changed the body is returned
    /// byte for byte. A selected value that holds JSON itself (first non-whitespace char `{`
    /// or `[`, as tool-call arguments do) is masked string by string, as
    /// [`Masker::mask_json_strings`] does, so it stays valid JSON.
    ///
    /// # Errors
    /// [`Error::InvalidUtf8`] or [`Error::InvalidJson`]; messages never echo the content.
    pub fn mask_json(&self, body: &[u8]) -> Result<(Vec<u8>, Counts)> {
        let (out, counts, _) = self.mask_json_with_selection(body)?;
        Ok((out, counts))
    }

    /// [`Masker::mask_json`], and whether the paths selected a non-empty string that does not
    /// hold JSON: text the masker read, so a caller knows the paths fit the body even when
    /// nothing in it was found.
    ///
    /// # Errors
    /// As [`Masker::mask_json`].
    pub fn mask_json_with_selection(&self, body: &[u8]) -> Result<(Vec<u8>, Counts, bool)> {
        // serde_json reads only UTF-8 (strings are checked, the rest must be ASCII), so the
        // text is checked on its own only to name what was wrong with it.
        let mut doc: Value = match serde_json::from_slice(body) {
            Ok(doc) => doc,
            Err(e) => {
                std::str::from_utf8(body)?;
                return Err(e.into());
            }
        };
        let mut counts = Counts::new();
        let mut changed = false;
        let mut text_selected = false;
        for loc in self.paths.locate(&doc) {
            if let Some(Value::String(s)) = get_mut(&mut doc, &loc) {
                let (masked, found) = if holds_json(s) {
                    self.json_strings(s)
                } else {
                    text_selected |= !s.is_empty();
                    let mut hits = Vec::new();
                    let masked = self.mask_into(s, &mut hits);
                    let mut found = vec![0; self.detectors.len()];
                    for h in &hits {
                        found[h.det] += 1;
                    }
                    (masked, found)
                };
                for (id, n) in self.counts(&found) {
                    *counts.entry(id).or_insert(0) += n;
                }
                if found.iter().any(|&n| n > 0) && masked != *s {
                    *s = masked;
                    changed = true;
                }
            }
        }
        if !changed {
            return Ok((body.to_vec(), counts, text_selected));
        }
        Ok((serde_json::to_vec(&doc)?, counts, text_selected))
    }

    fn json_strings(&self, text: &str) -> (String, Vec<u64>) {
        let mut json = JsonCore::new(self);
        let mut out = String::with_capacity(text.len() + 16);
        // Whole input at once: nothing is held, so neither call can hit the hold cap.
        let _ = json.push(self, text, &mut out, None);
        let _ = json.finish(self, &mut out, None);
        (out, json.counts())
    }

    /// Mask every string (member names and values) of a JSON text, decoded first and
    /// re-encoded after; the bytes outside strings are kept. Valid JSON in, valid JSON out;
    /// other text only has its double-quoted parts masked. Paths are not consulted.
    #[must_use]
    pub fn mask_json_strings(&self, text: &str) -> (String, Counts) {
        let (out, found) = self.json_strings(text);
        (out, self.counts(&found))
    }

    /// A streaming masker for JSON text ([`Masker::mask_json_strings`] chunk by chunk).
    #[must_use]
    pub fn json_stream(self: &Arc<Self>) -> JsonStream {
        JsonStream::new(Arc::clone(self))
    }

    /// A streaming masker for plain text.
    #[must_use]
    pub fn text_stream(self: &Arc<Self>) -> TextStream {
        TextStream::new(Arc::clone(self))
    }

    /// A streaming masker for a `text/event-stream` body.
    #[must_use]
    pub fn sse_stream(self: &Arc<Self>) -> SseStream {
        SseStream::new(Arc::clone(self))
    }
}
