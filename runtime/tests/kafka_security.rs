//! Kafka over TLS and SASL, and compressed topics, against tansu. tansu has no TLS of its own
//! here: Debian's `stunnel4` terminates TLS in front of it and tansu advertises the stunnel
//! port, so every connection a client makes (bootstrap and broker) is TLS. The CA certificate
//! and the SASL password reach the runtime as a Kubernetes pod would get them: through the
//! environment variable of the referenced Secret key (or `WEIR_SECRETS_DIR` for local runs).
//! tansu 0.6 accepts no SASL login at all (see the SCRAM test), so a successful SASL
//! session is not tested here.

// test helpers outside #[test] fns: a failed step should panic with its error
#![allow(clippy::unwrap_used)]

mod common;
mod kafka_common;
use common::*;
use kafka_common::tls::{TestCa, TlsBroker};
use kafka_common::*;
use std::collections::BTreeSet;
use std::process::Child;
use std::time::{Duration, Instant};

fn records(topic: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"id":{i},"topic":"{topic}","ts":{}}}"#,
                1_700_000_000_000i64 + i as i64
            )
        })
        .collect()
}

/// A job copying Kafka topic `input` to `output`, both reached with `security` (YAML flow
/// mapping, or empty) and `sink_props`. The sinks read their topic's partition count again at
/// every barrier after 200 ms (over TLS too).
fn copy_job(
    dir: &std::path::Path,
    brokers: &str,
    pairs: &[(&str, &str, &str)],
    security: &str,
) -> String {
    let mut sources = String::new();
    let mut sinks = String::new();
    for (i, (input, output, sink_props)) in pairs.iter().enumerate() {
        let sec = if security.is_empty() {
            String::new()
        } else {
            format!(", security: {security}")
        };
        sources += &format!(
            "      - {{name: in{i}, kafka: {{brokers: \"{brokers}\", topic: {input}, properties: {{weir.startup.timeout.ms: \"8000\"}}{sec}}}}}\n"
        );
        sinks += &format!(
            "      - {{name: out{i}, input: in{i}, kafka: {{brokers: \"{brokers}\", topic: {output}, transactions: false, properties: {{weir.startup.timeout.ms: \"8000\", weir.partitions.refresh.ms: \"200\"{sink_props}}}{sec}}}}}\n"
        );
    }
    let path = dir.join("job.yaml");
    write(
        &path,
        &format!(
            r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: sec}}
spec:
  image: weir-runtime:dev
  checkpoint: {{interval: 500ms, storage: "file://{ckpt}"}}
  pipeline:
    sources:
{sources}    sinks:
{sinks}"#,
            ckpt = p(&dir.join("ckpt")),
        ),
    );
    p(&path)
}

fn start_job(dir: &std::path::Path, job: &str, envs: &[(&str, &str)]) -> Child {
    let state = dir.join("state");
    spawn(&["run", "-q", "-f", job, "--state-dir", &p(&state)], envs)
}

/// Waits until `topic` holds every record of `want` (or the job ends, or 120 s pass), kills
/// the job and compares the record sets.
fn expect_copied(
    mut job: Child,
    brokers: &str,
    topic: &str,
    want: &[String],
    props: &[(&str, &str)],
) {
    let want_set: BTreeSet<String> = want.iter().cloned().collect();
    let start = Instant::now();
    let mut got = BTreeSet::new();
    while start.elapsed() < Duration::from_secs(120) {
        if let Some(status) = job.try_wait().unwrap() {
            let out = job.wait_with_output().unwrap();
            panic!(
                "the job ended ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let read = read_all_with(
            brokers,
            topic,
            1,
            "read_uncommitted",
            Duration::from_secs(5),
            props,
            |m| total(m) >= want.len(),
        );
        got = read.into_values().flatten().collect();
        if got == want_set {
            break;
        }
    }
    let _ = job.kill();
    let out = job.wait_with_output().unwrap();
    assert_eq!(
        got.len(),
        want_set.len(),
        "records in '{topic}'; job stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(got, want_set, "records in '{topic}'");
}

#[test]
fn reads_and_writes_over_tls_with_the_ca_from_a_secret() {
    let broker = TlsBroker::start(&[]);
    let props_owned = broker.client_props();
    let props: Vec<(&str, &str)> = props_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    create_topic_with(&broker.brokers, "tls-in", 1, &props);
    create_topic_with(&broker.brokers, "tls-out", 1, &props);
    let input = records("tls-in", 300);
    produce_with(&broker.brokers, "tls-in", 1, &input, &props);

    let dir = tmp();
    let job = copy_job(
        dir.path(),
        &broker.brokers,
        &[("tls-in", "tls-out", "")],
        "{tls: {caSecret: {name: kafka-tls, key: ca.crt}}}",
    );
    let ca = broker.ca.ca_pem();
    let child = start_job(dir.path(), &job, &[("WEIR_SECRET_KAFKA_TLS_CA_CRT", &ca)]);
    expect_copied(child, &broker.brokers, "tls-out", &input, &props);
}

#[test]
fn mutual_tls_presents_the_client_certificate_and_key_from_secrets() {
    let broker = TlsBroker::start_with(&[], true);
    let (cert, key) = broker.ca.client_cert("weir");
    let mut props_owned = broker.client_props();
    props_owned.extend([
        ("ssl.certificate.location", cert.display().to_string()),
        ("ssl.key.location", key.display().to_string()),
    ]);
    let props: Vec<(&str, &str)> = props_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    create_topic_with(&broker.brokers, "mtls-in", 1, &props);
    create_topic_with(&broker.brokers, "mtls-out", 1, &props);
    let input = records("mtls-in", 200);
    produce_with(&broker.brokers, "mtls-in", 1, &input, &props);
    let dir = tmp();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(secrets.join("kafka-client")).unwrap();
    std::fs::copy(&cert, secrets.join("kafka-client/tls.crt")).unwrap();
    std::fs::copy(&key, secrets.join("kafka-client/tls.key")).unwrap();
    std::fs::create_dir_all(secrets.join("kafka-tls")).unwrap();
    std::fs::write(secrets.join("kafka-tls/ca.crt"), broker.ca.ca_pem()).unwrap();
    let security = "{tls: {caSecret: {name: kafka-tls, key: ca.crt}, certSecret: {name: kafka-client, key: tls.crt}, keySecret: {name: kafka-client, key: tls.key}}}";
    let job = copy_job(
        dir.path(),
        &broker.brokers,
        &[("mtls-in", "mtls-out", "")],
        security,
    );
    let child = start_job(dir.path(), &job, &[("WEIR_SECRETS_DIR", &p(&secrets))]);
    expect_copied(child, &broker.brokers, "mtls-out", &input, &props);

    // the same job without the client certificate is turned away by the terminator
    let dir2 = tmp();
    let job = copy_job(
        dir2.path(),
        &broker.brokers,
        &[("mtls-in", "mtls-out", "")],
        "{tls: {caSecret: {name: kafka-tls, key: ca.crt}}}",
    );
    let out = wait_with_timeout(
        start_job(dir2.path(), &job, &[("WEIR_SECRETS_DIR", &p(&secrets))]),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected a failure: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    for part in [
        "source 'in0'",
        broker.brokers.as_str(),
        "'mtls-in'",
        "last client error",
    ] {
        assert!(
            last.contains(part),
            "{part:?} missing in the error: {stderr}"
        );
    }
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
}

#[test]
fn a_broker_certificate_from_another_ca_fails_naming_broker_topic_and_cause() {
    let broker = TlsBroker::start(&[]);
    let props_owned = broker.client_props();
    let props: Vec<(&str, &str)> = props_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    create_topic_with(&broker.brokers, "tls-in", 1, &props);
    let dir = tmp();
    let other = TestCa::new(dir.path(), "other");
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(secrets.join("kafka-tls")).unwrap();
    std::fs::write(secrets.join("kafka-tls/ca.crt"), other.ca_pem()).unwrap();
    let job = copy_job(
        dir.path(),
        &broker.brokers,
        &[("tls-in", "tls-out", "")],
        "{tls: {caSecret: {name: kafka-tls, key: ca.crt}}}",
    );
    let started = Instant::now();
    let out = wait_with_timeout(
        start_job(dir.path(), &job, &[("WEIR_SECRETS_DIR", &p(&secrets))]),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected a failure: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let last = stderr.lines().last().unwrap_or_default();
    for part in [
        "source 'in0'",
        broker.brokers.as_str(),
        "'tls-in'",
        "certificate verify failed",
    ] {
        assert!(
            last.contains(part),
            "{part:?} missing in the error: {stderr}"
        );
    }
    // the CA's text never shows up in what the runtime prints
    assert!(!stderr.contains("BEGIN CERTIFICATE"), "{stderr}");
}

#[test]
fn a_restart_with_a_wrong_ca_fails_and_loses_nothing_already_committed() {
    let broker = TlsBroker::start(&[]);
    let mut props_owned = broker.client_props();
    // one record per batch: tansu cannot fetch from inside a batch (see runtime/README.md)
    props_owned.push(("batch.num.messages", "1".to_string()));
    let props: Vec<(&str, &str)> = props_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    create_topic_with(&broker.brokers, "orders", 2, &props);
    let half = 3000;
    let all: Vec<String> = records("orders", 2 * half);
    produce_with(&broker.brokers, "orders", 2, &all[..half], &props);

    let dir = tmp();
    let secrets = dir.path().join("secrets");
    let ca_path = secrets.join("kafka-tls/ca.crt");
    std::fs::create_dir_all(ca_path.parent().unwrap()).unwrap();
    std::fs::write(&ca_path, broker.ca.ca_pem()).unwrap();
    // the runs below inherit it (each test runs in its own process)
    std::env::set_var("WEIR_SECRETS_DIR", p(&secrets));
    let ckpt = dir.path().join("ckpt");
    let out = dir.path().join("out");
    let job = dir.path().join("job.yaml");
    write(
        &job,
        &format!(
            r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: tlsrestart}}
spec:
  image: weir-runtime:dev
  checkpoint: {{interval: 200ms, retain: 10, storage: "file://{ckpt}"}}
  pipeline:
    sources:
      - name: orders
        kafka:
          brokers: "{brokers}"
          topic: orders
          properties: {{weir.startup.timeout.ms: "5000"}}
          security: {{tls: {{caSecret: {{name: kafka-tls, key: ca.crt}}}}}}
    sinks:
      - {{name: out, input: orders, file: {{path: "{out}"}}}}
"#,
            ckpt = p(&ckpt),
            out = p(&out),
            brokers = broker.brokers,
        ),
    );
    let state = dir.path().join("state");
    let args = ["run", "-f", &p(&job), "--state-dir", &p(&state), "-q"];
    let root = job_root(&ckpt, "tlsrestart");
    kill_after_checkpoints(&args, &[], &root, 3);
    let committed = committed_lines(&out).len();
    let checkpoints = completed_checkpoints(&root);
    assert!(committed > 0, "the first run committed nothing");

    // the CA Secret is replaced by a wrong one: the restart fails at start, naming the cause
    let other = TestCa::new(dir.path(), "other");
    std::fs::write(&ca_path, other.ca_pem()).unwrap();
    let failed = wait_with_timeout(spawn(&args, &[]), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&failed.stderr).to_string();
    assert!(!failed.status.success(), "expected a failure: {stderr}");
    assert!(stderr.contains("certificate verify failed"), "{stderr}");
    assert_eq!(committed_lines(&out).len(), committed, "output changed");
    assert_eq!(
        completed_checkpoints(&root),
        checkpoints,
        "checkpoints changed"
    );

    // fixed again, with more input meanwhile: every record exactly once
    std::fs::write(&ca_path, broker.ca.ca_pem()).unwrap();
    produce_with(&broker.brokers, "orders", 2, &all[half..], &props);
    restart_until_committed(&args, &out, &root, 2 * half);
    let got: Vec<String> = committed_lines(&out);
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!(
        (got.len(), distinct.len()),
        (2 * half, 2 * half),
        "each record exactly once"
    );
}

#[test]
fn a_secret_that_is_not_passed_is_named_with_its_variable() {
    let dir = tmp();
    let job = copy_job(
        dir.path(),
        "127.0.0.1:1",
        &[("in", "out", "")],
        "{sasl: {mechanism: SCRAM-SHA-512, username: weir, passwordSecret: {name: kafka-creds, key: password}}}",
    );
    let out = wait_with_timeout(start_job(dir.path(), &job, &[]), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected a failure: {stderr}");
    for part in [
        "security.sasl.passwordSecret",
        "'kafka-creds'",
        "WEIR_SECRET_KAFKA_CREDS_PASSWORD",
    ] {
        assert!(stderr.contains(part), "{part:?} missing in: {stderr}");
    }
}

#[test]
fn inline_secrets_in_properties_are_rejected_by_validate_without_echoing_them() {
    let dir = tmp();
    let path = dir.path().join("job.yaml");
    write(
        &path,
        r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {name: inline}
spec:
  image: weir-runtime:dev
  checkpoint: {interval: 1s, storage: "file:///tmp/x"}
  pipeline:
    sources:
      - {name: in, kafka: {brokers: "b:9093", topic: t, properties: {sasl.password: hunter2}}}
    sinks:
      - {name: out, input: in, stdout: {}}
"#,
    );
    let out = run_cmd(&["validate", "-f", &p(&path)]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("spec.pipeline.sources[0].kafka.properties.sasl.password"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn rejected_scram_credentials_fail_naming_broker_topic_and_cause() {
    // tansu 0.6 can only refuse SASL logins: its memory storage keeps no SCRAM credentials
    // (every SCRAM login ends in "unknown-user", the answer a broker gives to a wrong user or
    // password), and its PLAIN handshake fails. So this is the one SASL path tested on it.
    let broker = TlsBroker::start(&["--authentication"]);
    let dir = tmp();
    let job = copy_job(
        dir.path(),
        &broker.brokers,
        &[("sasl-in", "sasl-out", "")],
        "{tls: {caSecret: {name: kafka-tls, key: ca.crt}}, sasl: {mechanism: SCRAM-SHA-512, username: weir, passwordSecret: {name: kafka-creds, key: password}}}",
    );
    let ca = broker.ca.ca_pem();
    let started = Instant::now();
    let out = wait_with_timeout(
        start_job(
            dir.path(),
            &job,
            &[
                ("WEIR_SECRET_KAFKA_TLS_CA_CRT", &ca),
                ("WEIR_SECRET_KAFKA_CREDS_PASSWORD", "wrong-password"),
            ],
        ),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected a failure: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(60));
    let last = stderr.lines().last().unwrap_or_default();
    for part in ["source 'in0'", broker.brokers.as_str(), "'sasl-in'"] {
        assert!(
            last.contains(part),
            "{part:?} missing in the error: {stderr}"
        );
    }
    assert!(
        last.to_lowercase().contains("authentication"),
        "the cause is missing in the error: {stderr}"
    );
    assert!(!stderr.contains("wrong-password"), "{stderr}");
}

#[test]
fn compressed_topics_are_read_and_written_with_every_codec() {
    let broker = Tansu::start_tansu();
    let codecs = ["gzip", "snappy", "lz4", "zstd"];
    let mut pairs = vec![];
    let mut inputs = vec![];
    for c in codecs {
        let (input, output) = (format!("{c}-in"), format!("{c}-out"));
        broker.create_topic(&input, 1);
        broker.create_topic(&output, 1);
        let recs = records(&input, 500);
        // the input is written compressed with the codec, in batches
        produce_with(
            &broker.brokers,
            &input,
            1,
            &recs,
            &[("compression.type", c), ("linger.ms", "20")],
        );
        inputs.push((output.clone(), recs));
        pairs.push((input, output, format!(", compression.type: {c}")));
    }
    let dir = tmp();
    let pair_refs: Vec<(&str, &str, &str)> = pairs
        .iter()
        .map(|(i, o, s)| (i.as_str(), o.as_str(), s.as_str()))
        .collect();
    let job = copy_job(dir.path(), &broker.brokers, &pair_refs, "");
    let child = start_job(dir.path(), &job, &[]);
    // one job copies all four; check each output, killing the job after the last
    let mut child = Some(child);
    for (i, (output, want)) in inputs.iter().enumerate() {
        if i + 1 < inputs.len() {
            let want_set: BTreeSet<String> = want.iter().cloned().collect();
            let got = read_all(
                &broker.brokers,
                output,
                1,
                "read_uncommitted",
                Duration::from_secs(120),
                |m| total(m) >= want.len(),
            );
            let got: BTreeSet<String> = got.into_values().flatten().collect();
            assert_eq!(got, want_set, "records in '{output}'");
        } else if let Some(c) = child.take() {
            expect_copied(c, &broker.brokers, output, want, &[]);
        }
    }
}
