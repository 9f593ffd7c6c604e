//! Malformed input goes to the source's dead-letter output (`<source>.deadLetter`) with the
//! error, the raw text, the partition and the offset, and is counted; the good records go on.
//! For the file source and for the Kafka source (against a real tansu broker).
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
mod kafka_common;
use common::*;
use kafka_common::*;
use std::time::Duration;

const BAD: [&str; 2] = [r#"{"id": 3, "ts":"#, "not json at all"];

fn lines() -> Vec<String> {
    let mut v: Vec<String> = (0..6)
        .map(|i| format!(r#"{{"id":{i},"ts":{}}}"#, 1_700_000_000_000i64 + i))
        .collect();
    v.insert(2, BAD[0].to_string());
    v.insert(5, BAD[1].to_string());
    v
}

fn job(source: &str, out: &std::path::Path, ckpt: &std::path::Path) -> String {
    format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: dl}}
spec:
  image: weir-runtime:dev
  checkpoint: {{interval: 200ms, storage: "file://{ckpt}"}}
  pipeline:
    sources:
      - name: in
        {source}
        eventTime: {{field: ts, maxOutOfOrderness: 1s}}
    sinks:
      - {{name: good, input: in, file: {{path: "{good}"}}}}
      - {{name: bad, input: in.deadLetter, file: {{path: "{bad}"}}}}
"#,
        ckpt = p(ckpt),
        good = p(&out.join("good")),
        bad = p(&out.join("bad")),
    )
}

fn check(out: &std::path::Path, offsets: &[u64]) {
    assert_eq!(committed_lines(&out.join("good")).len(), 6);
    let mut letters: Vec<serde_json::Value> = committed_lines(&out.join("bad"))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    letters.sort_by_key(|v| v["offset"].as_u64());
    assert_eq!(letters.len(), 2, "{letters:?}");
    for ((letter, raw), offset) in letters.iter().zip(BAD).zip(offsets) {
        assert_eq!(letter["raw"], raw, "{letter}");
        assert_eq!(letter["partition"], 0, "{letter}");
        assert_eq!(letter["offset"].as_u64(), Some(*offset), "{letter}");
        assert!(
            letter["error"]
                .as_str()
                .unwrap()
                .starts_with("malformed JSON"),
            "{letter}"
        );
    }
}

#[test]
fn a_file_source_sends_malformed_lines_to_its_dead_letter_output() {
    let dir = tmp();
    let input = dir.path().join("in.jsonl");
    let text = lines().join("\n") + "\n";
    std::fs::write(&input, &text).unwrap();
    let out = dir.path().join("out");
    let f = dir.path().join("job.yaml");
    write(
        &f,
        &job(
            &format!(r#"file: {{path: "{}"}}"#, p(&input)),
            &out,
            &dir.path().join("ckpt"),
        ),
    );
    run_file_to_end(&f, &dir.path().join("state"), &[]);
    // byte offsets of the two bad lines
    let offsets: Vec<u64> = BAD.iter().map(|b| text.find(b).unwrap() as u64).collect();
    check(&out, &offsets);
}

#[test]
fn a_kafka_source_sends_malformed_records_to_its_dead_letter_output() {
    let broker = Tansu::start();
    broker.create_topic("in", 1);
    produce(&broker.brokers, "in", 1, &lines());
    let dir = tmp();
    let out = dir.path().join("out");
    let f = dir.path().join("job.yaml");
    write(
        &f,
        &job(
            &format!(
                r#"kafka: {{brokers: "{}", topic: in, startFrom: earliest}}"#,
                broker.brokers
            ),
            &out,
            &dir.path().join("ckpt"),
        ),
    );
    let state = dir.path().join("state");
    let mut child = spawn(&["run", "-q", "-f", &p(&f), "--state-dir", &p(&state)], &[]);
    poll(
        "six good records and two dead letters committed",
        Duration::from_secs(60),
        || {
            assert!(child.try_wait().unwrap().is_none(), "the job ended");
            (committed_lines(&out.join("good")).len() == 6
                && committed_lines(&out.join("bad")).len() == 2)
                .then_some(())
        },
    );
    child.kill().unwrap();
    let _ = child.wait();
    check(&out, &[2, 5]);
}
