//! The job graph: named sources, operators and sinks, shared by the operator and the runtime.
//!
//! Every source, operator and sink sets exactly one of its kind fields (e.g. an operator sets
//! one of `filter`, `map`, `window`, ...). Inputs name a source or operator; an operator's
//! side output is named `<operator>.<output>` (for example `clicks.late`, `enrich.expired`,
//! `parse.deadLetter`), and a source's malformed records are `<source>.deadLetter`.

use crate::duration::Dur;
pub use crate::kafka::{KafkaSasl, KafkaSecurity, KafkaTls, SaslMechanism};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The job graph.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pipeline {
    /// Where records come from.
    #[serde(default)]
    pub sources: Vec<SourceSpec>,
    /// Transformations, each reading one or more sources or operators.
    #[serde(default)]
    pub operators: Vec<OperatorSpec>,
    /// Where records go.
    #[serde(default)]
    pub sinks: Vec<SinkSpec>,
    /// How records move to the task that owns their key when the job runs on more than one
    /// pod: through Kafka topics Weir creates, `<job>-<operator>-<input>-exchange`. Unset
    /// brokers borrow the first Kafka source's; a job whose plan needs an exchange across pods
    /// and has no brokers is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<ExchangeSpec>,
}

/// The Kafka transport of keyed exchanges across pods (see `Pipeline::exchange`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeSpec {
    /// Kafka bootstrap servers; unset uses the first Kafka source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    /// Partition count of the exchange topics Weir creates, which is the number of tasks of
    /// every stage behind an exchange; unset means the largest source partition count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
    /// Write the topics in transactions committed on checkpoint completion (needs a broker
    /// with transactions). Either way readers drop replays by writer sequence number. Default
    /// true.
    #[serde(default = "default_true")]
    pub exactly_once: bool,
    /// Extra librdkafka properties for the topics' producers and consumers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// TLS and SASL for `brokers`; unset with unset brokers uses the first Kafka source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Box<KafkaSecurity>>,
}

// ---------------------------------------------------------------- sources

/// A named source; set exactly one of `kafka`, `file`, `generator`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct SourceSpec {
    /// Unique name within the pipeline; operators and sinks refer to it.
    pub name: String,
    /// Read a Kafka topic; partitions are assigned to tasks, offsets live in checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSourceSpec>,
    /// Read JSON-lines files; each file is one partition and offsets are byte positions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSourceSpec>,
    /// Generate deterministic synthetic events (Nexmark, ad events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorSpec>,
    /// Record encoding. Only `json` today.
    #[serde(default)]
    pub format: Format,
    /// How to read event time from records and how far out of order they may be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<EventTimeSpec>,
    /// A CEL key expression (over `e`) by which this source is already partitioned, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitioned_by: Option<String>,
    /// Fields this version of Weir does not know; reported by validation.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// Record encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Format {
    /// One JSON object per record (per line for files).
    #[default]
    Json,
}

/// Where a Kafka consumer starts when no checkpoint holds its offsets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StartFrom {
    /// The oldest retained record.
    #[default]
    Earliest,
    /// Only records produced after the job starts.
    Latest,
}

/// A Kafka topic to read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSourceSpec {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// Topic name.
    pub topic: String,
    /// Start position when no checkpoint holds offsets.
    #[serde(default)]
    pub start_from: StartFrom,
    /// Extra librdkafka consumer properties (no secrets: those go in `security`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// TLS and SASL, with credentials and certificates from Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Box<KafkaSecurity>>,
}

/// JSON-lines files to read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileSourceSpec {
    /// A file, or a directory whose `*.jsonl`/`*.json` files are read (one partition each, in name order).
    pub path: String,
    /// Keep watching for appended lines after reaching the end instead of finishing.
    #[serde(default)]
    pub follow: bool,
}

/// Which synthetic event stream a generator produces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum GeneratorKind {
    /// Nexmark Person/Auction/Bid events in the standard 1:3:46 mix.
    #[default]
    Nexmark,
    /// Ad impressions, clicks and playback heartbeats every 3 s.
    AdEvents,
}

/// A deterministic, seeded, rate-limited event generator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeneratorSpec {
    /// The event model.
    pub kind: GeneratorKind,
    /// Random seed; the same seed gives the same events.
    #[serde(default)]
    pub seed: u64,
    /// Events per second over all partitions; unset means as fast as possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// Total events to produce over all partitions; unset means unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Virtual partitions (the unit of parallelism).
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 4096))]
    pub partitions: u32,
    /// Model-specific knobs (e.g. `clickRate`, `keys`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "free_form_object")]
    pub options: BTreeMap<String, serde_json::Value>,
}

fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

fn default_partitions() -> u32 {
    1
}

/// How event time is read from a record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTimeSpec {
    /// The record field holding event time in epoch milliseconds.
    pub field: String,
    /// Watermark = max event time seen − this.
    #[serde(default)]
    pub max_out_of_orderness: Dur,
    /// A partition with no records for this long stops holding back the watermark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Dur>,
}

// ---------------------------------------------------------------- operators

/// A named operator; set exactly one kind field (`filter`, `map`, `window`, `aggregate`,
/// `dedup`, `splice`, `pattern`, `intervalJoin`, `accumulate`, `lookupJoin`, `repartition`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct OperatorSpec {
    /// Unique name within the pipeline.
    pub name: String,
    /// The one upstream source or operator (use `inputs` for several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Several upstream sources or operators.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// Keep records for which this CEL expression over `e` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Replace each record by this CEL expression over `e` (must yield a map).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<String>,
    /// Windowed aggregation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowSpec>,
    /// Running (non-windowed) aggregation per key that emits an update whenever a key's result changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<KeyedAggregateSpec>,
    /// Drop records whose key was seen within a TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<DedupSpec>,
    /// Merge N keyed streams into one sample per key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splice: Option<SpliceSpec>,
    /// Complex event processing: sequences within a time bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<PatternSpec>,
    /// Join two keyed streams on a time interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_join: Option<IntervalJoinSpec>,
    /// Open a session on one input, accumulate another into it, emit on a condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accumulate: Option<AccumulateSpec>,
    /// Enrich from an external key-value store with a retry queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup_join: Option<LookupJoinSpec>,
    /// Re-key a stream through a Kafka topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repartition: Option<RepartitionSpec>,
    /// Fields this version of Weir does not know (e.g. a misspelt operator type); reported by validation.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// A borrowed view of the one kind an operator sets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OperatorKind<'a> {
    /// See [`OperatorSpec::filter`].
    Filter(&'a str),
    /// See [`OperatorSpec::map`].
    Map(&'a str),
    /// See [`OperatorSpec::window`].
    Window(&'a WindowSpec),
    /// See [`OperatorSpec::aggregate`].
    Aggregate(&'a KeyedAggregateSpec),
    /// See [`OperatorSpec::dedup`].
    Dedup(&'a DedupSpec),
    /// See [`OperatorSpec::splice`].
    Splice(&'a SpliceSpec),
    /// See [`OperatorSpec::pattern`].
    Pattern(&'a PatternSpec),
    /// See [`OperatorSpec::interval_join`].
    IntervalJoin(&'a IntervalJoinSpec),
    /// See [`OperatorSpec::accumulate`].
    Accumulate(&'a AccumulateSpec),
    /// See [`OperatorSpec::lookup_join`].
    LookupJoin(&'a LookupJoinSpec),
    /// See [`OperatorSpec::repartition`].
    Repartition(&'a RepartitionSpec),
}

/// Every source's side output of malformed records (`<source>.deadLetter`): `{error, raw,
/// partition, offset}`, in processing time.
pub const SOURCE_DEAD_LETTER: &str = "deadLetter";

/// The operator kind field names, in the order validation lists them.
pub const OPERATOR_KINDS: &[&str] = &[
    "filter",
    "map",
    "window",
    "aggregate",
    "dedup",
    "splice",
    "pattern",
    "intervalJoin",
    "accumulate",
    "lookupJoin",
    "repartition",
];

impl OperatorSpec {
    /// The kinds this operator sets, by field name, with a view of each.
    pub fn kinds(&self) -> Vec<(&'static str, OperatorKind<'_>)> {
        let mut v = Vec::new();
        if let Some(x) = &self.filter {
            v.push(("filter", OperatorKind::Filter(x)));
        }
        if let Some(x) = &self.map {
            v.push(("map", OperatorKind::Map(x)));
        }
        if let Some(x) = &self.window {
            v.push(("window", OperatorKind::Window(x)));
        }
        if let Some(x) = &self.aggregate {
            v.push(("aggregate", OperatorKind::Aggregate(x)));
        }
        if let Some(x) = &self.dedup {
            v.push(("dedup", OperatorKind::Dedup(x)));
        }
        if let Some(x) = &self.splice {
            v.push(("splice", OperatorKind::Splice(x)));
        }
        if let Some(x) = &self.pattern {
            v.push(("pattern", OperatorKind::Pattern(x)));
        }
        if let Some(x) = &self.interval_join {
            v.push(("intervalJoin", OperatorKind::IntervalJoin(x)));
        }
        if let Some(x) = &self.accumulate {
            v.push(("accumulate", OperatorKind::Accumulate(x)));
        }
        if let Some(x) = &self.lookup_join {
            v.push(("lookupJoin", OperatorKind::LookupJoin(x)));
        }
        if let Some(x) = &self.repartition {
            v.push(("repartition", OperatorKind::Repartition(x)));
        }
        v
    }

    /// The operator's one kind, if exactly one is set (validation reports the other cases).
    pub fn kind(&self) -> Option<OperatorKind<'_>> {
        match self.kinds().as_slice() {
            [(_, k)] => Some(*k),
            _ => None,
        }
    }

    /// Every upstream name, from `input` and `inputs` (and the join sides of `intervalJoin`).
    pub fn all_inputs(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.input.iter().map(String::as_str).collect();
        v.extend(self.inputs.iter().map(String::as_str));
        if let Some(j) = &self.interval_join {
            for side in [&j.left, &j.right] {
                if !v.contains(&side.as_str()) {
                    v.push(side);
                }
            }
        }
        v
    }

    /// The side outputs this operator offers, referenced as `<name>.<output>`.
    pub fn side_outputs(&self) -> &'static [&'static str] {
        match self.kind() {
            Some(OperatorKind::Window(_)) => &["late", "deadLetter"],
            Some(OperatorKind::Pattern(_)) => &["timedOut", "late", "deadLetter"],
            Some(OperatorKind::Accumulate(_)) | Some(OperatorKind::LookupJoin(_)) => {
                &["expired", "deadLetter"]
            }
            Some(OperatorKind::IntervalJoin(_)) => &["late", "deadLetter"],
            _ => &["deadLetter"],
        }
    }
}

/// Window shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WindowType {
    /// Fixed, non-overlapping windows of `size`.
    #[default]
    Tumbling,
    /// Windows of `size` starting every `slide`.
    Sliding,
    /// Per-key windows closed after `gap` without records.
    Session,
}

/// Windowed aggregation. Output records hold `key`, `windowStart`, `windowEnd` and one field per aggregate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowSpec {
    /// Window shape.
    #[serde(rename = "type", default)]
    pub window_type: WindowType,
    /// CEL key expression over `e`; unset means one window per task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Window length (tumbling, sliding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Dur>,
    /// Distance between window starts (sliding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slide: Option<Dur>,
    /// Inactivity gap that closes a session (session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<Dur>,
    /// How long after the watermark passes a window's end late records still update it.
    #[serde(default)]
    pub allowed_lateness: Dur,
    /// The aggregates to compute.
    pub aggregates: Vec<AggregateSpec>,
}

/// An aggregate function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AggregateOp {
    /// Number of records.
    #[default]
    Count,
    /// Sum of `of`.
    Sum,
    /// Minimum of `of`.
    Min,
    /// Maximum of `of`.
    Max,
    /// Mean of `of`.
    Avg,
    /// Number of distinct values of `of`.
    DistinctCount,
    /// `of` of the earliest record (by event time).
    First,
    /// `of` of the latest record (by event time).
    Last,
    /// All values of `of`, in event-time order.
    Collect,
}

/// One aggregate in a window or accumulate operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AggregateSpec {
    /// Output field name.
    pub name: String,
    /// The function.
    pub op: AggregateOp,
    /// CEL expression over `e` to aggregate (not needed for `count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<String>,
}

/// A running aggregation per key over the whole stream (no window), kept in state.
///
/// Every input record updates its key's aggregates; when the result changes the operator
/// emits `{key, <aggregates>, retract: false}` at once (an upsert). A record for which
/// `retractWhen` holds is taken back out of its key's aggregates instead, so the output of
/// another `aggregate` with `emitRetractions: true` can be aggregated again (for example the
/// highest bid per auction, then the average of those per category). When every record of a
/// key has been retracted the key is forgotten and its last result is emitted with
/// `retract: true`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyedAggregateSpec {
    /// CEL key expression over `e`; the output's `key` field.
    pub key: String,
    /// The aggregates, one output field each (not `key` or `retract`). With `retractWhen`
    /// only `count`, `sum`, `avg`, `min`, `max` and `distinctCount` are allowed.
    pub aggregates: Vec<AggregateSpec>,
    /// CEL condition over `e`: true for a record that retracts an earlier one, for example
    /// `e.retract` on the output of an upstream `aggregate`. Unset: every record adds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retract_when: Option<String>,
    /// Before each update of a key that already had a result, emit that previous result with
    /// `retract: true`, so that a downstream `aggregate` (with `retractWhen: e.retract`) can
    /// replace it. Default false: updates only (an upsert stream keyed by `key`).
    #[serde(default)]
    pub emit_retractions: bool,
}

/// Drop records whose key was already seen within `ttl`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DedupSpec {
    /// CEL key expression over `e`.
    pub key: String,
    /// How long (event time) a key is remembered.
    pub ttl: Dur,
}

/// Which clock a timer runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TimeDomain {
    /// Fires when the watermark passes the timer (deterministic on replay).
    #[default]
    EventTime,
    /// Fires on the wall clock.
    ProcessingTime,
}

/// How a splice field merges values from several records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MergeRule {
    /// Keep the first value seen.
    #[default]
    First,
    /// Keep the last value seen.
    Last,
    /// Add numbers.
    Sum,
    /// Count records.
    Count,
    /// Collect all values into a list.
    Collect,
}

/// Union N keyed inputs into one sample per key, emitted when a timer set on first arrival fires.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpliceSpec {
    /// CEL key expression over `e`, the same for all inputs.
    pub key: String,
    /// Delay from the first record of a key until its sample is emitted.
    pub timeout: Dur,
    /// The timer's clock.
    #[serde(default)]
    pub time_domain: TimeDomain,
    /// The fields of the sample.
    pub fields: Vec<SpliceField>,
}

/// One field of a spliced sample.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpliceField {
    /// Output field name.
    pub name: String,
    /// Only records from this input contribute; unset means all inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// CEL expression over `e` giving the value (not needed for `count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// How values merge.
    #[serde(default)]
    pub rule: MergeRule,
}

/// A CEP pattern: a sequence of steps for one key within a time bound.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatternSpec {
    /// CEL key expression over `e`; all steps match within one key.
    pub key: String,
    /// The steps, first is `begin`.
    pub sequence: Vec<PatternStep>,
    /// The whole match must fit in this time from its first event (inclusive bound).
    pub within: Dur,
    /// Input order used to break ties between events with equal timestamps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub same_timestamp_order: Vec<String>,
    /// CEL expression over the step names (`as`) building the output record.
    pub emit: String,
}

/// One step of a pattern.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatternStep {
    /// The name this step's event(s) are bound to in `where` and `emit`.
    #[serde(rename = "as")]
    pub as_: String,
    /// The input this step's events come from.
    pub from: String,
    /// An extra CEL condition over `e` and earlier steps.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_: Option<String>,
    /// Relaxed contiguity (`followedBy`): other events may come in between. False means strict (`next`).
    #[serde(default)]
    pub followed_by: bool,
    /// `oneOrMore`, an exact count like `3`, or a range like `2..4`; unset means exactly once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<String>,
}

/// Join two keyed streams where right.ts is within [left.ts − before, left.ts + after].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntervalJoinSpec {
    /// Left input name.
    pub left: String,
    /// Right input name.
    pub right: String,
    /// CEL key over `e` for the left input.
    pub left_key: String,
    /// CEL key over `e` for the right input.
    pub right_key: String,
    /// How far before the left record a right record may be.
    #[serde(default)]
    pub before: Dur,
    /// How far after the left record a right record may be.
    #[serde(default)]
    pub after: Dur,
    /// CEL expression over `l` and `r` building the output record.
    pub emit: String,
}

/// Open a per-key session on `open`, accumulate `accumulate` records into it, emit once when `emitWhen` holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccumulateSpec {
    /// CEL key expression over `e`, the same for both inputs.
    pub key: String,
    /// The input whose records open a session.
    pub open: String,
    /// The input whose records accumulate into an open session.
    pub accumulate: String,
    /// Aggregates over the accumulated records (available as `agg.<name>`).
    pub aggregates: Vec<AggregateSpec>,
    /// CEL condition over `open` (the opening record) and `agg` that triggers the one emission.
    pub emit_when: String,
    /// CEL expression over `open` and `agg` building the output; unset emits the opening record plus `agg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emit: Option<String>,
    /// A session expires this long (event time) after it opened; expired sessions go to `<name>.expired`.
    pub ttl: Dur,
}

/// Enrich records from an external key-value store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LookupJoinSpec {
    /// CEL expression over `e` giving the lookup key.
    pub key: String,
    /// The store.
    pub store: LookupStoreSpec,
    /// Maximum lookups in flight per task.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: u32,
    /// Retry queue for misses.
    #[serde(default)]
    pub retry: RetrySpec,
    /// CEL expression over `e` and `f` (the looked-up value) building the output.
    pub emit: String,
}

fn default_in_flight() -> u32 {
    64
}

/// An external key-value store: set exactly one of `redis` and `redisUrlSecret`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LookupStoreSpec {
    /// Redis URL: `redis://[[user]:password@]host[:port][/db]`, or `rediss://...` for TLS (a private CA from the file named by `WEIR_REDIS_CA_FILE`); values are JSON strings. A URL with a password is better kept in a Secret (`redisUrlSecret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// The Redis URL (same forms as `redis`) from a key of a Secret in the job's namespace; the operator passes it to the runtime pods as the environment variable `WEIR_LOOKUP_<OPERATOR NAME, upper snake case>_REDIS_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_url_secret: Option<SecretKeyRef>,
    /// Prefix added to every key.
    #[serde(default)]
    pub key_prefix: String,
}

/// A key of a Secret in the job's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Key within the Secret whose value is used.
    pub key: String,
}

/// The environment variable through which the operator passes lookupJoin operator
/// `operator`'s `store.redisUrlSecret` to the runtime: `WEIR_LOOKUP_<NAME>_REDIS_URL`, the
/// name upper-cased with every character other than a letter or digit replaced by `_`.
pub fn lookup_redis_url_env(operator: &str) -> String {
    let name: String = operator
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("WEIR_LOOKUP_{name}_REDIS_URL")
}

/// `url` with the password (or a user-info without `:`, which may be one) replaced by `***`,
/// for messages and logs: `redis://user:***@host:6379/0`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    let shown = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_string(),
    };
    format!("{scheme}://{shown}@{host}")
}

/// A multi-level retry queue with growing gaps and an expiry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetrySpec {
    /// The gap before each retry level, e.g. [10s, 1m, 10m].
    #[serde(default)]
    pub backoff: Vec<Dur>,
    /// A record older than this (since first lookup) goes to `<name>.expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Dur>,
}

/// Re-key through a Kafka topic so that the next stage is co-partitioned.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepartitionSpec {
    /// CEL key expression over `e`.
    pub key: String,
    /// Kafka bootstrap servers; unset uses the first Kafka source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    /// Topic; unset means `<job>-<operator>-repartition`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Partition count of the repartition topic when Weir creates it (it is created at start
    /// if missing); unset means the job's task count (the largest source partition count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
    /// Write the topic in Kafka transactions committed on checkpoint completion, so the next
    /// stage reads only completed checkpoints' records (needs a broker with transactions).
    /// Either way every record carries its writer and sequence number and the reading stage
    /// drops replays, so a restore never doubles a record. Default true.
    #[serde(default = "default_true")]
    pub exactly_once: bool,
    /// Extra librdkafka properties for the topic's producer and consumer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// TLS and SASL; unset with `brokers` unset borrows the first Kafka source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Box<KafkaSecurity>>,
}

// ---------------------------------------------------------------- sinks

/// A named sink; set exactly one of `kafka`, `file`, `stdout`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct SinkSpec {
    /// Unique name within the pipeline.
    pub name: String,
    /// The source or operator (or `<operator>.<sideOutput>`) whose records this sink writes.
    pub input: String,
    /// Write to a Kafka topic, transactionally on checkpoint completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSinkSpec>,
    /// Write JSON-lines files, committed on checkpoint completion (exactly-once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSinkSpec>,
    /// Print records to standard output (at-least-once; for debugging).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<StdoutSinkSpec>,
    /// Most records per second each task writes to this sink. Over the limit the task stops
    /// reading its inputs until the sink has caught up, so the job is backpressured exactly as
    /// by a slow external system (`weir_task_backpressured_ms_total` rises). Unset: no limit.
    /// Use it to protect a downstream system, or to rehearse backpressure alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.001))]
    pub max_records_per_second: Option<f64>,
    /// Fields this version of Weir does not know; reported by validation.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// A Kafka topic to write.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSinkSpec {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// Topic name.
    pub topic: String,
    /// CEL key expression over `e`; keyed records go to murmur2(key) % partitions, keyless ones round-robin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Exactly-once output (default true): see `transactions` for how.
    #[serde(default = "default_true")]
    pub exactly_once: bool,
    /// How `exactlyOnce` is achieved. true (default): Kafka transactions committed when the
    /// checkpoint completes; read_committed consumers see only completed checkpoints' output.
    /// false, for brokers without transactions (tansu): every record carries a `weir-writer`
    /// header, checkpoints keep read-back positions, and after a restore the sink reads back
    /// what it wrote since and does not write it again, so every consumer sees each record
    /// once provided the pipeline replays the same records (every operator does, except
    /// lookupJoin against a changing store); output before the first completed checkpoint is
    /// at-least-once.
    #[serde(default = "default_true")]
    pub transactions: bool,
    /// Extra librdkafka producer properties, e.g. `compression.type` (`zstd`, `lz4`, `snappy`, `gzip`); no secrets: those go in `security`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// TLS and SASL, with credentials and certificates from Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Box<KafkaSecurity>>,
}

fn default_true() -> bool {
    true
}

/// A directory of JSON-lines output files.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileSinkSpec {
    /// Output directory; committed files are `part-<task>-<checkpoint>.jsonl`.
    pub path: String,
}

/// Standard output.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StdoutSinkSpec {}

impl SourceSpec {
    /// The kind fields this source sets.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut v = vec![];
        if self.kafka.is_some() {
            v.push("kafka");
        }
        if self.file.is_some() {
            v.push("file");
        }
        if self.generator.is_some() {
            v.push("generator");
        }
        v
    }
}

impl SinkSpec {
    /// The kind fields this sink sets.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut v = vec![];
        if self.kafka.is_some() {
            v.push("kafka");
        }
        if self.file.is_some() {
            v.push("file");
        }
        if self.stdout.is_some() {
            v.push("stdout");
        }
        v
    }
}

/// How many times a pattern step matches: `min..=max` (`max` unset = unbounded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantifier {
    /// Least number of events.
    pub min: u32,
    /// Most number of events; `None` is unbounded (`oneOrMore`).
    pub max: Option<u32>,
}

impl PatternStep {
    /// Parses `times`: unset = exactly once, `oneOrMore`, `N`, or `N..M` / `N..`.
    pub fn quantifier(&self) -> Result<Quantifier, String> {
        let Some(t) = self.times.as_deref() else {
            return Ok(Quantifier {
                min: 1,
                max: Some(1),
            });
        };
        let bad = || {
            format!("invalid times '{t}': expected oneOrMore, a count like 3, or a range like 2..4")
        };
        if t == "oneOrMore" {
            return Ok(Quantifier { min: 1, max: None });
        }
        let q = match t.split_once("..") {
            None => {
                let n: u32 = t.parse().map_err(|_| bad())?;
                Quantifier {
                    min: n,
                    max: Some(n),
                }
            }
            Some((a, "")) => Quantifier {
                min: a.parse().map_err(|_| bad())?,
                max: None,
            },
            Some((a, b)) => Quantifier {
                min: a.parse().map_err(|_| bad())?,
                max: Some(b.parse().map_err(|_| bad())?),
            },
        };
        if q.min == 0 || q.max.is_some_and(|m| m < q.min) {
            return Err(bad());
        }
        Ok(q)
    }
}
