//! Compares the compiled evaluator with the `cel` crate's interpreter: same value, or both
//! an error, over a table of expressions and over generated records.

use crate::value::{Map, Value};
use crate::Expr;
use std::sync::Arc;

const RECORD: &str = r#"{
    "type": "bid", "auction": 246, "bidder": 1001, "price": 150, "channel": "Google",
    "url": "https://x/y?a=1", "tags": ["a", "b"], "nested": {"k": "v", "n": 3},
    "f": 2.5, "u": 18446744073709551615, "n": null, "neg": -5, "flag": true,
    "items": [{"p": 1}, {"p": 200}, {"p": "x"}], "nums": [1, 2, 3], "word": "héllo"
}"#;

/// Expressions over `e` (the record above); all of them must compile to the fast form.
const COMPILED: &[&str] = &[
    // arithmetic
    "e.auction % 123 == 0 && e.price > 100",
    "e.price + 1",
    "e.price - 200",
    "e.price * 2",
    "e.price / 7",
    "e.price / 0",
    "e.price % 0",
    "9223372036854775807 + e.price",
    "e.neg * 9223372036854775807",
    "e.f * 2.0",
    "e.f + 1",
    "e.f % 2.0",
    "e.u + 1u",
    "1u - 2u",
    "7u / 2u",
    "-e.price",
    "-e.f",
    "-e.u",
    "1.0 / 0.0 > 1.0",
    // comparisons and equality
    "e.price == 150.0",
    "e.price < 150.5",
    "e.u > e.price",
    "e.price >= 150 && e.price <= 150",
    "e.f == 2.5",
    "e.u == 18446744073709551615u",
    "e.price == 'x'",
    "e.price > 'a'",
    "e.type < 'car'",
    "e.flag > false",
    "e.n == null",
    "e.n != null",
    "e.n < 1",
    "e.nums == [1, 2, 3]",
    "e.nums == [1.0, 2, 3]",
    "e.nested == {'n': 3, 'k': 'v'}",
    "e.nested != {'n': 3}",
    // strings
    "e.type + ':' + e.channel",
    "e.url.contains('x/y')",
    "e.url.startsWith('https')",
    "e.url.endsWith('1')",
    "e.price.contains('1')",
    "e.channel.matches('^Goo')",
    "matches(e.channel, 'gle$')",
    "e.channel.matches(e.type)",
    "e.channel.matches(e.price)",
    "size(e.word)",
    "e.word.size()",
    // logic
    "e.flag && e.missing",
    "e.missing || true",
    "false || e.missing",
    "e.missing && false",
    "e.missing && true",
    "true && e.price",
    "e.price || false",
    "!e.flag",
    "!e.price",
    "e.flag ? e.price : e.missing",
    "e.price ? 1 : 2",
    "e.flag && e.price > 1 && e.type == 'bid' && e.n == null",
    "e.missing || false || e.price > 1 || e.flag",
    // membership, selection, indexing
    "'a' in e.tags",
    "'z' in e.tags",
    "'k' in e.nested",
    "1 in e.nested",
    "null in e.nested",
    "2 in e.nums",
    "e.price in e.nums",
    "'b' in e.type",
    "e.nested.k",
    "e.nested.missing",
    "e.missing.x",
    "e['nested']['n']",
    "e.tags[1]",
    "e.tags[5]",
    "e.tags[-1]",
    "e.tags['a']",
    "e.nums[1u]",
    "e.nums[1.0]",
    "e.nums[1.5]",
    "e.nested[1]",
    "e.price.x",
    "has(e.nested.k)",
    "has(e.nested.zz)",
    "has(e.price.x)",
    "size(e.tags)",
    "e.tags.size()",
    "size(e.nested)",
    "size(e.price)",
    // conversions
    "int(e.f)",
    "int('42')",
    "int('x')",
    "int(e.u)",
    "uint(e.price)",
    "uint(e.neg)",
    "double(e.price)",
    "double('2.5')",
    "string(e.price)",
    "string(e.f)",
    "string(1.0)",
    "string(e.flag)",
    "string(e.u)",
    "string(e.nested)",
    // literals
    "[e.price, e.type, [1, 2]]",
    "{'a': e.price, 'b': e.type, 'c': {'d': e.nums}}",
    "{'a': 1, 'a': 2}",
    "{e.type: 1}",
    "e.nums + [4]",
    "e.nums + e.tags",
    "e.nums + 1",
    // logical operators absorbing errors, and non-bool operands
    "e.price > 'a' || true",
    "e.price > 'a' && false",
    "e.price > 'a' || e.price > 1",
    "true && e.price > 'a'",
    "!(e.price > 'a')",
    "!(e.price > 1) || e.flag",
    "e.flag && e.price",
    "e.flag || e.price",
    "e.price && e.flag",
    "false && e.price",
    "e.missing == 1 || e.type == 'bid'",
    // macros
    "e.nums.exists(x, x > 2)",
    "e.nums.all(x, x > 0)",
    "e.items.exists(i, i.p > 100)",
    "e.items.all(i, i.p > 0)",
    "e.items.all(i, i.p > 500)",
    "e.nums.map(x, x * 2)",
    "e.nums.filter(x, x % 2 == 1)",
    "e.nums.map(x, x > 1, x * 10)",
    "e.nums.exists_one(x, x == 2)",
    "e.tags.map(t, t + '!')",
    "e.nested.exists(k, k == 'n')",
    "e.nums.all(x, e.nums.exists(y, y == x))",
    "e.nums.filter(x, x > 1).map(y, y * y)",
    "e.items.map(i, i.p)",
    "e.items.filter(i, i.p > 1)",
    "e.price.exists(x, x)",
    "e.nums.map(e, e + 1)",
];

/// Expressions the compiled form leaves to the interpreter: they still work.
const INTERPRETED: &[&str] = &[
    "type(e.price) == int",
    "b'abc' == b'abc'",
    "{1: 'a'}[1]",
    "dyn(e.price) == 150",
];

fn record() -> Value {
    Value::from_json(RECORD).expect("the test record is valid JSON")
}

/// `v` with map entries sorted by key, for comparing maps regardless of entry order.
fn canonical(v: &Value) -> Value {
    match v {
        Value::List(l) => Value::List(Arc::new(l.iter().map(canonical).collect())),
        Value::Map(m) => {
            let mut entries: Vec<_> = m
                .entries
                .iter()
                .map(|(k, v)| (k.clone(), canonical(v)))
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Map(Arc::new(Map { entries }))
        }
        other => other.clone(),
    }
}

fn assert_same(source: &str, args: &[&Value]) {
    let fast = Expr::compile(source, &["e"]).unwrap_or_else(|e| panic!("{e}"));
    let slow = Expr::compile_interpreted(source, &["e"]).unwrap_or_else(|e| panic!("{e}"));
    let full = fast.eval(args);
    // eval_bool's shortcut for boolean operators: eval's result, with the same errors
    let expected_bool = match &full {
        Ok(Value::Bool(b)) => Ok(*b),
        Ok(other) => Err(format!("expected a bool, got {}", other.to_json())),
        Err(e) => Err(e.message.clone()),
    };
    let got_bool = fast.eval_bool(args).map_err(|e| e.message);
    assert_eq!(got_bool, expected_bool, "{source}: eval_bool vs eval");
    if let [one] = args {
        let mut owned = (*one).clone();
        assert_eq!(
            fast.eval_taking(&mut owned),
            full,
            "{source}: eval_taking vs eval"
        );
    }
    let a = full.map(|v| canonical(&v));
    let b = slow.eval(args).map(|v| canonical(&v));
    match (&a, &b) {
        (Ok(x), Ok(y)) => assert_eq!(x, y, "{source}: compiled vs interpreter"),
        (Err(_), Err(_)) => {}
        _ => panic!("{source}: compiled gave {a:?}, interpreter gave {b:?}"),
    }
}

#[test]
fn compiled_matches_interpreter_on_the_table() {
    let e = record();
    for source in COMPILED {
        let x = Expr::compile(source, &["e"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(x.interpreter_reason(), None, "{source} should compile");
        assert_same(source, &[&e]);
    }
}

#[test]
fn unsupported_constructs_fall_back_to_the_interpreter() {
    let e = record();
    for source in INTERPRETED {
        let x = Expr::compile(source, &["e"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            x.interpreter_reason().is_some(),
            "{source} should fall back"
        );
        assert_same(source, &[&e]);
    }
    let x = Expr::compile("type(e.price) == int", &["e"]).unwrap();
    assert!(x.eval_bool(&[&e]).unwrap());
    let x = Expr::compile("{1: 'a'}[1]", &["e"]).unwrap();
    assert_eq!(x.eval(&[&e]).unwrap(), Value::str("a"));
}

#[test]
fn map_literal_keeps_literal_order() {
    let e = record();
    let x = Expr::compile("{'z': e.price, 'a': e.type, 'm': 1}", &["e"]).unwrap();
    assert_eq!(
        x.eval(&[&e]).unwrap().to_json(),
        r#"{"z":150,"a":"bid","m":1}"#
    );
}

#[test]
fn missing_field_is_an_eval_error_naming_the_key() {
    let e = record();
    let x = Expr::compile("e.bidderr > 1", &["e"]).unwrap();
    let err = x.eval(&[&e]).unwrap_err();
    assert!(err.message.contains("no such key: bidderr"), "{err}");
}

#[test]
fn comprehension_variables_are_in_scope_and_others_are_not() {
    assert!(Expr::compile("e.nums.exists(x, x > 1)", &["e"]).is_ok());
    let err = Expr::compile("e.nums.exists(x, y > 1)", &["e"]).unwrap_err();
    assert!(err.message.contains("unknown variable 'y'"), "{err}");
}

#[test]
fn invalid_constant_regex_is_a_compile_error() {
    let err = Expr::compile("e.url.matches('(')", &["e"]).unwrap_err();
    assert!(err.message.contains("invalid regex"), "{err}");
}

#[test]
fn compiled_expressions_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Expr>();
}

#[test]
fn two_variables_are_bound_by_position() {
    let imp = Value::from_json(r#"{"requestId":"r1","adId":7}"#).unwrap();
    let click = Value::from_json(r#"{"requestId":"r1","adId":8}"#).unwrap();
    let x = Expr::compile(
        "imp.requestId == click.requestId && imp.adId < click.adId",
        &["imp", "click"],
    )
    .unwrap();
    assert!(x.eval_bool(&[&imp, &click]).unwrap());
    assert!(!x.eval_bool(&[&click, &imp]).unwrap());
}

/// A small deterministic generator for the property test.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn value(&mut self) -> Option<Value> {
        let small = (self.next() % 7) as i64 - 3;
        Some(match self.next() % 9 {
            0 => return None,
            1 => Value::Null,
            2 => Value::Bool(self.next().is_multiple_of(2)),
            3 => Value::Int(small),
            4 => Value::Int([i64::MAX, i64::MIN, 0][(self.next() % 3) as usize]),
            5 => Value::UInt(small.unsigned_abs()),
            6 => Value::Float([0.0, 1.5, -2.0, f64::NAN, 3.0][(self.next() % 5) as usize]),
            7 => Value::str(["", "a", "ab", "b"][(self.next() % 4) as usize]),
            _ => Value::List(Arc::new(vec![Value::Int(small), Value::str("a")])),
        })
    }
}

#[test]
fn compiled_matches_interpreter_on_generated_records() {
    let ops = [
        "e.a + e.b",
        "e.a - e.b",
        "e.a * e.b",
        "e.a / e.b",
        "e.a % e.b",
        "e.a == e.b",
        "e.a != e.b",
        "e.a < e.b",
        "e.a <= e.b",
        "e.a > e.b",
        "e.a >= e.b",
        "e.a in e.b",
        "e.a && e.b",
        "e.a || e.b",
        "!e.a",
        "-e.a",
        "e.a ? e.b : e.a",
        "size(e.a)",
        "int(e.a)",
        "uint(e.a)",
        "double(e.a)",
        "string(e.a)",
        "e.a[e.b]",
        "has(e.a.b)",
        "[e.a, e.b].exists(x, x == 1)",
        "[e.a, e.b].all(x, x)",
        "{'x': e.a}.x == e.b",
    ];
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..300 {
        let mut m = Map::default();
        if let Some(a) = rng.value() {
            m.insert("a", a);
        }
        if let Some(b) = rng.value() {
            m.insert("b", b);
        }
        let e = Value::Map(Arc::new(m));
        for op in ops {
            let fast = Expr::compile(op, &["e"]).unwrap();
            let slow = Expr::compile_interpreted(op, &["e"]).unwrap();
            let (a, b) = (fast.eval(&[&e]), slow.eval(&[&e]));
            match (&a, &b) {
                (Ok(x), Ok(y)) => {
                    // NaN != NaN: compare the JSON forms.
                    assert_eq!(x.to_json(), y.to_json(), "{op} on {}", e.to_json())
                }
                (Err(_), Err(_)) => {}
                _ => panic!("{op} on {}: compiled {a:?}, interpreter {b:?}", e.to_json()),
            }
        }
    }
}
