//! Detectors: an id, a linear-time regex, a validator in code, and for open-ended entities a
//! run automaton. Built-ins live in [`builtin`]; custom ones come from config.

mod builtin;
pub(crate) mod prefilter;
pub(crate) mod run;

use regex_automata::{meta, Anchored, Input};

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::phone::PhoneRules;
use crate::validators::Validator;
use prefilter::{Anchor, Anchors};
use run::RunKind;

/// Longest match any bounded pattern (built-in or custom) may produce, in bytes. The stream
/// hold-back is derived from it: see [`crate::HOLD_BACK`].
pub const MAX_ENTITY_LEN: usize = 248;

/// Ids of every built-in detector, in priority order.
#[must_use]
pub fn builtin_ids() -> Vec<&'static str> {
    builtin::BUILTINS.iter().map(|b| b.id).collect()
}

/// A compiled detector.
#[derive(Debug, Clone)]
pub(crate) struct Detector {
    pub id: String,
    /// Upper-case id used in tags: `[EMAIL]`.
    pub tag: String,
    /// The pattern text (the stream probe DFA is built from all of them).
    pub pattern: String,
    /// The compiled pattern; the literal prefilter is on only for detectors without an anchor.
    pub re: meta::Regex,
    pub validator: Validator,
    pub run: Option<RunKind>,
    pub partial: bool,
    /// Built-ins with a character-class start: the prefilter anchor (see [`prefilter`]).
    pub anchor: Option<Anchor>,
    /// Longest possible match, in bytes (bounded for every detector).
    pub max_len: usize,
    /// `phone`: the regions its numbers are validated against.
    pub phone: Option<Arc<PhoneRules>>,
}

fn compile(
    id: &str,
    pattern: &str,
    prefilter: bool,
) -> Result<(meta::Regex, Option<usize>, usize)> {
    let hir = regex_syntax::parse(pattern).map_err(|e| Error::InvalidCustom {
        name: id.to_owned(),
        reason: format!("regex does not parse: {}", first_line(&e.to_string())),
    })?;
    let props = hir.properties();
    let max = props.maximum_len();
    let min = props.minimum_len().unwrap_or(0);
    // Configured as `regex::Regex` is (leftmost-first, UTF-8), so ranges can bound a search.
    let re = meta::Builder::new()
        .configure(
            meta::Config::new()
                .match_kind(regex_automata::MatchKind::LeftmostFirst)
                .utf8_empty(true)
                .nfa_size_limit(Some(1 << 24))
                .hybrid_cache_capacity(1 << 24)
                .auto_prefilter(prefilter),
        )
        .syntax(regex_automata::util::syntax::Config::new().utf8(true))
        .build(pattern)
        .map_err(|e| Error::InvalidCustom {
            name: id.to_owned(),
            reason: format!("regex does not compile: {}", first_line(&e.to_string())),
        })?;
    Ok((re, max, min))
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or("").trim().to_owned()
}

impl Detector {
    /// Compile a built-in by id.
    pub(crate) fn builtin(id: &str) -> Option<Detector> {
        let b = builtin::BUILTINS.iter().find(|b| b.id == id)?;
        // Anchored detectors search a few bytes per window: a literal prefilter would cost
        // more than it saves there.
        let (re, max, _) =
            compile(b.id, b.pattern, b.anchor.is_none()).expect("built-in patterns compile");
        debug_assert!(
            max.is_some_and(|m| m <= MAX_ENTITY_LEN),
            "{} too long",
            b.id
        );
        Some(Detector {
            id: b.id.to_owned(),
            tag: b.id.to_ascii_uppercase(),
            pattern: b.pattern.to_owned(),
            re,
            validator: b.validator,
            run: b.run,
            partial: b.partial,
            anchor: b.anchor,
            max_len: max.unwrap_or(MAX_ENTITY_LEN),
            phone: None,
        })
    }

    /// Compile a custom detector. Its pattern must not match the empty string and its
    /// longest match must be bounded by [`MAX_ENTITY_LEN`] (that is what keeps the stream
    /// hold-back bounded).
    pub(crate) fn custom(name: &str, pattern: &str, validator: Option<&str>) -> Result<Detector> {
        let bad = |reason: &str| Error::InvalidCustom {
            name: name.to_owned(),
            reason: reason.to_owned(),
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(bad(
                "name must be non-empty lower-case letters, digits and '_'",
            ));
        }
        if name == "all" || name == "ssn" || builtin::BUILTINS.iter().any(|b| b.id == name) {
            return Err(bad("name clashes with a built-in detector"));
        }
        let validator = match validator {
            None => Validator::None,
            Some("luhn") => Validator::Luhn,
            Some("mod97") => Validator::Mod97,
            Some(v) => {
                return Err(Error::UnknownValidator {
                    name: name.to_owned(),
                    validator: v.to_owned(),
                })
            }
        };
        let (re, max, min) = compile(name, pattern, true)?;
        if min == 0 {
            return Err(bad("pattern can match the empty string"));
        }
        let max_len = match max {
            Some(m) if m <= MAX_ENTITY_LEN => m,
            _ => {
                return Err(bad(&format!(
                    "pattern may match more than {MAX_ENTITY_LEN} bytes; bound its repetitions (e.g. {{1,64}} instead of +)"
                )))
            }
        };
        Ok(Detector {
            id: name.to_owned(),
            tag: name.to_ascii_uppercase(),
            pattern: pattern.to_owned(),
            re,
            validator,
            run: None,
            partial: validator != Validator::None,
            anchor: None,
            max_len,
            phone: None,
        })
    }

    /// Validate the match `hay[s..e]`: `Some((start, end))` accepts the entity at that span
    /// (inside the match).
    pub(crate) fn check(&self, hay: &str, s: usize, e: usize) -> Option<(usize, usize)> {
        let (s, e) = self.validator.span(hay, s, e)?;
        match &self.phone {
            Some(rules) => rules.check(hay, s, e).map(|e| (s, e)),
            None => Some((s, e)),
        }
    }

    /// Every match starting in `hay[from..upto)`, leftmost-first and non-overlapping (each
    /// search resumes at the previous match's end), as one pass of a plain search over the
    /// whole text gives them. Returns where the next search resumes: the end of the last
    /// match, or `upto`. Anchored detectors search only the windows `anchors` allow; `win` is
    /// scratch space.
    ///
    /// A match starting before `upto` ends before `upto + max_len`, so no search reads
    /// further (look-around still sees the bytes beyond): a call costs at most
    /// `upto - from + max_len` bytes per search, whatever follows.
    pub(crate) fn find_each(
        &self,
        hay: &str,
        from: usize,
        upto: usize,
        anchors: &Anchors,
        win: &mut Vec<(usize, usize)>,
        mut f: impl FnMut(usize, usize),
    ) -> usize {
        let mut pos = from;
        let Some(anchor) = self.anchor else {
            let cut = (upto + self.max_len).min(hay.len());
            while pos < upto {
                match self.re.search(&Input::new(hay).range(pos..cut)) {
                    Some(mt) if mt.start() < upto => {
                        f(mt.start(), mt.end());
                        pos = mt.end().max(mt.start() + 1);
                    }
                    _ => break,
                }
            }
            return pos.max(upto);
        };
        anchors.windows(anchor, hay.as_bytes(), from, win);
        for &(a, b) in win.iter() {
            if a >= upto {
                break;
            }
            let b = b.min(upto);
            // Every match starting before `b` ends before `cut`; the search cannot see past
            // `cut` (look-around still does), so a match it finds starting at `b` or later may
            // be cut short: it is dropped here and found in a later window (see `prefilter`).
            let cut = (b + self.max_len).min(hay.len());
            let mut p = a.max(pos);
            while p < b {
                let input = Input::new(hay).range(p..cut);
                let (s, e) = if b - p == 1 {
                    // One possible start: an anchored forward search gives the end.
                    match self.re.search_half(&input.anchored(Anchored::Yes)) {
                        Some(hm) => (p, hm.offset()),
                        None => break,
                    }
                } else {
                    match self.re.search(&input) {
                        Some(mt) if mt.start() < b => (mt.start(), mt.end()),
                        _ => break,
                    }
                };
                f(s, e);
                pos = e.max(s + 1);
                p = pos;
            }
        }
        pos.max(upto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_compile_and_are_bounded() {
        for b in builtin::BUILTINS {
            let (_, max, min) = compile(b.id, b.pattern, true).unwrap();
            assert!(min > 0, "{}", b.id);
            assert!(max.unwrap() <= MAX_ENTITY_LEN, "{} max {:?}", b.id, max);
        }
    }

    /// Every match of `d` in `hay[from..]` by one plain `find_at` pass.
    fn one_pass(re: &regex::Regex, hay: &str, from: usize) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        let mut pos = from;
        while let Some(m) = re.find_at(hay, pos) {
            v.push((m.start(), m.end()));
            pos = m.end().max(m.start() + 1);
        }
        v
    }

    fn windowed(d: &Detector, hay: &str, from: usize) -> Vec<(usize, usize)> {
        // In windows of a few bytes, as the engine searches, to cover resuming too.
        let mut anchors = Anchors::default();
        let mut v = Vec::new();
        let (mut pos, mut upto) = (from, from);
        while upto < hay.len() {
            upto = (upto + 7).min(hay.len());
            while !hay.is_char_boundary(upto) {
                upto += 1;
            }
            anchors.scan(hay.as_bytes(), pos, (upto + MAX_ENTITY_LEN).min(hay.len()));
            pos = d.find_each(hay, pos, upto, &anchors, &mut Vec::new(), |s, e| {
                v.push((s, e));
            });
        }
        v
    }

    /// The anchored built-ins, each with its pattern as a plain `regex::Regex`.
    fn anchored() -> &'static [(Detector, regex::Regex)] {
        static DETS: std::sync::OnceLock<Vec<(Detector, regex::Regex)>> =
            std::sync::OnceLock::new();
        DETS.get_or_init(|| {
            builtin::BUILTINS
                .iter()
                .filter(|b| b.anchor.is_some())
                .map(|b| {
                    let re = regex::Regex::new(b.pattern).unwrap();
                    (Detector::builtin(b.id).unwrap(), re)
                })
                .collect()
        })
    }

    /// Entity samples, near misses and the bytes the anchors and patterns care about.
    const PIECES: &[&str] = &[
        "bob.smith+tag@mail.example.co.uk",
        "a@b.cd",
        "x@-y.com",
        "@",
        "@@",
        ".@a.bc",
        "4111 1111 1111 1111",
        "378282246310005",
        "4111-111111-11111",
        "1234 5678",
        "123-45-6789",
        "123 45 6789",
        "(415) 555-0132",
        "+1-415-555-0132x123",
        "001 415 555 0132",
        "21-415-555-0132",
        "1(415)555-0132",
        "+44 20 7946 0958",
        "+14155550132",
        "+1 (20) 7",
        "DE89 3704 0044 0532 0130 00",
        "GB82WEST12345698765432",
        "XGB82",
        "192.168.10.254",
        "1.2.3.4.5",
        "2001:db8:85a3::8a2e:370:7334",
        "fe80::1",
        "::",
        ":",
        "::ffff:1.2.3.4",
        "00:1A:2B:3C:4D:5E",
        "00-1a-2b-3c-4d-5e",
        "001a.2b3c.4d5e",
        "dead.beef.cafe",
        "ab:cd-",
        "0",
        "1",
        "00",
        "001",
        "12",
        "+",
        "(",
        ")",
        " ",
        "-",
        ".",
        "x",
        "_",
        "A",
        "Z",
        "a",
        "f",
        "é",
        "日本",
        "\n",
        "word ",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 10_000, ..proptest::prelude::ProptestConfig::default()
        })]

        /// The prefilter windows find exactly what one pass over the text finds.
        #[test]
        fn windows_find_what_one_pass_finds(
            parts in proptest::collection::vec(proptest::sample::select(PIECES), 0..24),
            from_raw in 0usize..64,
        ) {
            let hay = parts.concat();
            let mut from = from_raw % (hay.len() + 1);
            while !hay.is_char_boundary(from) {
                from -= 1;
            }
            for (d, re) in anchored() {
                proptest::prop_assert_eq!(
                    windowed(d, &hay, from), one_pass(re, &hay, from), "{} in {:?} from {}", d.id, hay, from
                );
            }
        }
    }

    #[test]
    fn custom_rejects_unbounded() {
        assert!(Detector::custom("emp", r"EMP-\d+", None).is_err());
        assert!(Detector::custom("emp", r"EMP-\d{6}", Some("luhn")).is_ok());
        assert!(Detector::custom("emp", r"EMP-\d{6}", Some("crc")).is_err());
        assert!(Detector::custom("email", r"x{3}", None).is_err());
    }
}
