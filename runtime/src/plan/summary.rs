//! The plan as the StreamJob status shows it (`status.plan`): tasks, key groups, stages and
//! every keyed exchange with its transport. Pure; the pods report it on `GET /status` and the
//! operator copies it into the status.

use super::JobPlan;
use std::collections::BTreeMap;
use weir_crds::stream_job::{ExchangeStatus, PlanStatus};

/// `plan`'s summary (after `partitioning::plan_exchanges`).
pub fn summary(plan: &JobPlan) -> PlanStatus {
    let mut exchanges: Vec<ExchangeStatus> = plan
        .exchanges
        .iter()
        .map(|x| ExchangeStatus {
            operator: x.operator.clone(),
            input: x.input.clone(),
            key: x.key.clone(),
            transport: "memory".into(),
            topic: None,
        })
        .collect();
    exchanges.extend(plan.kafka_exchanges.iter().map(|x| ExchangeStatus {
        operator: x.operator.clone(),
        input: x.input.clone(),
        key: x.key.clone(),
        transport: "kafka".into(),
        topic: Some(x.topic.clone()),
    }));
    PlanStatus {
        tasks: plan.tasks,
        key_groups: plan.key_groups,
        stages: stages(plan, &exchanges),
        exchanges,
    }
}

/// 1 + the most exchanges on any path from a source to an operator (operators are in
/// topological order; an input named `op.side` is operator `op`'s side output).
fn stages(plan: &JobPlan, exchanges: &[ExchangeStatus]) -> u32 {
    let mut depth: BTreeMap<&str, u32> = BTreeMap::new();
    for o in &plan.operators {
        let d = o
            .spec
            .all_inputs()
            .iter()
            .map(|input| {
                let producer = input.split('.').next().unwrap_or(input);
                let exchanged = exchanges
                    .iter()
                    .any(|x| x.operator == o.spec.name && x.input == *input);
                depth.get(producer).copied().unwrap_or(0) + u32::from(exchanged)
            })
            .max()
            .unwrap_or(0);
        depth.insert(&o.spec.name, d);
    }
    1 + depth.values().copied().max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::partitioning::plan_exchanges;

    use crate::plan::plan_yaml as plan;

    /// Two keyed stages in a row (a window by auction, then a count of its results by window
    /// start) behind a filter: three stages.
    const TWO_KEYED: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {name: sj}
spec:
  image: x
  maxParallelism: 64
  pipeline:
    sources:
      - name: gen
        generator: {kind: nexmark, partitions: 4, count: 10}
        eventTime: {field: dateTime, maxOutOfOrderness: 2s}
    operators:
      - {name: bids, input: gen, filter: "e.type == 'bid'"}
      - {name: per-auction, input: bids, window: {type: tumbling, size: 10s, key: "e.auction", aggregates: [{name: n, op: count}]}}
      - {name: per-end, input: per-auction, window: {type: tumbling, size: 10s, key: "e.windowStart", aggregates: [{name: n, op: count}]}}
    sinks:
      - {name: out, input: per-end, stdout: {}}
"#;

    #[test]
    fn one_pod_exchanges_in_memory_and_counts_its_stages() {
        let mut p = plan(TWO_KEYED);
        plan_exchanges(&mut p, 1).expect("in memory");
        let s = summary(&p);
        assert_eq!((s.tasks, s.key_groups, s.stages), (4, 64, 3), "{s:?}");
        let found: Vec<(&str, &str, Option<&str>, &str)> = s
            .exchanges
            .iter()
            .map(|x| {
                (
                    x.operator.as_str(),
                    x.input.as_str(),
                    x.key.as_deref(),
                    x.transport.as_str(),
                )
            })
            .collect();
        assert_eq!(
            found,
            vec![
                ("per-auction", "bids", Some("e.auction"), "memory"),
                ("per-end", "per-auction", Some("e.windowStart"), "memory"),
            ]
        );
    }

    #[test]
    fn several_pods_exchange_through_named_topics() {
        let yaml = TWO_KEYED.replace(
            "  pipeline:\n",
            "  pipeline:\n    exchange: {brokers: \"b:9092\"}\n",
        );
        let mut p = plan(&yaml);
        plan_exchanges(&mut p, 2).expect("brokers are set");
        let s = summary(&p);
        assert_eq!(s.stages, 3, "{s:?}");
        assert_eq!(s.exchanges.len(), 2, "{s:?}");
        assert!(s.exchanges.iter().all(|x| x.transport == "kafka"));
        assert_eq!(
            s.exchanges[0].topic.as_deref(),
            Some("sj-per-auction-bids-exchange")
        );
        let mut stateless = plan(&TWO_KEYED.replace("partitions: 4", "partitions: 1"));
        plan_exchanges(&mut stateless, 1).expect("one task");
        let s = summary(&stateless);
        assert_eq!((s.stages, s.exchanges.len()), (1, 0), "{s:?}");
    }
}
