//! Chunk invariance: for any cut of the input, stream output == whole-input masking.

use std::sync::Arc;

use masker::{Config, Masker};
use proptest::prelude::*;
use serde_json::Value;

/// One sample of every entity kind, plus near misses and non-ASCII text.
const PIECES: &[&str] = &[
    "bob.smith+tag@mail.example.co.uk",
    "4111 1111 1111 1111",
    "378282246310005",
    "123-45-6789",
    "(415) 555-0132",
    "+44 20 7946 0958",
    "+14155550132",
    "DE89 3704 0044 0532 0130 00",
    "GB82WEST12345698765432",
    "192.168.10.254",
    "2001:db8:85a3::8a2e:370:7334",
    "fe80::1",
    "00:1A:2B:3C:4D:5E",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
    "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123",
    "xoxb-1234567890-abcdefghij",
    "AIzaSyA1234567890abcdefghijklmnopqrstuv",
    "sk_live_abcdefghij1234567890",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA",
    "The quick brown fox",
    " jumps over 12 lazy dogs. ",
    "Ünïcödé 日本語 🚀 ",
    "version 1.2.3.4.5",
    "call me at 555-0132",
    "4111-1111-1111-1112",
    "\n",
    ", ",
    "::",
    "x@y",
    "1234 5678",
    "https://bob:hunter2@git.example.com/x",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AKIAIOSFODNN7EXAMPLE,wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "DOB: 1990-03-15",
    "passport 123456789",
    "driver's license D1234567",
    "ITIN 912-70-1234",
    "account 12345678901",
    "501234567896",
    "030 12345678",
    "+49 (0) 7574 399715",
    "Tel: 5103737504",
    "josé.núñez@example.com",
    "logo@2x.png",
    "+49\u{a0}30\u{a0}12345678",
    "415\u{2013}555\u{2013}0132",
    "030\u{200b}1234\u{200b}5678",
];

fn text_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..14).prop_map(|v| v.concat())
}

fn masker(style: &str) -> Arc<Masker> {
    Arc::new(
        Masker::new(&Config {
            entities: vec!["all".into()],
            style: style.into(),
            hash_key: Some(b"k".to_vec()),
            paths: masker::DEFAULT_RESPONSE_PATHS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            ..Config::default()
        })
        .unwrap(),
    )
}

fn cuts(len: usize, raw: &[usize]) -> Vec<usize> {
    let mut c: Vec<usize> = raw.iter().map(|x| x % (len + 1)).collect();
    c.push(0);
    c.push(len);
    c.sort_unstable();
    c.dedup();
    c
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn text_stream_equals_whole(text in text_strategy(), raw in prop::collection::vec(any::<usize>(), 0..40), style in prop::sample::select(&["tag", "hash", "partial", "redact"][..])) {
        let m = masker(style);
        let (whole, _) = m.mask_text(&text);
        let mut s = m.text_stream();
        let mut out = String::new();
        let c = cuts(text.len(), &raw);
        for w in c.windows(2) {
            out.push_str(&s.push(&text.as_bytes()[w[0]..w[1]]).unwrap());
        }
        out.push_str(&s.finish().unwrap());
        prop_assert_eq!(&out, &whole);
        let (_, findings) = m.mask_text(&text);
        let total: u64 = s.counts().values().sum();
        prop_assert_eq!(total as usize, findings.len());
    }

    #[test]
    fn sse_stream_equals_whole(text in text_strategy(), tok in prop::collection::vec(1usize..9, 1..64), raw in prop::collection::vec(any::<usize>(), 0..40), crlf in any::<bool>()) {
        let m = masker("tag");
        // Split the text into "tokens" on char boundaries and build an OpenAI-style stream.
        let mut deltas = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < text.len() {
            let mut end = (at + tok[i % tok.len()]).min(text.len());
            while !text.is_char_boundary(end) { end += 1; }
            deltas.push(&text[at..end]);
            at = end;
            i += 1;
        }
        let nl = if crlf { "\r\n" } else { "\n" };
        let mut body = String::new();
        for d in &deltas {
            let ev = serde_json::json!({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": d}, "finish_reason": null}]});
            body.push_str(&format!("data: {ev}{nl}{nl}"));
        }
        body.push_str(&format!(": keep-alive{nl}{nl}"));
        let fin = serde_json::json!({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        body.push_str(&format!("data: {fin}{nl}{nl}data: [DONE]{nl}{nl}"));

        let mut whole_s = m.sse_stream();
        let mut whole = whole_s.push(body.as_bytes()).unwrap();
        whole.extend(whole_s.finish().unwrap());

        let mut s = m.sse_stream();
        let mut out = Vec::new();
        let c = cuts(body.len(), &raw);
        for w in c.windows(2) {
            out.extend(s.push(&body.as_bytes()[w[0]..w[1]]).unwrap());
        }
        out.extend(s.finish().unwrap());
        prop_assert_eq!(&out, &whole);
        prop_assert_eq!(s.model(), Some("m"));

        // Reassembled content == masking the whole content at once.
        let out = String::from_utf8(out).unwrap();
        let mut content = String::new();
        for line in out.lines() {
            let Some(data) = line.strip_prefix("data: ") else { continue };
            if data == "[DONE]" { continue; }
            let v: Value = serde_json::from_str(data).unwrap();
            if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                content.push_str(c);
            }
        }
        prop_assert_eq!(content, m.mask_text(&text).0);
    }
}

/// Texts where a chain of matches runs across many steps: every single cut must agree.
#[test]
fn every_cut_of_chained_texts() {
    let pem =
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----";
    let texts = [
        // A token inside a longer email: the lower-priority pattern must keep the text held.
        "\nghp_abcdefghijklmnopqrstuvwxyz0123456789bob.smith+tag@mail.example.co.uk3782822463",
        &format!("{pem}{pem} a@b.co {pem}-----BEGIN PRIVATE KEY-----AAAA!x@y.io"),
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0. 4111 1111 1111 1111",
        "1234 5678 1234 5678 1234 5678 1234 5678 123-45-6789 1.2.3.4.5.6.7.8 1a:1a:1a:1a:1a:1a:1a:",
    ];
    for style in ["tag", "hash"] {
        let m = masker(style);
        for text in texts {
            let (whole, _) = m.mask_text(text);
            for cut in 0..=text.len() {
                let mut s = m.text_stream();
                let mut out = s.push(&text.as_bytes()[..cut]).unwrap();
                out.push_str(&s.push(&text.as_bytes()[cut..]).unwrap());
                out.push_str(&s.finish().unwrap());
                assert_eq!(out, whole, "{style} cut {cut} of {text:?}");
            }
        }
    }
}

/// A selected entity that ends past a match still in progress (`…co.ukaws` + `_secret…`):
/// every pair of cuts must agree with whole-text masking.
#[test]
fn every_two_cuts_of_an_entity_ending_inside_another_match() {
    let text =
        "bob@mail.example.co.ukaws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let m = masker("tag");
    let (whole, _) = m.mask_text(text);
    for a in 0..=text.len() {
        for b in a..=text.len() {
            let mut s = m.text_stream();
            let mut out = s.push(&text.as_bytes()[..a]).unwrap();
            out.push_str(&s.push(&text.as_bytes()[a..b]).unwrap());
            out.push_str(&s.push(&text.as_bytes()[b..]).unwrap());
            out.push_str(&s.finish().unwrap());
            assert_eq!(out, whole, "cuts {a} {b}");
        }
    }
}
