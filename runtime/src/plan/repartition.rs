//! Planning a `repartition` operator: it becomes a writer operator, a Kafka sink to its
//! topic, a Kafka source reading the topic back and a reader operator (see
//! `operator::repartition` for the protocol that makes this exactly-once).

use super::{JobPlan, OperatorPlan, SourceKind, SourcePlan};
use crate::operator::repartition::{READ_SUFFIX, SINK_SUFFIX, TS_FIELD, WRITE_SUFFIX};
use weir_crds::pipeline::{
    KafkaSinkSpec, KafkaSourceSpec, OperatorSpec, RepartitionSpec, SinkSpec, StartFrom,
};

/// The topic of repartition operator `operator` of `job`: `spec.topic`, else
/// `<job>-<operator>-repartition`.
pub fn topic_name(job: &str, operator: &str, spec: &RepartitionSpec) -> String {
    spec.topic
        .clone()
        .unwrap_or_else(|| format!("{job}-{operator}-repartition"))
}

/// Replaces every `repartition` operator of `plan` by its writer, sink, source and reader (see
/// the module documentation). Validation guarantees brokers are known (set, or borrowed from
/// the first Kafka source).
pub fn expand(plan: &mut JobPlan) {
    let mut operators = Vec::with_capacity(plan.operators.len());
    for o in std::mem::take(&mut plan.operators) {
        match o.spec.repartition.clone() {
            Some(r) => operators.extend(expand_one(plan, o, r)),
            None => operators.push(o),
        }
    }
    plan.operators = operators;
}

/// The first Kafka source's brokers (what a repartition or exchange without its own uses).
pub fn default_brokers(plan: &JobPlan) -> Option<String> {
    first_kafka_source(plan).map(|k| k.brokers.clone())
}

fn first_kafka_source(plan: &JobPlan) -> Option<&KafkaSourceSpec> {
    plan.pipeline.sources.iter().find_map(|s| s.kafka.as_ref())
}

/// Expands repartition operator `o` (spec `r`): adds its topic's source and sink to `plan`
/// and returns its writer and reader, in that order.
pub fn expand_one(plan: &mut JobPlan, o: OperatorPlan, r: RepartitionSpec) -> [OperatorPlan; 2] {
    // the topic interleaves the writers of every upstream task: allow the job's largest
    // out-of-orderness, and release a partition after the job's idle timeout, if any
    let out_of_orderness_ms = plan
        .sources
        .iter()
        .filter(|s| !s.name.ends_with(READ_SUFFIX))
        .map(|s| s.out_of_orderness_ms)
        .max()
        .unwrap_or(0);
    let idle_timeout_ms = plan.sources.iter().filter_map(|s| s.idle_timeout_ms).min();
    let name = o.spec.name.clone();
    let brokers = r
        .brokers
        .clone()
        .or_else(|| default_brokers(plan))
        .unwrap_or_default();
    // borrowed brokers come with the security they are reached with
    let security = match (&r.brokers, &r.security) {
        (_, Some(s)) => Some(s.clone()),
        (None, None) => first_kafka_source(plan).and_then(|k| k.security.clone()),
        (Some(_), None) => None,
    };
    let topic = topic_name(&plan.job, &name, &r);
    let write = format!("{name}{WRITE_SUFFIX}");
    let read = format!("{name}{READ_SUFFIX}");
    plan.sources.push(SourcePlan {
        name: read.clone(),
        kind: SourceKind::Kafka(KafkaSourceSpec {
            brokers: brokers.clone(),
            topic: topic.clone(),
            start_from: StartFrom::Earliest,
            properties: r.properties.clone(),
            security: security.clone(),
        }),
        partitions: 0,
        time_field: Some(TS_FIELD.to_string()),
        out_of_orderness_ms,
        idle_timeout_ms,
    });
    plan.pipeline.sinks.push(SinkSpec {
        name: format!("{name}{SINK_SUFFIX}"),
        input: write.clone(),
        kafka: Some(KafkaSinkSpec {
            brokers,
            topic,
            key: Some("e.k".to_string()),
            exactly_once: r.exactly_once,
            // the reader drops replays by sequence number; no read-back needed
            transactions: true,
            properties: r.properties.clone(),
            security,
        }),
        ..Default::default()
    });
    [
        OperatorPlan {
            spec: OperatorSpec {
                name: write,
                input: o.spec.input.clone(),
                inputs: o.spec.inputs.clone(),
                repartition: Some(r.clone()),
                ..Default::default()
            },
            field: o.field.clone(),
            kind: o.kind,
        },
        OperatorPlan {
            spec: OperatorSpec {
                name,
                input: Some(read),
                repartition: Some(r),
                ..Default::default()
            },
            field: o.field,
            kind: o.kind,
        },
    ]
}

/// The repartition spec behind source `source` (`R@read`) of `plan`, if it is one.
pub fn spec_of_source<'a>(plan: &'a JobPlan, source: &str) -> Option<&'a RepartitionSpec> {
    plan.operators
        .iter()
        .find(|o| o.spec.input.as_deref() == Some(source))
        .and_then(|o| o.spec.repartition.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_plan(yaml: &str) -> JobPlan {
        let job: weir_crds::StreamJob = serde_yaml::from_str(yaml).unwrap();
        crate::plan::plan_job(&job).unwrap()
    }

    const JOB: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {name: rj}
spec:
  image: x
  pipeline:
    sources:
      - {name: ev, generator: {kind: adEvents, partitions: 2, count: 10}, eventTime: {field: ts, maxOutOfOrderness: 5s}}
    operators:
      - {name: by-user, input: ev, repartition: {key: "e.userId", brokers: "b:9092", exactlyOnce: false}}
      - {name: clicks, input: by-user, filter: "e.type == 'click'"}
    sinks:
      - {name: out, input: clicks, stdout: {}}
"#;

    #[test]
    fn expansion_routes_the_stream_through_the_topic() {
        let plan = job_plan(JOB);
        let ops: Vec<(&str, Vec<&str>)> = plan
            .operators
            .iter()
            .map(|o| (o.spec.name.as_str(), o.spec.all_inputs()))
            .collect();
        assert_eq!(
            ops,
            vec![
                ("by-user@write", vec!["ev"]),
                ("by-user", vec!["by-user@read"]),
                ("clicks", vec!["by-user"]),
            ]
        );
        let src = plan.sources.iter().find(|s| s.name == "by-user@read");
        let src = src.expect("a source reads the topic");
        match &src.kind {
            SourceKind::Kafka(k) => {
                assert_eq!(
                    (k.brokers.as_str(), k.topic.as_str()),
                    ("b:9092", "rj-by-user-repartition")
                );
            }
            other => panic!("not a Kafka source: {other:?}"),
        }
        assert_eq!(src.time_field.as_deref(), Some(TS_FIELD));
        assert_eq!(src.out_of_orderness_ms, 5_000);
        let sink = plan
            .pipeline
            .sinks
            .iter()
            .find(|s| s.name == "by-user@kafka");
        let k = sink
            .and_then(|s| s.kafka.clone())
            .expect("a sink writes the topic");
        assert_eq!(sink.map(|s| s.input.as_str()), Some("by-user@write"));
        assert_eq!(k.key.as_deref(), Some("e.k"));
        assert!(!k.exactly_once);
    }

    #[test]
    fn a_bad_key_expression_names_the_field() {
        let job: weir_crds::StreamJob =
            serde_yaml::from_str(&JOB.replace("e.userId", "e.userId +")).unwrap();
        let errs = crate::plan::plan_job(&job).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.field == "spec.pipeline.operators[0].repartition.key"),
            "{errs:?}"
        );
    }
}
