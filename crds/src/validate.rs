//! Pure validation of a StreamJob spec: graph shape, expressions and settings, each error naming its field.

use crate::kafka::{property_problems, KafkaSecurity};
use crate::pipeline::{
    lookup_redis_url_env, redact_url, AggregateOp, AggregateSpec, LookupStoreSpec, OperatorKind,
    OperatorSpec, Pipeline, WindowType, OPERATOR_KINDS,
};
use crate::stream_job::StreamJobSpec;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One problem in a spec, with the path of the field it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// Field path, e.g. `spec.pipeline.operators[2].filter`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Joins errors into one message for a status condition or a CLI.
pub fn describe(errors: &[SpecError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks that a CEL expression parses; returns the parser's message if not.
pub fn check_cel_syntax(expr: &str) -> Result<(), String> {
    if expr.trim().is_empty() {
        return Err("empty expression".to_string());
    }
    let program =
        cel::Program::compile(expr).map_err(|e| format!("invalid CEL expression '{expr}': {e}"))?;
    let unknown = crate::validate_k8s::unknown_cel_functions(&program);
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "CEL expression '{expr}' calls {} that CEL does not have: {} (available: {})",
            if unknown.len() == 1 {
                "a function"
            } else {
                "functions"
            },
            unknown.join(", "),
            crate::validate_k8s::CEL_FUNCTIONS.join(", ")
        ))
    }
}

/// All problems in `job`: its name (as the name of the pods and Service built from it) and
/// its spec ([`validate_spec`]); empty means valid.
pub fn validate_job(job: &crate::StreamJob) -> Vec<SpecError> {
    let mut errors = job
        .metadata
        .name
        .as_deref()
        .map(crate::validate_k8s::job_name)
        .unwrap_or_default();
    errors.extend(validate_spec(&job.spec));
    errors
}

/// All problems in `spec`, in field order; empty means valid.
pub fn validate_spec(spec: &StreamJobSpec) -> Vec<SpecError> {
    let mut v = Validator::default();
    if spec.parallelism < 0 {
        v.err("spec.parallelism", "must be 0 or more");
    }
    if let Some(m) = spec.max_parallelism.filter(|m| !(1..=32768).contains(m)) {
        v.err(
            "spec.maxParallelism",
            format!("must be between 1 and 32768 (the number of key groups), not {m}"),
        );
    }
    if spec.image.trim().is_empty() {
        v.err("spec.image", "must not be empty");
    }
    let c = &spec.checkpoint;
    if c.interval.0.is_zero() {
        v.err("spec.checkpoint.interval", "must be greater than 0");
    }
    if c.timeout.0.is_zero() {
        v.err("spec.checkpoint.timeout", "must be greater than 0");
    }
    if !(c.storage.starts_with("file:///") || c.storage.starts_with("s3://")) {
        v.err(
            "spec.checkpoint.storage",
            format!("'{}' must start with file:/// or s3://", c.storage),
        );
    }
    if c.storage.starts_with("s3://")
        && c.storage
            .trim_start_matches("s3://")
            .split('/')
            .next()
            .unwrap_or("")
            .is_empty()
    {
        v.err(
            "spec.checkpoint.storage",
            "s3:// storage needs a bucket name",
        );
    }
    if c.retain == 0 {
        v.err("spec.checkpoint.retain", "must be at least 1");
    }
    if let Some(label) = spec
        .pod_template
        .labels
        .keys()
        .find(|k| k.starts_with("weir.dev/"))
    {
        v.err(
            format!("spec.podTemplate.labels.{label}"),
            "labels under weir.dev/ are set by Weir and cannot be overridden",
        );
    }
    v.errors
        .extend(crate::validate_k8s::resources(spec.resources.as_ref()));
    v.pipeline(&spec.pipeline);
    v.exchange(spec);
    v.errors
}

#[derive(Default)]
struct Validator {
    errors: Vec<SpecError>,
}

impl Validator {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(SpecError {
            field: field.into(),
            message: message.into(),
        });
    }

    fn cel(&mut self, field: String, expr: &str) {
        if let Err(m) = check_cel_syntax(expr) {
            self.err(field, m);
        }
    }

    fn one_kind(
        &mut self,
        field: &str,
        what: &str,
        kinds: &[&str],
        expected: &[&str],
        unknown: &BTreeMap<String, serde_json::Value>,
    ) {
        for key in unknown.keys() {
            self.err(
                format!("{field}.{key}"),
                format!(
                    "unknown {what} type or field '{key}'; expected one of {}",
                    expected.join(", ")
                ),
            );
        }
        match kinds.len() {
            0 if unknown.is_empty() => self.err(
                field,
                format!("no {what} type set; set one of {}", expected.join(", ")),
            ),
            0 => {}
            1 => {}
            _ => self.err(
                field,
                format!(
                    "sets several {what} types ({}); set exactly one",
                    kinds.join(", ")
                ),
            ),
        }
    }

    /// `pipeline.exchange`, and a job on several pods whose keyed operators need an exchange
    /// across pods but has no Kafka brokers to carry it. Exact for generators; a file source
    /// with several files is caught by the runtime's plan (`weir-runtime validate`), which
    /// knows the file count.
    fn exchange(&mut self, spec: &StreamJobSpec) {
        let p = &spec.pipeline;
        if let Some(x) = &p.exchange {
            if x.brokers.as_deref().is_some_and(|b| b.trim().is_empty()) {
                self.err(
                    "spec.pipeline.exchange.brokers",
                    "must not be empty when set",
                );
            }
            if x.partitions == Some(0) {
                self.err("spec.pipeline.exchange.partitions", "must be at least 1");
            }
        }
        let brokers = p
            .exchange
            .as_ref()
            .and_then(|x| x.brokers.as_ref())
            .is_some()
            || p.sources.iter().any(|s| s.kafka.is_some());
        let spread = p
            .sources
            .iter()
            .find(|s| s.generator.as_ref().is_some_and(|g| g.partitions > 1));
        if spec.parallelism <= 1 || brokers {
            return;
        }
        let Some(spread) = spread else { return };
        let keyed = p.operators.iter().find(|o| {
            matches!(
                o.kind(),
                Some(
                    OperatorKind::Window(_)
                        | OperatorKind::Aggregate(_)
                        | OperatorKind::Dedup(_)
                        | OperatorKind::Splice(_)
                        | OperatorKind::Pattern(_)
                        | OperatorKind::Accumulate(_)
                        | OperatorKind::IntervalJoin(_)
                )
            )
        });
        if let Some(o) = keyed {
            self.err(
                "spec.pipeline.exchange.brokers",
                format!(
                    "operator '{}' is keyed and its input is spread over {} partitions of source '{}': with spec.parallelism {} its records must move between pods, and Weir moves them through Kafka; set spec.pipeline.exchange.brokers (or read a Kafka source), or run on one pod (spec.parallelism: 1)",
                    o.name,
                    spread.generator.as_ref().map_or(0, |g| g.partitions),
                    spread.name,
                    spec.parallelism
                ),
            );
        }
    }

    fn pipeline(&mut self, p: &Pipeline) {
        if p.sources.is_empty() {
            self.err("spec.pipeline.sources", "at least one source is required");
        }
        if p.sinks.is_empty() {
            self.err("spec.pipeline.sinks", "at least one sink is required");
        }
        let mut names: BTreeMap<&str, String> = BTreeMap::new();
        let all = p
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("spec.pipeline.sources[{i}]"), s.name.as_str()))
            .chain(
                p.operators
                    .iter()
                    .enumerate()
                    .map(|(i, o)| (format!("spec.pipeline.operators[{i}]"), o.name.as_str())),
            )
            .chain(
                p.sinks
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (format!("spec.pipeline.sinks[{i}]"), s.name.as_str())),
            );
        for (field, name) in all {
            if !valid_name(name) {
                self.err(format!("{field}.name"), format!("'{name}' is not a valid name: use letters, digits, '-' and '_', starting with a letter"));
            }
            if let Some(first) = names.insert(name, field.clone()) {
                self.err(
                    format!("{field}.name"),
                    format!("'{name}' is already used by {first}"),
                );
            }
        }
        let sources: BTreeSet<&str> = p.sources.iter().map(|s| s.name.as_str()).collect();
        let operators: BTreeMap<&str, &OperatorSpec> =
            p.operators.iter().map(|o| (o.name.as_str(), o)).collect();

        for (i, s) in p.sources.iter().enumerate() {
            let f = format!("spec.pipeline.sources[{i}]");
            self.one_kind(
                &f,
                "source",
                &s.kinds(),
                &["kafka", "file", "generator"],
                &s.unknown,
            );
            if let Some(k) = &s.kafka {
                if k.brokers.trim().is_empty() {
                    self.err(format!("{f}.kafka.brokers"), "must not be empty");
                }
                if k.topic.trim().is_empty() {
                    self.err(format!("{f}.kafka.topic"), "must not be empty");
                }
                self.kafka_security(&format!("{f}.kafka"), &k.properties, k.security.as_deref());
            }
            if let Some(g) = &s.generator {
                if g.partitions == 0 {
                    self.err(format!("{f}.generator.partitions"), "must be at least 1");
                }
            }
            if let Some(e) = &s.partitioned_by {
                self.cel(format!("{f}.partitionedBy"), e);
            }
        }

        // operators whose Redis URL comes from a Secret, by environment variable
        let mut url_envs: BTreeMap<String, &str> = BTreeMap::new();
        for (i, o) in p.operators.iter().enumerate() {
            let f = format!("spec.pipeline.operators[{i}]");
            if let Some(l) = o.lookup_join.as_ref() {
                if l.store.redis_url_secret.is_some() {
                    let env = lookup_redis_url_env(&o.name);
                    if let Some(other) = url_envs.insert(env.clone(), &o.name) {
                        self.err(
                            format!("{f}.name"),
                            format!("'{}' and '{other}' would both read the Redis URL from {env}; rename one", o.name),
                        );
                    }
                }
            }
            self.one_kind(
                &f,
                "operator",
                &o.kinds().iter().map(|(n, _)| *n).collect::<Vec<_>>(),
                OPERATOR_KINDS,
                &o.unknown,
            );
            let inputs = o.all_inputs();
            if inputs.is_empty() {
                self.err(
                    format!("{f}.input"),
                    format!("operator '{}' has no input", o.name),
                );
            }
            for input in &inputs {
                if let Err(m) = resolve_input(input, &sources, &operators) {
                    self.err(format!("{f}.input"), m);
                }
            }
            if let Some(kind) = o.kind() {
                self.operator(&f, o, kind, &inputs);
            }
        }

        for (i, s) in p.sinks.iter().enumerate() {
            let f = format!("spec.pipeline.sinks[{i}]");
            self.one_kind(
                &f,
                "sink",
                &s.kinds(),
                &["kafka", "file", "stdout"],
                &s.unknown,
            );
            if let Err(m) = resolve_input(&s.input, &sources, &operators) {
                self.err(format!("{f}.input"), m);
            }
            if let Some(rate) = s.max_records_per_second {
                if !(rate.is_finite() && rate > 0.0) {
                    self.err(
                        format!("{f}.maxRecordsPerSecond"),
                        format!("must be a positive number of records per second, got {rate}"),
                    );
                }
            }
            if let Some(k) = &s.kafka {
                if k.brokers.trim().is_empty() {
                    self.err(format!("{f}.kafka.brokers"), "must not be empty");
                }
                if let Some(key) = &k.key {
                    self.cel(format!("{f}.kafka.key"), key);
                }
                self.kafka_security(&format!("{f}.kafka"), &k.properties, k.security.as_deref());
            }
        }

        if let Some(cycle) = find_cycle(&operators) {
            self.err(
                "spec.pipeline.operators",
                format!("the graph has a cycle: {}", cycle.join(" -> ")),
            );
        }
        let has_kafka = p.sources.iter().any(|s| s.kafka.is_some());
        for (i, o) in p.operators.iter().enumerate() {
            if let Some(r) = &o.repartition {
                self.kafka_security(
                    &format!("spec.pipeline.operators[{i}].repartition"),
                    &r.properties,
                    r.security.as_deref(),
                );
                if r.brokers.is_none() && !has_kafka {
                    self.err(
                        format!("spec.pipeline.operators[{i}].repartition.brokers"),
                        "repartition goes through a Kafka topic: set brokers (the job has no Kafka source to borrow them from)",
                    );
                }
            }
        }
    }

    fn operator(&mut self, f: &str, o: &OperatorSpec, kind: OperatorKind<'_>, inputs: &[&str]) {
        match kind {
            OperatorKind::Filter(e) => self.cel(format!("{f}.filter"), e),
            OperatorKind::Map(e) => self.cel(format!("{f}.map"), e),
            OperatorKind::Window(w) => {
                let wf = format!("{f}.window");
                if let Some(k) = &w.key {
                    self.cel(format!("{wf}.key"), k);
                }
                match w.window_type {
                    WindowType::Tumbling | WindowType::Sliding => match w.size {
                        None => self.err(
                            format!("{wf}.size"),
                            "required for tumbling and sliding windows",
                        ),
                        Some(s) if s.0.is_zero() => {
                            self.err(format!("{wf}.size"), "must be greater than 0")
                        }
                        Some(_) => {}
                    },
                    WindowType::Session => {
                        if w.gap.is_none_or(|g| g.0.is_zero()) {
                            self.err(
                                format!("{wf}.gap"),
                                "session windows need a gap greater than 0",
                            );
                        }
                    }
                }
                if w.window_type == WindowType::Sliding {
                    match (w.size, w.slide) {
                        (_, None) => {
                            self.err(format!("{wf}.slide"), "required for sliding windows")
                        }
                        (Some(size), Some(slide)) if slide.0.is_zero() || slide > size => self.err(
                            format!("{wf}.slide"),
                            format!("must be greater than 0 and at most size ({size})"),
                        ),
                        _ => {}
                    }
                }
                self.aggregates(&format!("{wf}.aggregates"), &w.aggregates);
            }
            OperatorKind::Aggregate(a) => {
                let af = format!("{f}.aggregate");
                self.cel(format!("{af}.key"), &a.key);
                if let Some(r) = &a.retract_when {
                    self.cel(format!("{af}.retractWhen"), r);
                }
                self.aggregates(&format!("{af}.aggregates"), &a.aggregates);
                for (k, agg) in a.aggregates.iter().enumerate() {
                    if agg.name == "key" || agg.name == "retract" {
                        self.err(
                            format!("{af}.aggregates[{k}].name"),
                            format!(
                                "'{}' is the name of an output field of aggregate; choose another",
                                agg.name
                            ),
                        );
                    }
                    let retractable = !matches!(
                        agg.op,
                        AggregateOp::First | AggregateOp::Last | AggregateOp::Collect
                    );
                    if a.retract_when.is_some() && !retractable {
                        self.err(
                            format!("{af}.aggregates[{k}].op"),
                            format!(
                                "{} cannot take retractions; with retractWhen use count, sum, avg, min, max or distinctCount",
                                format!("{:?}", agg.op).to_lowercase()
                            ),
                        );
                    }
                }
            }
            OperatorKind::Dedup(d) => {
                self.cel(format!("{f}.dedup.key"), &d.key);
                if d.ttl.0.is_zero() {
                    self.err(format!("{f}.dedup.ttl"), "must be greater than 0");
                }
            }
            OperatorKind::Splice(s) => {
                self.cel(format!("{f}.splice.key"), &s.key);
                if s.fields.is_empty() {
                    self.err(
                        format!("{f}.splice.fields"),
                        "at least one field is required",
                    );
                }
                for (j, fld) in s.fields.iter().enumerate() {
                    let ff = format!("{f}.splice.fields[{j}]");
                    if let Some(from) = &fld.from {
                        if !inputs.contains(&from.as_str()) {
                            self.err(
                                format!("{ff}.from"),
                                format!(
                                    "'{from}' is not one of this operator's inputs ({})",
                                    inputs.join(", ")
                                ),
                            );
                        }
                    }
                    match (&fld.value, fld.rule) {
                        (Some(v), _) => self.cel(format!("{ff}.value"), v),
                        (None, crate::pipeline::MergeRule::Count) => {}
                        (None, _) => {
                            self.err(format!("{ff}.value"), "required unless rule is count")
                        }
                    }
                }
            }
            OperatorKind::Pattern(p) => {
                let pf = format!("{f}.pattern");
                self.cel(format!("{pf}.key"), &p.key);
                self.cel(format!("{pf}.emit"), &p.emit);
                if p.sequence.is_empty() {
                    self.err(format!("{pf}.sequence"), "at least one step is required");
                }
                let mut seen = BTreeSet::new();
                for (j, step) in p.sequence.iter().enumerate() {
                    let sf = format!("{pf}.sequence[{j}]");
                    if !seen.insert(step.as_.as_str()) {
                        self.err(
                            format!("{sf}.as"),
                            format!("'{}' is already used by an earlier step", step.as_),
                        );
                    }
                    if !inputs.contains(&step.from.as_str()) {
                        self.err(
                            format!("{sf}.from"),
                            format!(
                                "'{}' is not one of this operator's inputs ({})",
                                step.from,
                                inputs.join(", ")
                            ),
                        );
                    }
                    if let Some(w) = &step.where_ {
                        self.cel(format!("{sf}.where"), w);
                    }
                    if let Err(m) = step.quantifier() {
                        self.err(format!("{sf}.times"), m);
                    }
                }
                for name in &p.same_timestamp_order {
                    if !inputs.contains(&name.as_str()) {
                        self.err(
                            format!("{pf}.sameTimestampOrder"),
                            format!("'{name}' is not one of this operator's inputs"),
                        );
                    }
                }
                if p.within.0.is_zero() {
                    self.err(format!("{pf}.within"), "must be greater than 0");
                }
            }
            OperatorKind::IntervalJoin(j) => {
                let jf = format!("{f}.intervalJoin");
                self.cel(format!("{jf}.leftKey"), &j.left_key);
                self.cel(format!("{jf}.rightKey"), &j.right_key);
                self.cel(format!("{jf}.emit"), &j.emit);
                if j.left == j.right {
                    self.err(
                        format!("{jf}.right"),
                        "left and right must be different inputs",
                    );
                }
            }
            OperatorKind::Accumulate(a) => {
                let af = format!("{f}.accumulate");
                self.cel(format!("{af}.key"), &a.key);
                self.cel(format!("{af}.emitWhen"), &a.emit_when);
                if let Some(e) = &a.emit {
                    self.cel(format!("{af}.emit"), e);
                }
                for (field, input) in [("open", &a.open), ("accumulate", &a.accumulate)] {
                    if !inputs.contains(&input.as_str()) {
                        self.err(
                            format!("{af}.{field}"),
                            format!(
                                "'{input}' is not one of this operator's inputs ({})",
                                inputs.join(", ")
                            ),
                        );
                    }
                }
                self.aggregates(&format!("{af}.aggregates"), &a.aggregates);
                if a.ttl.0.is_zero() {
                    self.err(format!("{af}.ttl"), "must be greater than 0");
                }
            }
            OperatorKind::LookupJoin(l) => {
                let lf = format!("{f}.lookupJoin");
                self.cel(format!("{lf}.key"), &l.key);
                self.cel(format!("{lf}.emit"), &l.emit);
                self.lookup_store(&format!("{lf}.store"), &l.store);
                if l.max_in_flight == 0 {
                    self.err(format!("{lf}.maxInFlight"), "must be at least 1");
                }
                if l.retry.backoff.windows(2).any(|w| w[1] < w[0]) {
                    self.err(
                        format!("{lf}.retry.backoff"),
                        "gaps must not shrink from one level to the next",
                    );
                }
            }
            OperatorKind::Repartition(r) => self.cel(format!("{f}.repartition.key"), &r.key),
        }
        let _ = o;
    }

    /// A Kafka connection's `security` and `properties`: secrets only by reference, each
    /// setting in one place. Messages name fields, never values.
    fn kafka_security(
        &mut self,
        f: &str,
        properties: &BTreeMap<String, String>,
        security: Option<&KafkaSecurity>,
    ) {
        for (field, message) in property_problems(properties, security) {
            self.err(format!("{f}.{field}"), message);
        }
        if let Some(s) = security {
            for (field, message) in s.problems() {
                self.err(format!("{f}.security.{field}"), message);
            }
        }
    }

    /// Exactly one of `redis` and `redisUrlSecret`; messages never show a URL's password.
    fn lookup_store(&mut self, sf: &str, store: &LookupStoreSpec) {
        match (&store.redis, &store.redis_url_secret) {
            (None, None) => self.err(
                sf,
                "set store.redis (redis://host:port) or store.redisUrlSecret ({name, key} of a Secret holding the URL)",
            ),
            (Some(_), Some(_)) => self.err(
                format!("{sf}.redisUrlSecret"),
                "set store.redis or store.redisUrlSecret, not both",
            ),
            (Some(u), None) => {
                if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                    self.err(
                        format!("{sf}.redis"),
                        format!("'{}' must start with redis:// or rediss://", redact_url(u)),
                    );
                }
            }
            (None, Some(secret)) => {
                if secret.name.trim().is_empty() {
                    self.err(format!("{sf}.redisUrlSecret.name"), "must not be empty");
                }
                if secret.key.trim().is_empty() {
                    self.err(format!("{sf}.redisUrlSecret.key"), "must not be empty");
                }
            }
        }
    }

    fn aggregates(&mut self, field: &str, aggs: &[AggregateSpec]) {
        if aggs.is_empty() {
            self.err(field, "at least one aggregate is required");
        }
        let mut names = BTreeSet::new();
        for (k, a) in aggs.iter().enumerate() {
            if !names.insert(a.name.as_str()) {
                self.err(
                    format!("{field}[{k}].name"),
                    format!("'{}' is used twice", a.name),
                );
            }
            match (&a.of, a.op) {
                (Some(e), _) => self.cel(format!("{field}[{k}].of"), e),
                (None, AggregateOp::Count) => {}
                (None, op) => self.err(
                    format!("{field}[{k}].of"),
                    format!("required for {op:?}").to_lowercase(),
                ),
            }
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.len() <= 63
}

/// Resolves an input reference (`name` or `operator.sideOutput`).
fn resolve_input(
    input: &str,
    sources: &BTreeSet<&str>,
    operators: &BTreeMap<&str, &OperatorSpec>,
) -> Result<(), String> {
    if sources.contains(input) || operators.contains_key(input) {
        return Ok(());
    }
    if let Some((op, side)) = input.split_once('.') {
        if sources.contains(op) {
            return if side == crate::pipeline::SOURCE_DEAD_LETTER {
                Ok(())
            } else {
                Err(format!(
                    "'{input}': source '{op}' has no side output '{side}' (it has {})",
                    crate::pipeline::SOURCE_DEAD_LETTER
                ))
            };
        }
        return match operators.get(op) {
            Some(o) if o.side_outputs().contains(&side) => Ok(()),
            Some(o) => Err(format!(
                "'{input}': operator '{op}' has no side output '{side}' (it has {})",
                o.side_outputs().join(", ")
            )),
            None => Err(format!("'{input}' names no operator")),
        };
    }
    Err(format!(
        "'{input}' is not a source or operator in this pipeline"
    ))
}

/// The first cycle among operators, as a list of names, if any.
fn find_cycle(operators: &BTreeMap<&str, &OperatorSpec>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit<'a>(
        name: &'a str,
        ops: &BTreeMap<&'a str, &'a OperatorSpec>,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(name) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let start = stack.iter().position(|n| *n == name).unwrap_or(0);
                let mut cycle: Vec<String> = stack[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(name.to_string());
                return Some(cycle);
            }
            None => {}
        }
        let op = ops.get(name)?;
        marks.insert(name, Mark::Visiting);
        stack.push(name);
        for input in op.all_inputs() {
            let upstream = input.split('.').next().unwrap_or(input);
            if let Some((key, _)) = ops.get_key_value(upstream) {
                if let Some(c) = visit(key, ops, marks, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        marks.insert(name, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for name in operators.keys() {
        let mut stack = vec![];
        if let Some(c) = visit(name, operators, &mut marks, &mut stack) {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_stream_job;

    fn spec(pipeline: &str) -> StreamJobSpec {
        let text = format!(
            "kind: StreamJob\nmetadata: {{name: t}}\nspec:\n  image: img\n  pipeline:\n{pipeline}"
        );
        parse_stream_job("t.yaml", &text).unwrap().spec
    }

    const OK: &str = r#"
    sources: [{name: gen, generator: {kind: adEvents}}]
    operators:
      - {name: imps, input: gen, filter: "e.type == 'impression'"}
      - {name: w, input: imps, window: {type: tumbling, size: 3m, key: "e.adId", aggregates: [{name: n, op: count}]}}
    sinks: [{name: out, input: w, stdout: {}}, {name: late, input: w.late, stdout: {}}]
"#;

    #[test]
    fn a_good_spec_has_no_errors() {
        assert_eq!(validate_spec(&spec(OK)), vec![]);
    }

    #[test]
    fn max_parallelism_out_of_range_is_named() {
        let mut s = spec(OK);
        s.max_parallelism = Some(0);
        let errs = validate_spec(&s);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "spec.maxParallelism");
        assert!(errs[0].message.contains("between 1 and 32768"), "{errs:?}");
        s.max_parallelism = Some(256);
        assert_eq!(validate_spec(&s), vec![]);
    }

    #[test]
    fn unknown_operator_is_named() {
        let s = spec(&OK.replace("filter: \"e.type == 'impression'\"", "frobnicate: x"));
        let errs = validate_spec(&s);
        assert_eq!(errs[0].field, "spec.pipeline.operators[0].frobnicate");
        assert!(
            errs[0].message.contains("unknown operator type"),
            "{errs:?}"
        );
    }

    #[test]
    fn a_sink_rate_limit_must_be_positive() {
        let limited = OK.replace(
            "{name: out, input: w, stdout: {}}",
            "{name: out, input: w, stdout: {}, maxRecordsPerSecond: 2.5}",
        );
        let s = spec(&limited);
        assert_eq!(s.pipeline.sinks[0].max_records_per_second, Some(2.5));
        assert_eq!(validate_spec(&s), vec![]);
        let errs = validate_spec(&spec(&limited.replace("2.5", "0")));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "spec.pipeline.sinks[0].maxRecordsPerSecond");
        assert!(errs[0].message.contains("positive"), "{errs:?}");
    }

    #[test]
    fn missing_input_is_named() {
        let errs = validate_spec(&spec(&OK.replace("input: imps", "input: nope")));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "spec.pipeline.operators[1].input");
        assert!(errs[0].message.contains("'nope'"));
    }

    #[test]
    fn bad_side_output_is_named() {
        let errs = validate_spec(&spec(&OK.replace("w.late", "w.expired")));
        assert_eq!(errs[0].field, "spec.pipeline.sinks[1].input");
        assert!(
            errs[0].message.contains("no side output 'expired'"),
            "{errs:?}"
        );
    }

    #[test]
    fn a_source_has_a_dead_letter_side_output_and_no_other() {
        let ok = OK.replace("input: w.late, stdout", "input: gen.deadLetter, stdout");
        assert_eq!(validate_spec(&spec(&ok)), vec![]);
        let errs = validate_spec(&spec(&OK.replace("input: w.late", "input: gen.late")));
        assert_eq!(errs[0].field, "spec.pipeline.sinks[1].input");
        assert!(
            errs[0]
                .message
                .contains("source 'gen' has no side output 'late' (it has deadLetter)"),
            "{errs:?}"
        );
    }

    #[test]
    fn bad_cel_is_named() {
        let errs = validate_spec(&spec(&OK.replace("e.type == 'impression'", "e.type == ")));
        assert_eq!(errs[0].field, "spec.pipeline.operators[0].filter");
        assert!(
            errs[0].message.contains("invalid CEL expression"),
            "{errs:?}"
        );
    }

    #[test]
    fn cycle_is_reported() {
        let errs = validate_spec(&spec(&OK.replace("input: gen", "inputs: [gen, w]")));
        assert!(errs.iter().any(|e| e.message.contains("cycle")), "{errs:?}");
    }

    #[test]
    fn window_settings_are_checked() {
        let errs = validate_spec(&spec(&OK.replace(
            "type: tumbling, size: 3m",
            "type: sliding, size: 1m, slide: 2m",
        )));
        assert_eq!(errs[0].field, "spec.pipeline.operators[1].window.slide");
        let errs = validate_spec(&spec(&OK.replace("op: count", "op: sum")));
        assert_eq!(
            errs[0].field,
            "spec.pipeline.operators[1].window.aggregates[0].of"
        );
    }

    #[test]
    fn aggregate_settings_are_checked() {
        let good = OK.replace(
            "window: {type: tumbling, size: 3m, key: \"e.adId\", aggregates: [{name: n, op: count}]}",
            "aggregate: {key: \"e.adId\", retractWhen: \"e.retract\", emitRetractions: true, aggregates: [{name: n, op: count}, {name: top, op: max, of: e.price}]}",
        )
        .replace("{name: late, input: w.late, stdout: {}}", "{name: bad, input: w.deadLetter, stdout: {}}");
        let s = spec(&good);
        let agg = s.pipeline.operators[1].aggregate.as_ref().unwrap();
        assert!(agg.emit_retractions);
        assert_eq!(validate_spec(&s), vec![]);
        let errs = validate_spec(&spec(
            &good.replace("op: max, of: e.price", "op: collect, of: e.price"),
        ));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            errs[0].field,
            "spec.pipeline.operators[1].aggregate.aggregates[1].op"
        );
        assert!(
            errs[0].message.contains("collect cannot take retractions"),
            "{errs:?}"
        );
        // without retractWhen every op is fine, but the output field names are reserved
        let errs = validate_spec(&spec(
            &good
                .replace("retractWhen: \"e.retract\", ", "")
                .replace("op: max, of: e.price", "op: collect, of: e.price")
                .replace("name: n,", "name: retract,"),
        ));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            errs[0].field,
            "spec.pipeline.operators[1].aggregate.aggregates[0].name"
        );
        let errs = validate_spec(&spec(&good.replace("e.retract\"", "e.retract ==\"")));
        assert_eq!(
            errs[0].field,
            "spec.pipeline.operators[1].aggregate.retractWhen"
        );
    }

    #[test]
    fn duplicate_names_and_two_kinds() {
        let errs = validate_spec(&spec(
            &OK.replace("name: w,", "name: imps,")
                .replace("input: w", "input: imps"),
        ));
        assert!(
            errs.iter().any(|e| e.message.contains("already used")),
            "{errs:?}"
        );
        let errs = validate_spec(&spec(&OK.replace("filter: ", "map: \"e\", filter: ")));
        assert!(
            errs[0].message.contains("several operator types"),
            "{errs:?}"
        );
    }

    #[test]
    fn repartition_without_kafka_is_rejected() {
        let errs = validate_spec(&spec(&OK.replace(
            "filter: \"e.type == 'impression'\"",
            "repartition: {key: \"e.adId\"}",
        )));
        assert!(errs[0].message.contains("Kafka"), "{errs:?}");
    }

    /// `OK` with operator `imps` replaced by lookupJoin operators `names` over `store`.
    fn lookups(names: &[&str], store: &str) -> StreamJobSpec {
        let ops: Vec<String> = names
            .iter()
            .map(|n| {
                format!(
                    "{{name: {n}, input: gen, lookupJoin: {{key: e.adId, emit: e, store: {store}}}}}"
                )
            })
            .collect();
        spec(
            &OK.replace(
                "{name: imps, input: gen, filter: \"e.type == 'impression'\"}",
                &ops.join("\n      - "),
            )
            .replace("input: imps", &format!("input: {}", names[0])),
        )
    }

    #[test]
    fn a_lookup_store_is_a_redis_url_or_a_secret_but_not_both() {
        assert_eq!(
            validate_spec(&lookups(&["f"], "{redis: \"redis://:pw@r:6379/1\"}")),
            vec![]
        );
        assert_eq!(
            validate_spec(&lookups(&["f"], "{redis: \"rediss://u:pw@r\"}")),
            vec![]
        );
        let secret = "{redisUrlSecret: {name: redis, key: url}}";
        let s = lookups(&["f"], secret);
        let store = &s.pipeline.operators[0].lookup_join.as_ref().unwrap().store;
        assert_eq!(
            store.redis_url_secret.as_ref().map(|r| r.key.as_str()),
            Some("url")
        );
        assert_eq!(validate_spec(&s), vec![]);

        let errs = validate_spec(&lookups(&["f"], "{keyPrefix: x}"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "spec.pipeline.operators[0].lookupJoin.store");
        assert!(errs[0].message.contains("redisUrlSecret"), "{errs:?}");

        let both = "{redis: \"redis://r\", redisUrlSecret: {name: redis, key: url}}";
        let errs = validate_spec(&lookups(&["f"], both));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            errs[0].field,
            "spec.pipeline.operators[0].lookupJoin.store.redisUrlSecret"
        );
        assert!(errs[0].message.contains("not both"), "{errs:?}");

        let errs = validate_spec(&lookups(&["f"], "{redisUrlSecret: {name: \"\", key: url}}"));
        assert_eq!(
            errs[0].field,
            "spec.pipeline.operators[0].lookupJoin.store.redisUrlSecret.name"
        );
    }

    #[test]
    fn a_bad_redis_url_is_reported_without_its_password() {
        let errs = validate_spec(&lookups(&["f"], "{redis: \"http://admin:s3cret@r:6379\"}"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            errs[0].field,
            "spec.pipeline.operators[0].lookupJoin.store.redis"
        );
        assert!(errs[0].message.contains("admin:***@r:6379"), "{errs:?}");
        assert!(!errs[0].message.contains("s3cret"), "{errs:?}");
        assert_eq!(redact_url("redis://r:6379/0"), "redis://r:6379/0");
        assert_eq!(redact_url("rediss://:p@ss@r"), "rediss://:***@r");
        assert_eq!(redact_url("redis://token@r"), "redis://***@r");
    }

    #[test]
    fn secret_redis_urls_need_distinct_environment_variables() {
        assert_eq!(
            lookup_redis_url_env("enrich-ads_2"),
            "WEIR_LOOKUP_ENRICH_ADS_2_REDIS_URL"
        );
        let secret = "{redisUrlSecret: {name: redis, key: url}}";
        let errs = validate_spec(&lookups(&["a-b", "a_b"], secret));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "spec.pipeline.operators[1].name");
        assert!(
            errs[0].message.contains("WEIR_LOOKUP_A_B_REDIS_URL"),
            "{errs:?}"
        );
        assert_eq!(
            validate_spec(&lookups(&["a-b", "a_b"], "{redis: \"redis://r\"}")),
            vec![]
        );
    }
}
