//! Record values and CEL expressions for the Weir runtime.
//!
//! - [`Value`]: the JSON-like value every record is made of.
//! - [`Expr`]: a CEL expression compiled once (per operator) over named variables and
//!   evaluated against records without converting them.

mod compile;
#[cfg(test)]
mod differential_tests;
mod eval;
pub mod expr;
mod fields;
mod interpreter;
mod json;
mod project;
pub mod value;

pub use expr::{EvalError, Expr, ExprError};
pub use value::{Map, Value};
