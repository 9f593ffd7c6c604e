//! Planning: from a validated StreamJob to the tasks this process runs.
//!
//! Every source is split into partitions (file source: one per file; generator: `partitions`
//! virtual partitions). Task `p` runs partition `p` of every source that has one, with the
//! whole operator chain and its own state, on one thread; so multi-input operators see
//! co-partitioned inputs (same partition index). Pod ordinal `i` of `N` runs the tasks
//! `p` with `p % N == i`.

pub mod kafka_exchange;
pub mod partitioning;
pub mod repartition;
pub mod summary;

use crate::operator;
use crate::source::file::partition_files;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use weir_crds::pipeline::{GeneratorSpec, KafkaSourceSpec, OperatorSpec, Pipeline};
use weir_crds::validate::{validate_job, SpecError};
use weir_crds::StreamJob;

/// How a source is read.
#[derive(Clone, Debug)]
pub enum SourceKind {
    /// JSON-lines files, one partition each.
    File {
        /// The partition files.
        files: Vec<PathBuf>,
        /// Keep following appended lines.
        follow: bool,
    },
    /// A generator.
    Generator(GeneratorSpec),
    /// A Kafka topic; its partition count is read from the brokers at start
    /// ([`crate::kafka::resolve_partitions`]), task `p` reads partition `p`.
    Kafka(KafkaSourceSpec),
}

/// A planned source.
#[derive(Clone, Debug)]
pub struct SourcePlan {
    /// Source name.
    pub name: String,
    /// How to read it.
    pub kind: SourceKind,
    /// Number of partitions.
    pub partitions: u32,
    /// Field holding event time, if any.
    pub time_field: Option<String>,
    /// Bounded out-of-orderness, ms.
    pub out_of_orderness_ms: i64,
    /// Idle timeout, ms.
    pub idle_timeout_ms: Option<i64>,
}

/// A planned operator.
#[derive(Clone, Debug)]
pub struct OperatorPlan {
    /// Its spec.
    pub spec: OperatorSpec,
    /// Its field path.
    pub field: String,
    /// The kind name (`filter`, `window`, ...).
    pub kind: &'static str,
}

/// A keyed exchange in front of one input of an operator (see `crate::exchange`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedExchange {
    /// The keyed operator.
    pub operator: String,
    /// Its input stream read through the exchange.
    pub input: String,
    /// The key (CEL over `e`); `None`: every record to one task (a window without a key).
    pub key: Option<String>,
}

/// A keyed exchange across pods: operator `operator` reads its input `input` from the
/// `repartition` operator `via` that Weir inserted in front of it (see [`kafka_exchange`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaExchange {
    /// The keyed operator.
    pub operator: String,
    /// Its input as the spec names it.
    pub input: String,
    /// The inserted repartition operator whose output the operator reads instead.
    pub via: String,
    /// The key records are partitioned by (`None`: all in one partition).
    pub key: Option<String>,
    /// The exchange topic.
    pub topic: String,
}

/// The plan of a job.
#[derive(Clone, Debug)]
pub struct JobPlan {
    /// Job name.
    pub job: String,
    /// Namespace, or `local`.
    pub namespace: String,
    /// Sources.
    pub sources: Vec<SourcePlan>,
    /// Operators in topological order.
    pub operators: Vec<OperatorPlan>,
    /// The pipeline (for sinks).
    pub pipeline: Pipeline,
    /// Number of tasks (the largest source partition count).
    pub tasks: u32,
    /// The in-memory keyed exchanges ([`partitioning::plan_exchanges`]; none until then).
    pub exchanges: Vec<PlannedExchange>,
    /// The keyed exchanges through Kafka ([`partitioning::plan_exchanges`]; none until then).
    pub kafka_exchanges: Vec<KafkaExchange>,
    /// Key groups of keyed state behind an in-memory exchange (`spec.maxParallelism`).
    pub key_groups: u32,
}

fn ms(d: weir_crds::Dur) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Plans the StreamJob manifest `yaml` (tests), panicking on any problem.
#[cfg(test)]
pub(crate) fn plan_yaml(yaml: &str) -> JobPlan {
    let job: StreamJob = serde_yaml::from_str(yaml).expect("manifest");
    plan_job(&job).expect("plan")
}

/// Plans `job`: validates the spec, checks every kind is supported, compiles every
/// expression and lists source partitions. All problems are returned, each naming its field.
pub fn plan_job(job: &StreamJob) -> Result<JobPlan, Vec<SpecError>> {
    let spec = &job.spec;
    let mut errors = validate_job(job);
    let p = &spec.pipeline;
    let mut sources = vec![];
    for (i, s) in p.sources.iter().enumerate() {
        let f = format!("spec.pipeline.sources[{i}]");
        let (time_field, ooo, idle) = match &s.event_time {
            Some(et) => (
                Some(et.field.clone()),
                ms(et.max_out_of_orderness),
                et.idle_timeout.map(ms),
            ),
            None => (None, 0, None),
        };
        let kind = if let Some(fs) = &s.file {
            match partition_files(&fs.path) {
                Ok(files) => SourceKind::File {
                    files,
                    follow: fs.follow,
                },
                Err(m) => {
                    errors.push(SpecError {
                        field: format!("{f}.file.path"),
                        message: m,
                    });
                    continue;
                }
            }
        } else if let Some(g) = &s.generator {
            SourceKind::Generator(g.clone())
        } else if let Some(k) = &s.kafka {
            SourceKind::Kafka(k.clone())
        } else {
            continue;
        };
        let partitions = match &kind {
            SourceKind::File { files, .. } => u32::try_from(files.len()).unwrap_or(u32::MAX),
            SourceKind::Generator(g) => g.partitions.max(1),
            // unknown until the brokers are asked at start
            SourceKind::Kafka(_) => 0,
        };
        sources.push(SourcePlan {
            name: s.name.clone(),
            kind,
            partitions,
            time_field,
            out_of_orderness_ms: ooo,
            idle_timeout_ms: idle,
        });
    }
    for (i, s) in p.sinks.iter().enumerate() {
        if let Some(key) = s.kafka.as_ref().and_then(|k| k.key.as_ref()) {
            // compiled again by each sink task; report it here, once, naming the field
            match operator::compile(&format!("spec.pipeline.sinks[{i}].kafka.key"), key) {
                Err(e) if !errors.iter().any(|x| x.field == e.field) => errors.push(e),
                _ => {}
            }
        }
    }
    let mut operators = vec![];
    for (i, o) in p.operators.iter().enumerate() {
        let field = format!("spec.pipeline.operators[{i}]");
        if o.kinds().len() != 1 {
            continue; // validate_spec reported it
        }
        match operator::build(&field, o) {
            Ok(_) => {}
            Err(es) => {
                for e in es {
                    if !errors.iter().any(|x| x.field == e.field) {
                        errors.push(e);
                    }
                }
            }
        }
        let kind = o.kinds().first().map(|(k, _)| *k).unwrap_or("");
        operators.push(OperatorPlan {
            spec: o.clone(),
            field,
            kind,
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let operators = topo_order(operators);
    let tasks = sources.iter().map(|s| s.partitions).max().unwrap_or(0);
    let mut plan = JobPlan {
        job: job.metadata.name.clone().unwrap_or_else(|| "job".into()),
        namespace: job
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "local".into()),
        sources,
        operators,
        pipeline: p.clone(),
        tasks,
        exchanges: vec![],
        kafka_exchanges: vec![],
        key_groups: spec
            .max_parallelism
            .unwrap_or(crate::exchange::DEFAULT_KEY_GROUPS),
    };
    // a repartition becomes a writer, a Kafka sink, a Kafka source and a reader
    repartition::expand(&mut plan);
    Ok(plan)
}

fn topo_order(ops: Vec<OperatorPlan>) -> Vec<OperatorPlan> {
    let mut remaining: BTreeMap<usize, OperatorPlan> = ops.into_iter().enumerate().collect();
    let names: Vec<String> = remaining.values().map(|o| o.spec.name.clone()).collect();
    let mut done: Vec<String> = vec![];
    let mut out = vec![];
    while !remaining.is_empty() {
        let ready: Vec<usize> = remaining
            .iter()
            .filter(|(_, o)| {
                o.spec.all_inputs().iter().all(|i| {
                    let up = i.split('.').next().unwrap_or(i);
                    !names.iter().any(|n| n == up) || done.iter().any(|d| d == up)
                })
            })
            .map(|(k, _)| *k)
            .collect();
        if ready.is_empty() {
            // cycles are rejected by validation; keep the rest in spec order
            out.extend(remaining.into_values());
            break;
        }
        for k in ready {
            if let Some(o) = remaining.remove(&k) {
                done.push(o.spec.name.clone());
                out.push(o);
            }
        }
    }
    out
}

impl JobPlan {
    /// The stream operator `operator` reads for its input `input`: the input itself, or the
    /// output of the Kafka exchange in front of it.
    pub fn input_stream<'a>(&'a self, operator: &str, input: &'a str) -> &'a str {
        self.kafka_exchanges
            .iter()
            .find(|x| x.operator == operator && x.input == input)
            .map_or(input, |x| x.via.as_str())
    }

    /// The tasks pod `ordinal` of `replicas` runs: `p % replicas == ordinal`.
    pub fn tasks_for(&self, ordinal: u32, replicas: u32) -> Vec<u32> {
        (0..self.tasks)
            .filter(|p| p % replicas.max(1) == ordinal)
            .collect()
    }

    /// A human-readable description of the plan.
    pub fn describe(&self, ordinal: u32, replicas: u32) -> String {
        let mut s = String::new();
        // Kafka partition counts are only known once the brokers are asked (at start)
        let unresolved = self.sources.iter().any(|s| s.partitions == 0);
        let tasks = match (unresolved, self.tasks) {
            (false, n) => format!("{n} task(s)"),
            (true, 0) => {
                "one task per Kafka partition (partition counts are read from the brokers at start)"
                    .to_string()
            }
            (true, n) => format!(
                "at least {n} task(s) (Kafka partition counts are read from the brokers at start)"
            ),
        };
        let _ = writeln!(s, "job {}/{}: {tasks}", self.namespace, self.job);
        for src in &self.sources {
            let what = match &src.kind {
                SourceKind::File { files, follow } => format!(
                    "file, {} partition(s){}",
                    files.len(),
                    if *follow { ", follow" } else { "" }
                ),
                SourceKind::Generator(g) => format!(
                    "generator {:?}, {} partition(s){}{}",
                    g.kind,
                    g.partitions,
                    g.count.map(|c| format!(", count {c}")).unwrap_or_default(),
                    g.rate.map(|r| format!(", {r} ev/s")).unwrap_or_default()
                ),
                SourceKind::Kafka(k) => format!(
                    "kafka topic '{}' at {}, {}",
                    k.topic,
                    k.brokers,
                    match src.partitions {
                        0 => "partition count read from the brokers at start".to_string(),
                        n => format!("{n} partition(s)"),
                    }
                ),
            };
            let _ = writeln!(s, "  source {}: {what}", src.name);
        }
        let _ = writeln!(s, "  operator chain (per task, one thread):");
        for o in &self.operators {
            let _ = writeln!(
                s,
                "    {} [{}] <- {}",
                o.spec.name,
                o.kind,
                o.spec
                    .all_inputs()
                    .iter()
                    .map(|i| match self.input_stream(&o.spec.name, i) {
                        via if via == *i => i.to_string(),
                        via => format!("{i} (through {via})"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let report = partitioning::analyse(self);
        if !report.keyed_inputs.is_empty() {
            let _ = writeln!(
                s,
                "  keyed inputs (all records of a key must reach one task):"
            );
            for k in &report.keyed_inputs {
                let planned = self
                    .exchanges
                    .iter()
                    .any(|x| x.operator == k.operator && x.input == k.input);
                let via = self
                    .kafka_exchanges
                    .iter()
                    .find(|x| x.operator == k.operator && x.input == k.input);
                let topic = via.and_then(|x| {
                    self.operators
                        .iter()
                        .find(|o| o.spec.name == x.via)
                        .and_then(|o| o.spec.repartition.as_ref())
                        .and_then(|r| r.topic.clone())
                });
                let verdict = if planned {
                    "exchange in memory between this pod's tasks".to_string()
                } else if let Some(topic) = topic {
                    format!("exchange across pods through Kafka topic '{topic}'")
                } else if k.needs_exchange && self.tasks == 0 {
                    "exchange planned at start, once the Kafka partition counts are known"
                        .to_string()
                } else if k.needs_exchange {
                    "NEEDS AN EXCHANGE, which this plan does not have: per-task partial results"
                        .to_string()
                } else {
                    "ok".to_string()
                };
                let _ = writeln!(
                    s,
                    "    {} <- {}: needs {}; input {}: {verdict}",
                    k.operator, k.input, k.need, k.partitioning
                );
            }
        }
        for k in &self.pipeline.sinks {
            let kind = k.kinds().first().copied().unwrap_or("?");
            let _ = writeln!(s, "  sink {} [{kind}] <- {}", k.name, k.input);
        }
        let mine = self.tasks_for(ordinal, replicas);
        let _ = if unresolved {
            writeln!(
                s,
                "  pod {ordinal} of {replicas} runs the tasks p with p % {replicas} == {ordinal} (task p runs partition p of every source)"
            )
        } else {
            writeln!(
                s,
                "  pod {ordinal} of {replicas} runs task(s) {:?} (task p runs partition p of every source; pod i runs p % {replicas} == i)",
                mine
            )
        };
        s
    }
}
