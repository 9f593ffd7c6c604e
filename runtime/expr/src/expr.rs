//! CEL expressions compiled once over named variables and evaluated against [`Value`]s.
//!
//! FIRST VERSION: parses with the `cel` crate and interprets with it, converting the
//! arguments on every call (correct, but slow: ~24 µs/record). To be replaced by a compiled
//! form that reads records in place, keeping this API.

use crate::value::{Map, Value};
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

/// A per-record evaluation error (wrong type, missing field used arithmetically, ...).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("evaluating '{source_text}': {message}")]
pub struct EvalError {
    /// The expression.
    pub source_text: String,
    /// What went wrong.
    pub message: String,
}

/// A compiled CEL expression over positional variables.
pub struct Expr {
    source: String,
    vars: Vec<String>,
    program: cel::Program,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expr")
            .field("source", &self.source)
            .field("vars", &self.vars)
            .finish()
    }
}

impl Expr {
    /// Compiles `source`; `vars` names the variables passed to [`Expr::eval`], in order.
    pub fn compile(source: &str, vars: &[&str]) -> Result<Expr, ExprError> {
        let program = cel::Program::compile(source).map_err(|e| ExprError {
            source_text: source.to_string(),
            message: e.to_string(),
        })?;
        for var in program.references().variables() {
            if !vars.contains(&var) {
                return Err(ExprError {
                    source_text: source.to_string(),
                    message: format!("unknown variable '{var}' (in scope: {})", vars.join(", ")),
                });
            }
        }
        Ok(Expr {
            source: source.to_string(),
            vars: vars.iter().map(|s| s.to_string()).collect(),
            program,
        })
    }

    /// The expression text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates with `args[i]` bound to `vars[i]`.
    pub fn eval(&self, args: &[&Value]) -> Result<Value, EvalError> {
        let mut ctx = cel::Context::default();
        for (name, value) in self.vars.iter().zip(args) {
            ctx.add_variable_from_value(name.clone(), to_cel(value));
        }
        let out = self
            .program
            .execute(&ctx)
            .map_err(|e| self.eval_error(e.to_string()))?;
        from_cel(&out).map_err(|m| self.eval_error(m))
    }

    /// Evaluates and requires a boolean result.
    pub fn eval_bool(&self, args: &[&Value]) -> Result<bool, EvalError> {
        match self.eval(args)? {
            Value::Bool(b) => Ok(b),
            other => Err(self.eval_error(format!("expected a bool, got {}", other.to_json()))),
        }
    }

    fn eval_error(&self, message: String) -> EvalError {
        EvalError {
            source_text: self.source.clone(),
            message,
        }
    }
}

fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Int(i) => cel::Value::Int(*i),
        Value::UInt(u) => cel::Value::UInt(*u),
        Value::Float(f) => cel::Value::Float(*f),
        Value::Str(s) => cel::Value::String(Arc::new(s.to_string())),
        Value::List(l) => cel::Value::List(Arc::new(l.iter().map(to_cel).collect())),
        Value::Map(m) => {
            let map: std::collections::HashMap<cel::objects::Key, cel::Value> = m
                .entries
                .iter()
                .map(|(k, v)| {
                    (
                        cel::objects::Key::String(Arc::new(k.to_string())),
                        to_cel(v),
                    )
                })
                .collect();
            cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
        }
    }
}

fn from_cel(v: &cel::Value) -> Result<Value, String> {
    Ok(match v {
        cel::Value::Null => Value::Null,
        cel::Value::Bool(b) => Value::Bool(*b),
        cel::Value::Int(i) => Value::Int(*i),
        cel::Value::UInt(u) => Value::UInt(*u),
        cel::Value::Float(f) => Value::Float(*f),
        cel::Value::String(s) => Value::str(s),
        cel::Value::List(l) => {
            Value::List(Arc::new(l.iter().map(from_cel).collect::<Result<_, _>>()?))
        }
        cel::Value::Map(m) => {
            let mut out = Map::with_capacity(m.map.len());
            let mut entries: Vec<_> = m.map.iter().collect();
            entries.sort_by_key(|(k, _)| k.to_string());
            for (k, v) in entries {
                out.insert(k.to_string(), from_cel(v)?);
            }
            Value::Map(Arc::new(out))
        }
        other => return Err(format!("unsupported result type {:?}", other.type_of())),
    })
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
