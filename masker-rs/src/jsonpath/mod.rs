//! RFC 9535 JSONPath selection for masking. Parsing and evaluation come from the
//! `serde_json_path` crate (full RFC 9535: names, wildcards, indexes, slices, descendants,
//! filters and functions); this module turns its normalized paths into owned locations so the
//! selected string values can be replaced in place.

use std::fmt::Write as _;

use serde_json::Value;
use serde_json_path::{JsonPath, NormalizedPath, PathElement};

use crate::error::{Error, Result};

mod prefix;
use prefix::Prefix;

/// One step of a normalized path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    /// Object member name.
    Name(String),
    /// Array index.
    Index(usize),
}

/// A concrete location in a document (an RFC 9535 normalized path).
pub type Location = Vec<Seg>;

/// Compiled JSONPath expressions.
#[derive(Debug, Clone, Default)]
pub struct Paths {
    compiled: Vec<JsonPath>,
    /// Per expression, its leading simple segments (prefix.rs): checked before it is run.
    prefixes: Vec<Prefix>,
    sources: Vec<String>,
}

impl Paths {
    /// Compile each expression once.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] naming the first expression that does not parse.
    pub fn new<S: AsRef<str>>(exprs: &[S]) -> Result<Paths> {
        let mut compiled = Vec::with_capacity(exprs.len());
        for e in exprs {
            let e = e.as_ref();
            let p = JsonPath::parse(e).map_err(|err| Error::InvalidPath {
                path: e.to_owned(),
                reason: err.to_string().lines().next().unwrap_or("").to_owned(),
            })?;
            compiled.push(p);
        }
        Ok(Paths {
            prefixes: compiled.iter().map(Prefix::of).collect(),
            compiled,
            sources: exprs.iter().map(|s| s.as_ref().to_owned()).collect(),
        })
    }

    /// The expressions as given.
    #[must_use]
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// True when no expression was given.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.compiled.is_empty()
    }

    /// Every location selected by any expression, each once, in the order found.
    #[must_use]
    pub fn locate(&self, doc: &Value) -> Vec<Location> {
        let mut out: Vec<Location> = Vec::new();
        for loc in self.locate_all(doc) {
            if !out.contains(&loc) {
                out.push(loc);
            }
        }
        out
    }

    /// Every node selected, in RFC 9535 result order, duplicates kept (what the
    /// conformance suite checks). An expression whose leading segments reach nothing in `doc`
    /// is not run (prefix.rs).
    #[must_use]
    pub fn locate_all(&self, doc: &Value) -> Vec<Location> {
        let mut out: Vec<Location> = Vec::new();
        for (p, prefix) in self.compiled.iter().zip(&self.prefixes) {
            if !prefix.could_select(doc) {
                continue;
            }
            out.extend(p.query_located(doc).locations().map(owned));
        }
        out
    }
}

/// A location the crate found, owned (it borrows from the document).
fn owned(path: &NormalizedPath<'_>) -> Location {
    path.iter()
        .map(|e| match e {
            PathElement::Name(n) => Seg::Name((*n).to_owned()),
            PathElement::Index(i) => Seg::Index(*i),
        })
        .collect()
}

/// The value at `loc`, mutably.
pub fn get_mut<'a>(doc: &'a mut Value, loc: &[Seg]) -> Option<&'a mut Value> {
    let mut cur = doc;
    for s in loc {
        cur = match (s, cur) {
            (Seg::Name(n), Value::Object(m)) => m.get_mut(n)?,
            (Seg::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// The value at `loc`.
#[must_use]
pub fn get<'a>(doc: &'a Value, loc: &[Seg]) -> Option<&'a Value> {
    let mut cur = doc;
    for s in loc {
        cur = match (s, cur) {
            (Seg::Name(n), Value::Object(m)) => m.get(n)?,
            (Seg::Index(i), Value::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// RFC 9535 normalized-path text of a location, e.g. `$['choices'][0]['delta']['content']`.
#[must_use]
pub fn normalized(loc: &[Seg]) -> String {
    let mut s = String::from("$");
    for seg in loc {
        match seg {
            Seg::Index(i) => {
                s.push('[');
                s.push_str(&i.to_string());
                s.push(']');
            }
            Seg::Name(n) => {
                s.push_str("['");
                for c in n.chars() {
                    match c {
                        '\'' => s.push_str("\\'"),
                        '\\' => s.push_str("\\\\"),
                        '\u{8}' => s.push_str("\\b"),
                        '\u{c}' => s.push_str("\\f"),
                        '\n' => s.push_str("\\n"),
                        '\r' => s.push_str("\\r"),
                        '\t' => s.push_str("\\t"),
                        c if (c as u32) < 0x20 => {
                            let _ = write!(s, "\\u{:04x}", c as u32);
                        }
                        c => s.push(c),
                    }
                }
                s.push_str("']");
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXPRS: [&str; 16] = [
        "$.a",
        "$.a.b",
        "$.a[*].b",
        "$['a'].b",
        "$..a",
        "$.*",
        "$[*].a",
        "$.b[0]",
        "$.été",
        "$.a..b",
        "$.*.a",
        "$.a[-1].b",
        "$[0].a",
        "$.a[?@.b].c",
        "$.a[0,1].b",
        "$.a[1:].b",
    ];

    fn value() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec!["a", "b", "c", "\u{e9}t\u{e9}"]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            "[a-z]{0,3}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..4).prop_map(|kv| {
                    Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        })
    }

    proptest! {
        /// Skipping an expression by its prefix never changes what is located.
        #[test]
        fn skipping_by_prefix_selects_what_the_crate_selects(doc in value()) {
            let paths = Paths::new(&EXPRS).unwrap();
            let mut want: Vec<Location> = Vec::new();
            for e in EXPRS {
                want.extend(JsonPath::parse(e).unwrap().query_located(&doc).locations().map(owned));
            }
            prop_assert_eq!(paths.locate_all(&doc), want);
        }
    }
}
