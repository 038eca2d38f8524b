//! Detectors: an id, a linear-time regex, a validator in code, and for open-ended entities a
//! run automaton. Built-ins live in [`builtin`]; custom ones come from config.

mod builtin;
pub(crate) mod run;

use regex::Regex;

use crate::error::{Error, Result};
use crate::validators::Validator;
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
    pub regex: Regex,
    pub validator: Validator,
    pub run: Option<RunKind>,
    pub partial: bool,
}

fn compile(id: &str, pattern: &str) -> Result<(Regex, Option<usize>, usize)> {
    let hir = regex_syntax::parse(pattern).map_err(|e| Error::InvalidCustom {
        name: id.to_owned(),
        reason: format!("regex does not parse: {}", first_line(&e.to_string())),
    })?;
    let props = hir.properties();
    let max = props.maximum_len();
    let min = props.minimum_len().unwrap_or(0);
    let regex = regex::RegexBuilder::new(pattern)
        .size_limit(1 << 24)
        .dfa_size_limit(1 << 24)
        .build()
        .map_err(|e| Error::InvalidCustom {
            name: id.to_owned(),
            reason: format!("regex does not compile: {}", first_line(&e.to_string())),
        })?;
    Ok((regex, max, min))
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or("").trim().to_owned()
}

impl Detector {
    /// Compile a built-in by id.
    pub(crate) fn builtin(id: &str) -> Option<Detector> {
        let b = builtin::BUILTINS.iter().find(|b| b.id == id)?;
        let (regex, max, _) = compile(b.id, b.pattern).expect("built-in patterns compile");
        debug_assert!(
            max.is_some_and(|m| m <= MAX_ENTITY_LEN),
            "{} too long",
            b.id
        );
        Some(Detector {
            id: b.id.to_owned(),
            tag: b.id.to_ascii_uppercase(),
            regex,
            validator: b.validator,
            run: b.run,
            partial: b.partial,
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
        let (regex, max, min) = compile(name, pattern)?;
        if min == 0 {
            return Err(bad("pattern can match the empty string"));
        }
        match max {
            Some(m) if m <= MAX_ENTITY_LEN => {}
            _ => {
                return Err(bad(&format!(
                    "pattern may match more than {MAX_ENTITY_LEN} bytes; bound its repetitions (e.g. {{1,64}} instead of +)"
                )))
            }
        }
        Ok(Detector {
            id: name.to_owned(),
            tag: name.to_ascii_uppercase(),
            regex,
            validator,
            run: None,
            partial: validator != Validator::None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_compile_and_are_bounded() {
        for b in builtin::BUILTINS {
            let (_, max, min) = compile(b.id, b.pattern).unwrap();
            assert!(min > 0, "{}", b.id);
            assert!(max.unwrap() <= MAX_ENTITY_LEN, "{} max {:?}", b.id, max);
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
