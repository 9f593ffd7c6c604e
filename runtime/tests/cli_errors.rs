//! Bad manifests fail fast with errors that name the field, from `validate` and from `run`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
use common::*;

const GOOD: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {name: demo}
spec:
  image: weir-runtime:dev
  pipeline:
    sources:
      - {name: gen, generator: {kind: nexmark, count: 100, partitions: 2}}
    operators:
      - {name: bids, input: gen, filter: "e.type == 'bid'"}
      - name: counts
        input: bids
        window: {type: tumbling, size: 1s, aggregates: [{name: n, op: count}]}
    sinks:
      - {name: out, input: counts, stdout: {}}
"#;

fn check(manifest: &str, expect: &[&str]) {
    let dir = tmp();
    let f = dir.path().join("job.yaml");
    write(&f, manifest);
    for args in [
        vec!["validate", "-f", &p(&f)],
        vec![
            "run",
            "-q",
            "-f",
            &p(&f),
            "--state-dir",
            &p(&dir.path().join("s")),
        ],
    ] {
        let out = run_cmd(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} should fail; stderr: {stderr}"
        );
        for e in expect {
            assert!(
                stderr.contains(e),
                "{args:?}: expected '{e}' in stderr:\n{stderr}"
            );
        }
    }
}

#[test]
fn good_manifest_validates_and_prints_the_plan() {
    let dir = tmp();
    let f = dir.path().join("job.yaml");
    write(&f, GOOD);
    let out = run_cmd(&["validate", "-f", &p(&f)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2 task(s)"), "{stdout}");
    assert!(stdout.contains("counts [window] <- bids"), "{stdout}");
}

#[test]
fn malformed_manifest_names_the_line_or_field() {
    check(
        &GOOD.replace("size: 1s", "size: 1 second"),
        &["spec.pipeline.operators[1].window.size", "invalid duration"],
    );
    check(
        "kind: StreamJob\nspec: [unclosed",
        &["not valid YAML", "line"],
    );
}

#[test]
fn unknown_operator_names_the_field() {
    check(
        &GOOD.replace("filter: \"e.type == 'bid'\"", "frobnicate: x"),
        &[
            "spec.pipeline.operators[0].frobnicate",
            "unknown operator type",
        ],
    );
}

#[test]
fn bad_repartition_key_names_the_field() {
    // every operator kind is supported now; a repartition's key is compiled at plan time
    check(
        &GOOD.replace(
            "filter: \"e.type == 'bid'\"",
            "repartition: {key: \"e.id +\", brokers: \"kafka:9092\"}",
        ),
        &["spec.pipeline.operators[0].repartition.key"],
    );
}

#[test]
fn bad_cel_names_the_field() {
    check(
        &GOOD.replace("e.type == 'bid'", "e.type == "),
        &[
            "spec.pipeline.operators[0].filter",
            "invalid CEL expression",
        ],
    );
    // parses, but uses a variable that is not in scope
    check(
        &GOOD.replace("e.type == 'bid'", "x.type == 'bid'"),
        &["spec.pipeline.operators[0].filter", "unknown variable 'x'"],
    );
}

#[test]
fn what_kubernetes_or_cel_would_refuse_later_names_the_field() {
    // parses, but CEL has no `lower`: every record would fail at run time
    check(
        &GOOD.replace("e.type == 'bid'", "lower(e.type) == 'bid'"),
        &[
            "spec.pipeline.operators[0].filter",
            "calls a function that CEL does not have: lower",
        ],
    );
    check(
        &GOOD.replace("{name: demo}", &format!("{{name: {}}}", "d".repeat(53))),
        &["metadata.name", "at most 52"],
    );
    check(
        &GOOD.replace(
            "image: weir-runtime:dev",
            "image: weir-runtime:dev\n  resources: {limits: {memory: 1GB}}",
        ),
        &["spec.resources.limits.memory", "unknown suffix 'GB'"],
    );
}

#[test]
fn worker_with_a_bad_config_leaves_a_one_line_termination_message() {
    let dir = tmp();
    let f = dir.path().join("job.yaml");
    write(&f, &GOOD.replace("e.type == 'bid'", "e.type == "));
    let log = dir.path().join("termination-log");
    std::fs::write(&log, "").unwrap();
    let out = wait_with_timeout(
        spawn(
            &["worker", "--config", &p(&f)],
            &[
                ("WEIR_ORDINAL", "0"),
                ("WEIR_STATE_DIR", &p(&dir.path().join("st"))),
                ("WEIR_ADMIN_PORT", "0"),
                ("WEIR_TERMINATION_LOG", &p(&log)),
            ],
        ),
        std::time::Duration::from_secs(60),
    );
    assert!(!out.status.success());
    let message = std::fs::read_to_string(&log).unwrap();
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.contains("spec.pipeline.operators[0].filter")
            && message.contains("invalid CEL expression"),
        "{message}"
    );
}
