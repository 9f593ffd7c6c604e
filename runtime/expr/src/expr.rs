//! CEL expressions compiled once over named variables and evaluated against [`Value`]s.
//!
//! [`Expr::compile`] parses with the `cel` crate and compiles the AST into a node tree
//! ([`crate::eval`]) that reads records in place: variables are argument positions, field
//! names are prepared once, no per-record conversion. Expressions outside the compiled
//! subset (see [`crate::compile`]) run on the `cel` crate's interpreter instead, which
//! converts the arguments on every call (microseconds per record);
//! [`Expr::interpreter_reason`] says when and why, so callers can warn about it.
//!
//! Semantics are the `cel` crate's, including where it is more lenient than strict CEL:
//! `==` and `<` compare `int`, `uint` and `double` numerically (`1 == 1.0` is true), while
//! arithmetic still needs operands of one type (`1 + 1.0` is an error).

use crate::compile::{self, Unsupported};
use crate::eval::{Frame, Outcome};
use crate::interpreter;
use crate::project::Projection;
use crate::value::Value;
use std::sync::Arc;

/// A compile error (syntax, or a variable that is not in scope).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid CEL expression '{source_text}': {message}")]
pub struct ExprError {
    /// The expression.
    pub source_text: String,
    /// What is wrong.
    pub message: String,
}

/// A per-record evaluation error (wrong type, missing field, overflow, ...).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("evaluating '{source_text}': {message}")]
pub struct EvalError {
    /// The expression.
    pub source_text: String,
    /// What went wrong.
    pub message: String,
}

/// How an expression is evaluated.
enum Body {
    /// The compiled node tree, and how many comprehension slots it needs.
    Compiled(compile::Compiled),
    /// The `cel` crate's interpreter, and why the expression could not be compiled.
    Interpreted {
        program: cel::Program,
        reason: String,
    },
}

/// A compiled CEL expression over positional variables.
pub struct Expr {
    source: String,
    vars: Vec<String>,
    body: Body,
    /// For a map literal over one variable: how [`Expr::eval_taking`] moves fields.
    projection: Option<Projection>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expr")
            .field("source", &self.source)
            .field("vars", &self.vars)
            .field("interpreter_reason", &self.interpreter_reason())
            .finish()
    }
}

impl Expr {
    /// Compiles `source`; `vars` names the variables passed to [`Expr::eval`], in order.
    pub fn compile(source: &str, vars: &[&str]) -> Result<Expr, ExprError> {
        Self::build(source, vars, true)
    }

    /// Compiles `source` for the `cel` crate's interpreter only, never the compiled form:
    /// the reference that tests and benchmarks compare [`Expr::compile`] with.
    pub fn compile_interpreted(source: &str, vars: &[&str]) -> Result<Expr, ExprError> {
        Self::build(source, vars, false)
    }

    fn build(source: &str, vars: &[&str], try_compile: bool) -> Result<Expr, ExprError> {
        let error = |message: String| ExprError {
            source_text: source.to_string(),
            message,
        };
        let program = cel::Program::compile(source).map_err(|e| error(e.to_string()))?;
        let mut free = Vec::new();
        compile::free_variables(program.expression(), &mut Vec::new(), &mut free);
        if let Some(var) = free.iter().find(|v| !vars.contains(v)) {
            return Err(error(format!(
                "unknown variable '{var}' (in scope: {})",
                vars.join(", ")
            )));
        }
        let body = if try_compile {
            match compile::compile(program.expression(), vars) {
                Ok(compiled) => Body::Compiled(compiled),
                Err(Unsupported::Construct(reason)) => Body::Interpreted { program, reason },
                Err(Unsupported::Invalid(message)) => return Err(error(message)),
            }
        } else {
            Body::Interpreted {
                program,
                reason: "interpreter requested".to_string(),
            }
        };
        let projection = match &body {
            Body::Compiled(c) if vars.len() == 1 => Projection::plan(&c.root, c.slots),
            _ => None,
        };
        Ok(Expr {
            source: source.to_string(),
            vars: vars.iter().map(|s| s.to_string()).collect(),
            body,
            projection,
        })
    }

    /// The expression text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Why this expression runs on the (slow) `cel` interpreter, or `None` when it is
    /// compiled.
    pub fn interpreter_reason(&self) -> Option<&str> {
        match &self.body {
            Body::Compiled(_) => None,
            Body::Interpreted { reason, .. } => Some(reason),
        }
    }

    /// The distinct fields of variable `var` this expression reads, if it only ever selects
    /// fields of it (`v.f`, `has(v.f)`); `None` if it uses `var` whole, `var` is not one of its
    /// variables, or it runs on the interpreter. A record holding just these fields (those
    /// it has) evaluates the same as the whole record.
    pub fn fields_read(&self, var: &str) -> Option<Vec<Arc<str>>> {
        let arg = self.vars.iter().position(|v| v == var)?;
        match &self.body {
            Body::Compiled(compiled) => crate::fields::fields_read(&compiled.root, arg),
            Body::Interpreted { .. } => None,
        }
    }

    /// Evaluates with `args[i]` bound to `vars[i]`.
    pub fn eval(&self, args: &[&Value]) -> Result<Value, EvalError> {
        match &self.body {
            Body::Compiled(compiled) => run(compiled, args, |outcome| {
                outcome
                    .map(|v| v.into_owned())
                    .map_err(|m| self.eval_error(m))
            }),
            Body::Interpreted { program, .. } => {
                interpreter::execute(program, &self.vars, args).map_err(|m| self.eval_error(m))
            }
        }
    }

    /// Evaluates with `arg` as the only variable, with [`Expr::eval`]'s result; a map
    /// literal's plain selections (`e.f`) move their fields out of `arg` when nothing else
    /// holds it, so after `Ok` `arg` may lack those fields (after `Err` it is intact).
    pub fn eval_taking(&self, arg: &mut Value) -> Result<Value, EvalError> {
        if let (Body::Compiled(c), Some(p)) = (&self.body, &self.projection) {
            if let Some(v) = p.apply(&c.root, arg) {
                return Ok(v);
            }
        }
        self.eval(&[arg])
    }

    /// Evaluates and requires a boolean result.
    pub fn eval_bool(&self, args: &[&Value]) -> Result<bool, EvalError> {
        let not_bool = |v: &Value| self.eval_error(format!("expected a bool, got {}", v.to_json()));
        match &self.body {
            Body::Compiled(compiled) if compiled.slots == 0 && compiled.root.always_bool() => {
                let mut frame = Frame {
                    args,
                    locals: &mut [],
                };
                compiled
                    .root
                    .truth(&mut frame)
                    .map_err(|m| self.eval_error(m))
            }
            Body::Compiled(compiled) => run(compiled, args, |outcome| match outcome.as_deref() {
                Ok(Value::Bool(b)) => Ok(*b),
                Ok(other) => Err(not_bool(other)),
                Err(m) => Err(self.eval_error(m.clone())),
            }),
            Body::Interpreted { .. } => match self.eval(args)? {
                Value::Bool(b) => Ok(b),
                other => Err(not_bool(&other)),
            },
        }
    }

    fn eval_error(&self, message: String) -> EvalError {
        EvalError {
            source_text: self.source.clone(),
            message,
        }
    }
}

/// Evaluates `compiled` and hands the outcome to `finish`, with comprehension slots on the
/// stack when there are few (no allocation per call).
fn run<R>(
    compiled: &compile::Compiled,
    args: &[&Value],
    finish: impl for<'a> FnOnce(Outcome<'a>) -> R,
) -> R {
    const ON_STACK: usize = 8;
    if compiled.slots == 0 {
        let mut frame = Frame {
            args,
            locals: &mut [],
        };
        return finish(compiled.root.eval(&mut frame));
    }
    if compiled.slots <= ON_STACK {
        let mut slots: [Value; ON_STACK] = Default::default();
        let mut frame = Frame {
            args,
            locals: &mut slots[..compiled.slots],
        };
        return finish(compiled.root.eval(&mut frame));
    }
    let mut slots = vec![Value::Null; compiled.slots];
    let mut frame = Frame {
        args,
        locals: &mut slots,
    };
    finish(compiled.root.eval(&mut frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_over_a_record() {
        let e = Value::from_json(r#"{"type":"bid","price":150,"auction":246}"#).unwrap();
        let x = Expr::compile("e.auction % 123 == 0 && e.price > 100", &["e"]).unwrap();
        assert!(x.eval_bool(&[&e]).unwrap());
    }

    #[test]
    fn eval_taking_moves_selected_fields_and_equals_eval() {
        let text = r#"{"type":"bid","auction":7,"price":1000,"extra":"x","url":"u"}"#;
        for source in [
            "{'auction': e.auction, 'price': e.price * 908 / 1000, 'extra': e.extra}",
            "{'a': e.auction, 'b': e.auction, 'c': 1}",
            "{'missing': e.nope, 'auction': e.auction}",
            "{'bad': e.type * 2, 'auction': e.auction}",
            "e.price > 1",
        ] {
            let x = Expr::compile(source, &["e"]).unwrap();
            let mut arg = Value::from_json(text).unwrap();
            let expected = x.eval(&[&arg]);
            let shared = arg.clone();
            assert_eq!(
                x.eval_taking(&mut arg.clone()),
                expected,
                "{source} (shared)"
            );
            drop(shared);
            assert_eq!(x.eval_taking(&mut arg), expected, "{source}");
            if expected.is_err() {
                assert_eq!(arg, Value::from_json(text).unwrap(), "{source}: arg intact");
            }
        }
        let x = Expr::compile("{'auction': e.auction, 'extra': e.extra}", &["e"]).unwrap();
        let mut arg = Value::from_json(text).unwrap();
        x.eval_taking(&mut arg).unwrap();
        assert_eq!(arg.get("extra"), &Value::Null, "moved out");
    }

    #[test]
    fn unknown_variable_is_a_compile_error() {
        let err = Expr::compile("x.price > 1", &["e"]).unwrap_err();
        assert!(err.message.contains("unknown variable 'x'"), "{err}");
    }

    #[test]
    fn type_error_is_an_eval_error() {
        let e = Value::from_json(r#"{"price":"abc"}"#).unwrap();
        let x = Expr::compile("e.price > 100", &["e"]).unwrap();
        assert!(x.eval(&[&e]).is_err());
    }
}
