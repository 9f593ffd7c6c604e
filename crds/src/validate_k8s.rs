//! Checks of what Kubernetes itself would refuse later, made before any pod exists: the job's
//! name as the name of the StatefulSet, pods and Service built from it, the resource quantities
//! of its pods, and CEL functions the runtime's CEL environment does not have. Pure; used by
//! [`crate::validate::validate_job`] and so by the operator and `weir-runtime validate` alike.

use crate::validate::SpecError;
use k8s_openapi::api::core::v1::ResourceRequirements;
use std::collections::BTreeMap;

/// The longest job name: the StatefulSet controller labels each pod with
/// `controller-revision-hash: <name>-<hash of up to 10 characters>`, and label values are at
/// most 63 characters.
pub const MAX_JOB_NAME: usize = 52;

/// Problems with `name` as the name of the job's StatefulSet, pods and (headless) Service.
pub fn job_name(name: &str) -> Vec<SpecError> {
    let err = |message: String| SpecError {
        field: "metadata.name".into(),
        message,
    };
    let mut errors = vec![];
    if name.len() > MAX_JOB_NAME {
        errors.push(err(format!(
            "'{name}' is {} characters; at most {MAX_JOB_NAME} fit the pods Kubernetes creates from it (their controller-revision-hash label is the name plus 11 characters, and labels hold 63)",
            name.len()
        )));
    }
    let starts_with_letter = name.starts_with(|c: char| c.is_ascii_lowercase());
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !starts_with_letter || !chars_ok || name.ends_with('-') {
        errors.push(err(format!(
            "'{name}' is also the name of the job's Service, which must be a DNS label: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit"
        )));
    }
    errors
}

/// A Kubernetes resource quantity (`500m`, `1.5Gi`, `2e3`) as a number, or why it is not one.
/// The grammar is Kubernetes' own: a signed decimal number, then one binary suffix (`Ki` …
/// `Ei`), decimal suffix (`n`, `u`, `m`, `k`, `M`, `G`, `T`, `P`, `E`) or exponent (`e3`, `E-2`).
pub fn parse_quantity(text: &str) -> Result<f64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty quantity".into());
    }
    let digits_end = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && (c == '+' || c == '-'))))
        .map_or(s.len(), |(i, _)| i);
    let (number, suffix) = s.split_at(digits_end);
    let unsigned = number.trim_start_matches(['+', '-']);
    if unsigned.is_empty()
        || unsigned == "."
        || unsigned.matches('.').count() > 1
        || !unsigned.chars().any(|c| c.is_ascii_digit())
    {
        return Err(format!("'{text}' does not start with a number"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' does not start with a number"))?;
    let factor = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        _ => {
            let exponent = suffix
                .strip_prefix(['e', 'E'])
                .filter(|e| {
                    let d = e.trim_start_matches(['+', '-']);
                    !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()) && e.len() - d.len() <= 1
                })
                .and_then(|e| e.parse::<i32>().ok())
                .ok_or_else(|| {
                    format!(
                        "'{text}' has an unknown suffix '{suffix}' (use Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E or an exponent such as e3)"
                    )
                })?;
            10f64.powi(exponent)
        }
    };
    Ok(value * factor)
}

/// Problems with `spec.resources`: unparseable or negative quantities, and requests above
/// their limits (the API server would refuse the StatefulSet's pods for each of these).
pub fn resources(resources: Option<&ResourceRequirements>) -> Vec<SpecError> {
    let Some(r) = resources else {
        return vec![];
    };
    let mut errors = vec![];
    let mut parsed = |kind: &str,
                      map: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| {
        let mut values = BTreeMap::new();
        for (name, q) in map.into_iter().flatten() {
            let field = format!("spec.resources.{kind}.{name}");
            match parse_quantity(&q.0) {
                Ok(v) if v < 0.0 => errors.push(SpecError {
                    field,
                    message: format!("'{}' is negative", q.0),
                }),
                Ok(v) => {
                    values.insert(name.clone(), (v, q.0.clone()));
                }
                Err(message) => errors.push(SpecError { field, message }),
            }
        }
        values
    };
    let limits = parsed("limits", r.limits.as_ref());
    let requests = parsed("requests", r.requests.as_ref());
    for (name, (request, text)) in &requests {
        if let Some((limit, limit_text)) = limits.get(name) {
            if request > limit {
                errors.push(SpecError {
                    field: format!("spec.resources.requests.{name}"),
                    message: format!("'{text}' is more than its limit '{limit_text}'"),
                });
            }
        }
    }
    errors
}

/// The functions of the CEL environment the runtime evaluates expressions in (`cel`'s
/// standard library, no extensions), besides operators. A call to anything else would parse,
/// then fail on every record.
pub const CEL_FUNCTIONS: [&str; 38] = [
    "size",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "bool",
    "dyn",
    "type",
    "duration",
    "timestamp",
    "matches",
    "contains",
    "startsWith",
    "endsWith",
    "getDate",
    "getDayOfMonth",
    "getDayOfWeek",
    "getDayOfYear",
    "getFullYear",
    "getHours",
    "getMilliseconds",
    "getMinutes",
    "getMonth",
    "getSeconds",
    "has",
    "all",
    "exists",
    "exists_one",
    "map",
    "filter",
    "hasValue",
    "value",
    "or",
    "orValue",
    // `optional.of(x)`, `optional.ofNonZeroValue(x)`, `optional.none()`: the parser sees a
    // call of `of` on `optional`
    "of",
    "ofNonZeroValue",
    "none",
];

/// The functions `program` calls that the runtime's CEL environment does not have, sorted.
pub fn unknown_cel_functions(program: &cel::Program) -> Vec<String> {
    let references = program.references();
    let mut unknown: Vec<String> = references
        .functions()
        .into_iter()
        .filter(|f| {
            // operators: `_==_`, `!_`, `-_`, `@in`, ...
            f.starts_with(|c: char| c.is_ascii_alphabetic()) && !CEL_FUNCTIONS.contains(f)
        })
        .map(str::to_string)
        .collect();
    unknown.sort();
    unknown.dedup();
    unknown
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::sync::Arc;

    #[test]
    fn names_that_do_not_fit_the_pods_or_the_service_are_refused() {
        assert_eq!(job_name("ad-clicks"), vec![]);
        assert_eq!(job_name(&"a".repeat(52)), vec![]);
        let long = job_name(&"a".repeat(53));
        assert_eq!(long.len(), 1);
        assert_eq!(long[0].field, "metadata.name");
        assert!(long[0].message.contains("53 characters"), "{long:?}");
        assert_eq!(
            job_name("1clicks").len(),
            1,
            "a Service name starts with a letter"
        );
        assert_eq!(job_name("ads.clicks").len(), 1, "no dots in a Service name");
        assert_eq!(job_name("clicks-").len(), 1);
    }

    #[test]
    fn quantities_follow_the_kubernetes_grammar() {
        assert_eq!(parse_quantity("500m"), Ok(0.5));
        assert_eq!(parse_quantity("2"), Ok(2.0));
        assert_eq!(parse_quantity("1Gi"), Ok(1024f64.powi(3)));
        assert_eq!(parse_quantity("1.5k"), Ok(1500.0));
        assert_eq!(parse_quantity("2e3"), Ok(2000.0));
        assert_eq!(parse_quantity(".5"), Ok(0.5));
        assert!(parse_quantity("1GB").is_err_and(|e| e.contains("unknown suffix 'GB'")));
        assert!(parse_quantity("lots").is_err());
        assert!(parse_quantity("1.2.3").is_err());
        assert!(parse_quantity("").is_err());
        assert!(parse_quantity("1e").is_err());
    }

    #[test]
    fn bad_resources_name_their_field() {
        let q = |s: &str| Quantity(s.to_string());
        let r = ResourceRequirements {
            limits: Some(BTreeMap::from([
                ("memory".to_string(), q("1GB")),
                ("cpu".to_string(), q("500m")),
            ])),
            requests: Some(BTreeMap::from([("cpu".to_string(), q("1"))])),
            ..Default::default()
        };
        let errors = resources(Some(&r));
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.resources.limits.memory",
                "spec.resources.requests.cpu"
            ],
            "{errors:?}"
        );
        assert!(errors[1].message.contains("more than its limit '500m'"));
        let fine = ResourceRequirements {
            limits: Some(BTreeMap::from([("memory".to_string(), q("1Gi"))])),
            requests: Some(BTreeMap::from([("memory".to_string(), q("512Mi"))])),
            ..Default::default()
        };
        assert_eq!(resources(Some(&fine)), vec![]);
    }

    fn unknown(expr: &str) -> Vec<String> {
        match cel::Program::compile(expr) {
            Ok(p) => unknown_cel_functions(&p),
            Err(e) => panic!("{expr}: {e}"),
        }
    }

    #[test]
    fn calls_to_functions_cel_does_not_have_are_found() {
        assert_eq!(
            unknown("e.type == 'bid' && size(e.name) > 2 && e.name.startsWith('a')"),
            Vec::<String>::new()
        );
        assert_eq!(unknown("lower(e.name) == 'x'"), ["lower"]);
        assert_eq!(unknown("e.name.lowerAscii() == 'x'"), ["lowerAscii"]);
        assert_eq!(
            unknown("e.items.exists(i, i.price > 2) && [1, 2].map(x, x * 2)[0] == 2"),
            Vec::<String>::new()
        );
    }

    /// Every function the check lets through runs in the runtime's environment, and the ones it
    /// refuses fail there: the list matches the `cel` crate, not a guess.
    #[test]
    fn the_allowed_functions_exist_in_the_runtime_environment_and_others_do_not() {
        let env = Arc::new(cel::Env::stdlib());
        let context = cel::Context::with_env(env.clone());
        let run = |expr: &str| {
            env.compile(expr)
                .map_err(|e| e.to_string())
                .and_then(|p| p.execute(&context).map_err(|e| e.to_string()))
        };
        let samples = [
            "size('ab')",
            "int(1.5)",
            "uint(1)",
            "double(1)",
            "string(1)",
            "bytes('a')",
            "bool('true')",
            "dyn(1)",
            "type(1)",
            "duration('1s')",
            "timestamp('2026-01-01T00:00:00Z')",
            "'ab'.matches('a')",
            "'ab'.contains('a')",
            "'ab'.startsWith('a')",
            "'ab'.endsWith('b')",
            "timestamp('2026-01-01T00:00:00Z').getDate()",
            "timestamp('2026-01-01T00:00:00Z').getDayOfMonth()",
            "timestamp('2026-01-01T00:00:00Z').getDayOfWeek()",
            "timestamp('2026-01-01T00:00:00Z').getDayOfYear()",
            "timestamp('2026-01-01T00:00:00Z').getFullYear()",
            "timestamp('2026-01-01T00:00:00Z').getHours()",
            "timestamp('2026-01-01T00:00:00Z').getMilliseconds()",
            "timestamp('2026-01-01T00:00:00Z').getMinutes()",
            "timestamp('2026-01-01T00:00:00Z').getMonth()",
            "timestamp('2026-01-01T00:00:00Z').getSeconds()",
            "has({'a': 1}.a)",
            "[1].all(x, x > 0)",
            "[1].exists(x, x > 0)",
            "[1].exists_one(x, x > 0)",
            "[1].map(x, x)",
            "[1].filter(x, x > 0)",
            "optional.of(1).hasValue()",
            "optional.of(1).value()",
            "optional.none().or(optional.of(1))",
            "optional.none().orValue(1)",
            "optional.ofNonZeroValue(1)",
        ];
        for sample in samples {
            assert!(run(sample).is_ok(), "{sample}: {:?}", run(sample));
            assert_eq!(unknown(sample), Vec::<String>::new(), "{sample}");
        }
        for refused in ["lower('A')", "'A'.lowerAscii()", "math.greatest(1, 2)"] {
            assert!(
                run(refused).is_err(),
                "{refused} runs: the check is too strict"
            );
            assert!(!unknown(refused).is_empty(), "{refused}");
        }
    }
}
