//! Does a JSON text repeat a member name in some object?
//!
//! `serde_json` keeps the last of two equal names. A masker that looks at the last copy and
//! then re-emits the event as it came would pass the first copy unmasked to a client whose
//! parser keeps the first, so streamed JSON with a repeated name is refused, as whole bodies
//! are (`gateway/strict_json.py`). Names are compared decoded (`"a"` and `"\u0061"` are equal).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

/// Objects up to this many members are checked by comparing names, larger ones by hashing.
const COMPARED_MEMBERS: usize = 16;

/// Any JSON value whose objects all have distinct member names.
struct Unique;

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Unique, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        while seq.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut few: Vec<Cow<'de, str>> = Vec::new();
        let mut many: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(Name(name)) = map.next_key::<Name<'de>>()? {
            let repeated = if many.is_empty() && few.len() < COMPARED_MEMBERS {
                let repeated = few.contains(&name);
                few.push(name);
                repeated
            } else {
                many.extend(few.drain(..));
                !many.insert(name)
            };
            if repeated {
                return Err(A::Error::custom("repeated member name"));
            }
            map.next_value::<Unique>()?;
        }
        Ok(Unique)
    }
}

/// A member name, borrowed from the text when it holds no escape.
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Name<'de>, D::Error> {
        d.deserialize_str(NameVisitor)
    }
}

struct NameVisitor;

impl<'de> Visitor<'de> for NameVisitor {
    type Value = Name<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Name<'de>, E> {
        Ok(Name(Cow::Borrowed(name)))
    }
    fn visit_str<E>(self, name: &str) -> Result<Name<'de>, E> {
        Ok(Name(Cow::Owned(name.to_owned())))
    }
}

/// Whether a JSON text repeats a member name in some object; an error for text that is not
/// JSON or nests as deep as `serde_json` stops reading (128 levels).
pub(crate) fn repeats_a_name(json: &str) -> serde_json::Result<bool> {
    match serde_json::from_str::<Unique>(json) {
        Ok(Unique) => Ok(false),
        // `Unique` takes any value, so its only data error is the repeated name.
        Err(e) if e.is_data() => Ok(true),
        Err(e) => Err(e),
    }
}

/// True when `json` (valid JSON) has an object with a repeated member name.
pub(crate) fn has_repeated_name(json: &str) -> bool {
    !matches!(repeats_a_name(json), Ok(false))
}

#[cfg(test)]
mod tests {
    use super::{has_repeated_name, repeats_a_name};

    #[test]
    fn repeated_names_at_any_depth_decoded() {
        assert!(!has_repeated_name(r#"{"a": 1, "b": [{"a": 2}, {"a": 3}]}"#));
        assert!(has_repeated_name(r#"{"a": 1, "a": 2}"#));
        assert!(has_repeated_name(r#"[{"x": {"c": "m", "c": "n"}}]"#));
        assert!(has_repeated_name(r#"{"a": 1, "\u0061": 2}"#));
    }

    #[test]
    fn repeated_names_past_the_compared_few_are_found_too() {
        for n in [1, 15, 16, 17, 40] {
            let names: Vec<String> = (0..n).map(|i| format!("\"k{i}\": {i}")).collect();
            let object = format!("{{{}}}", names.join(","));
            assert!(!has_repeated_name(&object), "{n}");
            for again in [0, n / 2, n - 1] {
                let repeated = format!("{{{}, \"k{again}\": 0}}", names.join(","));
                assert!(has_repeated_name(&repeated), "{n} {again}");
            }
        }
    }

    #[test]
    fn not_json_and_too_deep_are_errors_not_answers() {
        assert!(repeats_a_name(r#"{"a": 1,"#).is_err());
        assert!(repeats_a_name(&format!("{}{}", "[".repeat(200), "]".repeat(200))).is_err());
        assert!(!repeats_a_name(&format!("{}{}", "[".repeat(100), "]".repeat(100))).unwrap());
        assert!(repeats_a_name(r#"[[{"k": 0, "k": 0}]]"#).unwrap());
    }
}
