//! The fallback path: the `cel` crate's interpreter, for expressions outside the compiled
//! subset. Converts the arguments into a `cel` context on every call (slow: microseconds
//! per record), but runs every valid CEL expression.

use crate::value::{Map, Value};
use std::sync::{Arc, OnceLock};

/// The standard environment, built once (building it per call costs more than evaluating).
fn standard_env() -> Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(cel::Env::stdlib())).clone()
}

/// Runs `program` with `args[i]` bound to `vars[i]`.
pub(crate) fn execute(
    program: &cel::Program,
    vars: &[String],
    args: &[&Value],
) -> Result<Value, String> {
    let mut ctx = cel::Context::with_env(standard_env());
    for (name, value) in vars.iter().zip(args) {
        ctx.add_variable_from_value(name.clone(), to_cel(value));
    }
    let out = program.execute(&ctx).map_err(|e| e.to_string())?;
    from_cel(&out)
}

/// A record value as a `cel` value.
pub(crate) fn to_cel(v: &Value) -> cel::Value {
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

/// A `cel` result as a record value. Maps come out with their keys sorted (the interpreter's
/// maps are unordered); keys of other types are written out as strings.
pub(crate) fn from_cel(v: &cel::Value) -> Result<Value, String> {
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
