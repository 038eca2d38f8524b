//! JSON-aware masking: strings are decoded before detection and re-encoded after.

use std::fmt::Write as _;
use std::sync::Arc;

use masker::{Config, Masker};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nVJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZH\n-----END PRIVATE KEY-----\n";

const PIECES: &[&str] = &[
    "josé.núñez@example.com",
    "bob@example.com",
    "4111 1111 1111 1111",
    "123-45-6789",
    "AKIAIOSFODNN7EXAMPLE",
    PEM,
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "say \"hi\"",
    "back\\slash",
    "tab\there",
    "日本語 🚀",
    "\u{1}\u{1f}",
    " ",
    "",
];

fn masker() -> Arc<Masker> {
    Arc::new(
        Masker::new(&Config {
            entities: vec!["all".into()],
            paths: vec!["$.choices[*].message.tool_calls[*].function.arguments".into()],
            ..Config::default()
        })
        .unwrap(),
    )
}

/// JSON text with every string written by `enc` (so escapes vary).
fn write_json(v: &Value, esc: &[bool], k: &mut usize, out: &mut String) {
    match v {
        Value::String(s) => write_str(s, esc, k, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(x, esc, k, out);
            }
            out.push(']');
        }
        Value::Object(o) => {
            out.push('{');
            for (i, (key, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(key, esc, k, out);
                out.push_str(": ");
                write_json(x, esc, k, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A JSON string; each char is `\u`-escaped (surrogate pairs beyond the BMP) when the next
/// flag says so, else written as serde_json would.
fn write_str(s: &str, esc: &[bool], k: &mut usize, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        *k += 1;
        if esc[*k % esc.len()] {
            let mut buf = [0u16; 2];
            for u in c.encode_utf16(&mut buf) {
                let _ = write!(out, "\\u{u:04x}");
            }
        } else {
            let one = serde_json::to_string(&c.to_string()).unwrap();
            out.push_str(&one[1..one.len() - 1]);
        }
    }
    out.push('"');
}

fn mask_strings(m: &Masker, v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(m.mask_text(s).0),
        Value::Array(a) => Value::Array(a.iter().map(|x| mask_strings(m, x)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (m.mask_text(k).0, mask_strings(m, x)))
                .collect::<Map<_, _>>(),
        ),
        other => other.clone(),
    }
}

fn doc_strategy() -> impl Strategy<Value = Value> {
    let text = prop::collection::vec(prop::sample::select(PIECES), 0..4).prop_map(|v| v.join(" "));
    let leaf = prop_oneof![
        text.prop_map(Value::String),
        any::<i32>().prop_map(|n| json!(n)),
        Just(Value::Null),
        Just(json!(true)),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(inner, 0..4).prop_map(|v| {
                Value::Object(
                    v.into_iter()
                        .enumerate()
                        .map(|(i, x)| (format!("k{i}"), x))
                        .collect(),
                )
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Any JSON, strings escaped any way: the output is valid JSON whose strings are exactly
    /// the masked decoded strings, and streaming it cut anywhere gives the same bytes.
    #[test]
    fn json_strings_decoded_masked_reencoded(
        doc in doc_strategy(),
        esc in prop::collection::vec(any::<bool>(), 1..16),
        raw in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let m = masker();
        let mut text = String::new();
        write_json(&doc, &esc, &mut 0, &mut text);
        prop_assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), doc.clone());
        let (out, _) = m.mask_json_strings(&text);
        let parsed: Value = serde_json::from_str(&out).expect("valid JSON out");
        prop_assert_eq!(parsed, mask_strings(&m, &doc));

        let mut cuts: Vec<usize> = raw.iter().map(|x| x % (text.len() + 1)).collect();
        cuts.extend([0, text.len()]);
        cuts.sort_unstable();
        cuts.dedup();
        let mut s = m.json_stream();
        let mut streamed = String::new();
        for w in cuts.windows(2) {
            streamed.push_str(&s.push(&text.as_bytes()[w[0]..w[1]]).unwrap());
        }
        streamed.push_str(&s.finish().unwrap());
        prop_assert_eq!(streamed, out);
    }
}

#[test]
fn tool_call_arguments_stay_valid_json() {
    let m = masker();
    let args = r#"{"to": "jos\u00e9.n\u00fa\u00f1ez@example.com", "key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n"}"#;
    let body =
        json!({"choices": [{"message": {"tool_calls": [{"function": {"arguments": args}}]}}]});
    let (out, counts) = m.mask_json(body.to_string().as_bytes()).unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    let args = out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .unwrap();
    let inner: Value = serde_json::from_str(args).expect("arguments are still JSON");
    assert_eq!(inner, json!({"to": "[EMAIL]", "key": "[PRIVATE_KEY]\n"}));
    assert_eq!(counts.get("email"), Some(&1));
    assert_eq!(counts.get("private_key"), Some(&1));
}

#[test]
fn pem_with_escaped_newlines_in_text_is_masked_whole() {
    let m = masker();
    let text = r"key: -----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM\nkeu1cGMwTQSkC+jk\n-----END RSA PRIVATE KEY-----\n done";
    assert_eq!(m.mask_text(text).0, r"key: [PRIVATE_KEY]\n done");
}

#[test]
fn a_body_that_is_not_utf8_is_named_so_wherever_the_bad_byte_is() {
    let m = masker();
    for (body, at) in [
        (&b"{\"a\":\"caf\xe9\"}"[..], 9),
        (&b"{\"a\":1}\xff"[..], 7),
        (&b"\xef\xbb{\"a\":1}"[..], 0),
    ] {
        let err = m.mask_json(body).unwrap_err().to_string();
        assert_eq!(err, format!("invalid UTF-8 at byte {at}"), "{body:?}");
    }
    let err = m.mask_json(b"{\"a\":}").unwrap_err().to_string();
    assert!(!err.contains("UTF-8"), "{err}");
}
