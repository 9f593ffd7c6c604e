//! `map`: replace each record by a CEL expression over `e` that yields a map.

use super::{compile, Context, FieldNeeds, OpResult, Operator};
use crate::record::Record;
use std::sync::Arc;
use weir_crds::validate::SpecError;
use weir_expr::{Expr, Value};

/// Rewrites records; errors and non-map results go to `deadLetter`.
pub struct MapOp {
    expr: Expr,
}

impl MapOp {
    /// Compiles the expression (`field` names it in errors).
    pub fn new(field: &str, src: &str) -> Result<Self, SpecError> {
        Ok(MapOp {
            expr: compile(field, src)?,
        })
    }
}

impl Operator for MapOp {
    fn process(&mut self, _input: usize, mut record: Record, ctx: &mut Context<'_>) -> OpResult {
        // fields may move out of the input record, which is dropped when a map comes back
        match self.expr.eval_taking(&mut record.value) {
            Ok(v @ Value::Map(_)) => ctx.emit(Record { value: v, ..record }),
            Ok(other) => ctx.dead_letter(
                &record,
                &format!("map must yield a map, got {}", other.to_json()),
            ),
            Err(e) => ctx.dead_letter(&record, &e.to_string()),
        }
        Ok(())
    }

    fn fields_needed(&self, _input: usize, outputs: &FieldNeeds<'_>) -> Option<Vec<Arc<str>>> {
        // the output is built from the fields the expression reads; a dead letter carries the
        // whole input record
        if !outputs.side_unread("deadLetter") {
            return None;
        }
        self.expr.fields_read("e")
    }
}
