//! Partitioning of every stream of a plan, and the keyed operators whose input is not
//! partitioned by their key (pure).
//!
//! A task runs partition `p` of every source, so a keyed operator computes the right result
//! only if all records of one key reach the same task: its input must be in one task
//! ([`Partitioning::Single`]) or partitioned by the operator's key, and a multi-input keyed
//! operator needs every input partitioned by its own key into the same number of partitions.
//! Where that does not hold the operator needs a keyed *exchange* ([`Exchange`]) in front of it.
//!
//! What is known of a stream:
//! - a source with one partition is [`Partitioning::Single`]; a Kafka topic is partitioned by
//!   `partitionedBy` if the spec declares the producer's key (murmur2 of the key's bytes modulo
//!   the partition count, as the Java client and Weir's Kafka sink place records); anything
//!   else (a generator dealing events by index, one task per file, a topic without
//!   `partitionedBy`) is [`Partitioning::Unknown`];
//! - `filter` and `dedup` pass records on unchanged and keep their input's partitioning; the
//!   reader of a `repartition` is partitioned by its key; every other operator's output is
//!   unknown unless its input is in one task (conservative: an exchange too many costs time,
//!   one too few gives wrong results).

use super::kafka_exchange::WhyKafka;
use super::JobPlan;
use crate::operator::repartition::READ_SUFFIX;
use crate::plan::SourceKind;
use std::collections::BTreeMap;
use std::fmt;
use weir_crds::pipeline::{OperatorKind, OperatorSpec};
use weir_crds::validate::SpecError;

/// How a stream's records are spread over the tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partitioning {
    /// The whole stream is in one task.
    Single,
    /// Records with equal values of `key` are in the same task.
    ByKey {
        /// The CEL key expression over `e`, as written.
        key: String,
        /// The number of partitions it is spread over (0: read from the brokers at start).
        partitions: u32,
    },
    /// Spread by something else.
    Unknown {
        /// Why, for the report (e.g. `generator 'ev' deals records to 4 partitions by index`).
        why: String,
    },
}

impl fmt::Display for Partitioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partitioning::Single => write!(f, "in one task"),
            Partitioning::ByKey { key, partitions: 0 } => {
                write!(f, "partitioned by {key} (partition count read at start)")
            }
            Partitioning::ByKey { key, partitions } => {
                write!(f, "partitioned by {key} over {partitions} partitions")
            }
            Partitioning::Unknown { why } => write!(f, "not partitioned by a key: {why}"),
        }
    }
}

/// What a keyed operator needs of one input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyNeed {
    /// All records with equal values of this key in one task.
    Key(String),
    /// Every record in one task (a window without a key).
    AllInOneTask,
}

impl fmt::Display for KeyNeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyNeed::Key(k) => write!(f, "key {k}"),
            KeyNeed::AllInOneTask => write!(f, "every record in one task (no key)"),
        }
    }
}

/// One input of a keyed operator and whether its partitioning meets the operator's need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyedInput {
    /// The operator.
    pub operator: String,
    /// The input stream.
    pub input: String,
    /// What the operator needs of it.
    pub need: KeyNeed,
    /// What it is.
    pub partitioning: Partitioning,
    /// Whether an exchange must move its records to the task that owns their key.
    pub needs_exchange: bool,
}

/// An exchange the plan needs and does not have yet.
pub type Exchange = KeyedInput;

/// The partitioning of every stream and the verdict for every keyed input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitioningReport {
    /// Per stream name (sources and operators' main outputs).
    pub streams: BTreeMap<String, Partitioning>,
    /// Every input of every keyed operator, in plan order.
    pub keyed_inputs: Vec<KeyedInput>,
}

impl PartitioningReport {
    /// The keyed inputs whose records are not where their key says.
    pub fn exchanges(&self) -> impl Iterator<Item = &Exchange> {
        self.keyed_inputs.iter().filter(|k| k.needs_exchange)
    }
}

/// The key expressions are the same (whitespace aside).
fn same_key(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.split_whitespace().collect::<String>();
    norm(a) == norm(b)
}

/// What `spec` needs of its input `name`, if it is keyed.
pub fn key_need(spec: &OperatorSpec, name: &str) -> Option<KeyNeed> {
    let key = |k: &String| Some(KeyNeed::Key(k.clone()));
    match spec.kind()? {
        OperatorKind::Window(w) => Some(match &w.key {
            Some(k) => KeyNeed::Key(k.clone()),
            None => KeyNeed::AllInOneTask,
        }),
        OperatorKind::Aggregate(a) => key(&a.key),
        OperatorKind::Dedup(d) => key(&d.key),
        OperatorKind::Splice(s) => key(&s.key),
        OperatorKind::Pattern(p) => key(&p.key),
        OperatorKind::Accumulate(a) => key(&a.key),
        OperatorKind::IntervalJoin(j) if name == j.left => key(&j.left_key),
        OperatorKind::IntervalJoin(j) => key(&j.right_key),
        OperatorKind::Filter(_)
        | OperatorKind::Map(_)
        | OperatorKind::LookupJoin(_)
        | OperatorKind::Repartition(_) => None,
    }
}

fn source_partitioning(plan: &JobPlan, i: usize) -> Partitioning {
    let src = &plan.sources[i];
    if src.partitions == 1 {
        return Partitioning::Single;
    }
    let n = src.partitions;
    match &src.kind {
        SourceKind::Kafka(_) if src.name.ends_with(READ_SUFFIX) => {
            // a repartition topic: keyed by the repartition's key (its reader says which)
            let reader = plan
                .operators
                .iter()
                .find(|o| o.spec.input.as_deref() == Some(src.name.as_str()));
            match reader.and_then(|o| o.spec.repartition.as_ref()) {
                Some(r) => Partitioning::ByKey {
                    key: r.key.clone(),
                    partitions: n,
                },
                None => Partitioning::Unknown {
                    why: format!("repartition topic read by '{}'", src.name),
                },
            }
        }
        SourceKind::Kafka(k) => {
            let declared = plan
                .pipeline
                .sources
                .iter()
                .find(|s| s.name == src.name)
                .and_then(|s| s.partitioned_by.clone());
            match declared {
                Some(key) => Partitioning::ByKey { key, partitions: n },
                None => Partitioning::Unknown {
                    why: format!(
                        "Kafka topic '{}' without partitionedBy (its producer's key is not declared)",
                        k.topic
                    ),
                },
            }
        }
        SourceKind::Generator(_) => Partitioning::Unknown {
            why: format!(
                "generator '{}' deals records to {n} partitions by index",
                src.name
            ),
        },
        SourceKind::File { .. } => Partitioning::Unknown {
            why: format!("file source '{}' reads {n} files, one per task", src.name),
        },
    }
}

/// Whether `p` is `key`-partitioned (or in one task) and so meets `need` on its own.
fn meets(p: &Partitioning, need: &KeyNeed) -> bool {
    match (p, need) {
        (Partitioning::Single, _) => true,
        (Partitioning::ByKey { key, .. }, KeyNeed::Key(k)) => same_key(key, k),
        _ => false,
    }
}

/// Analyses `plan` (after `repartition` expansion; with Kafka partition counts resolved, the
/// verdicts are exact, before it a count of 0 means "read at start").
pub fn analyse(plan: &JobPlan) -> PartitioningReport {
    let mut report = PartitioningReport::default();
    for (i, s) in plan.sources.iter().enumerate() {
        report
            .streams
            .insert(s.name.clone(), source_partitioning(plan, i));
    }
    let unknown = |name: &str| Partitioning::Unknown {
        why: format!("stream '{name}' is not in the plan"),
    };
    for o in &plan.operators {
        let inputs: Vec<(String, Partitioning)> = o
            .spec
            .all_inputs()
            .iter()
            .map(|name| {
                let p = report
                    .streams
                    .get(plan.input_stream(&o.spec.name, name))
                    .cloned()
                    .unwrap_or_else(|| unknown(name));
                (name.to_string(), p)
            })
            .collect();
        // multi-input keyed operators: every input keyed into the same number of partitions
        let counts: Vec<u32> = inputs
            .iter()
            .filter_map(|(_, p)| match p {
                Partitioning::ByKey { partitions, .. } => Some(*partitions),
                _ => None,
            })
            .collect();
        let all_single = inputs.iter().all(|(_, p)| *p == Partitioning::Single);
        let same_counts = counts.windows(2).all(|w| w[0] == w[1]) && counts.len() == inputs.len();
        // one verdict for all inputs: exchanging some inputs by key group and leaving others
        // where their producer put them would not bring a key's records together
        let all_meet = inputs
            .iter()
            .all(|(name, p)| key_need(&o.spec, name).is_none_or(|need| meets(p, &need)));
        let ok = if inputs.len() == 1 {
            all_meet
        } else {
            all_single || (same_counts && all_meet)
        };
        for (name, p) in &inputs {
            let Some(need) = key_need(&o.spec, name) else {
                continue;
            };
            report.keyed_inputs.push(KeyedInput {
                operator: o.spec.name.clone(),
                input: name.clone(),
                need,
                partitioning: p.clone(),
                needs_exchange: !ok,
            });
        }
        let out = output_partitioning(&o.spec, &inputs);
        report.streams.insert(o.spec.name.clone(), out);
    }
    report
}

fn output_partitioning(spec: &OperatorSpec, inputs: &[(String, Partitioning)]) -> Partitioning {
    if !inputs.is_empty() && inputs.iter().all(|(_, p)| *p == Partitioning::Single) {
        return Partitioning::Single;
    }
    match (spec.kind(), inputs) {
        (Some(OperatorKind::Filter(_)) | Some(OperatorKind::Dedup(_)), [(_, p)]) => p.clone(),
        (Some(OperatorKind::Repartition(r)), [(input, p)]) if input.ends_with(READ_SUFFIX) => {
            match p {
                Partitioning::ByKey { partitions, .. } => Partitioning::ByKey {
                    key: r.key.clone(),
                    partitions: *partitions,
                },
                other => other.clone(),
            }
        }
        (kind, _) => Partitioning::Unknown {
            why: format!(
                "output of {} '{}'",
                kind.map(kind_name).unwrap_or("operator"),
                spec.name
            ),
        },
    }
}

fn kind_name(kind: OperatorKind<'_>) -> &'static str {
    match kind {
        OperatorKind::Filter(_) => "filter",
        OperatorKind::Map(_) => "map",
        OperatorKind::Window(_) => "window",
        OperatorKind::Aggregate(_) => "aggregate",
        OperatorKind::Dedup(_) => "dedup",
        OperatorKind::Splice(_) => "splice",
        OperatorKind::Pattern(_) => "pattern",
        OperatorKind::IntervalJoin(_) => "intervalJoin",
        OperatorKind::Accumulate(_) => "accumulate",
        OperatorKind::LookupJoin(_) => "lookupJoin",
        OperatorKind::Repartition(_) => "repartition",
    }
}

/// Gives `plan` an exchange in front of every keyed input that needs one: in memory
/// (`crate::exchange`) when one pod runs every task and there are at most
/// `spec.maxParallelism` tasks (the job's key groups), else through Kafka ([`super::kafka_exchange`]),
/// which needs brokers. Call after the Kafka partition counts are resolved; after Kafka
/// exchanges were inserted, their topics must be created (`kafka::repartition::ensure_topics`).
pub fn plan_exchanges(plan: &mut JobPlan, replicas: u32) -> Result<(), Vec<SpecError>> {
    plan.exchanges.clear();
    let report = analyse(plan);
    let needed: Vec<Exchange> = report.exchanges().cloned().collect();
    if needed.is_empty() {
        return Ok(());
    }
    if replicas > 1 {
        return super::kafka_exchange::insert(plan, &needed, &WhyKafka::Pods);
    }
    if plan.tasks > plan.key_groups {
        let why = WhyKafka::TasksAboveKeyGroups {
            tasks: plan.tasks,
            key_groups: plan.key_groups,
        };
        return super::kafka_exchange::insert(plan, &needed, &why);
    }
    if plan.tasks <= 1 {
        return Ok(());
    }
    plan.exchanges = needed
        .iter()
        .map(|x| super::PlannedExchange {
            operator: x.operator.clone(),
            input: x.input.clone(),
            key: match &x.need {
                KeyNeed::Key(k) => Some(k.clone()),
                KeyNeed::AllInOneTask => None,
            },
        })
        .collect();
    Ok(())
}

/// The keyed inputs that still need an exchange the plan does not have, one line each saying
/// what is wrong and what to do; empty when none. After [`plan_exchanges`] and the exchange
/// topics' creation this is empty unless topics that already existed have other partition
/// counts; `run` and `worker` refuse to start a plan that has any.
pub fn unmet_exchanges(plan: &JobPlan, report: &PartitioningReport) -> String {
    let tasks = plan.tasks;
    let mut out = String::new();
    let planned = |x: &Exchange| {
        plan.exchanges
            .iter()
            .any(|p| p.operator == x.operator && p.input == x.input)
    };
    let tasks = match tasks {
        0 => "one task per Kafka partition".to_string(),
        n => format!("{n} tasks"),
    };
    for x in report.exchanges().filter(|x| !planned(x)) {
        let fix = match &x.need {
            KeyNeed::Key(_) => {
                "its inputs are partitioned by key over different partition counts (Kafka topics created with other counts?): give them the same count, or delete the exchange topics so that Weir creates them"
            }
            KeyNeed::AllInOneTask => "read each source with one partition, or give the window a key",
        };
        out.push_str(&format!(
            "operator '{}' needs {} on input '{}', which is {}; with {tasks} it would compute per-task partial results: {fix}.\n",
            x.operator, x.need, x.input, x.partitioning
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::plan::plan_yaml as plan;

    fn job(sources: &str, operators: &str) -> String {
        format!(
            r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: p}}
spec:
  image: x
  pipeline:
    sources:
{sources}
    operators:
{operators}
    sinks:
      - {{name: out, input: last, stdout: {{}}}}
"#
        )
    }

    const WINDOW: &str = r#"      - {name: clicks, input: ev, filter: "e.type == 'click'"}
      - name: last
        input: clicks
        window: {type: tumbling, size: 1m, key: "e.adId", aggregates: [{name: n, op: count}]}"#;

    #[test]
    fn a_window_over_a_multi_partition_generator_needs_an_exchange() {
        let src = "      - {name: ev, generator: {kind: adEvents, partitions: 4, count: 10}}";
        let r = analyse(&plan(&job(src, WINDOW)));
        let x: Vec<&Exchange> = r.exchanges().collect();
        assert_eq!(x.len(), 1, "{r:?}");
        assert_eq!(
            (x[0].operator.as_str(), x[0].input.as_str()),
            ("last", "clicks")
        );
        assert!(
            matches!(&x[0].partitioning, Partitioning::Unknown { why } if why.contains("generator 'ev' deals records to 4 partitions")),
            "the filter keeps the source's partitioning: {:?}",
            x[0].partitioning
        );
        let p = plan(&job(src, WINDOW));
        let warning = unmet_exchanges(&p, &r);
        assert!(
            warning.contains("operator 'last' needs key e.adId on input 'clicks'"),
            "{warning}"
        );
        assert!(warning.contains("per-task partial results"), "{warning}");
    }

    #[test]
    fn one_partition_needs_no_exchange() {
        let src = "      - {name: ev, generator: {kind: adEvents, partitions: 1, count: 10}}";
        let r = analyse(&plan(&job(src, WINDOW)));
        assert_eq!(r.exchanges().count(), 0, "{r:?}");
        assert_eq!(r.streams["last"], Partitioning::Single);
        assert_eq!(unmet_exchanges(&plan(&job(src, WINDOW)), &r), "");
    }

    #[test]
    fn a_kafka_topic_declared_partitioned_by_the_key_needs_none_and_another_key_does() {
        let src =
            r#"      - {name: ev, kafka: {brokers: "b:9092", topic: t}, partitionedBy: "e.adId"}"#;
        let mut p = plan(&job(src, WINDOW));
        p.sources[0].partitions = 8; // as resolved from the brokers at start
        assert_eq!(analyse(&p).exchanges().count(), 0);
        let other = src.replace("e.adId", "e.userId");
        let mut p = plan(&job(&other, WINDOW));
        p.sources[0].partitions = 8;
        assert_eq!(analyse(&p).exchanges().count(), 1);
        let undeclared = r#"      - {name: ev, kafka: {brokers: "b:9092", topic: t}}"#;
        let r = analyse(&plan(&job(undeclared, WINDOW)));
        let x: Vec<&Exchange> = r.exchanges().collect();
        assert!(
            matches!(&x[0].partitioning, Partitioning::Unknown { why } if why.contains("without partitionedBy")),
            "{x:?}"
        );
    }

    #[test]
    fn a_repartition_by_the_key_satisfies_the_window() {
        let src = "      - {name: ev, generator: {kind: adEvents, partitions: 4, count: 10}}";
        let ops = r#"      - {name: by-ad, input: ev, repartition: {key: "e.adId", brokers: "b:9092"}}
      - name: last
        input: by-ad
        window: {type: tumbling, size: 1m, key: "e.adId", aggregates: [{name: n, op: count}]}"#;
        let mut p = plan(&job(src, ops));
        for s in p
            .sources
            .iter_mut()
            .filter(|s| s.name.ends_with(READ_SUFFIX))
        {
            s.partitions = 4;
        }
        let r = analyse(&p);
        assert_eq!(r.exchanges().count(), 0, "{r:?}");
        assert_eq!(
            r.streams["by-ad"],
            Partitioning::ByKey {
                key: "e.adId".into(),
                partitions: 4
            }
        );
    }

    #[test]
    fn a_window_without_a_key_needs_every_record_in_one_task() {
        let src = "      - {name: ev, generator: {kind: adEvents, partitions: 2, count: 10}}";
        let ops = r#"      - name: last
        input: ev
        window: {type: tumbling, size: 1m, aggregates: [{name: n, op: count}]}"#;
        let r = analyse(&plan(&job(src, ops)));
        let x: Vec<&Exchange> = r.exchanges().collect();
        assert_eq!(x[0].need, KeyNeed::AllInOneTask);
    }

    #[test]
    fn multi_input_operators_need_every_input_keyed_into_the_same_partition_count() {
        let src = r#"      - {name: a, kafka: {brokers: "b:9092", topic: ta}, partitionedBy: "e.id"}
      - {name: b, kafka: {brokers: "b:9092", topic: tb}, partitionedBy: "e.ref"}"#;
        let ops = r#"      - name: last
        intervalJoin: {left: a, right: b, leftKey: "e.id", rightKey: "e.ref", before: 1m, after: 1m, emit: "{'id': l.id}"}"#;
        let mut p = plan(&job(src, ops));
        p.sources[0].partitions = 4;
        p.sources[1].partitions = 4;
        assert_eq!(analyse(&p).exchanges().count(), 0, "same keys, same counts");
        p.sources[1].partitions = 6;
        let r = analyse(&p);
        assert_eq!(
            r.exchanges().count(),
            2,
            "murmur2(k) % 4 and % 6 place a key in different tasks: {r:?}"
        );
    }

    #[test]
    fn one_pod_plans_an_exchange_for_every_keyed_input_that_needs_one() {
        let src = "      - {name: ev, generator: {kind: adEvents, partitions: 4, count: 10}}";
        let mut two_pods = plan(&job(src, WINDOW));
        let errs = plan_exchanges(&mut two_pods, 2).expect_err("no brokers for two pods");
        assert!(errs[0].message.contains("operator 'last'"), "{errs:?}");
        assert!(two_pods.exchanges.is_empty(), "two pods: not in memory");
        let mut p = plan(&job(src, WINDOW));
        plan_exchanges(&mut p, 1).expect("in memory");
        assert_eq!(
            p.exchanges,
            vec![crate::plan::PlannedExchange {
                operator: "last".into(),
                input: "clicks".into(),
                key: Some("e.adId".into())
            }]
        );
        assert_eq!(unmet_exchanges(&p, &analyse(&p)), "", "planned");
    }

    #[test]
    fn whitespace_does_not_make_another_key() {
        assert!(same_key("e.a + ':' + e.b", "e.a+':'+e.b"));
        assert!(!same_key("e.a", "e.b"));
    }
}
