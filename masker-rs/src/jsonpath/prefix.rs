//! A cheap test run before each JSONPath: could it select anything in this document?
//!
//! A response is checked against the paths of every API the gateway knows (32 of them), and
//! running one through `serde_json_path` costs about as much as masking a small answer's text,
//! while most name members the document does not have. A path's leading segments that are
//! dot names, wildcards or indexes are followed here without allocating: names exactly,
//! wildcards and indexes as "any child". That over-approximates what those segments select,
//! so a path this rules out selects nothing; the rest are run as before.

use serde_json::{Map, Value};
use serde_json_path::JsonPath;

/// Objects up to this size are searched by comparing names (no hashing).
const SCANNED_MEMBERS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// A dot-name segment: the member of that name.
    Name(String),
    /// A wildcard or index segment: some child.
    Any,
}

/// The leading simple segments of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Prefix(Vec<Step>);

impl Prefix {
    /// Read from the crate's normalised text of the path: `$`, then per segment `.name`, `.*`,
    /// `..` (descendants) or `[selectors]`, where a dot name holds no `.`, `[` or `*` (RFC 9535
    /// member-name-shorthand) and `[*]` or `[-1]` is a lone wildcard or index. The prefix ends
    /// at the first other segment.
    pub(super) fn of(path: &JsonPath) -> Prefix {
        let text = path.to_string();
        let mut rest = text.strip_prefix('$').unwrap_or("");
        let mut steps = Vec::new();
        loop {
            if rest.starts_with("..") {
                break;
            } else if let Some(r) = rest.strip_prefix(".*").or_else(|| rest.strip_prefix("[*]")) {
                steps.push(Step::Any);
                rest = r;
            } else if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                steps.push(Step::Name(r[..end].to_owned()));
                rest = &r[end..];
            } else if let Some((index, r)) = rest.strip_prefix('[').and_then(|r| r.split_once(']'))
            {
                let digits = index.strip_prefix('-').unwrap_or(index);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    break;
                }
                steps.push(Step::Any);
                rest = r;
            } else {
                break;
            }
        }
        Prefix(steps)
    }

    /// False only if the path selects nothing in `doc`.
    pub(super) fn could_select(&self, doc: &Value) -> bool {
        reaches(doc, &self.0)
    }
}

fn reaches(node: &Value, steps: &[Step]) -> bool {
    let Some((step, rest)) = steps.split_first() else {
        return true;
    };
    match (step, node) {
        (Step::Name(name), Value::Object(members)) => {
            member(members, name).is_some_and(|child| reaches(child, rest))
        }
        (Step::Any, Value::Object(members)) => members.values().any(|child| reaches(child, rest)),
        (Step::Any, Value::Array(items)) => items.iter().any(|child| reaches(child, rest)),
        _ => false,
    }
}

fn member<'a>(members: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if members.len() <= SCANNED_MEMBERS {
        members.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    } else {
        members.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(expr: &str) -> Vec<Step> {
        Prefix::of(&JsonPath::parse(expr).unwrap()).0
    }

    fn name(n: &str) -> Step {
        Step::Name(n.to_owned())
    }

    #[test]
    fn prefixes_end_at_the_first_segment_that_is_not_simple() {
        use Step::Any;
        assert_eq!(
            steps("$.choices[*].delta.content"),
            [name("choices"), Any, name("delta"), name("content")]
        );
        assert_eq!(steps("$[*].a.*[-2][0]"), [Any, name("a"), Any, Any, Any]);
        assert_eq!(steps("$.a..b"), [name("a")]);
        assert_eq!(steps("$..a"), []);
        assert_eq!(steps("$['a'].b"), []);
        assert_eq!(steps("$.a[0,1].b"), [name("a")]);
        assert_eq!(steps("$.a[1:2].b"), [name("a")]);
        assert_eq!(steps("$.a[?@.b].c"), [name("a")]);
        assert_eq!(steps("$.été.x"), [name("été"), name("x")]);
        assert_eq!(steps("$"), []);
    }
}
