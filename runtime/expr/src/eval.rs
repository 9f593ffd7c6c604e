//! The compiled form of a CEL expression: a tree of nodes with variables resolved to
//! argument positions and comprehension slots, evaluated against [`Value`]s in place.
//!
//! Semantics follow the `cel` crate's interpreter (the reference the tests compare with):
//! arithmetic needs both operands of the same numeric type and fails on overflow and on
//! division/remainder by zero; equality and ordering compare `int`, `uint` and `double`
//! numerically (`1 == 1.0` is true, as in the crate, where strict CEL would reject it);
//! `&&`/`||` absorb an error on one side when the other side decides the result.

use crate::value::{Map, Value};
use regex::Regex;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::Arc;

/// The result of evaluating a node: borrowed from the record or the tree when possible.
pub(crate) type Outcome<'a> = Result<Cow<'a, Value>, String>;

/// A binary arithmetic operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// An ordering operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
}

/// A string test called as a method: `s.contains(t)`, `s.startsWith(t)`, `s.endsWith(t)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StrTest {
    Contains,
    StartsWith,
    EndsWith,
}

/// A type conversion function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Conversion {
    Int,
    UInt,
    Double,
    String,
}

/// One node of a compiled expression.
#[derive(Debug)]
pub(crate) enum Node {
    /// A literal.
    Const(Value),
    /// The expression's `i`-th variable.
    Arg(usize),
    /// A comprehension variable (iteration variable or accumulator) in slot `i`.
    Local(usize),
    /// `operand.field`: a missing key is an error.
    Select(Box<Node>, Arc<str>),
    /// `has(operand.field)`.
    Has(Box<Node>, Arc<str>),
    /// `operand[index]`.
    Index(Box<Node>, Box<Node>),
    /// `!operand`.
    Not(Box<Node>),
    /// `-operand`.
    Neg(Box<Node>),
    /// `a && b`.
    And(Box<Node>, Box<Node>),
    /// `a || b`.
    Or(Box<Node>, Box<Node>),
    /// `cond ? a : b`.
    Cond(Box<Node>, Box<Node>, Box<Node>),
    /// Arithmetic, string and list concatenation.
    Arith(ArithOp, Box<Node>, Box<Node>),
    /// `<`, `<=`, `>`, `>=`.
    Cmp(CmpOp, Box<Node>, Box<Node>),
    /// `a == b` (or `a != b` when the flag is set).
    Eq(Box<Node>, Box<Node>, bool),
    /// `a in b`.
    In(Box<Node>, Box<Node>),
    /// A list literal.
    List(Vec<Node>),
    /// A map literal; entries keep their literal order.
    Map(Vec<(Node, Node)>),
    /// A map literal with distinct constant string keys, in literal order.
    Record(Vec<(Arc<str>, Node)>),
    /// `size(x)` / `x.size()`.
    Size(Box<Node>),
    /// A string method.
    StrTest(StrTest, Box<Node>, Box<Node>),
    /// `s.matches(re)` with a regex compiled once.
    MatchesConst(Box<Node>, Regex),
    /// `s.matches(re)` with a computed regex.
    Matches(Box<Node>, Box<Node>),
    /// `int(x)`, `uint(x)`, `double(x)`, `string(x)`.
    Convert(Conversion, Box<Node>),
    /// The macros' `@not_strictly_false(x)`: true unless `x` is `false`.
    NotStrictlyFalse(Box<Node>),
    /// A comprehension (`all`, `exists`, `exists_one`, ...).
    Fold(Box<Fold>),
    /// A comprehension that only appends to a list (`map`, `filter`).
    AppendFold(Box<AppendFold>),
}

/// A general comprehension, evaluated like the `cel` crate does.
#[derive(Debug)]
pub(crate) struct Fold {
    pub range: Node,
    pub iter_slot: usize,
    pub accu_slot: usize,
    pub init: Node,
    pub cond: Node,
    pub step: Node,
    pub result: Node,
    /// For `@result && x` / `@result || x` steps: the value that decides the result
    /// (`false` / `true`), which absorbs an error from another element.
    pub absorbing: Option<bool>,
}

/// `range.map(x, f)`, `range.map(x, p, f)` and `range.filter(x, p)`.
#[derive(Debug)]
pub(crate) struct AppendFold {
    pub range: Node,
    pub iter_slot: usize,
    pub cond: Node,
    pub guard: Option<Node>,
    pub items: Vec<Node>,
}

/// Where variables are read from while evaluating.
pub(crate) struct Frame<'a, 'r, 'l> {
    /// The expression's variables, by position.
    pub args: &'r [&'a Value],
    /// Comprehension slots.
    pub locals: &'l mut [Value],
}

impl Frame<'_, '_, '_> {
    fn set(&mut self, slot: usize, value: Value) {
        if let Some(local) = self.locals.get_mut(slot) {
            *local = value;
        }
    }
}

/// The CEL type name of a value, for error messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::UInt(_) => "uint",
        Value::Float(_) => "double",
        Value::Str(_) => "string",
        Value::List(_) => "list",
        Value::Map(_) => "map",
    }
}

fn no_overload(function: &str, args: &[&Value]) -> String {
    let types: Vec<&str> = args.iter().map(|v| type_name(v)).collect();
    format!(
        "found no matching overload for '{function}' applied to '({})'",
        types.join(", ")
    )
}

fn no_such_key(key: &str) -> String {
    format!("no such key: {key}")
}

fn owned<'a>(v: Value) -> Outcome<'a> {
    Ok(Cow::Owned(v))
}

fn as_bool(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => Err(format!(
            "unexpected type: got '{}', want 'bool'",
            type_name(other)
        )),
    }
}

/// Selects `field` from `operand`, borrowing when the operand is borrowed.
fn select<'a>(operand: Cow<'a, Value>, field: &str) -> Outcome<'a> {
    match operand {
        Cow::Borrowed(Value::Map(m)) => m
            .get(field)
            .map(Cow::Borrowed)
            .ok_or_else(|| no_such_key(field)),
        Cow::Owned(Value::Map(m)) => m
            .get(field)
            .cloned()
            .map(Cow::Owned)
            .ok_or_else(|| no_such_key(field)),
        other => Err(no_overload("_._", &[&other, &Value::str(field)])),
    }
}

/// A list position from an index value, as the `cel` crate accepts them.
fn list_position(list: &Value, idx: &Value) -> Result<usize, String> {
    let out_of_bounds = || format!("index out of bounds: {}", idx.to_json());
    match idx {
        Value::Int(i) => usize::try_from(*i).map_err(|_| out_of_bounds()),
        Value::UInt(u) => usize::try_from(*u).map_err(|_| out_of_bounds()),
        Value::Float(f) => match double_to_int_lossless(*f) {
            Some(i) => usize::try_from(i).map_err(|_| out_of_bounds()),
            None => Err(format!(
                "cannot use value {} to index a list",
                idx.to_json()
            )),
        },
        other => Err(no_overload("_[_]", &[list, other])),
    }
}

fn double_to_int_lossless(d: f64) -> Option<i64> {
    // Mirrors the cel crate (and cel-go): -2^63 is rejected too.
    if d.fract() == 0.0 && d > i64::MIN as f64 && d < i64::MAX as f64 {
        Some(d as i64)
    } else {
        None
    }
}

/// Whether a value can be looked up as a map key (string keys only exist in records, so
/// other key types simply miss).
fn is_lookup_key(v: &Value) -> bool {
    matches!(
        v,
        Value::Bool(_) | Value::Int(_) | Value::UInt(_) | Value::Str(_) | Value::Float(_)
    )
}

fn index<'a>(container: Cow<'a, Value>, idx: &Value) -> Outcome<'a> {
    match &*container {
        Value::List(l) => {
            let i = list_position(&container, idx)?;
            if i >= l.len() {
                return Err(format!("index out of bounds: {}", idx.to_json()));
            }
            Ok(match container {
                Cow::Borrowed(Value::List(l)) => Cow::Borrowed(&l[i]),
                other => Cow::Owned(match &*other {
                    Value::List(l) => l[i].clone(),
                    _ => Value::Null,
                }),
            })
        }
        Value::Map(m) => match idx {
            Value::Str(k) => match container {
                Cow::Borrowed(Value::Map(m)) => {
                    m.get(k).map(Cow::Borrowed).ok_or_else(|| no_such_key(k))
                }
                _ => m
                    .get(k)
                    .cloned()
                    .map(Cow::Owned)
                    .ok_or_else(|| no_such_key(k)),
            },
            other if is_lookup_key(other) => Err(no_such_key(&other.to_json())),
            other => Err(no_overload("_[_]", &[&container, other])),
        },
        other => Err(no_overload("_[_]", &[other, idx])),
    }
}

/// Numeric comparison across `int`, `uint` and `double`: `None` when either is not a number,
/// `Some(None)` when a NaN makes them unordered.
fn numeric_cmp(a: &Value, b: &Value) -> Option<Option<Ordering>> {
    use Value::*;
    Some(match (a, b) {
        (Int(x), Int(y)) => Some(x.cmp(y)),
        (UInt(x), UInt(y)) => Some(x.cmp(y)),
        (Float(x), Float(y)) => x.partial_cmp(y),
        (Int(x), UInt(y)) => Some(u64::try_from(*x).map_or(Ordering::Less, |x| x.cmp(y))),
        (UInt(x), Int(y)) => Some(i64::try_from(*x).map_or(Ordering::Greater, |x| x.cmp(y))),
        (Int(x), Float(y)) => (*x as f64).partial_cmp(y),
        (Float(x), Int(y)) => x.partial_cmp(&(*y as f64)),
        (UInt(x), Float(y)) => (*x as f64).partial_cmp(y),
        (Float(x), UInt(y)) => x.partial_cmp(&(*y as f64)),
        _ => return None,
    })
}

/// CEL equality as the `cel` crate implements it: numbers compare numerically, maps
/// ignore entry order, values of different types are unequal.
pub(crate) fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(a, b)| values_equal(a, b))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.entries
                    .iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => matches!(numeric_cmp(a, b), Some(Some(Ordering::Equal))),
    }
}

fn compare(op: CmpOp, a: &Value, b: &Value) -> Result<bool, String> {
    let name = match op {
        CmpOp::Lt => "_<_",
        CmpOp::Le => "_<=_",
        CmpOp::Gt => "_>_",
        CmpOp::Ge => "_>=_",
    };
    let ord = match (a, b) {
        (Value::Str(x), Value::Str(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => match numeric_cmp(a, b) {
            Some(Some(ord)) => ord,
            Some(None) => {
                return Err(format!(
                    "{} can not be compared to {}",
                    a.to_json(),
                    b.to_json()
                ))
            }
            None => return Err(no_overload(name, &[a, b])),
        },
    };
    Ok(match op {
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    })
}

fn overflow(op: &str, a: &Value, b: &Value) -> String {
    format!("overflow from '{op}': {}, {}", a.to_json(), b.to_json())
}

fn arith(op: ArithOp, a: &Value, b: &Value) -> Result<Value, String> {
    use Value::*;
    let name = match op {
        ArithOp::Add => "_+_",
        ArithOp::Sub => "_-_",
        ArithOp::Mul => "_*_",
        ArithOp::Div => "_/_",
        ArithOp::Rem => "_%_",
    };
    match (a, b) {
        (Int(x), Int(y)) => {
            let r = match op {
                ArithOp::Add => x.checked_add(*y),
                ArithOp::Sub => x.checked_sub(*y),
                ArithOp::Mul => x.checked_mul(*y),
                ArithOp::Div if *y == 0 => return Err(format!("division by zero of {x}")),
                ArithOp::Div => x.checked_div(*y),
                ArithOp::Rem if *y == 0 => return Err(format!("remainder by zero of {x}")),
                ArithOp::Rem => x.checked_rem(*y),
            };
            r.map(Int).ok_or_else(|| overflow(name, a, b))
        }
        (UInt(x), UInt(y)) => {
            let r = match op {
                ArithOp::Add => x.checked_add(*y),
                ArithOp::Sub => x.checked_sub(*y),
                ArithOp::Mul => x.checked_mul(*y),
                ArithOp::Div if *y == 0 => return Err(format!("division by zero of {x}")),
                ArithOp::Div => x.checked_div(*y),
                ArithOp::Rem if *y == 0 => return Err(format!("remainder by zero of {x}")),
                ArithOp::Rem => x.checked_rem(*y),
            };
            r.map(UInt).ok_or_else(|| overflow(name, a, b))
        }
        (Float(x), Float(y)) => match op {
            ArithOp::Add => Ok(Float(x + y)),
            ArithOp::Sub => Ok(Float(x - y)),
            ArithOp::Mul => Ok(Float(x * y)),
            ArithOp::Div => Ok(Float(x / y)),
            ArithOp::Rem => Err(no_overload(name, &[a, b])),
        },
        (Str(x), Str(y)) if op == ArithOp::Add => {
            let mut s = String::with_capacity(x.len() + y.len());
            s.push_str(x);
            s.push_str(y);
            Ok(Value::str(&s))
        }
        (List(x), List(y)) if op == ArithOp::Add => {
            let mut out = Vec::with_capacity(x.len() + y.len());
            out.extend(x.iter().cloned());
            out.extend(y.iter().cloned());
            Ok(List(Arc::new(out)))
        }
        (List(x), Map(y)) if op == ArithOp::Add => {
            // The cel crate appends any iterable: a map's keys.
            let mut out = Vec::with_capacity(x.len() + y.len());
            out.extend(x.iter().cloned());
            out.extend(y.entries.iter().map(|(k, _)| Str(k.clone())));
            Ok(List(Arc::new(out)))
        }
        _ => Err(no_overload(name, &[a, b])),
    }
}

fn contains(container: &Value, item: &Value) -> Result<bool, String> {
    match container {
        Value::List(l) => Ok(l.iter().any(|x| values_equal(x, item))),
        Value::Map(m) => match item {
            Value::Str(k) => Ok(m.get(k).is_some()),
            other if is_lookup_key(other) => Ok(false),
            other => Err(no_overload("@in", &[other, container])),
        },
        other => Err(no_overload("@in", &[item, other])),
    }
}

fn size(v: &Value) -> Result<i64, String> {
    match v {
        Value::Str(s) => Ok(s.chars().count() as i64),
        Value::List(l) => Ok(l.len() as i64),
        Value::Map(m) => Ok(m.len() as i64),
        other => Err(no_overload("size", &[other])),
    }
}

fn convert(kind: Conversion, v: &Value) -> Result<Value, String> {
    let overflow = |f: &str| format!("error executing function '{f}': integer overflow");
    let parse = |f: &str, e: &dyn std::fmt::Display| {
        format!("error executing function '{f}': string parse error: {e}")
    };
    match (kind, v) {
        (Conversion::Int, Value::Int(i)) => Ok(Value::Int(*i)),
        (Conversion::Int, Value::UInt(u)) => i64::try_from(*u)
            .map(Value::Int)
            .map_err(|_| overflow("int")),
        (Conversion::Int, Value::Float(f)) => {
            if *f > i64::MIN as f64 && *f < i64::MAX as f64 {
                Ok(Value::Int(*f as i64))
            } else {
                Err(overflow("int"))
            }
        }
        (Conversion::Int, Value::Str(s)) => s
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|e| parse("int", &e)),
        (Conversion::UInt, Value::UInt(u)) => Ok(Value::UInt(*u)),
        (Conversion::UInt, Value::Int(i)) => u64::try_from(*i)
            .map(Value::UInt)
            .map_err(|_| overflow("uint")),
        (Conversion::UInt, Value::Float(f)) => {
            if *f >= 0.0 && *f < u64::MAX as f64 {
                Ok(Value::UInt(*f as u64))
            } else {
                Err(overflow("uint"))
            }
        }
        (Conversion::UInt, Value::Str(s)) => s
            .parse::<u64>()
            .map(Value::UInt)
            .map_err(|e| parse("uint", &e)),
        (Conversion::Double, Value::Float(f)) => Ok(Value::Float(*f)),
        (Conversion::Double, Value::Int(i)) => Ok(Value::Float(*i as f64)),
        (Conversion::Double, Value::UInt(u)) => Ok(Value::Float(*u as f64)),
        (Conversion::Double, Value::Str(s)) => s
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|e| parse("double", &e)),
        (Conversion::String, Value::Str(s)) => Ok(Value::Str(s.clone())),
        (Conversion::String, Value::Bool(b)) => Ok(Value::str(&b.to_string())),
        (Conversion::String, Value::Int(i)) => Ok(Value::str(&i.to_string())),
        (Conversion::String, Value::UInt(u)) => Ok(Value::str(&u.to_string())),
        (Conversion::String, Value::Float(f)) => Ok(Value::str(&f.to_string())),
        (kind, other) => {
            let name = match kind {
                Conversion::Int => "int",
                Conversion::UInt => "uint",
                Conversion::Double => "double",
                Conversion::String => "string",
            };
            Err(no_overload(name, &[other]))
        }
    }
}

/// A map literal key: strings as they are; ints, uints and bools written out as the
/// interpreter path writes them (record maps have string keys only).
fn map_key(v: &Value) -> Result<Arc<str>, String> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        Value::Int(i) => Ok(Arc::from(i.to_string().as_str())),
        Value::UInt(u) => Ok(Arc::from(u.to_string().as_str())),
        Value::Bool(b) => Ok(Arc::from(b.to_string().as_str())),
        other => Err(format!("unable to use value {} as a key", other.to_json())),
    }
}

/// The elements a comprehension iterates over: a list's elements or a map's keys.
enum Items<'v> {
    List(&'v [Value]),
    Keys(&'v Map),
}

impl<'v> Items<'v> {
    fn of(range: &'v Value) -> Result<Self, String> {
        match range {
            Value::List(l) => Ok(Items::List(l)),
            Value::Map(m) => Ok(Items::Keys(m)),
            other => Err(format!(
                "unexpected type: got '{}', want 'iterable'",
                type_name(other)
            )),
        }
    }
    fn len(&self) -> usize {
        match self {
            Items::List(l) => l.len(),
            Items::Keys(m) => m.len(),
        }
    }
    fn get(&self, i: usize) -> Value {
        match self {
            Items::List(l) => l.get(i).cloned().unwrap_or_default(),
            Items::Keys(m) => m
                .entries
                .get(i)
                .map(|(k, _)| Value::Str(k.clone()))
                .unwrap_or_default(),
        }
    }
}

impl Node {
    /// Whether the node yields a bool whenever it does not fail.
    pub(crate) fn always_bool(&self) -> bool {
        matches!(
            self,
            Node::Eq(..) | Node::Cmp(..) | Node::And(..) | Node::Or(..) | Node::Not(..)
        )
    }

    /// The node's value as a bool (an error for any other value): `eval` followed by
    /// `as_bool`, without building values for comparisons and logical operators.
    pub(crate) fn truth<'a>(&'a self, frame: &mut Frame<'a, '_, '_>) -> Result<bool, String> {
        match self {
            Node::Eq(a, b, negate) => {
                let a = a.eval(frame)?;
                let b = b.eval(frame)?;
                Ok(values_equal(&a, &b) != *negate)
            }
            Node::Cmp(op, a, b) => {
                let a = a.eval(frame)?;
                let b = b.eval(frame)?;
                compare(*op, &a, &b)
            }
            Node::Not(operand) if operand.always_bool() => operand.truth(frame).map(|b| !b),
            Node::And(a, b) => logical_truth(frame, a, b, false),
            Node::Or(a, b) => logical_truth(frame, a, b, true),
            other => as_bool(&*other.eval(frame)?),
        }
    }

    /// Evaluates the node.
    pub(crate) fn eval<'a>(&'a self, frame: &mut Frame<'a, '_, '_>) -> Outcome<'a> {
        match self {
            Node::Const(v) => Ok(Cow::Borrowed(v)),
            Node::Arg(i) => frame
                .args
                .get(*i)
                .map(|v| Cow::Borrowed(*v))
                .ok_or_else(|| format!("no value bound to variable #{i}")),
            Node::Local(i) => Ok(Cow::Owned(
                frame.locals.get(*i).cloned().unwrap_or_default(),
            )),
            Node::Select(operand, field) => select(operand.eval(frame)?, field),
            Node::Has(operand, field) => match &*operand.eval(frame)? {
                Value::Map(m) => owned(Value::Bool(m.get(field).is_some())),
                other => Err(no_overload("_._", &[other, &Value::str(field)])),
            },
            Node::Index(container, idx) => {
                let container = container.eval(frame)?;
                let idx = idx.eval(frame)?;
                index(container, &idx)
            }
            Node::Not(operand) => match &*operand.eval(frame)? {
                Value::Bool(b) => owned(Value::Bool(!b)),
                other => Err(no_overload("!_", &[other])),
            },
            Node::Neg(operand) => match &*operand.eval(frame)? {
                Value::Int(i) => i
                    .checked_neg()
                    .map(Value::Int)
                    .map(Cow::Owned)
                    .ok_or_else(|| format!("overflow from '-_': {i}")),
                Value::Float(f) => owned(Value::Float(-f)),
                other => Err(no_overload("-_", &[other])),
            },
            Node::And(a, b) => logical(frame, a, b, false),
            Node::Or(a, b) => logical(frame, a, b, true),
            Node::Cond(c, a, b) => {
                if as_bool(&*c.eval(frame)?)? {
                    a.eval(frame)
                } else {
                    b.eval(frame)
                }
            }
            Node::Arith(op, a, b) => {
                let a = a.eval(frame)?;
                let b = b.eval(frame)?;
                arith(*op, &a, &b).map(Cow::Owned)
            }
            Node::Cmp(op, a, b) => {
                let a = a.eval(frame)?;
                let b = b.eval(frame)?;
                compare(*op, &a, &b).map(|r| Cow::Owned(Value::Bool(r)))
            }
            Node::Eq(a, b, negate) => {
                let a = a.eval(frame)?;
                let b = b.eval(frame)?;
                owned(Value::Bool(values_equal(&a, &b) != *negate))
            }
            Node::In(item, container) => {
                let item = item.eval(frame)?;
                let container = container.eval(frame)?;
                contains(&container, &item).map(|r| Cow::Owned(Value::Bool(r)))
            }
            Node::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(item.eval(frame)?.into_owned());
                }
                owned(Value::List(Arc::new(out)))
            }
            Node::Map(entries) => {
                let mut out = Map::with_capacity(entries.len());
                for (k, v) in entries {
                    let key = map_key(&*k.eval(frame)?)?;
                    let value = v.eval(frame)?.into_owned();
                    if out.get(&key).is_some() {
                        return Err(format!("failed with repeated key: {key}"));
                    }
                    out.entries.push((key, value));
                }
                owned(Value::Map(Arc::new(out)))
            }
            Node::Record(fields) => {
                let mut entries = Vec::with_capacity(fields.len());
                for (key, value) in fields {
                    entries.push((key.clone(), value.eval(frame)?.into_owned()));
                }
                owned(Value::Map(Arc::new(Map { entries })))
            }
            Node::Size(operand) => size(&*operand.eval(frame)?).map(|n| Cow::Owned(Value::Int(n))),
            Node::StrTest(test, s, t) => {
                let s = s.eval(frame)?;
                let t = t.eval(frame)?;
                match (&*s, &*t) {
                    (Value::Str(s), Value::Str(t)) => owned(Value::Bool(match test {
                        StrTest::Contains => s.contains(&**t),
                        StrTest::StartsWith => s.starts_with(&**t),
                        StrTest::EndsWith => s.ends_with(&**t),
                    })),
                    (s, t) => {
                        let name = match test {
                            StrTest::Contains => "contains",
                            StrTest::StartsWith => "startsWith",
                            StrTest::EndsWith => "endsWith",
                        };
                        Err(no_overload(name, &[s, t]))
                    }
                }
            }
            Node::MatchesConst(s, re) => match &*s.eval(frame)? {
                Value::Str(s) => owned(Value::Bool(re.is_match(s))),
                other => Err(no_overload("matches", &[other, &Value::str(re.as_str())])),
            },
            Node::Matches(s, re) => {
                let s = s.eval(frame)?;
                let re = re.eval(frame)?;
                match (&*s, &*re) {
                    (Value::Str(s), Value::Str(re)) => match Regex::new(re) {
                        Ok(compiled) => owned(Value::Bool(compiled.is_match(s))),
                        Err(e) => Err(format!(
                            "error executing function 'matches': '{re}' not a valid regex:\n{e}"
                        )),
                    },
                    (s, re) => Err(no_overload("matches", &[s, re])),
                }
            }
            Node::Convert(kind, operand) => convert(*kind, &*operand.eval(frame)?).map(Cow::Owned),
            Node::NotStrictlyFalse(operand) => {
                let v = operand.eval(frame);
                owned(Value::Bool(!matches!(v.as_deref(), Ok(Value::Bool(false)))))
            }
            Node::Fold(fold) => fold.eval(frame),
            Node::AppendFold(fold) => fold.eval(frame),
        }
    }
}

/// `a && b` (`or == false`) or `a || b` (`or == true`), as the cel crate evaluates them:
/// the left side short-circuits; an error on the left is absorbed when the right side
/// decides the result.
/// `logical` for [`Node::truth`]: the same result without building values.
fn logical_truth<'a>(
    frame: &mut Frame<'a, '_, '_>,
    a: &'a Node,
    b: &'a Node,
    or: bool,
) -> Result<bool, String> {
    let left = a.truth(frame);
    if left == Ok(or) {
        return Ok(or);
    }
    if b.always_bool() {
        let right = b.truth(frame)?;
        return match left {
            Ok(_) => Ok(right),
            Err(_) if right == or => Ok(or),
            Err(e) => Err(e),
        };
    }
    let right = b.eval(frame)?;
    match (left, &*right) {
        (Ok(_), Value::Bool(r)) => Ok(*r),
        (Err(_), Value::Bool(r)) if *r == or => Ok(or),
        (Err(e), _) => Err(e),
        (Ok(_), other) => Err(no_overload(
            if or { "_||_" } else { "_&&_" },
            &[&Value::Bool(!or), other],
        )),
    }
}

fn logical<'a>(frame: &mut Frame<'a, '_, '_>, a: &'a Node, b: &'a Node, or: bool) -> Outcome<'a> {
    let left = a.eval(frame).and_then(|v| as_bool(&v));
    if left == Ok(or) {
        return owned(Value::Bool(or));
    }
    let right = b.eval(frame)?;
    match (left, &*right) {
        (Ok(_), Value::Bool(r)) => owned(Value::Bool(*r)),
        (Err(_), Value::Bool(r)) if *r == or => owned(Value::Bool(or)),
        (Err(e), _) => Err(e),
        (Ok(_), other) => Err(no_overload(
            if or { "_||_" } else { "_&&_" },
            &[&Value::Bool(!or), other],
        )),
    }
}

impl Fold {
    fn eval<'a>(&'a self, frame: &mut Frame<'a, '_, '_>) -> Outcome<'a> {
        let init = self.init.eval(frame)?.into_owned();
        let range = self.range.eval(frame)?;
        let items = Items::of(&range)?;
        frame.set(self.accu_slot, init);
        let mut pending: Option<String> = None;
        for n in 0..items.len() {
            if !as_bool(&*self.cond.eval(frame)?)? {
                break;
            }
            frame.set(self.iter_slot, items.get(n));
            let step = self.step.eval(frame).map(Cow::into_owned);
            match (step, self.absorbing) {
                (Err(e), Some(_)) => pending = Some(e),
                (Err(e), None) => return Err(e),
                (Ok(v), Some(absorbing)) if pending.is_some() && v != Value::Bool(absorbing) => {}
                (Ok(v), _) => {
                    pending = None;
                    frame.set(self.accu_slot, v);
                }
            }
        }
        if let Some(e) = pending {
            return Err(e);
        }
        Ok(Cow::Owned(self.result.eval(frame)?.into_owned()))
    }
}

impl AppendFold {
    fn eval<'a>(&'a self, frame: &mut Frame<'a, '_, '_>) -> Outcome<'a> {
        let range = self.range.eval(frame)?;
        let items = Items::of(&range)?;
        let mut out = Vec::with_capacity(items.len());
        for n in 0..items.len() {
            if !as_bool(&*self.cond.eval(frame)?)? {
                break;
            }
            frame.set(self.iter_slot, items.get(n));
            if let Some(guard) = &self.guard {
                if !as_bool(&*guard.eval(frame)?)? {
                    continue;
                }
            }
            for node in &self.items {
                out.push(node.eval(frame)?.into_owned());
            }
        }
        owned(Value::List(Arc::new(out)))
    }
}
