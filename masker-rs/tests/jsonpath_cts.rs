//! RFC 9535 conformance: the JSONPath Compliance Test Suite vendored in
//! `tests/vectors/jsonpath/cts.json` (BSD-2, see the LICENSE beside it). Every case must pass;
//! cases listed in `SKIPPED` are documented in `docs/masking.md`.

use masker::jsonpath::{normalized, Paths};
use serde_json::Value;

/// Cases the underlying evaluator does not pass, with the reason in docs/masking.md.
const SKIPPED: &[&str] = &[];

#[test]
fn compliance_test_suite() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/vectors/jsonpath/cts.json"
    );
    let cts: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut failures = Vec::new();
    let mut passed = 0;
    for case in cts["tests"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        if SKIPPED.contains(&name) {
            continue;
        }
        let selector = case["selector"].as_str().unwrap();
        let compiled = Paths::new(&[selector]);
        if case.get("invalid_selector").and_then(Value::as_bool) == Some(true) {
            if compiled.is_ok() {
                failures.push(format!("{name}: accepted invalid selector {selector:?}"));
            } else {
                passed += 1;
            }
            continue;
        }
        let Ok(p) = compiled else {
            failures.push(format!("{name}: rejected valid selector {selector:?}"));
            continue;
        };
        let doc = &case["document"];
        let locs = p.locate_all(doc);
        let got_paths: Vec<String> = locs.iter().map(|l| normalized(l)).collect();
        let got_vals: Vec<Value> = locs
            .iter()
            .map(|l| masker::jsonpath::get(doc, l).unwrap().clone())
            .collect();
        let ok = if let Some(rp) = case.get("result_paths") {
            let want: Vec<String> = rp
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            want == got_paths && case["result"].as_array().unwrap() == &got_vals
        } else if let Some(rps) = case.get("results_paths") {
            rps.as_array().unwrap().iter().any(|alt| {
                let want: Vec<String> = alt
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect();
                want == got_paths
            })
        } else if let Some(r) = case.get("result") {
            r.as_array().unwrap() == &got_vals
        } else {
            case["results"]
                .as_array()
                .unwrap()
                .iter()
                .any(|alt| alt.as_array().unwrap() == &got_vals)
        };
        if ok {
            passed += 1;
        } else {
            failures.push(format!("{name}: {selector:?} got {got_paths:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} passed, {} failed:\n{}",
        passed,
        failures.len(),
        failures.join("\n")
    );
    assert!(passed > 600, "only {passed} cases ran");
}
