//! Flush events (a location's held-back remainder, sent after its last event) must carry no
//! raw text of any other masked location.

use std::sync::Arc;

use masker::{Config, Masker};

#[test]
fn a_flush_event_never_copies_another_locations_raw_text() {
    let m = Arc::new(
        Masker::new(&Config {
            entities: vec!["email".into()],
            paths: vec!["$.a.text".into(), "$.b.text".into()],
            ..Config::default()
        })
        .unwrap(),
    );
    let mut s = m.sse_stream();
    let mut out = Vec::new();
    for ev in [
        "data: {\"a\":{\"text\":\"mail bob@exa\"},\"b\":{\"text\":\"x\"}}\n\n",
        "data: {\"a\":{\"text\":\"mple.org now\"},\"b\":{\"text\":\"carol@example.org\"}}\n\n",
    ] {
        out.extend(s.push(ev.as_bytes()).unwrap());
    }
    out.extend(s.finish().unwrap());
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("@example.org"), "{text}");
    assert!(!text.contains("mple.org"), "{text}");
    let a: String = events(&text)
        .iter()
        .map(|v| v["a"]["text"].as_str().unwrap_or("").to_owned())
        .collect();
    let b: String = events(&text)
        .iter()
        .map(|v| v["b"]["text"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(a, "mail [EMAIL] now");
    assert_eq!(b, "[EMAIL]"); // "x" + "carol@example.org" is one address
}

fn events(text: &str) -> Vec<serde_json::Value> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}
