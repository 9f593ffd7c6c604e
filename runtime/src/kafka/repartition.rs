//! Creating the topics of `repartition` operators at start (see `operator::repartition`),
//! and learning their partition counts.

use super::{client_config, partition_count, Endpoint, ErrorContext, KafkaError};
use crate::operator::repartition::{READ_SUFFIX, WRITE_SUFFIX};
use crate::plan::repartition::spec_of_source;
use crate::plan::{JobPlan, SourceKind};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::time::Duration;
use weir_crds::pipeline::KafkaSourceSpec;

/// Sets the partition count of every repartition source of `plan` (and of its writer's and
/// reader's spec), creating its topic first if it does not exist (with `partitions`, else as
/// many partitions as the job's other sources have tasks). Call after the other Kafka sources
/// are resolved.
pub fn ensure_topics(plan: &mut JobPlan) -> Result<(), KafkaError> {
    let others = plan
        .sources
        .iter()
        .filter(|s| !s.name.ends_with(READ_SUFFIX))
        .map(|s| s.partitions)
        .max()
        .unwrap_or(1)
        .max(1);
    let mut counts = Vec::new();
    for src in plan
        .sources
        .iter()
        .filter(|s| s.name.ends_with(READ_SUFFIX))
    {
        let SourceKind::Kafka(k) = &src.kind else {
            continue;
        };
        let wanted = spec_of_source(plan, &src.name)
            .and_then(|r| r.partitions)
            .unwrap_or(others)
            .max(1);
        counts.push((src.name.clone(), ensure_topic(&src.name, k, wanted)?));
    }
    for (name, n) in counts {
        if let Some(s) = plan.sources.iter_mut().find(|s| s.name == name) {
            s.partitions = n;
        }
        // the writer addresses its watermark announcements to every partition
        let operator = name.trim_end_matches(READ_SUFFIX);
        let writer = format!("{operator}{WRITE_SUFFIX}");
        for o in plan.operators.iter_mut() {
            if o.spec.name == operator || o.spec.name == writer {
                if let Some(r) = o.spec.repartition.as_mut() {
                    r.partitions = Some(n);
                }
            }
        }
    }
    Ok(())
}

/// Creates `spec.topic` with `wanted` partitions unless it exists; returns its partition count.
fn ensure_topic(source: &str, spec: &KafkaSourceSpec, wanted: u32) -> Result<u32, KafkaError> {
    let operator = source.trim_end_matches(READ_SUFFIX);
    let endpoint = Endpoint::new(
        format!("repartition '{operator}'"),
        &spec.brokers,
        &spec.topic,
        &spec.properties,
        spec.security.as_deref(),
    )?;
    let config = client_config(&endpoint, &spec.properties)?;
    let context = ErrorContext::default();
    let last = context.last.clone();
    let consumer: BaseConsumer<ErrorContext> = config
        .create_with_context(context)
        .map_err(|e| endpoint.client_error(e))?;
    let exists = consumer
        .fetch_metadata(Some(&spec.topic), Duration::from_secs(5))
        .ok()
        .and_then(|md| {
            md.topics()
                .iter()
                .find(|t| t.name() == spec.topic)
                .map(|t| t.error().is_none() && !t.partitions().is_empty())
        })
        .unwrap_or(false);
    if !exists {
        let create_error = |e: &dyn std::fmt::Display| KafkaError::CreateTopic {
            owner: endpoint.owner.clone(),
            brokers: spec.brokers.clone(),
            topic: spec.topic.clone(),
            partitions: wanted,
            message: format!("{e} (create it yourself, or allow this client to create topics)"),
        };
        let admin: AdminClient<DefaultClientContext> =
            config.create().map_err(|e| endpoint.client_error(e))?;
        let partitions = i32::try_from(wanted).unwrap_or(i32::MAX);
        let topic = NewTopic::new(&spec.topic, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let created = futures::executor::block_on(admin.create_topics([&topic], &options));
        match created {
            Ok(results) => {
                for r in results {
                    match r {
                        Ok(_) => tracing::info!(
                            "{}: created topic '{}' with {wanted} partition(s)",
                            endpoint.owner,
                            spec.topic
                        ),
                        // another pod created it first
                        Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((_, e)) => return Err(create_error(&e)),
                    }
                }
            }
            Err(e) => return Err(create_error(&e)),
        }
    }
    partition_count(&endpoint, &last, |t| {
        let md = consumer.fetch_metadata(Some(&endpoint.topic), t);
        super::serve_events(&consumer);
        md
    })
}
