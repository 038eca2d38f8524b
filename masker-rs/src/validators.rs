//! Checks the regexes cannot express (the `regex` crate has no look-around): checksums,
//! number ranges, and the character just before or after a match.
//!
//! Each check sees the whole haystack and the match span, and returns the (possibly
//! shortened) end of the entity, or `None` to reject the candidate.

use std::net::Ipv6Addr;
use std::str::FromStr;

use std::sync::{Mutex, OnceLock};

use aho_corasick::AhoCorasick;

use crate::phone::CONTEXT_BEFORE;

/// A validation step attached to a detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Validator {
    /// Accept every regex match.
    None,
    /// Luhn checksum over the digits (cards; custom `luhn`).
    Luhn,
    /// ISO 7064 mod 97-10 over the alphanumerics (custom `mod97`).
    Mod97,
    /// Credit card: 13-19 digits, one kind of separator, Luhn.
    Card,
    /// IBAN: country length table, then mod 97.
    Iban,
    /// US SSN: same separator twice, area/group/serial rules.
    Ssn,
    /// IPv4: four octets 0-255.
    Ipv4,
    /// IPv6: parses as an address.
    Ipv6,
    /// MAC: one kind of separator.
    Mac,
    /// Phone: not glued to letters or longer numbers (the number: [`crate::phone`]).
    Phone,
    /// Email: domain labels well formed.
    Email,
    /// API key / token: not glued to a longer identifier.
    Token,
    /// OpenAI key that is not an Anthropic key, with a long random-looking segment.
    OpenAi,
    /// Digits glued to nothing, and one of these words in the [`CONTEXT_BEFORE`] bytes
    /// before the match (case-insensitive): ambiguous numbers (passport, account, licence).
    Context(&'static [&'static str]),
    /// The entity is the last `n` bytes of the match (a secret after its key name or key
    /// id), not followed by more base64.
    Tail(usize),
    /// `://user:password@`: the entity is between `://` and `@`.
    UrlCredentials,
    /// Digits glued to no other digits or letters.
    Digits,
}

/// Does one of `words` occur in the [`CONTEXT_BEFORE`] bytes before `s` (ASCII letters
/// case-insensitive; the lists are lower-case)?
pub(crate) fn context_word_before(hay: &str, s: usize, words: &'static [&'static str]) -> bool {
    let from = s.saturating_sub(CONTEXT_BEFORE);
    context_matcher(words).is_match(&hay.as_bytes()[from..s])
}

/// One multi-word automaton per word list, built on first use and kept.
fn context_matcher(words: &'static [&'static str]) -> &'static AhoCorasick {
    // Keyed by content: a `const` list need not have one address.
    type Built = Vec<(&'static [&'static str], &'static AhoCorasick)>;
    static BUILT: OnceLock<Mutex<Built>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(|| Mutex::new(Vec::new()))
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(&(_, ac)) = built.iter().find(|(k, _)| *k == words) {
        return ac;
    }
    let ac: &'static AhoCorasick = Box::leak(Box::new(
        AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(words)
            .expect("context words build"),
    ));
    built.push((words, ac));
    ac
}

fn prev_char(hay: &str, start: usize) -> Option<char> {
    hay[..start].chars().next_back()
}

fn next_char(hay: &str, end: usize) -> Option<char> {
    hay[end..].chars().next()
}

fn is_word(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Luhn checksum over the ASCII digits of `s`.
#[must_use]
pub fn luhn(s: &str) -> bool {
    let mut sum = 0u32;
    let mut n = 0usize;
    for b in s.bytes().rev().filter(u8::is_ascii_digit) {
        let mut d = u32::from(b - b'0');
        if !n.is_multiple_of(2) {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        n += 1;
    }
    n >= 2 && sum.is_multiple_of(10)
}

/// ISO 7064 mod 97-10 over the ASCII alphanumerics of `s`, with the first four moved to the
/// end (the IBAN rule). Letters count as 10..35.
#[must_use]
pub fn mod97(s: &str) -> bool {
    let chars: Vec<u8> = s.bytes().filter(u8::is_ascii_alphanumeric).collect();
    if chars.len() < 5 {
        return false;
    }
    let mut rem = 0u32;
    for &b in chars[4..].iter().chain(&chars[..4]) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            b'a'..=b'z' => u32::from(b - b'a') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// IBAN length per country (ISO 13616 registry).
fn iban_len(cc: &str) -> Option<usize> {
    Some(match cc {
        "NO" => 15,
        "BE" => 16,
        "DK" | "FI" | "FO" | "GL" | "NL" | "SD" => 18,
        "MK" | "SI" => 19,
        "AT" | "BA" | "EE" | "KZ" | "LT" | "LU" | "XK" => 20,
        "CH" | "CR" | "HR" | "LI" | "LV" => 21,
        "BG" | "BH" | "DE" | "GB" | "GE" | "IE" | "ME" | "RS" | "VA" => 22,
        "AE" | "GI" | "IL" | "IQ" | "OM" | "TL" => 23,
        "AD" | "CZ" | "ES" | "LY" | "MD" | "PK" | "RO" | "SA" | "SE" | "SK" | "TN" | "VG" => 24,
        "LC" | "PT" | "ST" => 25,
        "IS" | "TR" => 26,
        "FR" | "GR" | "IT" | "MC" | "MR" | "SM" => 27,
        "AL" | "AZ" | "BY" | "CY" | "DO" | "EG" | "GT" | "HU" | "LB" | "PL" | "SV" => 28,
        "BR" | "PS" | "QA" | "UA" => 29,
        "JO" | "KW" | "MU" => 30,
        "MT" | "SC" => 31,
        "NI" => 32,
        "RU" => 33,
        _ => return None,
    })
}

/// Maestro prefixes that issue 12-digit numbers.
const MAESTRO_12: &[&str] = &[
    "50", "56", "57", "58", "0604", "6304", "639", "6759", "6761", "6762", "6763",
];

fn card(hay: &str, s: usize, e: usize) -> Option<usize> {
    let m = &hay[s..e];
    let digits = m.bytes().filter(u8::is_ascii_digit).count();
    let has_space = m.contains(' ');
    let has_dash = m.contains('-');
    if !(12..=19).contains(&digits) || (has_space && has_dash) || !luhn(m) {
        return None;
    }
    // Card numbers start with 2-6 (Mastercard 2/5, Amex/JCB/Diners 3, Visa 4, Discover/
    // UnionPay 6; plus JCB's 15-digit 1800); 12 digits only with a Maestro prefix. So
    // ISBN-13 (978…), epoch milliseconds (1…) and 12-digit invoice numbers are not cards.
    let d: String = m
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(char::from)
        .collect();
    let iin_ok = if digits == 12 {
        MAESTRO_12.iter().any(|p| d.starts_with(p))
    } else {
        (b'2'..=b'6').contains(&d.as_bytes()[0]) || (digits == 15 && d.starts_with("1800"))
    };
    if !iin_ok {
        return None;
    }
    boundary_digits(hay, s, e)
}

/// Digits-based entities must not be glued to more digits or letters.
fn boundary_digits(hay: &str, s: usize, e: usize) -> Option<usize> {
    let p = prev_char(hay, s);
    let n = next_char(hay, e);
    if is_word(p) || is_word(n) {
        return None;
    }
    // "1234-5678..." glued to a longer digit run through a separator: "12-4111..." is not a card.
    let before = &hay.as_bytes()[..s];
    if before.len() >= 2
        && matches!(p, Some('-' | '.'))
        && before[before.len() - 2].is_ascii_digit()
    {
        return None;
    }
    let after = &hay.as_bytes()[e..];
    if after.len() >= 2 && matches!(n, Some('-' | '.')) && after[1].is_ascii_digit() {
        return None;
    }
    Some(e)
}

fn iban(hay: &str, s: usize, e: usize) -> Option<usize> {
    if is_word(prev_char(hay, s)) {
        return None;
    }
    let m = &hay[s..e];
    let want = iban_len(&m[..2].to_ascii_uppercase())?;
    // Walk to the `want`-th alphanumeric: the regex may have run into a following word.
    let mut count = 0;
    let mut end = None;
    for (i, b) in m.bytes().enumerate() {
        if b.is_ascii_alphanumeric() {
            count += 1;
            if count == want {
                end = Some(s + i + 1);
                break;
            }
        }
    }
    let end = end?;
    if is_word(next_char(hay, end)) || !mod97(&hay[s..end]) {
        return None;
    }
    Some(end)
}

fn ssn(hay: &str, s: usize, e: usize) -> Option<usize> {
    let m = &hay.as_bytes()[s..e];
    // ddd?dd?dddd with the same separator twice
    if m.len() != 11 || m[3] != m[6] {
        return None;
    }
    let area = &hay[s..s + 3];
    let group = &hay[s + 4..s + 6];
    let serial = &hay[s + 7..s + 11];
    if area == "000" || area == "666" || area.starts_with('9') || group == "00" || serial == "0000"
    {
        return None;
    }
    boundary_digits(hay, s, e)
}

fn ipv4(hay: &str, s: usize, e: usize) -> Option<usize> {
    let ok = hay[s..e]
        .split('.')
        .all(|o| o.parse::<u16>().is_ok_and(|v| v <= 255));
    let p = prev_char(hay, s);
    let n = next_char(hay, e);
    if !ok || is_word(p) || is_word(n) || p == Some('.') {
        return None;
    }
    if n == Some('.') && hay[e + 1..].starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some(e)
}

fn ipv6(hay: &str, s: usize, e: usize) -> Option<usize> {
    let m = &hay[s..e];
    let p = prev_char(hay, s);
    let n = next_char(hay, e);
    if is_word(p) || p == Some(':') || is_word(n) || n == Some(':') {
        return None;
    }
    if Ipv6Addr::from_str(m).is_err() {
        return None;
    }
    // "add::" or "dead::beef" in prose/code: want a digit, or a full eight-group form.
    let groups = m.split(':').filter(|g| !g.is_empty()).count();
    if !(m.bytes().any(|b| b.is_ascii_digit()) && (groups >= 2 || m == "::1")) {
        return None;
    }
    Some(e)
}

fn mac(hay: &str, s: usize, e: usize) -> Option<usize> {
    let m = &hay[s..e];
    if m.contains(':') && m.contains('-') {
        return None;
    }
    let p = prev_char(hay, s);
    let n = next_char(hay, e);
    if is_word(p) || is_word(n) || matches!(p, Some(':' | '-')) || matches!(n, Some(':' | '-')) {
        return None;
    }
    Some(e)
}

/// The phone candidate's edges; the number itself is checked in [`crate::phone`].
fn phone(hay: &str, s: usize, e: usize) -> Option<usize> {
    let p = prev_char(hay, s);
    if is_word(p) || matches!(p, Some('+' | '-' | '.')) {
        return None;
    }
    let n = next_char(hay, e);
    if is_word(n) {
        return None;
    }
    if matches!(n, Some('-' | '.')) && hay[e + 1..].starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some(e)
}

fn email(hay: &str, s: usize, e: usize) -> Option<usize> {
    let m = &hay[s..e];
    let at = m.find('@')?;
    let (local, domain) = (&m[..at], &m[at + 1..]);
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return None;
    }
    if domain
        .split('.')
        .any(|l| l.is_empty() || l.starts_with('-') || l.ends_with('-') || l.len() > 63)
    {
        return None;
    }
    // `logo@2x.png`: a retina asset name, not an address.
    let first = domain.split('.').next().unwrap_or("");
    let tld = domain.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    if (first.ends_with(['x', 'X']) && first[..first.len() - 1].bytes().all(|b| b.is_ascii_digit()))
        || FILE_EXTENSIONS.contains(&tld.as_str())
    {
        return None;
    }
    Some(e)
}

/// File extensions that are not top-level domains in practice (`name@host.png` is a file).
const FILE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "css", "js", "ts", "json", "pdf",
    "txt", "yaml", "yml", "toml", "lock", "tar", "gz", "zip", "py", "rs",
];

/// Real OpenAI keys carry a long random segment with a digit; `sk-learn-model-v2` does not.
fn openai(hay: &str, s: usize, e: usize) -> Option<usize> {
    let m = &hay[s..e];
    if m.starts_with("sk-ant-") {
        return None;
    }
    // Random key material, unlike a package name (`sk-learn-model-helpers`): a long segment
    // of letters and digits, or (base64url keys such as `sk-proj-…` can have `-`/`_` every
    // few characters) a long body whose characters change class (upper, lower, digit) as
    // often as random text does: about 3 in 5 neighbours there, rarely 1 in 3 in words.
    let body = &m[3..];
    let random_segment = body.split(['-', '_']).any(|seg| {
        seg.len() >= 16
            && seg.bytes().any(|b| b.is_ascii_digit())
            && seg.bytes().any(|b| b.is_ascii_alphabetic())
    });
    if !random_segment && !random_classes(body) {
        return None;
    }
    token(hay, s, e)
}

/// At least 32 letters and digits, a digit among them, and a change of character class at one
/// in three neighbours or more (`-` and `_` skipped).
fn random_classes(body: &str) -> bool {
    let class = |b: u8| (b.is_ascii_uppercase(), b.is_ascii_lowercase());
    let chars: Vec<u8> = body.bytes().filter(u8::is_ascii_alphanumeric).collect();
    let changes = chars
        .windows(2)
        .filter(|w| class(w[0]) != class(w[1]))
        .count();
    chars.len() >= 32 && chars.iter().any(u8::is_ascii_digit) && changes * 3 >= chars.len()
}

fn token(hay: &str, s: usize, e: usize) -> Option<usize> {
    let p = prev_char(hay, s);
    if is_word(p) || p == Some('-') {
        return None;
    }
    Some(e)
}

impl Validator {
    /// Run the check; `Some((start, end))` accepts the entity at that span (inside the
    /// match).
    pub(crate) fn span(self, hay: &str, s: usize, e: usize) -> Option<(usize, usize)> {
        match self {
            Validator::Context(words) => {
                let e = boundary_digits(hay, s, e)?;
                context_word_before(hay, s, words).then_some((s, e))
            }
            Validator::Tail(n) => {
                let b64 = |c: char| c.is_ascii_alphanumeric() || c == '/' || c == '+';
                (!next_char(hay, e).is_some_and(b64) && e - s >= n).then_some((e - n, e))
            }
            Validator::UrlCredentials => Some((s + 3, e - 1)),
            Validator::Digits => boundary_digits(hay, s, e).map(|e| (s, e)),
            v => v.check(hay, s, e).map(|e| (s, e)),
        }
    }

    /// Run the check; `Some(end)` accepts the candidate ending at `end`.
    pub(crate) fn check(self, hay: &str, s: usize, e: usize) -> Option<usize> {
        match self {
            Validator::Context(_)
            | Validator::Tail(_)
            | Validator::UrlCredentials
            | Validator::Digits => self.span(hay, s, e).map(|(_, e)| e),
            Validator::None => Some(e),
            Validator::Luhn => luhn(&hay[s..e]).then_some(e),
            Validator::Mod97 => mod97(&hay[s..e]).then_some(e),
            Validator::Card => card(hay, s, e),
            Validator::Iban => iban(hay, s, e),
            Validator::Ssn => ssn(hay, s, e),
            Validator::Ipv4 => ipv4(hay, s, e),
            Validator::Ipv6 => ipv6(hay, s, e),
            Validator::Mac => mac(hay, s, e),
            Validator::Phone => phone(hay, s, e),
            Validator::Email => email(hay, s, e),
            Validator::Token => token(hay, s, e),
            Validator::OpenAi => openai(hay, s, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_known() {
        assert!(luhn("4111 1111 1111 1111"));
        assert!(!luhn("4111 1111 1111 1112"));
    }

    #[test]
    fn mod97_known() {
        assert!(mod97("DE89 3704 0044 0532 0130 00"));
        assert!(mod97("GB82WEST12345698765432"));
        assert!(!mod97("GB82WEST12345698765433"));
    }

    #[test]
    fn ssn_rules() {
        assert!(ssn("123-45-6789", 0, 11).is_some());
        for bad in [
            "000-45-6789",
            "666-45-6789",
            "923-45-6789",
            "123-00-6789",
            "123-45-0000",
            "123-45 6789",
        ] {
            assert!(ssn(bad, 0, 11).is_none(), "{bad}");
        }
    }
}
