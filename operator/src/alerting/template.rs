//! A tiny `{{ name }}` substitution for alert summaries and descriptions (no logic, no escaping).

use std::collections::BTreeMap;

/// The variables a rule template may use.
pub const TEMPLATE_VARIABLES: [&str; 7] = [
    "job",
    "namespace",
    "value",
    "threshold",
    "severity",
    "rule",
    "message",
];

/// Why a template is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// `{{` without a matching `}}`.
    #[error("unclosed '{{{{' at byte {offset}")]
    Unclosed {
        /// Byte offset of the opening braces.
        offset: usize,
    },
    /// A variable that is not one of [`TEMPLATE_VARIABLES`].
    #[error("unknown template variable '{name}' (known: job, namespace, value, threshold, severity, rule, message)")]
    UnknownVariable {
        /// The name used.
        name: String,
    },
}

/// The variable names a template refers to, in order, or why it is malformed.
pub fn variables(template: &str) -> Result<Vec<String>, TemplateError> {
    let mut names = Vec::new();
    let mut rest = template;
    let mut base = 0;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or(TemplateError::Unclosed {
            offset: base + open,
        })?;
        names.push(after[..close].trim().to_string());
        let consumed = open + 2 + close + 2;
        base += consumed;
        rest = &rest[consumed..];
    }
    Ok(names)
}

/// Checks that a template is well formed and only uses [`TEMPLATE_VARIABLES`].
pub fn check(template: &str) -> Result<(), TemplateError> {
    for name in variables(template)? {
        if !TEMPLATE_VARIABLES.contains(&name.as_str()) {
            return Err(TemplateError::UnknownVariable { name });
        }
    }
    Ok(())
}

/// Replaces each `{{ name }}` with its value; unknown names render as empty text,
/// and an unclosed `{{` is kept literally (templates are checked when rules load).
pub fn render(template: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        match after.find("}}") {
            Some(close) => {
                if let Some(value) = vars.get(after[..close].trim()) {
                    out.push_str(value);
                }
                rest = &after[close + 2..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Formats a number for humans: integers without a fraction, others with up to 3 decimals.
pub fn format_number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_variables_with_or_without_spaces() {
        let vars = BTreeMap::from([("job", "ads".to_string()), ("value", "0.9".to_string())]);
        assert_eq!(render("{{ job }} at {{value}}!", &vars), "ads at 0.9!");
    }

    #[test]
    fn unknown_variable_is_rejected_by_check_and_blank_when_rendered() {
        assert_eq!(
            check("x {{ jobb }}"),
            Err(TemplateError::UnknownVariable {
                name: "jobb".into()
            })
        );
        assert_eq!(render("a{{ jobb }}b", &BTreeMap::new()), "ab");
    }

    #[test]
    fn unclosed_braces_are_reported_with_offset_and_kept_literally() {
        assert_eq!(
            check("ok {{ job"),
            Err(TemplateError::Unclosed { offset: 3 })
        );
        assert_eq!(render("ok {{ job", &BTreeMap::new()), "ok {{ job");
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(format_number(3.0), "3");
        assert_eq!(format_number(0.8123456), "0.812");
        assert_eq!(format_number(0.5), "0.5");
    }
}
