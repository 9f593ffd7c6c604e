//! Keyed exchanges across pods, through Kafka (pure planning).
//!
//! A job on several pods cannot hand records between tasks in memory: a keyed operator whose
//! input is not partitioned by its key gets a `repartition` operator in front of that input,
//! inserted by Weir, with the operator's key, so that records reach the task that owns their
//! key through a topic `<job>-<operator>-<input>-exchange` ([`topic_name`]). Every keyed
//! exchange topic of a job is created with the same partition count
//! (`pipeline.exchange.partitions`, else the largest source partition count), so the inputs of
//! a multi-input operator meet in the same task; the topic in front of a window without a key
//! has one partition. The writer numbers its records and the reader drops replays, as for a
//! `repartition` the user writes (`operator::repartition`), and writers announce their
//! watermark and their end to every partition, so the reading stage's watermark is the
//! minimum over the writing tasks (`time::watermark`).

use super::partitioning::{Exchange, KeyNeed};
use super::{repartition, JobPlan, KafkaExchange, OperatorPlan};
use weir_crds::pipeline::{ExchangeSpec, OperatorSpec, RepartitionSpec};
use weir_crds::validate::SpecError;

/// The separator of an inserted exchange's name, `<operator>@<input>` (`@` cannot occur in a
/// user's names).
pub const VIA_SEPARATOR: char = '@';

/// The topic of the exchange in front of `input` of `operator` of `job`. Kafka topic names
/// allow `[a-zA-Z0-9._-]`; anything else becomes `_`.
pub fn topic_name(job: &str, operator: &str, input: &str) -> String {
    format!("{job}-{operator}-{input}-exchange")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Why an exchange goes through Kafka rather than memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhyKafka {
    /// The job runs on several pods.
    Pods,
    /// One pod, but more tasks than key groups (`spec.maxParallelism`).
    TasksAboveKeyGroups {
        /// The plan's tasks.
        tasks: u32,
        /// Its key groups.
        key_groups: u32,
    },
}

impl WhyKafka {
    /// What the user can set when no brokers are configured.
    fn remedy(&self) -> String {
        match self {
            WhyKafka::Pods => "records must move between pods by key, and Weir moves them through Kafka: set spec.pipeline.exchange.brokers (or read a Kafka source), or run the job on one pod (spec.parallelism: 1)".into(),
            WhyKafka::TasksAboveKeyGroups { tasks, key_groups } => format!("the job has {tasks} tasks and only {key_groups} key groups (spec.maxParallelism), so its records move between tasks through Kafka: set spec.pipeline.exchange.brokers (or read a Kafka source), or raise spec.maxParallelism to at least {tasks}"),
        }
    }
}

/// Inserts a Kafka exchange in front of every keyed input of `exchanges` (from
/// `partitioning::analyse`). Without brokers (`pipeline.exchange.brokers`, or a Kafka source's)
/// every such input is an error naming its operator, `why_kafka` (why the exchange cannot stay
/// in memory) and what to set.
pub fn insert(
    plan: &mut JobPlan,
    exchanges: &[Exchange],
    why_kafka: &WhyKafka,
) -> Result<(), Vec<SpecError>> {
    if exchanges.is_empty() {
        return Ok(());
    }
    let settings = plan.pipeline.exchange.clone().unwrap_or(ExchangeSpec {
        exactly_once: true,
        ..Default::default()
    });
    if settings.brokers.is_none() && repartition::default_brokers(plan).is_none() {
        return Err(exchanges
            .iter()
            .map(|x| SpecError {
                field: field_of(plan, &x.operator),
                message: format!(
                    "operator '{}' needs {} on input '{}', which is {}; {}",
                    x.operator,
                    x.need,
                    x.input,
                    x.partitioning,
                    why_kafka.remedy()
                ),
            })
            .collect());
    }
    for x in exchanges {
        let via = format!("{}{VIA_SEPARATOR}{}", x.operator, x.input);
        let (key, partitions) = match &x.need {
            KeyNeed::Key(k) => (Some(k.clone()), settings.partitions),
            // every record to one task: a topic with one partition
            KeyNeed::AllInOneTask => (None, Some(1)),
        };
        let topic = topic_name(&plan.job, &x.operator, &x.input);
        let spec = RepartitionSpec {
            key: key.clone().unwrap_or_else(|| "'all'".to_string()),
            // unset: borrowed with the first Kafka source's security (`repartition::expand_one`)
            brokers: settings.brokers.clone(),
            topic: Some(topic.clone()),
            partitions,
            exactly_once: settings.exactly_once,
            properties: settings.properties.clone(),
            security: settings.security.clone(),
        };
        let inserted = OperatorPlan {
            spec: OperatorSpec {
                name: via.clone(),
                input: Some(x.input.clone()),
                repartition: Some(spec.clone()),
                ..Default::default()
            },
            field: field_of(plan, &x.operator),
            kind: "repartition",
        };
        let [writer, reader] = repartition::expand_one(plan, inserted, spec);
        // in front of the operator: after its input's producer, before the operator
        let at = plan
            .operators
            .iter()
            .position(|o| o.spec.name == x.operator)
            .unwrap_or(plan.operators.len());
        plan.operators.insert(at, reader);
        plan.operators.insert(at, writer);
        plan.kafka_exchanges.push(KafkaExchange {
            operator: x.operator.clone(),
            input: x.input.clone(),
            via,
            key,
            topic,
        });
    }
    Ok(())
}

fn field_of(plan: &JobPlan, operator: &str) -> String {
    plan.operators
        .iter()
        .find(|o| o.spec.name == operator)
        .map_or_else(
            || "spec.pipeline.operators".to_string(),
            |o| o.field.clone(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::partitioning::{analyse, plan_exchanges};

    use crate::plan::plan_yaml as plan;

    const SPLICE: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {name: sj}
spec:
  image: x
  pipeline:
    exchange: {brokers: "b:9092", partitions: 6}
    sources:
      - {name: a, generator: {kind: adEvents, partitions: 4, count: 10}}
      - {name: b, generator: {kind: adEvents, partitions: 2, count: 10}}
    operators:
      - {name: clicks, input: b, filter: "e.type == 'click'"}
      - name: joined
        inputs: [a, clicks]
        splice: {key: "e.userId", timeout: 1m, fields: [{name: n, from: a, rule: count}]}
    sinks:
      - {name: out, input: joined, stdout: {}}
"#;

    #[test]
    fn every_input_of_a_multi_input_operator_gets_its_own_topic_and_the_operator_reads_them() {
        let mut p = plan(SPLICE);
        plan_exchanges(&mut p, 2).expect("brokers are set");
        assert!(p.exchanges.is_empty(), "no in-memory exchange across pods");
        let vias: Vec<(&str, &str, &str)> = p
            .kafka_exchanges
            .iter()
            .map(|x| (x.operator.as_str(), x.input.as_str(), x.via.as_str()))
            .collect();
        assert_eq!(
            vias,
            vec![
                ("joined", "a", "joined@a"),
                ("joined", "clicks", "joined@clicks")
            ]
        );
        assert_eq!(p.input_stream("joined", "a"), "joined@a");
        let order: Vec<&str> = p.operators.iter().map(|o| o.spec.name.as_str()).collect();
        assert_eq!(
            order,
            vec![
                "clicks",
                "joined@a@write",
                "joined@a",
                "joined@clicks@write",
                "joined@clicks",
                "joined"
            ]
        );
        let topics: Vec<(String, Option<u32>)> = p
            .operators
            .iter()
            .filter_map(|o| o.spec.repartition.as_ref())
            .map(|r| (r.topic.clone().unwrap_or_default(), r.partitions))
            .collect();
        assert!(topics.contains(&("sj-joined-clicks-exchange".to_string(), Some(6))));
        // the key of each input is the operator's key
        let keys: Vec<&str> = p
            .operators
            .iter()
            .filter_map(|o| o.spec.repartition.as_ref().map(|r| r.key.as_str()))
            .collect();
        assert!(keys.iter().all(|k| *k == "e.userId"), "{keys:?}");
        // once the topics exist with the same partition count, nothing needs an exchange
        for s in p.sources.iter_mut() {
            if s.partitions == 0 {
                s.partitions = 6;
            }
        }
        let report = analyse(&p);
        assert_eq!(report.exchanges().count(), 0, "{report:?}");
    }

    #[test]
    fn without_brokers_the_error_names_the_operator_and_what_to_set() {
        let yaml = SPLICE.replace("    exchange: {brokers: \"b:9092\", partitions: 6}\n", "");
        let mut p = plan(&yaml);
        let errs = plan_exchanges(&mut p, 3).expect_err("no brokers");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].field, "spec.pipeline.operators[1]");
        assert!(errs[0].message.contains("operator 'joined'"), "{errs:?}");
        assert!(
            errs[0].message.contains("spec.pipeline.exchange.brokers"),
            "{errs:?}"
        );
        assert!(errs[0].message.contains("spec.parallelism: 1"), "{errs:?}");
        // one pod needs no brokers: the exchange is in memory
        let mut one = plan(&yaml);
        plan_exchanges(&mut one, 1).expect("in memory");
        assert_eq!(one.exchanges.len(), 2);
        assert!(one.kafka_exchanges.is_empty());
    }

    #[test]
    fn more_tasks_than_key_groups_on_one_pod_go_through_kafka_and_say_so() {
        let yaml = SPLICE.replace("    exchange: {brokers: \"b:9092\", partitions: 6}\n", "");
        let mut p = plan(&yaml);
        p.key_groups = 1;
        assert!(p.tasks > 1, "the test needs several tasks");
        let errs = plan_exchanges(&mut p, 1).expect_err("no brokers");
        assert!(
            errs[0].message.contains(&format!(
                "raise spec.maxParallelism to at least {}",
                p.tasks
            )),
            "{errs:?}"
        );
        assert!(!errs[0].message.contains("spec.parallelism: 1"), "{errs:?}");
        let mut with_brokers = plan(SPLICE);
        with_brokers.key_groups = 1;
        plan_exchanges(&mut with_brokers, 1).expect("brokers are set");
        assert!(with_brokers.exchanges.is_empty());
        assert_eq!(with_brokers.kafka_exchanges.len(), 2);
    }

    #[test]
    fn a_window_without_a_key_reads_a_topic_with_one_partition() {
        let yaml = SPLICE.replace(
            "        splice: {key: \"e.userId\", timeout: 1m, fields: [{name: n, from: a, rule: count}]}",
            "        window: {type: tumbling, size: 10s, aggregates: [{name: n, op: count}]}",
        )
        .replace("inputs: [a, clicks]", "input: a");
        let mut p = plan(&yaml);
        plan_exchanges(&mut p, 2).expect("brokers are set");
        let r = p
            .operators
            .iter()
            .find(|o| o.spec.name == "joined@a")
            .and_then(|o| o.spec.repartition.clone())
            .expect("an exchange in front of the window");
        assert_eq!((r.key.as_str(), r.partitions), ("'all'", Some(1)));
    }

    #[test]
    fn topic_names_keep_to_kafka_characters() {
        assert_eq!(
            topic_name("j", "per-ad", "ev.late"),
            "j-per-ad-ev.late-exchange"
        );
        assert_eq!(topic_name("j", "a b", "c/d"), "j-a_b-c_d-exchange");
    }
}
