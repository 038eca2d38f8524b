//! A stream that fails mid-way still hands over the events masked before the failing one,
//! the same bytes however the input was cut.

use std::sync::Arc;

use masker::{Config, Masker};

const INPUT: &str = concat!(
    "data: {\"choices\":[{\"delta\":{\"content\":\"Hello, \"}}]}\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":\"mail bob@example.org now. \"}}]}\n\n",
    "data: {oops\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":\"after\"}}]}\n\n",
);

/// Everything a client would get: the output of each push, then what was released on failure.
fn through(m: &Arc<Masker>, cut: usize) -> Vec<u8> {
    let mut s = m.sse_stream();
    let mut out = Vec::new();
    for piece in INPUT.as_bytes().chunks(cut) {
        match s.push(piece) {
            Ok(bytes) => out.extend(bytes),
            Err(_) => {
                out.extend(s.take_released());
                return out;
            }
        }
    }
    panic!("the broken event was accepted");
}

#[test]
fn events_before_a_failure_are_released_whatever_the_cut() {
    let m = Arc::new(
        Masker::new(&Config {
            entities: vec!["email".into()],
            paths: vec!["$.choices[*].delta.content".into()],
            ..Config::default()
        })
        .unwrap(),
    );
    let whole = through(&m, INPUT.len());
    let text = String::from_utf8(whole.clone()).unwrap();
    assert!(text.contains("Hello, "), "{text}");
    assert!(!text.contains("bob@example.org") && !text.contains("oops") && !text.contains("after"));
    for cut in 1..INPUT.len() {
        assert_eq!(through(&m, cut), whole, "cut {cut}");
    }
}
