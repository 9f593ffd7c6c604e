//! A task's graph wiring, pure: the streams it carries (sources, every operator's main and
//! side outputs, the sources' dead letters), which operator inputs and sinks consume each
//! stream, and which fields each stream's consumers need of its records.

use crate::operator::repartition::{READ_SUFFIX, WRITE_SUFFIX};
use crate::operator::{self, FieldNeeds};
use crate::plan::JobPlan;
use std::sync::Arc;
use weir_crds::pipeline::SOURCE_DEAD_LETTER;

/// Who reads a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumer {
    /// Input `input` of operator `op` (index into the plan's operators).
    Op {
        /// The operator.
        op: usize,
        /// Which of its inputs.
        input: usize,
    },
    /// Sink `k` of the pipeline.
    Sink(usize),
    /// Keyed exchange `x` (see [`Wiring::exchanges`]), on to its operator in the task that
    /// owns the record's key.
    Exchange(usize),
}

/// An operator input read through a keyed exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeEdge {
    /// The operator.
    pub op: usize,
    /// Which of its inputs.
    pub input: usize,
    /// The key (CEL over `e`); `None`: every record to task 0.
    pub key: Option<String>,
    /// The stage of the stream it reads (see [`Wiring::op_stages`]).
    pub from_stage: usize,
    /// The operator's stage.
    pub to_stage: usize,
}

/// The streams of one task and who consumes them.
#[derive(Clone, Debug, PartialEq)]
pub struct Wiring {
    /// Stream names: the sources first (stream `i` is source `i`), then per operator its main
    /// output (`<op>`) and side outputs (`<op>.<side>`), then per source `<source>.deadLetter`.
    pub streams: Vec<String>,
    /// Per operator, the streams of its outputs: main first, then its side outputs in
    /// `OperatorSpec::side_outputs` order.
    pub op_ports: Vec<Vec<usize>>,
    /// Per operator, its side outputs' names.
    pub op_side_outputs: Vec<&'static [&'static str]>,
    /// Per source, the stream of its dead letters.
    pub source_dead_letters: Vec<usize>,
    /// Per stream, its consumers, in plan order (operators, then sinks).
    pub consumers: Vec<Vec<Consumer>>,
    /// The keyed exchanges of the plan ([`crate::plan::JobPlan::exchanges`]).
    pub exchanges: Vec<ExchangeEdge>,
    /// Per operator its stage: 0 for operators fed by the task's own sources, one more than
    /// the stage before for operators behind an exchange. A stage's operators see that
    /// stage's watermark.
    pub op_stages: Vec<usize>,
    /// Per source, its stage: 0, except the source reading a repartition topic back, one more
    /// than its writer's stage (its watermark is announced by the writing tasks).
    pub source_stages: Vec<usize>,
}

/// Wires `plan`'s graph; an input naming no stream is an error naming it (validation catches
/// these before a task is built).
pub fn wire(plan: &JobPlan) -> Result<Wiring, String> {
    let mut streams: Vec<String> = plan.sources.iter().map(|s| s.name.clone()).collect();
    let mut op_ports = vec![];
    let mut op_side_outputs = vec![];
    for o in &plan.operators {
        let side_outputs = o.spec.side_outputs();
        let mut ports = vec![streams.len()];
        streams.push(o.spec.name.clone());
        for s in side_outputs {
            ports.push(streams.len());
            streams.push(format!("{}.{s}", o.spec.name));
        }
        op_ports.push(ports);
        op_side_outputs.push(side_outputs);
    }
    let mut source_dead_letters = vec![];
    for src in &plan.sources {
        source_dead_letters.push(streams.len());
        streams.push(format!("{}.{SOURCE_DEAD_LETTER}", src.name));
    }
    let stream_of = |name: &str| streams.iter().position(|s| s == name);
    let mut consumers: Vec<Vec<Consumer>> = vec![vec![]; streams.len()];
    let mut stream_stages = vec![0usize; streams.len()];
    let mut op_stages = vec![0usize; plan.operators.len()];
    let mut exchanges = vec![];
    for (op, o) in plan.operators.iter().enumerate() {
        let mut stage = 0;
        let mut edges = vec![];
        for (input, name) in o.spec.all_inputs().iter().enumerate() {
            let stream = plan.input_stream(&o.spec.name, name);
            let s = stream_of(stream).ok_or_else(|| format!("unknown input '{stream}'"))?;
            if s < plan.sources.len() && stream.ends_with(READ_SUFFIX) {
                // a repartition's reader: the stage after its writer's
                let writer = format!("{}{WRITE_SUFFIX}", o.spec.name);
                if let Some(w) = plan.operators.iter().position(|x| x.spec.name == writer) {
                    stream_stages[s] = op_stages[w] + 1;
                }
            }
            let planned = plan
                .exchanges
                .iter()
                .find(|x| x.operator == o.spec.name && x.input == *name);
            match planned {
                Some(x) => {
                    stage = stage.max(stream_stages[s] + 1);
                    edges.push((s, input, x.key.clone()));
                }
                None => {
                    stage = stage.max(stream_stages[s]);
                    consumers[s].push(Consumer::Op { op, input });
                }
            }
        }
        for (s, input, key) in edges {
            consumers[s].push(Consumer::Exchange(exchanges.len()));
            exchanges.push(ExchangeEdge {
                op,
                input,
                key,
                from_stage: stream_stages[s],
                to_stage: stage,
            });
        }
        op_stages[op] = stage;
        for &port in &op_ports[op] {
            stream_stages[port] = stage;
        }
    }
    for (k, s) in plan.pipeline.sinks.iter().enumerate() {
        let stream =
            stream_of(&s.input).ok_or_else(|| format!("unknown sink input '{}'", s.input))?;
        consumers[stream].push(Consumer::Sink(k));
    }
    Ok(Wiring {
        streams,
        op_ports,
        op_side_outputs,
        source_dead_letters,
        consumers,
        exchanges,
        op_stages,
        source_stages: stream_stages[..plan.sources.len()].to_vec(),
    })
}

impl Wiring {
    /// What the consumers of operator `op`'s outputs need, given every stream's `needs`.
    fn output_needs(&self, op: usize, needs: &[Option<Vec<Arc<str>>>]) -> FieldNeeds<'static> {
        FieldNeeds {
            side_outputs: self.op_side_outputs[op],
            outputs: self.op_ports[op]
                .iter()
                .map(|p| needs[*p].clone())
                .collect(),
        }
    }

    /// Per stream, the top-level fields its consumers need of its records (`None`: whole
    /// records): the union over its consumers, a sink needing whole records and an operator
    /// what `fields_needed(op, input, its outputs' needs)` says (the operator's
    /// [`operator::Operator::fields_needed`]). Computed to a fixed point from "nothing" (needs
    /// only grow), so it does not depend on the order of the operators.
    pub fn field_needs(
        &self,
        fields_needed: impl Fn(usize, usize, &FieldNeeds<'_>) -> Option<Vec<Arc<str>>>,
    ) -> Vec<Option<Vec<Arc<str>>>> {
        // the key is evaluated on the sending side: its fields, once per exchange
        let key_fields: Vec<Option<Vec<Arc<str>>>> = self
            .exchanges
            .iter()
            .map(|x| match &x.key {
                Some(k) => weir_expr::Expr::compile(k, &["e"])
                    .ok()
                    .and_then(|e| e.fields_read("e")),
                None => Some(vec![]),
            })
            .collect();
        let mut needs: Vec<Option<Vec<Arc<str>>>> = vec![Some(vec![]); self.consumers.len()];
        loop {
            let mut changed = false;
            for s in 0..self.consumers.len() {
                let mut need = Some(vec![]);
                for c in &self.consumers[s] {
                    let n = match *c {
                        Consumer::Sink(_) => None,
                        Consumer::Exchange(x) => {
                            let ExchangeEdge { op, input, .. } = self.exchanges[x];
                            let outputs = self.output_needs(op, &needs);
                            operator::union_fields(
                                fields_needed(op, input, &outputs),
                                key_fields[x].as_deref(),
                            )
                        }
                        Consumer::Op { op, input } => {
                            fields_needed(op, input, &self.output_needs(op, &needs))
                        }
                    };
                    need = operator::union_fields(need, n.as_deref());
                }
                if need != needs[s] {
                    needs[s] = need;
                    changed = true;
                }
            }
            if !changed {
                return needs;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::plan::plan_yaml as plan;

    const JOB: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {name: w}
spec:
  image: x
  pipeline:
    sources:
      - {name: ev, generator: {kind: adEvents, count: 10}, eventTime: {field: ts, maxOutOfOrderness: 1s}}
    operators:
      - {name: clicks, input: ev, filter: "e.type == 'click'"}
      - name: per-ad
        input: clicks
        window: {type: tumbling, size: 1m, key: "e.adId", aggregates: [{name: n, op: count}]}
    sinks:
      - {name: out, input: per-ad, stdout: {}}
      - {name: late, input: per-ad.late, stdout: {}}
      - {name: bad, input: ev.deadLetter, stdout: {}}
"#;

    #[test]
    fn streams_are_sources_then_operator_outputs_then_dead_letters() {
        let w = wire(&plan(JOB)).expect("wires");
        assert_eq!(w.streams[0], "ev");
        assert_eq!(w.streams[1], "clicks");
        assert_eq!(w.streams[w.op_ports[1][0]], "per-ad");
        let late = w.streams.iter().position(|s| s == "per-ad.late");
        assert!(late.is_some_and(|l| w.op_ports[1].contains(&l)));
        assert_eq!(w.streams[w.source_dead_letters[0]], "ev.deadLetter");
        assert_eq!(w.consumers[0], vec![Consumer::Op { op: 0, input: 0 }]);
        assert_eq!(w.consumers[w.op_ports[1][0]], vec![Consumer::Sink(0)]);
        assert_eq!(
            w.consumers[w.source_dead_letters[0]],
            vec![Consumer::Sink(2)]
        );
    }

    #[test]
    fn an_exchange_feeds_its_operator_and_puts_it_in_the_next_stage() {
        let mut p = plan(JOB);
        p.exchanges = vec![crate::plan::PlannedExchange {
            operator: "per-ad".into(),
            input: "clicks".into(),
            key: Some("e.adId".into()),
        }];
        let w = wire(&p).expect("wires");
        assert_eq!(w.consumers[1], vec![Consumer::Exchange(0)]);
        assert_eq!(
            w.exchanges,
            vec![ExchangeEdge {
                op: 1,
                input: 0,
                key: Some("e.adId".into()),
                from_stage: 0,
                to_stage: 1
            }]
        );
        assert_eq!(w.op_stages, vec![0, 1]);
    }

    #[test]
    fn an_unknown_input_is_named() {
        let mut p = plan(JOB);
        p.pipeline.sinks[0].input = "nowhere".into();
        assert_eq!(
            wire(&p).expect_err("unknown"),
            "unknown sink input 'nowhere'"
        );
    }

    #[test]
    fn field_needs_follow_the_consumers_to_a_fixed_point() {
        let w = wire(&plan(JOB)).expect("wires");
        // the filter reads `type` and passes on what the window needs; the window reads `adId`
        let needs = w.field_needs(|op, _input, outputs| match op {
            0 => operator::union_fields(Some(vec![Arc::from("type")]), outputs.main()),
            _ => Some(vec![Arc::from("adId")]),
        });
        let mut source = needs[0].clone().expect("fields, not whole records");
        source.sort();
        assert_eq!(source, vec![Arc::from("adId"), Arc::from("type")]);
        assert_eq!(needs[w.op_ports[1][0]], None, "a sink needs whole records");
    }
}
