//! JSON text parsed straight into [`Value`], for the records every source reads.
//!
//! The common shapes (objects, arrays, strings without escapes, integers, literals) are
//! parsed here without serde's per-call machinery; field names are interned (a record's keys
//! share one allocation per distinct name), and a string equal to the last one seen at the
//! same field position shares its allocation too. Anything else (escapes, non-integer or very
//! long numbers, deep nesting, and every error) is left to `serde_json`: [`parse_keeping`] then
//! returns `None` and the caller parses the whole text with `serde_json`, so the result (and
//! the error message) is always exactly what `serde_json` gives.

use crate::value::{Map, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// Nesting deeper than this is left to `serde_json` (which enforces its own limit).
const MAX_DEPTH: usize = 64;
/// At most this many distinct field names are interned per cache; later ones are allocated.
const MAX_INTERNED_KEYS: usize = 4096;
/// Field positions that remember their last key and string value.
const POSITIONS: usize = 64;
/// Only string values up to this length are shared with an equal previous one.
const SHARED_STRING_MAX: usize = 16;

/// What repeated parses share: interned field names and the last string per field position.
#[derive(Default)]
pub struct ParseCache {
    interned: HashSet<Arc<str>>,
    /// The (interned) key last seen at each field position of an object.
    last_key: Vec<Option<Arc<str>>>,
    /// The string value last seen at each field position of an object.
    last_str: Vec<Option<Arc<str>>>,
    /// The entries of the objects being parsed (inner objects after outer ones).
    fields: Vec<(Arc<str>, Value)>,
}

impl ParseCache {
    /// The interned copy of `name`, if it is (or can still be) interned.
    fn intern(&mut self, name: &str) -> Option<Arc<str>> {
        if let Some(k) = self.interned.get(name) {
            return Some(k.clone());
        }
        if self.interned.len() >= MAX_INTERNED_KEYS {
            return None;
        }
        let k: Arc<str> = Arc::from(name);
        self.interned.insert(k.clone());
        Some(k)
    }

    /// The key `name` at field position `pos`, and whether it is interned (interned keys are
    /// equal exactly when they are the same allocation).
    fn key(&mut self, pos: usize, name: &str) -> (Arc<str>, bool) {
        if let Some(Some(k)) = self.last_key.get(pos) {
            if short_eq(k.as_bytes(), name.as_bytes()) {
                return (k.clone(), true);
            }
        }
        match self.intern(name) {
            Some(k) => {
                if pos < POSITIONS {
                    if self.last_key.len() <= pos {
                        self.last_key.resize(pos + 1, None);
                    }
                    self.last_key[pos] = Some(k.clone());
                }
                (k, true)
            }
            None => (Arc::from(name), false),
        }
    }

    /// A string value at field position `pos` (shared with the previous one there if equal
    /// and short: long ones rarely repeat, and remembering one costs two atomic operations).
    fn string(&mut self, pos: Option<usize>, s: &str) -> Arc<str> {
        let Some(pos) = pos.filter(|p| *p < POSITIONS && s.len() <= SHARED_STRING_MAX) else {
            return Arc::from(s);
        };
        if self.last_str.len() <= pos {
            self.last_str.resize(pos + 1, None);
        }
        let slot = &mut self.last_str[pos];
        if let Some(prev) = slot {
            if short_eq(prev.as_bytes(), s.as_bytes()) {
                return prev.clone();
            }
        }
        let v: Arc<str> = Arc::from(s);
        *slot = Some(v.clone());
        v
    }
}

/// Parses `text` as one JSON document, or `None` when `serde_json` must decide (see the
/// module documentation). [`parse_keeping`] without `keep`; the tests' reference point.
#[cfg(test)]
pub fn parse(text: &str, cache: &mut ParseCache) -> Option<Value> {
    parse_keeping(text, cache, None)
}

/// Parses `text` as one JSON document, or `None` when `serde_json` must decide (see the
/// module documentation), keeping of a top-level object only the fields named in `keep` (when
/// given): the others are checked exactly as the rest but never built, so the result is the
/// whole document's with the other top-level entries removed (and `None` exactly when the
/// whole document gives `None`).
pub fn parse_keeping(
    text: &str,
    cache: &mut ParseCache,
    keep: Option<&[Arc<str>]>,
) -> Option<Value> {
    let mut p = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        cache,
        keep,
    };
    p.skip_ws();
    let v = p.value(0, None);
    p.skip_ws();
    let done = p.pos == p.bytes.len();
    cache.fields.clear(); // entries of objects left open by an error
    v.filter(|_| done)
}

struct Parser<'t, 'c, 'k> {
    text: &'t str,
    bytes: &'t [u8],
    pos: usize,
    cache: &'c mut ParseCache,
    /// The top-level object's fields to build (`None`: all).
    keep: Option<&'k [Arc<str>]>,
}

impl<'t> Parser<'t, '_, '_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.pos += 1)
    }

    fn literal(&mut self, word: &[u8], v: Value) -> Option<Value> {
        let end = self.pos + word.len();
        (self.bytes.get(self.pos..end)? == word).then(|| {
            self.pos = end;
            v
        })
    }

    /// A value; `field` is its position in the enclosing object, if any.
    fn value(&mut self, depth: usize, field: Option<usize>) -> Option<Value> {
        match self.peek()? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => {
                let s = self.plain_string()?;
                Some(Value::Str(self.cache.string(field, s)))
            }
            b't' => self.literal(b"true", Value::Bool(true)),
            b'f' => self.literal(b"false", Value::Bool(false)),
            b'n' => self.literal(b"null", Value::Null),
            b'-' | b'0'..=b'9' => self.integer(),
            _ => None,
        }
    }

    fn object(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        self.skip_ws();
        if self.eat(b'}').is_some() {
            return Some(Value::Map(Arc::new(Map::default())));
        }
        // entries collect on the shared stack (nested objects above them) and move into a
        // vector of exactly their size at the end
        let start = self.cache.fields.len();
        let map = self.object_entries(depth, start);
        let entries = self.cache.fields.drain(start..);
        map.map(|()| {
            Value::Map(Arc::new(Map {
                entries: entries.collect(),
            }))
        })
    }

    fn object_entries(&mut self, depth: usize, start: usize) -> Option<()> {
        let mut all_interned = true;
        let keep = self.keep.filter(|_| depth == 1);
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            let name = self.plain_string()?;
            if keep
                .is_some_and(|keep| !keep.iter().any(|k| short_eq(k.as_bytes(), name.as_bytes())))
            {
                // a field nobody reads: checked like any other, not built
                self.skip_ws();
                self.eat(b':')?;
                self.skip_ws();
                self.skip_value(depth)?;
            } else {
                self.entry(depth, start, name, &mut all_interned)?;
            }
            self.skip_ws();
            match self.peek()? {
                b',' => {
                    self.pos += 1;
                    self.skip_ws();
                }
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Checks a value exactly as [`Parser::value`] does, building as little as possible.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.plain_string().map(drop),
            b'-' | b'0'..=b'9' => self.integer().map(drop),
            _ => self.value(depth, None).map(drop),
        }
    }

    /// Parses the `: value` after field name `name` and adds the entry to the object's
    /// entries (replacing an earlier one of the same name).
    fn entry(
        &mut self,
        depth: usize,
        start: usize,
        name: &str,
        all_interned: &mut bool,
    ) -> Option<()> {
        let field = self.cache.fields.len() - start;
        let (key, interned) = self.cache.key(field, name);
        *all_interned &= interned;
        let all_interned = *all_interned;
        self.skip_ws();
        self.eat(b':')?;
        self.skip_ws();
        let v = self.value(depth, Some(field))?;
        // a repeated key replaces the earlier value in its place (as serde_json's map does)
        let same = |k: &Arc<str>| {
            if all_interned {
                Arc::ptr_eq(k, &key)
            } else {
                **k == *key
            }
        };
        let fields = &mut self.cache.fields;
        match fields[start..].iter_mut().find(|(k, _)| same(k)) {
            Some(e) => e.1 = v,
            None => fields.push((key, v)),
        }
        Some(())
    }

    fn array(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        self.skip_ws();
        let mut items = Vec::new();
        if self.eat(b']').is_some() {
            return Some(Value::List(Arc::new(items)));
        }
        loop {
            items.push(self.value(depth, None)?);
            self.skip_ws();
            match self.peek()? {
                b',' => {
                    self.pos += 1;
                    self.skip_ws();
                }
                b']' => {
                    self.pos += 1;
                    return Some(Value::List(Arc::new(items)));
                }
                _ => return None,
            }
        }
    }

    /// A string without escapes, borrowed from the text (at the opening quote).
    fn plain_string(&mut self) -> Option<&'t str> {
        let start = self.pos + 1;
        let end = start + special_byte(&self.bytes[start..])?;
        if self.bytes[end] != b'"' {
            return None; // an escape or a control character: serde_json's job
        }
        self.pos = end + 1;
        // the quotes are ASCII, so both ends are character boundaries
        let text: &'t str = self.text;
        text.get(start..end)
    }

    /// An integer of at most 18 digits (exact in an i64) without fraction or exponent.
    fn integer(&mut self) -> Option<Value> {
        let negative = self.peek()? == b'-';
        let digits_start = self.pos + usize::from(negative);
        let mut end = digits_start;
        let mut n: i64 = 0;
        while let Some(d @ b'0'..=b'9') = self.bytes.get(end).copied() {
            if end - digits_start == 18 {
                return None;
            }
            n = n * 10 + i64::from(d - b'0');
            end += 1;
        }
        let len = end - digits_start;
        if len == 0 || (self.bytes[digits_start] == b'0' && (len > 1 || negative)) {
            return None; // no digits, a leading zero, or -0 (a float in serde_json)
        }
        if let Some(b'.' | b'e' | b'E') = self.bytes.get(end) {
            return None;
        }
        self.pos = end;
        Some(Value::Int(if negative { -n } else { n }))
    }
}

/// `a == b`, without a library call when they are at most 16 bytes long (field names and the
/// short strings shared between records).
#[inline]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |x: &[u8], at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&x[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let half = |x: &[u8], at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&x[at..at + 4]);
        u32::from_le_bytes(w)
    };
    match n {
        0..=3 => a == b,
        4..=8 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        9..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

/// The offset of the first `"`, `\` or control character in `bytes`, checked eight bytes at
/// a time.
fn special_byte(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH != 0;
    let is_special = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        let x = u64::from_le_bytes(word);
        if x.wrapping_sub(ONES * 0x20) & !x & HIGH != 0
            || has_zero(x ^ (ONES * u64::from(b'"')))
            || has_zero(x ^ (ONES * u64::from(b'\\')))
        {
            return c.iter().position(|&b| is_special(b)).map(|i| offset + i);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| is_special(b))
        .map(|i| offset + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde_json's result, through [`Value`]'s own `Deserialize`.
    fn reference(text: &str) -> Result<Value, String> {
        serde_json::from_str::<Value>(text).map_err(|e| e.to_string())
    }

    /// Fast path (with serde_json taking over where it declines) against serde_json alone:
    /// same value with the same types and field order, or both errors.
    fn check(cache: &mut ParseCache, text: &str) {
        let fast = parse(text, cache);
        let expected = reference(text);
        match (&fast, &expected) {
            (Some(v), Ok(e)) => {
                assert_eq!(v, e, "{text}");
                assert_eq!(v.to_json(), e.to_json(), "{text}");
            }
            (Some(v), Err(e)) => panic!("{text}: accepted as {v:?}, serde_json says {e}"),
            (None, _) => {}
        }
    }

    const CASES: &[&str] = &[
        r#"{"type":"bid","auction":1000,"bidder":1001,"price":-42,"url":"http://x/y?z","extra":""}"#,
        r#"  {"a" : [1, 2 , {"b":null}] , "c":true,"d":false }  "#,
        r#"{"a":1,"a":2,"b":3,"a":4}"#,
        r#"{"x":"é ✓ 𝄞","y":"\u00e9","z":"tab\there"}"#,
        r#"{"n":0,"m":-0,"o":01,"p":1.5,"q":1e3,"r":-1E-2,"s":123456789012345678}"#,
        r#"{"big":1234567890123456789,"huge":18446744073709551615,"over":18446744073709551616}"#,
        r#"{"neg":-9223372036854775808,"negover":-9223372036854775809}"#,
        r#"[]"#,
        r#"{}"#,
        r#"[[],[[]],{}]"#,
        r#""just a string""#,
        r#"42"#,
        r#"-7"#,
        r#"null"#,
        r#"true"#,
        r#"{"a":1,}"#,
        r#"{"a":1"#,
        r#"{"a" 1}"#,
        r#"{a:1}"#,
        r#"[1,]"#,
        r#"[1 2]"#,
        r#"{"a":tru}"#,
        r#"{"a":nul}"#,
        r#"{"a":1} x"#,
        r#"{"a":"raw control"}"#,
        r#"{"a":"unterminated}"#,
        r#"{"a":-}"#,
        r#"{"a":1.}"#,
        r#"{"a":.5}"#,
        r#"{"a":+1}"#,
        r#"{"a":1x}"#,
        r#""#,
        r#"   "#,
        r#"{"k\"ey":1,"k":2}"#,
        r#"{"a":{"b":{"c":{"d":[1,{"e":"f"}]}}}}"#,
    ];

    #[test]
    fn matches_serde_json_on_every_case() {
        let mut cache = ParseCache::default();
        for _ in 0..2 {
            for text in CASES {
                check(&mut cache, text);
            }
        }
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        check(&mut cache, &deep);
    }

    /// [`check`] for [`parse_keeping`]: serde_json's value with the other top-level fields
    /// removed, and declined exactly where [`parse`] declines.
    fn check_keeping(cache: &mut ParseCache, text: &str, keep: &[Arc<str>]) {
        let whole = parse(text, cache);
        let kept = parse_keeping(text, cache, Some(keep));
        assert_eq!(whole.is_some(), kept.is_some(), "{text}");
        let expected = Value::from_json_keeping(text, keep).map_err(|e| e.to_string());
        let reference = reference(text).map(|v| match v {
            Value::Map(m) => Value::Map(Arc::new(Map {
                entries: m
                    .entries
                    .iter()
                    .filter(|(k, _)| keep.contains(k))
                    .cloned()
                    .collect(),
            })),
            other => other,
        });
        assert_eq!(expected, reference, "{text}");
        if let Some(v) = kept {
            assert_eq!(Ok(&v), reference.as_ref(), "{text}");
            assert_eq!(v.to_json(), reference.unwrap().to_json(), "{text}");
        }
    }

    #[test]
    fn keeping_fields_matches_serde_json_then_removing_the_others() {
        let mut cache = ParseCache::default();
        let keeps: [Vec<Arc<str>>; 4] = [
            vec![],
            vec![Arc::from("a")],
            vec![Arc::from("b"), Arc::from("type"), Arc::from("price")],
            vec![
                Arc::from("a"),
                Arc::from("k"),
                Arc::from("x"),
                Arc::from("n"),
            ],
        ];
        for _ in 0..2 {
            for keep in &keeps {
                for text in CASES {
                    check_keeping(&mut cache, text, keep);
                }
            }
        }
    }

    #[test]
    fn matches_serde_json_on_random_token_soup() {
        // documents glued from JSON fragments, valid and not, with a deterministic stream
        const TOKENS: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\"a\"",
            "\"b\"",
            "\"\\n\"",
            "\"é\"",
            "1",
            "-1",
            "0",
            "-0",
            "12",
            "1.5",
            "1e2",
            "99999999999999999999",
            "true",
            "false",
            "null",
            "\"",
            "x",
            "\t",
            "\"a\":1",
            "{\"a\":",
            "[1,2]",
            "\u{1}",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut cache = ParseCache::default();
        let keep: Vec<Arc<str>> = vec![Arc::from("a")];
        let mut accepted = 0;
        for _ in 0..100_000 {
            let len = 1 + next() % 12;
            let text: String = (0..len)
                .map(|_| TOKENS[(next() % TOKENS.len() as u64) as usize])
                .collect();
            check(&mut cache, &text);
            check_keeping(&mut cache, &text, &keep);
            accepted += usize::from(parse(&text, &mut cache).is_some());
        }
        assert!(
            accepted > 1000,
            "only {accepted} documents took the fast path"
        );
    }

    #[test]
    fn declines_what_only_serde_json_can_parse_exactly() {
        let mut cache = ParseCache::default();
        for text in [
            r#"{"a":"\n"}"#,
            r#"{"a":1.5}"#,
            r#"{"a":-0}"#,
            r#"{"a":12345678901234567890}"#,
        ] {
            assert!(parse(text, &mut cache).is_none(), "{text}");
        }
    }

    #[test]
    fn keys_are_interned_and_repeated_strings_shared() {
        let mut cache = ParseCache::default();
        let a = parse(r#"{"type":"bid","n":1}"#, &mut cache).unwrap();
        let b = parse(r#"{"n":2,"type":"bid"}"#, &mut cache).unwrap();
        let key = |v: &Value, i: usize| match v {
            Value::Map(m) => m.entries[i].0.clone(),
            _ => unreachable!(),
        };
        assert!(Arc::ptr_eq(&key(&a, 0), &key(&b, 1)));
        let c = parse(r#"{"type":"bid","n":3}"#, &mut cache).unwrap();
        match (a.get("type"), c.get("type")) {
            (Value::Str(x), Value::Str(y)) => assert!(Arc::ptr_eq(x, y)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn short_eq_is_slice_equality() {
        let words: Vec<Vec<u8>> = (0..20)
            .flat_map(|n| {
                let base: Vec<u8> = (0..n).map(|i| b'a' + i as u8).collect();
                let mut variants = vec![base.clone()];
                for i in 0..n {
                    let mut v = base.clone();
                    v[i] = b'Z';
                    variants.push(v);
                }
                variants
            })
            .collect();
        for a in &words {
            for b in &words {
                assert_eq!(short_eq(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn special_byte_finds_the_first_one_at_every_position() {
        for special in [b'"', b'\\', b'\n', 0u8, 0x1f] {
            for pos in 0..20 {
                let mut text = b"abcdefghijklmnopqrst".to_vec();
                text[pos] = special;
                assert_eq!(special_byte(&text), Some(pos));
            }
        }
        assert_eq!(special_byte("plain ünïcödé ~\u{7f}".as_bytes()), None);
    }
}
