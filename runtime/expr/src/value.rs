//! The JSON-like value records are made of: cheap to clone (shared strings, lists and maps).

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A record field value. Maps keep field order and are looked up linearly (records are small).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Value {
    /// JSON null / absent.
    #[default]
    Null,
    /// Boolean.
    Bool(bool),
    /// Signed integer (JSON integers that fit).
    Int(i64),
    /// Unsigned integer (JSON integers above i64::MAX).
    UInt(u64),
    /// Floating point.
    Float(f64),
    /// String.
    Str(Arc<str>),
    /// List.
    List(Arc<Vec<Value>>),
    /// Map with string keys.
    Map(Arc<Map>),
}

thread_local! {
    /// What [`Value::from_json`] parses share on this thread (interned field names...).
    static PARSE_CACHE: std::cell::RefCell<crate::json::ParseCache> = Default::default();
}

/// An ordered map of string keys to values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Map {
    /// The entries, in insertion order, keys unique.
    pub entries: Vec<(Arc<str>, Value)>,
}

impl Map {
    /// An empty map with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Map {
            entries: Vec::with_capacity(n),
        }
    }
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| v)
    }
    /// Sets `key` to `value`, replacing an existing entry.
    pub fn insert(&mut self, key: impl Into<Arc<str>>, value: Value) {
        let key = key.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = value,
            None => self.entries.push((key, value)),
        }
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Value {
    /// A string value.
    pub fn str(s: &str) -> Value {
        Value::Str(Arc::from(s))
    }
    /// A map value from entries.
    pub fn map<K: Into<Arc<str>>>(entries: impl IntoIterator<Item = (K, Value)>) -> Value {
        let mut m = Map::default();
        for (k, v) in entries {
            m.insert(k, v);
        }
        Value::Map(Arc::new(m))
    }
    /// Field `key` of a map value (Null if absent or not a map).
    pub fn get(&self, key: &str) -> &Value {
        static NULL: Value = Value::Null;
        match self {
            Value::Map(m) => m.get(key).unwrap_or(&NULL),
            _ => &NULL,
        }
    }
    /// The value as an i64, if it is an integer (or an integral float).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::UInt(u) => i64::try_from(*u).ok(),
            Value::Float(f) if f.fract() == 0.0 && f.is_finite() => Some(*f as i64),
            _ => None,
        }
    }
    /// The value as an f64, if numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::UInt(u) => Some(*u as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
    /// The value as a str, if a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The value as a bool, if a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    /// Parses one JSON document: exactly `serde_json`'s result, mostly without its cost
    /// (see [`crate::json`]; field names are interned per thread).
    pub fn from_json(text: &str) -> Result<Value, serde_json::Error> {
        Self::parse_json(text, None)
    }

    /// [`Value::from_json`] with only the fields named in `keep` of a top-level object (the
    /// others are checked, so errors are the same, but not built); other documents whole.
    pub fn from_json_keeping(text: &str, keep: &[Arc<str>]) -> Result<Value, serde_json::Error> {
        Self::parse_json(text, Some(keep))
    }

    fn parse_json(text: &str, keep: Option<&[Arc<str>]>) -> Result<Value, serde_json::Error> {
        let fast = PARSE_CACHE.with(|c| match c.try_borrow_mut() {
            Ok(mut cache) => crate::json::parse_keeping(text, &mut cache, keep),
            Err(_) => None,
        });
        match (fast, keep) {
            (Some(v), _) => Ok(v),
            (None, None) => serde_json::from_str(text),
            (None, Some(keep)) => serde_json::from_str(text).map(|v: Value| v.keeping(keep)),
        }
    }

    /// A map with only the entries named in `keep`; other values unchanged (an expression
    /// that reads only `keep` gives the same result on either).
    pub fn keeping(self, keep: &[Arc<str>]) -> Value {
        match self {
            Value::Map(m) if m.entries.iter().any(|(k, _)| !keep.contains(k)) => {
                let mut m = Arc::unwrap_or_clone(m);
                m.entries.retain(|(k, _)| keep.contains(k));
                Value::Map(Arc::new(m))
            }
            other => other,
        }
    }

    /// Renders as compact JSON (the same text as `serde_json::to_string`).
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(64);
        self.write_json(&mut out);
        String::from_utf8(out).unwrap_or_else(|_| "null".to_string())
    }

    /// Appends compact JSON to `out`: byte for byte what `serde_json` writes, without the
    /// serializer's per-call overhead (used by sinks for every record).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::Int(i) => write_i64(*i, out),
            Value::UInt(u) => write_u64(*u, out),
            Value::Float(f) => {
                // serde_json: shortest round-trip form, `null` when not finite
                if serde_json::to_writer(&mut *out, f).is_err() {
                    out.extend_from_slice(b"null");
                }
            }
            Value::Str(s) => write_json_str(s, out),
            Value::List(l) => {
                out.push(b'[');
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    v.write_json(out);
                }
                out.push(b']');
            }
            Value::Map(m) => {
                out.push(b'{');
                for (i, (k, v)) in m.entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json_str(k, out);
                    out.push(b':');
                    v.write_json(out);
                }
                out.push(b'}');
            }
        }
    }
    /// A stable string form used as a state key (strings unquoted, others as JSON).
    pub fn key_string(&self) -> String {
        match self {
            Value::Str(s) => s.to_string(),
            other => other.to_json(),
        }
    }
}

fn write_u64(mut u: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn write_i64(i: i64, out: &mut Vec<u8>) {
    if i < 0 {
        out.push(b'-');
    }
    write_u64(i.unsigned_abs(), out);
}

/// Whether JSON needs an escape for any byte of `bytes` (a control character, `"` or `\\`),
/// checked eight bytes at a time.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // some byte of x is below n (n <= 128): the classic "hasless" bit trick
    let has_less = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH != 0;
    let has_zero = |x: u64| has_less(x, 1);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        let x = u64::from_le_bytes(word);
        if has_less(x, 0x20)
            || has_zero(x ^ (ONES * u64::from(b'"')))
            || has_zero(x ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// A JSON string literal; strings that need no escaping (the usual case) are copied as is.
fn write_json_str(s: &str, out: &mut Vec<u8>) {
    if !needs_escape(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"null");
    }
}

impl From<&serde_json::Value> for Value {
    fn from(v: &serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::UInt(u)
                } else {
                    Value::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            serde_json::Value::String(s) => Value::str(s),
            serde_json::Value::Array(a) => {
                Value::List(Arc::new(a.iter().map(Value::from).collect()))
            }
            serde_json::Value::Object(o) => Value::Map(Arc::new(Map {
                entries: o
                    .iter()
                    .map(|(k, v)| (Arc::from(k.as_str()), Value::from(v)))
                    .collect(),
            })),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::List(l) => {
                let mut seq = s.serialize_seq(Some(l.len()))?;
                for v in l.iter() {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in &m.entries {
                    map.serialize_entry(&**k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map(Value::Int).unwrap_or(Value::UInt(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(x) = seq.next_element()? {
            v.push(x);
        }
        Ok(Value::List(Arc::new(v)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut m = Map::with_capacity(access.size_hint().unwrap_or(8));
        while let Some((k, v)) = access.next_entry::<String, Value>()? {
            m.insert(k, v);
        }
        Ok(Value::Map(Arc::new(m)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_order_and_types() {
        let text = r#"{"b":1,"a":[true,null,2.5],"c":{"d":"x"},"big":18446744073709551615}"#;
        let v = Value::from_json(text).unwrap();
        assert_eq!(v.to_json(), text);
        assert_eq!(v.get("b"), &Value::Int(1));
        assert_eq!(v.get("c").get("d").as_str(), Some("x"));
        assert_eq!(v.get("missing"), &Value::Null);
    }

    #[test]
    fn write_json_matches_serde_json_byte_for_byte() {
        let values = [
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            Value::Int(0),
            Value::Int(-1),
            Value::Int(i64::MIN),
            Value::Int(i64::MAX),
            Value::UInt(u64::MAX),
            Value::Float(1.0),
            Value::Float(-0.0),
            Value::Float(2.5e-300),
            Value::Float(1e21),
            Value::Float(f64::NAN),
            Value::Float(f64::INFINITY),
            Value::str(""),
            Value::str("plain text, ünïcödé ✓"),
            Value::str("quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} del \u{7f}"),
            Value::List(Arc::new(vec![])),
            Value::List(Arc::new(vec![
                Value::Int(1),
                Value::str("a\"b"),
                Value::Null,
            ])),
            Value::map([
                ("k\"ey", Value::Int(3)),
                ("nested", Value::map([("x", Value::Float(0.1))])),
                ("empty", Value::map(Vec::<(&str, Value)>::new())),
            ]),
        ];
        let mut values = values.to_vec();
        // every escape at every position of the eight-byte words, next to multi-byte UTF-8
        for special in ['"', '\\', '\n', '\u{0}', '\u{1f}', ' ', '~', '\u{7f}', 'é'] {
            for pos in 0..20 {
                let mut text: String = "abcdefghijklmnopqrs".into();
                text.insert(pos, special);
                values.push(Value::str(&text));
            }
        }
        for v in &values {
            let expected = serde_json::to_string(v).unwrap();
            assert_eq!(v.to_json(), expected, "{v:?}");
            let mut out = b"prefix ".to_vec();
            v.write_json(&mut out);
            assert_eq!(out, [b"prefix ".as_slice(), expected.as_bytes()].concat());
        }
    }
}
