//! Detection on the normalised view: Unicode evasions (zero-width and format chars, Unicode
//! spaces and dashes, full-width forms, combining marks, NFKC expansions) are masked, the
//! whole original span of an entity is replaced, the text around it is byte for byte the
//! input, and any cut of the input (inside UTF-8 sequences and inside normalised sequences)
//! gives the whole-text output.

use std::sync::Arc;

use masker::{Config, Masker};
use proptest::prelude::*;

fn masker(style: &str) -> Arc<Masker> {
    Arc::new(
        Masker::new(&Config {
            entities: vec!["all".into()],
            style: style.into(),
            hash_key: Some(b"k".to_vec()),
            ..Config::default()
        })
        .unwrap(),
    )
}

/// PII values, their tag, and whether a dash/space inside may be swapped for a Unicode one.
const VALUES: &[(&str, &str)] = &[
    ("bob.smith@mail.example.com", "[EMAIL]"),
    ("4111 1111 1111 1111", "[CREDIT_CARD]"),
    ("4111-1111-1111-1111", "[CREDIT_CARD]"),
    ("378282246310005", "[CREDIT_CARD]"),
    ("123-45-6789", "[US_SSN]"),
    ("123 45 6789", "[US_SSN]"),
    ("(415) 555-0132", "[PHONE]"),
    ("+44 20 7946 0958", "[PHONE]"),
    ("DE89 3704 0044 0532 0130 00", "[IBAN]"),
    ("192.168.10.254", "[IPV4]"),
    ("AKIAIOSFODNN7EXAMPLE", "[AWS_ACCESS_KEY]"),
];

const FORMAT: &[char] = &[
    '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{AD}', '\u{FEFF}',
];
const SPACES: &[char] = &['\u{A0}', '\u{202F}', '\u{2007}', '\u{2009}', '\u{3000}'];
const DASHES: &[char] = &[
    '\u{2010}', '\u{2011}', '\u{2012}', '\u{2013}', '\u{2014}', '\u{2212}',
];

/// Full-width form of a printable ASCII char.
fn wide(c: char) -> char {
    match c {
        '!'..='~' => char::from_u32(c as u32 + 0xFEE0).expect("full-width"),
        c => c,
    }
}

/// The value rewritten by `ops` (one per char: 0 as is, 1 full-width, 2 a format char
/// after it, 3 a Unicode space/dash instead of an ASCII one); format chars only inside.
fn evade(value: &str, ops: &[(u8, usize)]) -> String {
    let chars: Vec<char> = value.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let (op, k) = ops[i % ops.len()];
        match op {
            1 => out.push(wide(c)),
            3 if c == ' ' => out.push(SPACES[k % SPACES.len()]),
            3 if c == '-' => out.push(DASHES[k % DASHES.len()]),
            _ => out.push(c),
        }
        if op == 2 && i + 1 < chars.len() {
            out.push(FORMAT[k % FORMAT.len()]);
        }
    }
    out
}

/// Texts around values: prose, non-ASCII text, combining marks, NFKC expansions.
const AROUND: &[&str] = &[
    " ",
    "mail ",
    " now. ",
    "caf\u{e9} ",
    "cafe\u{301} ",
    "\u{fb01}le \u{338e} \u{bd} ",
    "\u{ff76}\u{ff9e} \u{1100}\u{1161}\u{11a8} ",
    "\u{200b}",
    "\u{a0}",
    "\u{65e5}\u{672c} ",
    "a\u{301}\u{302}\u{303}\u{304}\u{305} ",
    "\u{2014} ",
];

fn cuts(len: usize, raw: &[usize]) -> Vec<usize> {
    let mut c: Vec<usize> = raw.iter().map(|x| x % (len + 1)).collect();
    c.extend([0, len]);
    c.sort_unstable();
    c.dedup();
    c
}

fn streamed(m: &Arc<Masker>, text: &str, cuts: &[usize]) -> String {
    let mut s = m.text_stream();
    let mut out = String::new();
    for w in cuts.windows(2) {
        out.push_str(&s.push(&text.as_bytes()[w[0]..w[1]]).unwrap());
    }
    out.push_str(&s.finish().unwrap());
    out
}

/// The input with each finding's span replaced by its tag: what `tag` output must be.
fn rebuilt(text: &str, findings: &[masker::Finding<'_>]) -> String {
    let mut out = String::new();
    let mut at = 0;
    for f in findings {
        out.push_str(&text[at..f.start]);
        out.push('[');
        out.push_str(&f.entity.to_uppercase());
        out.push(']');
        at = f.end;
    }
    out.push_str(&text[at..]);
    out
}

fn doc_strategy() -> impl Strategy<Value = (String, Vec<&'static str>)> {
    let part = (
        prop::sample::select(AROUND),
        prop::sample::select(VALUES),
        prop::collection::vec((0u8..4, any::<usize>()), 1..8),
    );
    prop::collection::vec(part, 1..5).prop_map(|parts| {
        let mut text = String::new();
        let mut tags = Vec::new();
        for (around, (value, tag), ops) in parts {
            text.push_str(around);
            text.push_str(&evade(value, &ops));
            text.push_str(" ; ");
            tags.push(tag);
        }
        (text, tags)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Every evaded value is masked as its type, the text around it is kept byte for byte,
    /// and random cuts (inside UTF-8 sequences too) give the whole-text output in every style.
    #[test]
    fn evaded_values_are_masked_and_cuts_agree(
        (text, tags) in doc_strategy(),
        raw in prop::collection::vec(any::<usize>(), 0..40),
        style in prop::sample::select(&["tag", "hash", "partial", "redact"][..]),
    ) {
        let m = masker("tag");
        let (whole, findings) = m.mask_text(&text);
        prop_assert_eq!(&whole, &rebuilt(&text, &findings));
        let found: Vec<String> = findings.iter().map(|f| format!("[{}]", f.entity.to_uppercase())).collect();
        prop_assert_eq!(found, tags.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>(), "{:?} -> {:?}", text, whole);
        let m = masker(style);
        let (whole, _) = m.mask_text(&text);
        prop_assert_eq!(streamed(&m, &text, &cuts(text.len(), &raw)), whole);
    }

    /// Random non-ASCII noise (format chars, combining marks, expansions, Hangul jamo) in
    /// any text keeps streams equal to whole-text masking.
    #[test]
    fn noise_anywhere_keeps_chunk_invariance(
        parts in prop::collection::vec(prop::sample::select(&[
            "a", "e", "1", "2", "3", "-", " ", "@", ".", ":", "x@y.co", "4111 1111 1111 1111",
            "123-45-6789", "\u{200b}", "\u{200d}", "\u{ad}", "\u{301}", "\u{327}", "\u{338}",
            "<", "=", "\u{fb01}", "\u{338e}", "\u{bd}", "\u{ff10}", "\u{ff20}", "\u{ff9e}",
            "\u{1100}", "\u{1161}", "\u{11a8}", "\u{2013}", "\u{a0}", "\u{f73}", "\u{32c2}",
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0", "\u{ff0e}", "\u{33c2}",
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN\u{ff21}\u{200b}Bgkq\n-----END PRIVATE KEY-----",
        ][..]), 0..40),
        raw in prop::collection::vec(any::<usize>(), 0..40),
        style in prop::sample::select(&["tag", "hash"][..]),
    ) {
        let text = parts.concat();
        let m = masker(style);
        let (whole, findings) = m.mask_text(&text);
        if style == "tag" {
            prop_assert_eq!(&whole, &rebuilt(&text, &findings));
        }
        prop_assert_eq!(streamed(&m, &text, &cuts(text.len(), &raw)), whole);
    }
}

/// Every single cut of texts full of normalised sequences agrees with whole-text masking.
#[test]
fn every_cut_inside_normalised_sequences() {
    let texts = [
        "mail \u{ff42}\u{ff4f}\u{ff42}\u{ff20}\u{ff45}\u{ff58}.com or bo\u{200b}b@ex\u{ad}ample.com ok",
        "ssn 123\u{2013}45\u{2011}6789, card 4111\u{a0}1111\u{202f}1111\u{2007}1111, cafe\u{301}\u{327}",
        "\u{fb01}\u{338e}\u{bd} eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0\u{33c2}x \u{ff76}\u{ff9e}\u{1100}\u{1161}",
        "a\u{301}\u{302}\u{303}\u{304}\u{305}\u{306}\u{307}\u{308}\u{309}\u{30a}\u{30b}\u{30c}\u{30d}\u{30e}\u{30f}\u{310}\u{311}\u{312}\u{313}\u{314}\u{315}\u{316}\u{317}\u{318}\u{319}\u{31a}\u{31b}\u{31c}\u{31d}\u{31e}\u{31f}\u{320}\u{321}\u{322}x@y.io",
    ];
    for style in ["tag", "hash"] {
        let m = masker(style);
        for text in texts {
            let (whole, _) = m.mask_text(text);
            for cut in 0..=text.len() {
                assert_eq!(
                    streamed(&m, text, &[0, cut, text.len()]),
                    whole,
                    "{style} cut {cut} of {text:?}"
                );
            }
        }
    }
}

/// The leaks the issue lists are gone, with the whole original span replaced.
#[test]
fn listed_evasions_are_masked_whole() {
    let m = masker("tag");
    for (text, want) in [
        ("to \u{ff42}\u{ff4f}\u{ff42}\u{ff20}\u{ff45}\u{ff58}\u{ff41}\u{ff4d}\u{ff50}\u{ff4c}\u{ff45}\u{ff0e}\u{ff43}\u{ff4f}\u{ff4d} now", "to [EMAIL] now"),
        ("to bob\u{200b}@exam\u{200d}ple.com now", "to [EMAIL] now"),
        ("ssn 123\u{200b}-45-67\u{2060}89.", "ssn [US_SSN]."),
        ("ssn 123\u{2013}45\u{2013}6789.", "ssn [US_SSN]."),
        ("ssn \u{ff11}\u{ff12}\u{ff13}-\u{ff14}\u{ff15}-\u{ff16}\u{ff17}\u{ff18}\u{ff19}.", "ssn [US_SSN]."),
        ("card 4111\u{2011}1111\u{2011}1111\u{2011}1111 ok", "card [CREDIT_CARD] ok"),
        ("card 4111\u{200b}1111\u{ad}1111\u{feff}1111 ok", "card [CREDIT_CARD] ok"),
        ("ip ::ffff:171.255.115.22 ok", "ip [IPV6] ok"),
        ("iban de89 3704 0044 0532 0130 00 ok", "iban [IBAN] ok"),
        ("tel +49\u{a0}30\u{a0}12345678 ok", "tel [PHONE] ok"),
        // Format chars at the edges are not part of the entity: kept as they were.
        ("\u{200b}bob@example.com\u{200b} ok", "\u{200b}[EMAIL]\u{200b} ok"),
    ] {
        assert_eq!(m.mask_text(text).0, want, "{text:?}");
    }
}

/// A run of format chars longer than the dropped-run bound stays in the view, so a stream
/// releases it instead of holding it.
#[test]
fn long_format_runs_are_released() {
    let m = masker("tag");
    let mut s = m.text_stream();
    let mut out = s.push(b"x@y").unwrap();
    for _ in 0..10_000 {
        out.push_str(&s.push("\u{200b}".as_bytes()).unwrap());
    }
    assert!(out.len() > 29_000, "held {} bytes", 30_003 - out.len());
    out.push_str(&s.finish().unwrap());
    let text = format!("x@y{}", "\u{200b}".repeat(10_000));
    assert_eq!(out, m.mask_text(&text).0);
}
