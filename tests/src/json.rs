//! The tests' view of the launcher's JSON: serde_json checks that what it
//! prints really is JSON (strictly: no trailing text, no raw control
//! characters, valid escapes), and `J` gives typed access that panics with
//! the value in view when the shape is not what a test expects. Objects
//! keep their keys in the order printed, so a test can check that too.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

#[derive(Debug, Clone, PartialEq)]
pub enum J {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    pub fn get(&self, key: &str) -> &J {
        match self {
            J::Obj(fields) => fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("no key {key} in {self:?}")),
            _ => panic!("not an object: {self:?}"),
        }
    }
    pub fn str(&self) -> &str {
        match self {
            J::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }
    pub fn num(&self) -> f64 {
        match self {
            J::Num(n) => *n,
            _ => panic!("not a number: {self:?}"),
        }
    }
    pub fn arr(&self) -> &[J] {
        match self {
            J::Arr(a) => a,
            _ => panic!("not an array: {self:?}"),
        }
    }
    /// The keys of an object, in the order printed.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            J::Obj(fields) => fields.iter().map(|(k, _)| k.as_str()).collect(),
            _ => panic!("not an object: {self:?}"),
        }
    }
}

/// Parses `text`, which must be one JSON value and nothing else.
pub fn parse_json(text: &str) -> J {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<J, D::Error> {
        d.deserialize_any(JVisitor)
    }
}

struct JVisitor;

impl<'de> Visitor<'de> for JVisitor {
    type Value = J;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<J, E> {
        Ok(J::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<J, E> {
        Ok(J::Bool(b))
    }
    fn visit_u64<E>(self, n: u64) -> Result<J, E> {
        Ok(J::Num(n as f64))
    }
    fn visit_i64<E>(self, n: i64) -> Result<J, E> {
        Ok(J::Num(n as f64))
    }
    fn visit_f64<E>(self, n: f64) -> Result<J, E> {
        Ok(J::Num(n))
    }
    fn visit_str<E>(self, s: &str) -> Result<J, E> {
        Ok(J::Str(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<J, E> {
        Ok(J::Str(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<J, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(J::Arr(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<J, A::Error> {
        let mut fields: Vec<(String, J)> = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, J>()? {
            // Two equal keys would make `get` see only the first.
            if fields.iter().any(|(have, _)| *have == k) {
                return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
            }
            fields.push((k, v));
        }
        Ok(J::Obj(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_kind_of_value_in_order() {
        let v = parse_json(r#" {"b": [1, -2, 3.5e1], "a": null, "s": "q\"\u00e9\n", "t": true} "#);
        assert_eq!(v.keys(), ["b", "a", "s", "t"]);
        assert_eq!(
            v.get("b"),
            &J::Arr(vec![J::Num(1.0), J::Num(-2.0), J::Num(35.0)])
        );
        assert_eq!(v.get("a"), &J::Null);
        assert_eq!(v.get("s").str(), "q\"é\n");
        assert_eq!(v.get("t"), &J::Bool(true));
        assert_eq!(parse_json("[]").arr(), &[]);
    }

    #[test]
    #[should_panic(expected = "not JSON")]
    fn trailing_text_is_refused() {
        parse_json("{} x");
    }

    #[test]
    #[should_panic(expected = "not JSON")]
    fn raw_control_characters_are_refused() {
        parse_json("\"a\u{1}b\"");
    }

    #[test]
    #[should_panic(expected = "duplicate key")]
    fn duplicate_keys_are_refused() {
        parse_json(r#"{"a": 1, "a": 2}"#);
    }
}
