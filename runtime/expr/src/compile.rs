//! Compiles the `cel` crate's parsed AST into the node tree of [`crate::eval`]: variables
//! become argument positions, comprehension variables become slots, field names and
//! constant regexes are prepared once. Anything outside the supported subset is reported
//! as [`Unsupported`], and the caller falls back to the `cel` crate's interpreter.

use crate::eval::{AppendFold, ArithOp, CmpOp, Conversion, Fold, Node, StrTest};
use crate::value::Value;
use cel::common::ast::{operators, CallExpr, ComprehensionExpr, EntryExpr, Expr, LiteralValue};
use cel::IdedExpr;
use regex::Regex;
use std::sync::Arc;

/// Why an expression cannot be compiled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Unsupported {
    /// Outside the compiled subset: left to the interpreter, for this reason.
    Construct(String),
    /// Invalid however it is run (e.g. a constant regex that does not parse).
    Invalid(String),
}

/// A compiled expression: its root node and how many comprehension slots it needs.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub root: Node,
    pub slots: usize,
}

/// Names of CEL types, which the interpreter resolves as identifiers (`type(x) == int`).
const TYPE_NAMES: &[&str] = &[
    "bool",
    "bytes",
    "double",
    "duration",
    "dyn",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "timestamp",
    "type",
    "uint",
];

/// The identifiers `expr` reads that are neither bound by a comprehension nor type names.
pub(crate) fn free_variables<'e>(
    expr: &'e IdedExpr,
    bound: &mut Vec<&'e str>,
    out: &mut Vec<&'e str>,
) {
    match &expr.expr {
        Expr::Ident(name) => {
            if !name.starts_with('@')
                && !bound.contains(&name.as_str())
                && !TYPE_NAMES.contains(&name.as_str())
                && !out.contains(&name.as_str())
            {
                out.push(name);
            }
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                free_variables(target, bound, out);
            }
            for arg in &call.args {
                free_variables(arg, bound, out);
            }
        }
        Expr::Comprehension(c) => {
            free_variables(&c.iter_range, bound, out);
            free_variables(&c.accu_init, bound, out);
            let depth = bound.len();
            bound.push(&c.iter_var);
            if let Some(v) = &c.iter_var2 {
                bound.push(v);
            }
            bound.push(&c.accu_var);
            free_variables(&c.loop_cond, bound, out);
            free_variables(&c.loop_step, bound, out);
            free_variables(&c.result, bound, out);
            bound.truncate(depth);
        }
        Expr::List(list) => {
            for e in &list.elements {
                free_variables(e, bound, out);
            }
        }
        Expr::Map(map) => {
            for entry in &map.entries {
                if let EntryExpr::MapEntry(e) = &entry.expr {
                    free_variables(&e.key, bound, out);
                    free_variables(&e.value, bound, out);
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &s.entries {
                match &entry.expr {
                    EntryExpr::MapEntry(e) => {
                        free_variables(&e.key, bound, out);
                        free_variables(&e.value, bound, out);
                    }
                    EntryExpr::StructField(f) => free_variables(&f.value, bound, out),
                }
            }
        }
        Expr::Select(s) => free_variables(&s.operand, bound, out),
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// A map literal whose keys are distinct string constants becomes a [`Node::Record`] (no
/// key evaluation or repeated-key check per record); any other stays a [`Node::Map`].
fn record_literal(entries: Vec<(Node, Node)>) -> Node {
    let mut keys: Vec<Arc<str>> = Vec::with_capacity(entries.len());
    for (k, _) in &entries {
        match k {
            Node::Const(Value::Str(k)) if !keys.contains(k) => keys.push(k.clone()),
            _ => return Node::Map(entries),
        }
    }
    Node::Record(
        keys.into_iter()
            .zip(entries.into_iter().map(|(_, v)| v))
            .collect(),
    )
}

/// Compiles `expr` with `vars` naming the argument positions.
pub(crate) fn compile(expr: &IdedExpr, vars: &[&str]) -> Result<Compiled, Unsupported> {
    let mut compiler = Compiler {
        vars,
        locals: Vec::new(),
        slots: 0,
    };
    let root = compiler.node(expr)?;
    Ok(Compiled {
        root,
        slots: compiler.slots,
    })
}

struct Compiler<'v, 'e> {
    vars: &'v [&'v str],
    /// Comprehension variables in scope, innermost last, with their slots.
    locals: Vec<(&'e str, usize)>,
    /// Slots used so far.
    slots: usize,
}

fn unsupported<T>(what: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported::Construct(what.into()))
}

fn boxed(node: Node) -> Box<Node> {
    Box::new(node)
}

impl<'e> Compiler<'_, 'e> {
    fn node(&mut self, expr: &'e IdedExpr) -> Result<Node, Unsupported> {
        match &expr.expr {
            Expr::Literal(lit) => Ok(Node::Const(literal(lit)?)),
            Expr::Ident(name) => self.ident(name),
            Expr::Select(select) => {
                let operand = boxed(self.node(&select.operand)?);
                let field: Arc<str> = Arc::from(select.field.as_str());
                Ok(if select.test {
                    Node::Has(operand, field)
                } else {
                    Node::Select(operand, field)
                })
            }
            Expr::List(list) => {
                if !list.optional_indices.is_empty() {
                    return unsupported("optional list elements");
                }
                let items = list
                    .elements
                    .iter()
                    .map(|e| self.node(e))
                    .collect::<Result<_, _>>()?;
                Ok(Node::List(items))
            }
            Expr::Map(map) => {
                let mut entries = Vec::with_capacity(map.entries.len());
                for entry in &map.entries {
                    let EntryExpr::MapEntry(e) = &entry.expr else {
                        return unsupported("struct field in a map literal");
                    };
                    if e.optional {
                        return unsupported("optional map entry");
                    }
                    if let Expr::Literal(lit) = &e.key.expr {
                        if !matches!(lit, LiteralValue::String(_)) {
                            return unsupported("map literal with a non-string key");
                        }
                    }
                    entries.push((self.node(&e.key)?, self.node(&e.value)?));
                }
                Ok(record_literal(entries))
            }
            Expr::Call(call) => self.call(call),
            Expr::Comprehension(c) => self.comprehension(c),
            Expr::Struct(_) => unsupported("message construction"),
            Expr::Unspecified => unsupported("unspecified expression"),
        }
    }

    fn ident(&self, name: &str) -> Result<Node, Unsupported> {
        if let Some((_, slot)) = self.locals.iter().rev().find(|(n, _)| *n == name) {
            return Ok(Node::Local(*slot));
        }
        match self.vars.iter().position(|v| *v == name) {
            Some(i) => Ok(Node::Arg(i)),
            None => unsupported(format!("identifier '{name}'")),
        }
    }

    fn call(&mut self, call: &'e CallExpr) -> Result<Node, Unsupported> {
        let name = call.func_name.as_str();
        let args = &call.args;
        if let Some(target) = &call.target {
            let t = boxed(self.node(target)?);
            return match (name, args.len()) {
                ("size", 0) => Ok(Node::Size(t)),
                ("contains", 1) => Ok(Node::StrTest(
                    StrTest::Contains,
                    t,
                    boxed(self.node(&args[0])?),
                )),
                ("startsWith", 1) => Ok(Node::StrTest(
                    StrTest::StartsWith,
                    t,
                    boxed(self.node(&args[0])?),
                )),
                ("endsWith", 1) => Ok(Node::StrTest(
                    StrTest::EndsWith,
                    t,
                    boxed(self.node(&args[0])?),
                )),
                ("matches", 1) => self.matches(t, &args[0]),
                _ => unsupported(format!("method '{name}' with {} argument(s)", args.len())),
            };
        }
        match args.len() {
            1 => {
                let a = boxed(self.node(&args[0])?);
                Ok(match name {
                    operators::LOGICAL_NOT => Node::Not(a),
                    operators::NEGATE => Node::Neg(a),
                    operators::NOT_STRICTLY_FALSE => Node::NotStrictlyFalse(a),
                    "size" => Node::Size(a),
                    "int" => Node::Convert(Conversion::Int, a),
                    "uint" => Node::Convert(Conversion::UInt, a),
                    "double" => Node::Convert(Conversion::Double, a),
                    "string" => Node::Convert(Conversion::String, a),
                    _ => return unsupported(format!("function '{name}'")),
                })
            }
            2 => {
                if name == "matches" {
                    let s = boxed(self.node(&args[0])?);
                    return self.matches(s, &args[1]);
                }
                let a = boxed(self.node(&args[0])?);
                let b = boxed(self.node(&args[1])?);
                Ok(match name {
                    operators::LOGICAL_AND => Node::And(a, b),
                    operators::LOGICAL_OR => Node::Or(a, b),
                    operators::EQUALS => Node::Eq(a, b, false),
                    operators::NOT_EQUALS => Node::Eq(a, b, true),
                    operators::LESS => Node::Cmp(CmpOp::Lt, a, b),
                    operators::LESS_EQUALS => Node::Cmp(CmpOp::Le, a, b),
                    operators::GREATER => Node::Cmp(CmpOp::Gt, a, b),
                    operators::GREATER_EQUALS => Node::Cmp(CmpOp::Ge, a, b),
                    operators::ADD => Node::Arith(ArithOp::Add, a, b),
                    operators::SUBSTRACT => Node::Arith(ArithOp::Sub, a, b),
                    operators::MULTIPLY => Node::Arith(ArithOp::Mul, a, b),
                    operators::DIVIDE => Node::Arith(ArithOp::Div, a, b),
                    operators::MODULO => Node::Arith(ArithOp::Rem, a, b),
                    operators::INDEX => Node::Index(a, b),
                    operators::IN => Node::In(a, b),
                    _ => return unsupported(format!("function '{name}'")),
                })
            }
            3 if name == operators::CONDITIONAL => Ok(Node::Cond(
                boxed(self.node(&args[0])?),
                boxed(self.node(&args[1])?),
                boxed(self.node(&args[2])?),
            )),
            n => unsupported(format!("function '{name}' with {n} argument(s)")),
        }
    }

    fn matches(&mut self, s: Box<Node>, pattern: &'e IdedExpr) -> Result<Node, Unsupported> {
        if let Expr::Literal(LiteralValue::String(p)) = &pattern.expr {
            // The interpreter would fail on every record: say so once, at compile time.
            return match Regex::new(p.inner()) {
                Ok(re) => Ok(Node::MatchesConst(s, re)),
                Err(e) => Err(Unsupported::Invalid(format!(
                    "invalid regex '{}' in matches(): {e}",
                    p.inner()
                ))),
            };
        }
        Ok(Node::Matches(s, boxed(self.node(pattern)?)))
    }

    fn comprehension(&mut self, c: &'e ComprehensionExpr) -> Result<Node, Unsupported> {
        if c.iter_var2.is_some() {
            return unsupported("two-variable comprehension");
        }
        let range = self.node(&c.iter_range)?;
        let init = self.node(&c.accu_init)?;
        let depth = self.locals.len();
        let iter_slot = self.slots;
        let accu_slot = self.slots + 1;
        self.slots += 2;
        let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(n) if *n == c.accu_var);

        // `map` / `filter`: `@result + [x]`, maybe under `guard ? ... : @result`.
        let append = (|| {
            let empty_init = matches!(&c.accu_init.expr, Expr::List(l) if l.elements.is_empty());
            if !empty_init || !is_accu(&c.result) || !matches!(c.loop_cond.expr, Expr::Literal(_)) {
                return None;
            }
            let items_of = |e: &'e IdedExpr| match &e.expr {
                Expr::Call(call) if call.func_name == operators::ADD && call.target.is_none() => {
                    match call.args.as_slice() {
                        [lhs, rhs] if is_accu(lhs) => match &rhs.expr {
                            Expr::List(l) if l.optional_indices.is_empty() => Some(&l.elements),
                            _ => None,
                        },
                        _ => None,
                    }
                }
                _ => None,
            };
            match &c.loop_step.expr {
                Expr::Call(call)
                    if call.func_name == operators::CONDITIONAL && call.target.is_none() =>
                {
                    match call.args.as_slice() {
                        [guard, step, otherwise] if is_accu(otherwise) => {
                            Some((Some(guard), items_of(step)?))
                        }
                        _ => None,
                    }
                }
                _ => Some((None, items_of(&c.loop_step)?)),
            }
        })();

        self.locals.push((&c.iter_var, iter_slot));
        let node = if let Some((guard, items)) = append {
            // The accumulator is not visible to the guard and the items, as in the
            // interpreter's fast path for these macros.
            let cond = self.node(&c.loop_cond)?;
            let guard = guard.map(|g| self.node(g)).transpose()?;
            let items = items
                .iter()
                .map(|e| self.node(e))
                .collect::<Result<_, _>>()?;
            Node::AppendFold(Box::new(AppendFold {
                range,
                iter_slot,
                cond,
                guard,
                items,
            }))
        } else {
            self.locals.push((&c.accu_var, accu_slot));
            let cond = self.node(&c.loop_cond)?;
            let step = self.node(&c.loop_step)?;
            let absorbing = match &c.loop_step.expr {
                Expr::Call(call)
                    if call.target.is_none() && call.args.first().is_some_and(is_accu) =>
                {
                    match call.func_name.as_str() {
                        operators::LOGICAL_AND => Some(false),
                        operators::LOGICAL_OR => Some(true),
                        _ => None,
                    }
                }
                _ => None,
            };
            // The result sees only the accumulator.
            self.locals.truncate(depth);
            self.locals.push((&c.accu_var, accu_slot));
            let result = self.node(&c.result)?;
            Node::Fold(Box::new(Fold {
                range,
                iter_slot,
                accu_slot,
                init,
                cond,
                step,
                result,
                absorbing,
            }))
        };
        self.locals.truncate(depth);
        Ok(node)
    }
}

fn literal(lit: &LiteralValue) -> Result<Value, Unsupported> {
    Ok(match lit {
        LiteralValue::Null => Value::Null,
        LiteralValue::Boolean(b) => Value::Bool(*b.inner()),
        LiteralValue::Int(i) => Value::Int(*i.inner()),
        LiteralValue::UInt(u) => Value::UInt(*u.inner()),
        LiteralValue::Double(d) => Value::Float(*d.inner()),
        LiteralValue::String(s) => Value::str(s.inner()),
        LiteralValue::Bytes(_) => return unsupported("bytes literal"),
    })
}
