//! `filter`: keep records for which a CEL condition over `e` is true.

use super::{compile, union_fields, Context, FieldNeeds, OpResult, Operator};
use crate::record::Record;
use std::sync::Arc;
use weir_crds::validate::SpecError;
use weir_expr::Expr;

/// Keeps records matching a condition; evaluation errors go to `deadLetter`.
pub struct Filter {
    cond: Expr,
}

impl Filter {
    /// Compiles the condition (`field` names it in errors).
    pub fn new(field: &str, src: &str) -> Result<Self, SpecError> {
        Ok(Filter {
            cond: compile(field, src)?,
        })
    }
}

impl Operator for Filter {
    fn process(&mut self, _input: usize, record: Record, ctx: &mut Context<'_>) -> OpResult {
        match self.cond.eval_bool(&[&record.value]) {
            Ok(true) => ctx.emit(record),
            Ok(false) => {}
            Err(e) => ctx.dead_letter(&record, &e.to_string()),
        }
        Ok(())
    }

    fn fields_needed(&self, _input: usize, outputs: &FieldNeeds<'_>) -> Option<Vec<Arc<str>>> {
        // records pass on whole: what the condition reads plus what the consumers need; a
        // dead letter carries the whole record
        if !outputs.side_unread("deadLetter") {
            return None;
        }
        union_fields(self.cond.fields_read("e"), outputs.main())
    }
}
