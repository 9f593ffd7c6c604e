//! Map literals over one record evaluated by moving fields out of it.
//!
//! `{'auction': e.auction, 'price': e.price * 908 / 1000}` builds a new map per record; the
//! plain selections (`e.auction`) clone the field's key and value (atomic reference counts)
//! and the record is dropped right after. When nothing else holds the record, the fields can
//! be moved out instead: [`Projection::apply`] gives the same map as evaluating the literal.

use crate::eval::{Frame, Node};
use crate::value::{Map, Value};
use std::sync::Arc;

/// At most this many entries of a projected literal are computed (the rest are moved).
const MAX_COMPUTED: usize = 8;

/// How each entry of a map literal over variable 0 is produced.
#[derive(Debug)]
pub(crate) struct Projection {
    /// Per literal entry: the field of variable 0 it selects (`e.f`, each field at most
    /// once), or `None` when it is computed.
    sources: Vec<Option<Arc<str>>>,
}

impl Projection {
    /// The projection of a compiled expression, if it is a constant-key map literal with at
    /// least one plain selection of a field of variable 0, at most [`MAX_COMPUTED`] other
    /// entries and no comprehension slots.
    pub(crate) fn plan(root: &Node, slots: usize) -> Option<Projection> {
        let Node::Record(fields) = root else {
            return None;
        };
        if slots > 0 {
            return None;
        }
        let mut sources: Vec<Option<Arc<str>>> = Vec::with_capacity(fields.len());
        for (_, node) in fields {
            let source = match node {
                Node::Select(operand, field) if matches!(**operand, Node::Arg(0)) => {
                    let taken = sources.iter().flatten().any(|s| s == field);
                    (!taken).then(|| field.clone())
                }
                _ => None,
            };
            sources.push(source);
        }
        let computed = sources.iter().filter(|s| s.is_none()).count();
        (computed < sources.len() && computed <= MAX_COMPUTED).then_some(Projection { sources })
    }

    /// The literal's value with `arg` as variable 0, moving the selected fields out of `arg`
    /// (which is left with the rest); `None` (and `arg` untouched) when `arg` is shared or
    /// not a map, a selected field is missing or a computed entry fails: the caller then
    /// evaluates normally, which gives the error.
    pub(crate) fn apply(&self, root: &Node, arg: &mut Value) -> Option<Value> {
        let Node::Record(fields) = root else {
            return None;
        };
        let Value::Map(map) = arg else {
            return None;
        };
        Arc::get_mut(map)?;
        if self.sources.iter().flatten().any(|f| map.get(f).is_none()) {
            return None;
        }
        // the computed entries' values, on the stack (no allocation per record)
        let mut computed: [Value; MAX_COMPUTED] = Default::default();
        let mut count = 0;
        {
            let args = [&*arg];
            let mut frame = Frame {
                args: &args,
                locals: &mut [],
            };
            for ((_, node), source) in fields.iter().zip(&self.sources) {
                if source.is_none() {
                    *computed.get_mut(count)? = node.eval(&mut frame).ok()?.into_owned();
                    count += 1;
                }
            }
        }
        let Value::Map(map) = arg else {
            return None;
        };
        let map = Arc::get_mut(map)?;
        let mut computed = computed.iter_mut().map(std::mem::take);
        let mut entries = Vec::with_capacity(fields.len());
        for ((key, _), source) in fields.iter().zip(&self.sources) {
            match source {
                Some(field) => {
                    let at = map.entries.iter().position(|(k, _)| k == field)?;
                    let (own_key, value) = map.entries.swap_remove(at);
                    let key = if own_key == *key {
                        own_key
                    } else {
                        key.clone()
                    };
                    entries.push((key, value));
                }
                None => entries.push((key.clone(), computed.next()?)),
            }
        }
        Some(Value::Map(Arc::new(Map { entries })))
    }
}
