//! Alert rules: loading `alerts/default-rules.yaml`, compiling their CEL conditions, and
//! evaluating them over one job's health with the job's threshold overrides.

use crate::alerting::template::{self, TemplateError};
use cel::{Context, Env, Program, Value};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use weir_crds::stream_job::{AlertingSpec, JobHealth, Phase, Severity};
use weir_crds::Dur;

/// `alerts/default-rules.yaml`, built into the operator (used when no rules file is configured).
pub const DEFAULT_RULES_YAML: &str = include_str!("../../../alerts/default-rules.yaml");

/// The rules file as written (`alerts/default-rules.yaml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFile {
    /// `weir.dev/v1alpha1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `AlertRules`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The rules, evaluated in this order.
    pub rules: Vec<RuleSpec>,
}

/// One rule as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    /// Rule name; jobs override it under `spec.alerting.rules.<name>`.
    pub name: String,
    /// CEL condition over `health`, `job` and `threshold`; must yield a bool.
    pub condition: String,
    /// CEL expression for the number shown as `{{ value }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Threshold per severity; the highest severity whose condition holds wins.
    #[serde(default, skip_serializing_if = "Thresholds::is_empty")]
    pub thresholds: Thresholds,
    /// Severity of a rule without thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// How long the condition must hold before the alert fires.
    #[serde(default, rename = "for")]
    pub for_: Dur,
    /// Notify even while the job is upgrading or suspended (e.g. restart loops).
    #[serde(default)]
    pub never_suppressed: bool,
    /// While this rule fires for a job, notifications of these rules for the same job are
    /// held (e.g. a failed job's backpressure is noise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inhibits: Vec<String>,
    /// Summary template.
    pub summary: String,
    /// Description template.
    #[serde(default)]
    pub description: String,
}

/// Thresholds per severity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Threshold for severity info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<f64>,
    /// Threshold for severity warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<f64>,
    /// Threshold for severity critical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<f64>,
}

impl Thresholds {
    /// No threshold is set.
    pub fn is_empty(&self) -> bool {
        self.info.is_none() && self.warning.is_none() && self.critical.is_none()
    }
    /// Set thresholds, highest severity first.
    pub fn levels(&self) -> Vec<(Severity, f64)> {
        [
            (Severity::Critical, self.critical),
            (Severity::Warning, self.warning),
            (Severity::Info, self.info),
        ]
        .into_iter()
        .filter_map(|(s, t)| t.map(|t| (s, t)))
        .collect()
    }
}

/// Why a rules file cannot be used; names the rule and field.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The rules file cannot be read.
    #[error("cannot read alert rules from {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML does not have the expected shape.
    #[error("cannot parse alert rules: {0}")]
    Parse(#[from] serde_yaml::Error),
    /// Two rules share a name.
    #[error("alert rule '{name}' is defined twice")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A CEL expression does not parse.
    #[error("alert rule '{rule}': {field} does not parse: {message}")]
    Compile {
        /// Rule name.
        rule: String,
        /// `condition` or `value`.
        field: &'static str,
        /// Parser message.
        message: String,
    },
    /// A CEL expression fails or has the wrong type on a fully populated sample job.
    #[error("alert rule '{rule}': {field} {message}")]
    Check {
        /// Rule name.
        rule: String,
        /// `condition` or `value`.
        field: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A template is malformed.
    #[error("alert rule '{rule}': {field}: {source}")]
    Template {
        /// Rule name.
        rule: String,
        /// `summary` or `description`.
        field: &'static str,
        /// The template problem.
        source: TemplateError,
    },
    /// Neither thresholds nor a severity, or both.
    #[error("alert rule '{rule}': set either thresholds or severity (exactly one)")]
    SeverityChoice {
        /// Rule name.
        rule: String,
    },
    /// `inhibits` names a rule that does not exist.
    #[error("alert rule '{rule}': inhibits unknown rule '{target}'")]
    UnknownInhibit {
        /// Rule name.
        rule: String,
        /// The unknown name.
        target: String,
    },
    /// The name is empty or not an identifier.
    #[error("alert rule name '{name}' must be a non-empty identifier (letters, digits)")]
    BadName {
        /// The name.
        name: String,
    },
}

/// A rule with compiled expressions.
pub struct CompiledRule {
    /// The rule as written.
    pub spec: RuleSpec,
    condition: Program,
    value: Option<Program>,
    uses_health: bool,
}

impl fmt::Debug for CompiledRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledRule")
            .field("spec", &self.spec)
            .finish()
    }
}

/// A loaded, checked set of rules.
#[derive(Clone)]
pub struct RuleSet {
    rules: Arc<Vec<CompiledRule>>,
    /// The CEL standard environment, built once.
    env: Arc<Env>,
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules)
            .finish()
    }
}

/// The CEL variables of one job, built once per evaluation.
struct Vars {
    health: Value,
    job: Value,
}

/// What the rules see of one job.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobFacts {
    /// Namespace.
    pub namespace: String,
    /// Job name.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `status.phase`.
    pub phase: Option<Phase>,
    /// `spec.checkpoint.interval` in seconds.
    pub checkpoint_interval_seconds: f64,
    /// The latest restore used an older checkpoint than intended.
    pub restore_fell_back: bool,
    /// A transition failed its progress deadline (`status.progress.failure`, phase Failed).
    pub deploy_failed: bool,
    /// `status.message`, for the `{{ message }}` template variable.
    pub message: String,
    /// `status.health`; rules reading `health` are inactive without it.
    pub health: Option<JobHealth>,
    /// Event-time lag has been growing (see [`crate::alerting::lag::LagTrend`]).
    pub lag_growing: bool,
    /// `spec.alerting`.
    pub alerting: AlertingSpec,
}

/// One rule's outcome for one job.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleResult {
    /// Rule name.
    pub rule: String,
    /// The severity whose condition holds, or `None` if the condition does not hold.
    pub severity: Option<Severity>,
    /// The rule's value expression.
    pub value: Option<f64>,
    /// The threshold of the matched (or lowest) severity.
    pub threshold: Option<f64>,
    /// How long the condition must hold (job override applied).
    pub for_: Duration,
    /// Not suppressed during upgrades or suspension.
    pub never_suppressed: bool,
    /// Rules this one inhibits while it fires.
    pub inhibits: Vec<String>,
    /// Rendered summary.
    pub summary: String,
    /// Rendered description.
    pub description: String,
    /// Evaluation error (the condition then counts as not holding).
    pub error: Option<String>,
}

impl RuleSet {
    /// The built-in default rules ([`DEFAULT_RULES_YAML`]).
    pub fn defaults() -> Result<Self, RuleError> {
        Self::from_yaml(DEFAULT_RULES_YAML)
    }

    /// Loads the rules file at `path` (`WEIR_ALERT_RULES`), or the defaults when `None`.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, RuleError> {
        let Some(path) = path else {
            return Self::defaults();
        };
        let text = std::fs::read_to_string(path).map_err(|source| RuleError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Parses and checks a rules file.
    pub fn from_yaml(text: &str) -> Result<Self, RuleError> {
        let file: RuleFile = serde_yaml::from_str(text)?;
        Self::compile(file)
    }

    /// Compiles and checks parsed rules: unique names, CEL that parses and yields a bool
    /// (a number for `value`) on a sample job, templates with known variables.
    pub fn compile(file: RuleFile) -> Result<Self, RuleError> {
        let env = Arc::new(Env::stdlib());
        let mut seen = BTreeSet::new();
        let mut rules = Vec::new();
        for spec in file.rules {
            let rule = spec.name.clone();
            if rule.is_empty() || !rule.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(RuleError::BadName { name: rule });
            }
            if !seen.insert(rule.clone()) {
                return Err(RuleError::DuplicateName { name: rule });
            }
            if spec.thresholds.is_empty() == spec.severity.is_none() {
                return Err(RuleError::SeverityChoice { rule });
            }
            for (field, text) in [
                ("summary", &spec.summary),
                ("description", &spec.description),
            ] {
                template::check(text).map_err(|source| RuleError::Template {
                    rule: rule.clone(),
                    field,
                    source,
                })?;
            }
            let compile = |field: &'static str, src: &str| {
                Program::compile(src).map_err(|e| RuleError::Compile {
                    rule: rule.clone(),
                    field,
                    message: e.to_string(),
                })
            };
            let condition = compile("condition", &spec.condition)?;
            let value = spec
                .value
                .as_deref()
                .map(|v| compile("value", v))
                .transpose()?;
            let uses_health = condition.references().has_variable("health")
                || value
                    .as_ref()
                    .is_some_and(|v| v.references().has_variable("health"));
            let compiled = CompiledRule {
                spec,
                condition,
                value,
                uses_health,
            };
            compiled.check_on_sample(&env)?;
            rules.push(compiled);
        }
        for r in &rules {
            if let Some(target) = r.spec.inhibits.iter().find(|t| !seen.contains(*t)) {
                return Err(RuleError::UnknownInhibit {
                    rule: r.spec.name.clone(),
                    target: target.clone(),
                });
            }
        }
        Ok(RuleSet {
            rules: Arc::new(rules),
            env,
        })
    }

    /// The rules, in file order.
    pub fn rules(&self) -> impl Iterator<Item = &RuleSpec> {
        self.rules.iter().map(|r| &r.spec)
    }

    /// Overrides in `spec.alerting.rules` that name no rule, as field paths.
    pub fn unknown_overrides(&self, alerting: &AlertingSpec) -> Vec<String> {
        alerting
            .rules
            .keys()
            .filter(|k| !self.rules.iter().any(|r| &r.spec.name == *k))
            .map(|k| format!("spec.alerting.rules.{k}"))
            .collect()
    }

    /// Problems with `spec.alerting.rules`, as (field path, message): an override naming no
    /// rule, thresholds on a rule that has none, and a warning threshold beyond the critical
    /// one (in the direction the rule's own thresholds go: higher is worse for every default
    /// rule, but a rule may count down).
    pub fn override_problems(&self, alerting: &AlertingSpec) -> Vec<(String, String)> {
        let mut problems = vec![];
        for (name, o) in &alerting.rules {
            let field = format!("spec.alerting.rules.{name}");
            let Some(rule) = self.rules.iter().find(|r| &r.spec.name == name) else {
                let known: Vec<&str> = self.rules.iter().map(|r| r.spec.name.as_str()).collect();
                problems.push((
                    field,
                    format!(
                        "there is no alert rule '{name}' (rules: {})",
                        known.join(", ")
                    ),
                ));
                continue;
            };
            let t = &rule.spec.thresholds;
            if t.is_empty() && (o.warning.is_some() || o.critical.is_some()) {
                problems.push((
                    field,
                    format!(
                        "rule '{name}' has no thresholds (it fires with severity {}); only 'for' and 'disabled' can be overridden",
                        rule.spec.severity.map_or("info", severity_str)
                    ),
                ));
                continue;
            }
            let (Some(warning), Some(critical)) =
                (o.warning.or(t.warning), o.critical.or(t.critical))
            else {
                continue;
            };
            let counts_down = matches!((t.warning, t.critical), (Some(w), Some(c)) if w > c);
            let beyond = if counts_down {
                warning < critical
            } else {
                warning > critical
            };
            if beyond {
                let which = if o.warning.is_some() {
                    "warning"
                } else {
                    "critical"
                };
                problems.push((
                    format!("{field}.{which}"),
                    format!(
                        "the warning threshold {} is beyond the critical threshold {} (rule '{name}' gets worse as its value {}), so warning could never come before critical",
                        template::format_number(warning),
                        template::format_number(critical),
                        if counts_down { "falls" } else { "rises" },
                    ),
                ));
            }
        }
        problems
    }

    /// Evaluates every enabled rule for one job.
    pub fn evaluate(&self, job: &JobFacts) -> Vec<RuleResult> {
        let vars = Vars {
            health: health_value(job),
            job: job_value(job),
        };
        self.rules
            .iter()
            .filter(|r| {
                !job.alerting
                    .rules
                    .get(&r.spec.name)
                    .is_some_and(|o| o.disabled)
            })
            .map(|r| r.evaluate(job, &self.env, &vars))
            .collect()
    }
}

impl CompiledRule {
    fn levels(&self, job: &JobFacts) -> Vec<(Severity, Option<f64>)> {
        if let Some(sev) = self.spec.severity {
            return vec![(sev, None)];
        }
        let mut t = self.spec.thresholds.clone();
        if let Some(o) = job.alerting.rules.get(&self.spec.name) {
            t.warning = o.warning.or(t.warning);
            t.critical = o.critical.or(t.critical);
        }
        t.levels().into_iter().map(|(s, v)| (s, Some(v))).collect()
    }

    fn evaluate(&self, job: &JobFacts, env: &Arc<Env>, vars: &Vars) -> RuleResult {
        let for_ = job
            .alerting
            .rules
            .get(&self.spec.name)
            .and_then(|o| o.for_)
            .unwrap_or(self.spec.for_)
            .0;
        let levels = self.levels(job);
        let mut result = RuleResult {
            rule: self.spec.name.clone(),
            severity: None,
            value: None,
            threshold: levels.last().and_then(|(_, t)| *t),
            for_,
            never_suppressed: self.spec.never_suppressed,
            inhibits: self.spec.inhibits.clone(),
            summary: String::new(),
            description: String::new(),
            error: None,
        };
        if self.uses_health && job.health.is_none() {
            return result;
        }
        for (severity, threshold) in &levels {
            match run(env, &self.condition, vars, *threshold) {
                Ok(Value::Bool(true)) => {
                    result.severity = Some(*severity);
                    result.threshold = *threshold;
                    break;
                }
                Ok(Value::Bool(false)) => {}
                Ok(other) => {
                    result.error = Some(format!("condition gave {other:?}, not a bool"));
                    break;
                }
                Err(e) => {
                    result.error = Some(format!("condition failed: {e}"));
                    break;
                }
            }
        }
        if let Some(v) = &self.value {
            match run(env, v, vars, result.threshold) {
                Ok(v) => result.value = as_f64(&v),
                Err(e) => result.error = Some(format!("value failed: {e}")),
            }
        }
        let text_vars = BTreeMap::from([
            ("job", job.name.clone()),
            ("namespace", job.namespace.clone()),
            ("rule", self.spec.name.clone()),
            (
                "value",
                result
                    .value
                    .map(template::format_number)
                    .unwrap_or_default(),
            ),
            (
                "threshold",
                result
                    .threshold
                    .map(template::format_number)
                    .unwrap_or_default(),
            ),
            (
                "severity",
                result.severity.map(severity_str).unwrap_or("").to_string(),
            ),
            ("message", job.message.clone()),
        ]);
        result.summary = template::render(&self.spec.summary, &text_vars);
        result.description = template::render(&self.spec.description, &text_vars);
        result
    }

    /// Runs the expressions on a job where every field is set, so typos in variable
    /// names and type errors show up when the rules load, not at 3 a.m.
    fn check_on_sample(&self, env: &Arc<Env>) -> Result<(), RuleError> {
        let sample = JobFacts {
            namespace: "ns".into(),
            name: "job".into(),
            phase: Some(Phase::Running),
            checkpoint_interval_seconds: 30.0,
            health: Some(JobHealth {
                latency_p99_ms: Some(1.0),
                event_time_lag_ms: Some(1.0),
                input_delay_ms: Some(1.0),
                watermark_ms: Some(1),
                last_checkpoint_age_seconds: Some(1.0),
                checkpoint_duration_ms: Some(1.0),
                ..JobHealth::default()
            }),
            ..JobFacts::default()
        };
        let vars = Vars {
            health: health_value(&sample),
            job: job_value(&sample),
        };
        let check = |field, message: String| RuleError::Check {
            rule: self.spec.name.clone(),
            field,
            message,
        };
        match run(env, &self.condition, &vars, Some(1.0)) {
            Ok(Value::Bool(_)) => {}
            Ok(other) => {
                return Err(check(
                    "condition",
                    format!("must be a bool, gave {other:?}"),
                ))
            }
            Err(e) => return Err(check("condition", format!("fails on a sample job: {e}"))),
        }
        if let Some(v) = &self.value {
            match run(env, v, &vars, Some(1.0)) {
                Ok(v) if as_f64(&v).is_some() => {}
                Ok(other) => {
                    return Err(check("value", format!("must be a number, gave {other:?}")))
                }
                Err(e) => return Err(check("value", format!("fails on a sample job: {e}"))),
            }
        }
        Ok(())
    }
}

fn run(
    env: &Arc<Env>,
    program: &Program,
    vars: &Vars,
    threshold: Option<f64>,
) -> Result<Value, cel::ExecutionError> {
    let mut ctx = Context::with_env(env.clone());
    ctx.add_variable_from_value("health", vars.health.clone());
    ctx.add_variable_from_value("job", vars.job.clone());
    ctx.add_variable_from_value("threshold", threshold.map_or(Value::Null, Value::Float));
    program.execute(&ctx)
}

/// The lower-case spelling of a severity.
pub fn severity_str(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) => Some(*f),
        Value::Int(i) => Some(*i as f64),
        Value::UInt(u) => Some(*u as f64),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

fn opt(v: Option<f64>) -> Value {
    v.map_or(Value::Null, Value::Float)
}

fn health_value(job: &JobFacts) -> Value {
    let h = job.health.clone().unwrap_or_default();
    let m: HashMap<&str, Value> = HashMap::from([
        ("backpressure", Value::Float(h.backpressure)),
        ("busy", Value::Float(h.busy)),
        ("latencyP99Ms", opt(h.latency_p99_ms)),
        ("recordsInPerSecond", Value::Float(h.records_in_per_second)),
        (
            "recordsOutPerSecond",
            Value::Float(h.records_out_per_second),
        ),
        ("eventTimeLagMs", opt(h.event_time_lag_ms)),
        ("inputDelayMs", opt(h.input_delay_ms)),
        ("watermarkMs", opt(h.watermark_ms.map(|w| w as f64))),
        (
            "checkpointConsecutiveFailures",
            Value::Float(h.checkpoint_consecutive_failures as f64),
        ),
        (
            "checkpointTotalFailures",
            Value::Float(h.checkpoint_total_failures as f64),
        ),
        (
            "lastCheckpointAgeSeconds",
            opt(h.last_checkpoint_age_seconds),
        ),
        ("checkpointDurationMs", opt(h.checkpoint_duration_ms)),
        ("kafkaLag", opt(h.kafka_lag.map(|l| l as f64))),
        (
            "restartsInWindow",
            Value::Float(h.restarts_in_window as f64),
        ),
        ("tasksReporting", Value::Float(f64::from(h.tasks_reporting))),
        ("lagGrowing", Value::Bool(job.lag_growing)),
    ]);
    Value::from(m)
}

fn job_value(job: &JobFacts) -> Value {
    let labels: HashMap<String, Value> = job
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    let m: HashMap<&str, Value> = HashMap::from([
        ("name", Value::from(job.name.as_str())),
        ("namespace", Value::from(job.namespace.as_str())),
        ("phase", Value::from(job.phase.map_or("", |p| p.as_str()))),
        (
            "checkpointIntervalSeconds",
            Value::Float(job.checkpoint_interval_seconds),
        ),
        ("restoreFellBack", Value::Bool(job.restore_fell_back)),
        ("deployFailed", Value::Bool(job.deploy_failed)),
        ("labels", Value::from(labels)),
    ]);
    Value::from(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_crds::stream_job::RuleOverride;

    const DEFAULT_RULES: &str = DEFAULT_RULES_YAML;
    const CHART_RULES: &str = include_str!("../../../charts/weir/files/default-rules.yaml");

    fn defaults() -> RuleSet {
        match RuleSet::from_yaml(DEFAULT_RULES) {
            Ok(r) => r,
            Err(e) => panic!("default rules do not load: {e}"),
        }
    }

    fn job(health: JobHealth) -> JobFacts {
        JobFacts {
            namespace: "ads".into(),
            name: "ctr".into(),
            phase: Some(Phase::Running),
            checkpoint_interval_seconds: 30.0,
            health: Some(health),
            ..JobFacts::default()
        }
    }

    fn result(rules: &RuleSet, job: &JobFacts, name: &str) -> RuleResult {
        match rules.evaluate(job).into_iter().find(|r| r.rule == name) {
            Some(r) => r,
            None => panic!("rule {name} not evaluated"),
        }
    }

    #[test]
    fn chart_copy_of_default_rules_is_identical() {
        assert!(
            DEFAULT_RULES == CHART_RULES,
            "charts/weir/files/default-rules.yaml differs from alerts/default-rules.yaml; \
             run: cp alerts/default-rules.yaml charts/weir/files/default-rules.yaml"
        );
    }

    #[test]
    fn default_rules_load_with_the_documented_set() {
        let names: Vec<_> = defaults().rules().map(|r| r.name.clone()).collect();
        assert_eq!(
            names,
            [
                "backpressureHigh",
                "checkpointFailures",
                "checkpointStale",
                "latencyP99High",
                "lagGrowing",
                "restartLoop",
                "jobFailed",
                "deployFailed",
                "restoreFellBack"
            ]
        );
    }

    #[test]
    fn backpressure_picks_the_highest_matching_severity_and_renders_summary() {
        let rules = defaults();
        let warn = result(
            &rules,
            &job(JobHealth {
                backpressure: 0.6,
                ..Default::default()
            }),
            "backpressureHigh",
        );
        assert_eq!(warn.severity, Some(Severity::Warning));
        assert_eq!(warn.threshold, Some(0.5));
        assert_eq!(warn.for_, Duration::from_secs(300));
        assert_eq!(
            warn.summary,
            "ctr is backpressured 0.6 of the time (threshold 0.5)"
        );
        let crit = result(
            &rules,
            &job(JobHealth {
                backpressure: 0.85,
                ..Default::default()
            }),
            "backpressureHigh",
        );
        assert_eq!(crit.severity, Some(Severity::Critical));
        let ok = result(
            &rules,
            &job(JobHealth {
                backpressure: 0.1,
                ..Default::default()
            }),
            "backpressureHigh",
        );
        assert_eq!(ok.severity, None);
    }

    #[test]
    fn job_overrides_thresholds_for_and_disabled() {
        let rules = defaults();
        let mut j = job(JobHealth {
            backpressure: 0.6,
            ..Default::default()
        });
        j.alerting.rules.insert(
            "backpressureHigh".into(),
            RuleOverride {
                warning: Some(0.7),
                critical: Some(0.9),
                for_: Some(Dur::secs(60)),
                disabled: false,
            },
        );
        let r = result(&rules, &j, "backpressureHigh");
        assert_eq!(r.severity, None);
        assert_eq!(r.for_, Duration::from_secs(60));
        j.health = Some(JobHealth {
            backpressure: 0.75,
            ..Default::default()
        });
        assert_eq!(
            result(&rules, &j, "backpressureHigh").severity,
            Some(Severity::Warning)
        );
        j.alerting.rules.insert(
            "backpressureHigh".into(),
            RuleOverride {
                disabled: true,
                ..Default::default()
            },
        );
        assert!(rules
            .evaluate(&j)
            .iter()
            .all(|r| r.rule != "backpressureHigh"));
    }

    #[test]
    fn checkpoint_stale_scales_with_the_interval() {
        let rules = defaults();
        let h = JobHealth {
            last_checkpoint_age_seconds: Some(100.0),
            ..Default::default()
        };
        assert_eq!(
            result(&rules, &job(h.clone()), "checkpointStale").severity,
            Some(Severity::Warning)
        );
        let mut slow = job(h);
        slow.checkpoint_interval_seconds = 60.0;
        assert_eq!(result(&rules, &slow, "checkpointStale").severity, None);
        let never = job(JobHealth::default());
        let r = result(&rules, &never, "checkpointStale");
        assert_eq!((r.severity, r.error), (None, None));
    }

    #[test]
    fn lag_rule_needs_growth_and_size() {
        let rules = defaults();
        let mut j = job(JobHealth {
            input_delay_ms: Some(120_000.0),
            ..Default::default()
        });
        assert_eq!(result(&rules, &j, "lagGrowing").severity, None);
        j.lag_growing = true;
        assert_eq!(
            result(&rules, &j, "lagGrowing").severity,
            Some(Severity::Warning)
        );
        // a generator's event-time lag of years, on schedule: no alert
        let mut years = job(JobHealth {
            event_time_lag_ms: Some(96_660_654_180.0),
            input_delay_ms: Some(0.0),
            ..Default::default()
        });
        years.lag_growing = true;
        assert_eq!(result(&rules, &years, "lagGrowing").severity, None);
        // a replay without a delay at all: no alert either
        years.health = Some(JobHealth {
            event_time_lag_ms: Some(96_660_654_180.0),
            ..Default::default()
        });
        assert_eq!(result(&rules, &years, "lagGrowing").severity, None);
    }

    #[test]
    fn phase_and_restore_rules_work_without_health() {
        let rules = defaults();
        let mut j = JobFacts {
            name: "ctr".into(),
            namespace: "ads".into(),
            phase: Some(Phase::Failed),
            ..Default::default()
        };
        let failed = result(&rules, &j, "jobFailed");
        assert_eq!(failed.severity, Some(Severity::Critical));
        assert_eq!(failed.summary, "ctr has failed");
        assert_eq!(result(&rules, &j, "backpressureHigh").severity, None);
        j.restore_fell_back = true;
        assert_eq!(
            result(&rules, &j, "restoreFellBack").severity,
            Some(Severity::Warning)
        );
        assert_eq!(result(&rules, &j, "deployFailed").severity, None);
        j.deploy_failed = true;
        j.message = "pod ctr-0: ErrImageNeverPull".into();
        let deploy = result(&rules, &j, "deployFailed");
        assert_eq!(deploy.severity, Some(Severity::Critical));
        assert!(deploy.never_suppressed);
        assert!(deploy.inhibits.contains(&"jobFailed".to_string()));
        assert!(
            deploy
                .description
                .starts_with("pod ctr-0: ErrImageNeverPull."),
            "{}",
            deploy.description
        );
    }

    #[test]
    fn restart_loop_is_never_suppressed() {
        let r = result(
            &defaults(),
            &job(JobHealth {
                restarts_in_window: 6,
                ..Default::default()
            }),
            "restartLoop",
        );
        assert_eq!(r.severity, Some(Severity::Critical));
        assert!(r.never_suppressed);
    }

    #[test]
    fn bad_rules_are_rejected_naming_rule_and_field() {
        let typo = "rules:\n- {name: x, condition: 'health.backpresure > threshold', thresholds: {warning: 1}, summary: s}";
        let e = RuleSet::from_yaml(typo)
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("alert rule 'x': condition fails on a sample job"),
            "{e}"
        );
        let not_bool =
            "rules:\n- {name: x, condition: 'health.backpressure', severity: info, summary: s}";
        let e = RuleSet::from_yaml(not_bool)
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("condition must be a bool"), "{e}");
        let tmpl =
            "rules:\n- {name: x, condition: 'true', severity: info, summary: '{{ jobname }}'}";
        let e = RuleSet::from_yaml(tmpl)
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("alert rule 'x': summary: unknown template variable 'jobname'"),
            "{e}"
        );
        let both = "rules:\n- {name: x, condition: 'true', summary: s}";
        assert!(matches!(
            RuleSet::from_yaml(both),
            Err(RuleError::SeverityChoice { .. })
        ));
        let dup = "rules:\n- {name: x, condition: 'true', severity: info, summary: s}\n- {name: x, condition: 'true', severity: info, summary: s}";
        assert!(matches!(
            RuleSet::from_yaml(dup),
            Err(RuleError::DuplicateName { .. })
        ));
    }

    #[test]
    fn inhibits_must_name_existing_rules() {
        let bad =
            "rules:\n- {name: x, condition: 'true', severity: info, summary: s, inhibits: [y]}";
        let e = RuleSet::from_yaml(bad)
            .map(|_| ())
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("alert rule 'x': inhibits unknown rule 'y'")
        );
        let failed = defaults()
            .rules()
            .find(|r| r.name == "jobFailed")
            .map(|r| r.inhibits.clone());
        assert!(failed.is_some_and(|i| i.contains(&"backpressureHigh".to_string())));
    }

    #[test]
    fn load_reads_a_file_or_falls_back_to_the_defaults() {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        let path = dir.path().join("rules.yaml");
        let one = "rules:\n- {name: onlyRule, condition: 'true', severity: info, summary: s}\n";
        assert!(std::fs::write(&path, one).is_ok());
        let names = |r: RuleSet| r.rules().map(|r| r.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            RuleSet::load(Some(&path)).map(names).ok(),
            Some(vec!["onlyRule".to_string()])
        );
        assert_eq!(RuleSet::load(None).map(|r| r.rules().count()).ok(), Some(9));
        let missing = dir.path().join("nope.yaml");
        let e = RuleSet::load(Some(&missing))
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("cannot read alert rules from "), "{e}");
    }

    #[test]
    fn a_rule_set_can_be_shared_across_tasks() {
        fn shareable<T: Send + Sync + 'static>(_: &T) {}
        shareable(&defaults());
    }

    #[test]
    fn overrides_naming_no_rule_or_a_warning_beyond_critical_are_problems() {
        let rules = defaults();
        let mut a = AlertingSpec::default();
        a.rules.insert(
            "backpressureHigh".into(),
            RuleOverride {
                warning: Some(0.9),
                ..Default::default()
            },
        );
        a.rules.insert("lagGrowin".into(), RuleOverride::default());
        a.rules.insert(
            "jobFailed".into(),
            RuleOverride {
                critical: Some(1.0),
                ..Default::default()
            },
        );
        a.rules.insert(
            "checkpointFailures".into(),
            RuleOverride {
                warning: Some(3.0),
                critical: Some(4.0),
                ..Default::default()
            },
        );
        let problems = rules.override_problems(&a);
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.alerting.rules.backpressureHigh.warning",
                "spec.alerting.rules.jobFailed",
                "spec.alerting.rules.lagGrowin"
            ],
            "{problems:?}"
        );
        assert!(
            problems[0]
                .1
                .contains("warning threshold 0.9 is beyond the critical threshold 0.8"),
            "{problems:?}"
        );
        assert!(problems[2].1.contains("no alert rule 'lagGrowin'"));

        // a rule counting down: warning above critical is right, below is not
        let down = "rules:\n- {name: inputLow, condition: 'health.recordsInPerSecond < threshold', thresholds: {warning: 100, critical: 10}, summary: s}\n";
        let down = match RuleSet::from_yaml(down) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let mut a = AlertingSpec::default();
        a.rules.insert(
            "inputLow".into(),
            RuleOverride {
                warning: Some(50.0),
                ..Default::default()
            },
        );
        assert_eq!(down.override_problems(&a), vec![]);
        a.rules.insert(
            "inputLow".into(),
            RuleOverride {
                warning: Some(5.0),
                ..Default::default()
            },
        );
        assert_eq!(down.override_problems(&a).len(), 1);
    }

    #[test]
    fn unknown_overrides_are_named_by_field_path() {
        let mut a = AlertingSpec::default();
        a.rules
            .insert("backpresureHigh".into(), RuleOverride::default());
        assert_eq!(
            defaults().unknown_overrides(&a),
            ["spec.alerting.rules.backpresureHigh"]
        );
    }
}
