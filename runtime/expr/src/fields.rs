//! Which fields of a variable an expression reads, so that operators keeping records for a
//! later evaluation (a join's buffered sides) can keep only those fields.

use crate::eval::Node;
use std::sync::Arc;

/// The distinct fields of variable `arg` that `root` reads, in first-use order, if every use
/// of the variable is a field selection (`v.f` or `has(v.f)`); `None` if the variable is used
/// whole anywhere (passed on, indexed, compared...).
pub(crate) fn fields_read(root: &Node, arg: usize) -> Option<Vec<Arc<str>>> {
    let mut fields = Vec::new();
    walk(root, arg, &mut fields).then_some(fields)
}

/// Adds the fields of `arg` that `node` selects to `out`; false if `node` uses `arg` whole.
fn walk(node: &Node, arg: usize, out: &mut Vec<Arc<str>>) -> bool {
    let all = |nodes: &[&Node], out: &mut Vec<Arc<str>>| nodes.iter().all(|n| walk(n, arg, out));
    match node {
        Node::Select(operand, field) | Node::Has(operand, field) => match **operand {
            Node::Arg(i) if i == arg => {
                if !out.contains(field) {
                    out.push(field.clone());
                }
                true
            }
            _ => walk(operand, arg, out),
        },
        Node::Arg(i) => *i != arg,
        Node::Const(_) | Node::Local(_) => true,
        Node::Not(a)
        | Node::Neg(a)
        | Node::Size(a)
        | Node::MatchesConst(a, _)
        | Node::Convert(_, a)
        | Node::NotStrictlyFalse(a) => walk(a, arg, out),
        Node::Index(a, b)
        | Node::And(a, b)
        | Node::Or(a, b)
        | Node::Arith(_, a, b)
        | Node::Cmp(_, a, b)
        | Node::Eq(a, b, _)
        | Node::In(a, b)
        | Node::StrTest(_, a, b)
        | Node::Matches(a, b) => all(&[a, b], out),
        Node::Cond(a, b, c) => all(&[a, b, c], out),
        Node::List(items) => items.iter().all(|n| walk(n, arg, out)),
        Node::Map(entries) => entries.iter().all(|(k, v)| all(&[k, v], out)),
        Node::Record(entries) => entries.iter().all(|(_, v)| walk(v, arg, out)),
        Node::Fold(f) => all(&[&f.range, &f.init, &f.cond, &f.step, &f.result], out),
        Node::AppendFold(f) => {
            all(&[&f.range, &f.cond], out)
                && f.guard.as_ref().is_none_or(|g| walk(g, arg, out))
                && f.items.iter().all(|n| walk(n, arg, out))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Expr;

    fn read(source: &str, var: &str) -> Option<Vec<String>> {
        let e = Expr::compile(source, &["l", "r"]).unwrap();
        e.fields_read(var)
            .map(|f| f.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn lists_selected_fields_once_in_order() {
        let src = "{'name': l.name, 'city': l.city, 'n': l.name + r.id, 'id': r.id}";
        assert_eq!(read(src, "l"), Some(vec!["name".into(), "city".into()]));
        assert_eq!(read(src, "r"), Some(vec!["id".into()]));
    }

    #[test]
    fn has_and_comprehensions_count_as_selections() {
        let src = "has(l.x) ? l.items.map(i, i.v + r.k) : [r.k]";
        assert_eq!(read(src, "l"), Some(vec!["x".into(), "items".into()]));
        assert_eq!(read(src, "r"), Some(vec!["k".into()]));
    }

    #[test]
    fn whole_use_of_a_variable_gives_none() {
        assert_eq!(read("{'l': l, 'id': r.id}", "l"), None);
        assert_eq!(read("l['name'] == r.id", "l"), None);
        assert_eq!(read("{'l': l, 'id': r.id}", "r"), Some(vec!["id".into()]));
    }

    #[test]
    fn unknown_variable_reads_nothing() {
        assert_eq!(read("r.id", "x"), None);
    }
}
