//! Phone numbers validated against libphonenumber's per-region metadata (the `phonenumber`
//! crate's copy of Google's database; no country tables of our own).
//!
//! A candidate (digit groups with spaces, `.`, `-`, `/`, parentheses, a leading `+` or `(`,
//! an optional extension) is accepted whole or not at all:
//! - `+` or `00` first: international. The country calling code picks the regions; the rest
//!   (a `(0)` trunk digit dropped) must fully match one region's general number pattern and
//!   possible lengths.
//! - otherwise: national, tried in each configured region: the region's national prefix
//!   (`0`, `1`) stripped when present; without it only where the metadata says the prefix is
//!   optional (or the region has none).
//! - a bare digit run (no separator, no `+`, no parenthesis) only counts after a context word
//!   (`phone`, `tel`, `call`, `Telefon`, …) in the [`CONTEXT_BEFORE`] bytes before it, so
//!   order numbers and epoch times stay.
//!
//! Dotted runs of short groups (versions, addresses), date and SSN shapes are never phones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use phonenumber::metadata::DATABASE;
use regex::Regex;

use crate::error::{Error, Result};
use crate::validators::context_word_before;

/// Regions tried for numbers without a country code, by default.
pub const DEFAULT_PHONE_REGIONS: &[&str] =
    &["US", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "IN", "JP"];

/// How far before a bare digit run a context word may end, in bytes.
pub const CONTEXT_BEFORE: usize = 40;

/// Words that make a bare digit run a phone number (matched case-insensitively as
/// substrings of the text just before it).
static CONTEXT_WORDS: &[&str] = &[
    "phone",
    "tel",
    "call",
    "mobile",
    "mob.",
    "cell",
    "fax",
    "whatsapp",
    "sms",
    "contact",
    "telefon",
    "handy",
    "mobil",
    "rufnummer",
    "téléphone",
    "portable",
    "teléfono",
    "móvil",
    "celular",
    "telefone",
    "telefono",
    "cellulare",
    "numero",
    "número",
    "nummer",
    "電話",
    "携帯",
    "फ़ोन",
    "फोन",
];

/// One region's rules from the metadata.
#[derive(Debug)]
struct Region {
    national_prefix: Option<String>,
    prefix_optional: bool,
    /// The general national-number pattern, anchored at both ends.
    general: Regex,
    lengths: Vec<u16>,
    /// Lengths of fixed-line and mobile numbers (the general list is often empty).
    possible: Vec<u16>,
}

impl Region {
    fn load(meta: &phonenumber::metadata::Metadata) -> Option<Region> {
        let general = meta.descriptors().general();
        let pattern = format!("(?x)^(?:{})$", general.national_number().as_str());
        Some(Region {
            national_prefix: meta.national_prefix().map(str::to_owned),
            prefix_optional: meta.national_prefix().is_none()
                || meta
                    .formats()
                    .iter()
                    .any(phonenumber::metadata::Format::is_national_prefix_optional),
            general: Regex::new(&pattern).ok()?,
            lengths: general.possible_length().to_vec(),
            possible: [meta.descriptors().fixed_line(), meta.descriptors().mobile()]
                .into_iter()
                .flatten()
                .flat_map(|d| d.possible_length().iter().copied())
                .chain(general.possible_length().iter().copied())
                .collect(),
        })
    }

    fn matches(&self, national: &str) -> bool {
        let n = u16::try_from(national.len()).unwrap_or(u16::MAX);
        (self.lengths.is_empty() || self.lengths.contains(&n)) && self.general.is_match(national)
    }

    /// A possible length for the region (the metadata's length check alone).
    fn possible(&self, national: &str) -> bool {
        u16::try_from(national.len()).is_ok_and(|n| self.possible.contains(&n))
    }

    fn matches_national(&self, digits: &str) -> bool {
        match self.national_prefix.as_deref() {
            Some(p) if digits.starts_with(p) => {
                let rest = &digits[p.len()..];
                // Written with the national prefix, a possible length is enough: that is
                // how numbers are written, and libphonenumber's own matcher is as lenient.
                self.matches(rest)
                    || (self.prefix_optional && self.matches(digits))
                    || self.possible(rest)
            }
            Some(_) => self.prefix_optional && self.matches(digits),
            None => self.matches(digits),
        }
    }
}

/// Regions by country calling code, loaded on first use and kept.
fn regions_for_code(code: u16) -> Arc<[Region]> {
    static BY_CODE: OnceLock<Mutex<HashMap<u16, Arc<[Region]>>>> = OnceLock::new();
    let map = BY_CODE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Arc::clone(map.entry(code).or_insert_with(|| {
        DATABASE
            .by_code(&code)
            .unwrap_or_default()
            .into_iter()
            .filter_map(Region::load)
            .collect()
    }))
}

/// The phone rules of one masker: the regions tried for national numbers.
#[derive(Debug)]
pub(crate) struct PhoneRules {
    national: Vec<Region>,
}

impl PhoneRules {
    /// Rules for these region ids (ISO 3166 alpha-2, as in the metadata).
    ///
    /// # Errors
    /// [`Error::UnknownPhoneRegion`] for an id the metadata does not have.
    pub(crate) fn new<S: AsRef<str>>(regions: &[S]) -> Result<PhoneRules> {
        let mut national = Vec::new();
        for r in regions {
            let id = r.as_ref().to_ascii_uppercase();
            let region = DATABASE
                .by_id(id.as_str())
                .and_then(Region::load)
                .ok_or_else(|| Error::UnknownPhoneRegion(r.as_ref().to_owned()))?;
            national.push(region);
        }
        Ok(PhoneRules { national })
    }

    /// Accept the candidate `hay[s..e]` whole (`Some(e)`) or not at all.
    pub(crate) fn check(&self, hay: &str, s: usize, e: usize) -> Option<usize> {
        let m = &hay[s..e];
        // The extension is not part of the number's digits.
        let number = m
            .find(['x', '#', 'e'])
            .map_or(m, |i| &m[..i])
            .trim_end_matches([' ', '.']);
        let mut digits = String::with_capacity(number.len());
        let mut groups: Vec<(usize, u8)> = Vec::new(); // (digit count, separator before)
        let mut sep = 0u8;
        let mut parens = false;
        for b in number.bytes() {
            if b.is_ascii_digit() {
                digits.push(char::from(b));
                match groups.last_mut() {
                    Some(g) if sep == 0 => g.0 += 1,
                    _ => groups.push((1, sep)),
                }
                sep = 0;
            } else {
                parens |= b == b'(' || b == b')';
                if sep == 0 || b != b' ' {
                    sep = b;
                }
            }
        }
        let plus = number.starts_with('+');
        if not_a_phone_shape(&groups) {
            return None;
        }
        let bare = groups.len() == 1 && !plus && !parens;
        if bare && !context_word_before(hay, s, CONTEXT_WORDS) {
            return None;
        }
        let all = digits.as_str();
        let (intl, digits) = if plus {
            (true, all)
        } else if let Some(rest) = all.strip_prefix("00") {
            (true, rest)
        } else {
            (false, all)
        };
        if !(7..=15).contains(&digits.len()) {
            return None;
        }
        let national = |d: &str| self.national.iter().any(|r| r.matches_national(d));
        let ok = if intl {
            (1..=3).find_map(|n| {
                let code: u16 = digits.get(..n)?.parse().ok()?;
                let regions = regions_for_code(code);
                (!regions.is_empty()).then(|| {
                    let national = &digits[n..];
                    let trunk = national.strip_prefix('0');
                    // After a country code a possible length is enough (as for a number
                    // with its national prefix): the `+`/`00` says it is a phone number.
                    regions.iter().any(|r| {
                        r.matches(national)
                            || trunk.is_some_and(|t| r.matches(t))
                            || r.possible(national)
                            || trunk.is_some_and(|t| r.possible(t))
                    })
                })
            }) == Some(true)
                // `00…` without a known country code after it: a national number whose
                // area code starts with 0, as written with its trunk prefix.
                || (!plus && national(all))
        } else {
            national(digits)
        };
        ok.then_some(e)
    }
}

/// Versions and addresses (only `.` between groups of at most 3 digits), dates
/// (`2024-03-15`, `15.03.2024`, `03/15/2024`), SSN shapes and amounts are never phone numbers.
fn not_a_phone_shape(groups: &[(usize, u8)]) -> bool {
    let dotted = groups.len() >= 3
        && groups[1..].iter().all(|&(_, s)| s == b'.')
        && groups.iter().all(|&(n, _)| n <= 3);
    let lens: Vec<usize> = groups.iter().map(|g| g.0).collect();
    let date_seps = groups[1..]
        .iter()
        .all(|&(_, s)| matches!(s, b'-' | b'/' | b'.'));
    let date = date_seps
        && groups.len() == 3
        && (lens == [4, 2, 2] || (lens[0] <= 2 && lens[1] <= 2 && lens[2] == 4));
    // `123-45-6789`: an SSN's shape (a failed SSN check must not become a phone).
    let ssn = lens == [3, 2, 4];
    // `34284.76`: an amount.
    let amount = groups.len() == 2 && matches!(groups[1].1, b'.' | b',') && groups[1].0 <= 2;
    dotted || date || ssn || amount
}

#[cfg(test)]
mod tests {
    use crate::{Config, Masker};

    fn phones(text: &str) -> Vec<&str> {
        let m = Masker::new(&Config {
            entities: vec!["phone".into()],
            ..Config::default()
        })
        .unwrap();
        let (_, f) = m.mask_text(text);
        f.iter().map(|f| &text[f.start..f.end]).collect()
    }

    #[test]
    fn national_and_international_formats_are_whole_numbers() {
        for p in [
            "030 12345678",
            "+49 (0) 7574 399715",
            "+44(0)20 7946 0958",
            "0049 30 12345678",
            "(415) 555-0132",
            "+1-415-555-0132",
            "+91 98765 43210",
            "98765 43210",
            "090-1234-5678",
            "(11) 91234-5678",
            "06 12 34 56 78",
            "+14155550132",
            "020 7946 0958",
            "+33 1 42 68 53 00",
            "612 34 56 78",
            "06-12345678",
            "339 123 4567",
        ] {
            assert_eq!(phones(&format!("ring {p} now")), vec![p], "{p}");
        }
    }

    #[test]
    fn unicode_separators_and_format_chars_inside_numbers() {
        for p in [
            "+49\u{a0}30\u{a0}12345678",
            "030\u{202f}12345678",
            "415\u{2013}555\u{2013}0132",
            "030\u{2011}12345678",
            "030 1234\u{200b}5678",
            "0\u{200d}30\u{ad} 1234\u{2060}5678",
            "(415)\u{2007}555\u{2010}0132",
            "\u{ff10}\u{ff13}\u{ff10} 12345678",
        ] {
            assert_eq!(phones(&format!("ring {p} now")), vec![p], "{p:?}");
        }
        // Zero-width chars are invisible: `030<ZWSP>1234<ZWSP>5678` reads as a bare run,
        // a phone only next to a context word.
        let bare = "030\u{200b}1234\u{200b}5678";
        assert!(phones(&format!("order {bare} now")).is_empty());
        assert_eq!(phones(&format!("Tel {bare} now")), vec![bare]);
    }

    /// Written with a country code or a national prefix, a possible length is enough (the
    /// metadata's per-type patterns reject these digits); `00` + no country code is national.
    #[test]
    fn prefixed_numbers_pass_on_a_possible_length() {
        for p in [
            "+31(0)04-7276396",
            "+3103-8660954",
            "+44(0)292018193",
            "+4429 2018399",
            "(00327) 96810",
            "00765 474326",
        ] {
            assert_eq!(phones(&format!("ring {p} now")), vec![p], "{p}");
        }
        assert_eq!(phones("Call me on 0037004061."), vec!["0037004061"]);
        assert!(phones("order 0037004061 shipped").is_empty());
    }

    #[test]
    fn bare_runs_need_a_context_word() {
        assert_eq!(phones("Tel: 5103737504"), vec!["5103737504"]);
        assert_eq!(phones("Telefon 03012345678"), vec!["03012345678"]);
        assert!(phones("order 5103737504 shipped").is_empty());
        assert!(phones("ts 1700000000000").is_empty());
    }

    #[test]
    fn look_alikes_are_not_phones() {
        for t in [
            "v 192.168.10.254",
            "on 2024-03-15",
            "on 15.03.2024",
            "1.2.3.4.5",
            "12 34",
        ] {
            assert!(phones(t).is_empty(), "{t}");
        }
    }

    #[test]
    fn unknown_region_is_an_error() {
        let e = Masker::new(&Config {
            entities: vec!["phone".into()],
            phone_regions: vec!["XX".into()],
            ..Config::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("XX"));
    }
}
