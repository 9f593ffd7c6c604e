//! A file source builds only the top-level fields its consumers read (filter conditions, map
//! and intervalJoin expressions, the event-time field) when nothing downstream sees whole
//! records; the outputs, dead letters included, are the same as with every field built.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
use common::*;

/// Records with fields nobody reads (strings with and without escapes, a nested object, a
/// float), one whose `n` is a string (the filter fails on it) and one malformed line.
fn input_lines() -> String {
    let mut lines = vec![];
    for i in 0..40i64 {
        let kind = if i % 3 == 0 { "a" } else { "b" };
        // odd lines have what only serde_json parses (an escape, a float)
        let odd = if i % 2 == 1 {
            r#""esc":"q\"","f":0.5,"#
        } else {
            ""
        };
        lines.push(format!(
            r#"{{"kind":"{kind}","n":{i},"url":"http://x/{i}",{odd}"obj":{{"k":[1,true]}},"ts":{}}}"#,
            1_700_000_000_000i64 + i
        ));
    }
    lines.insert(
        7,
        r#"{"kind":"a","n":"seven","url":"u","ts":1700000000007}"#.into(),
    );
    lines.insert(
        9,
        r#"{"kind":"a","n":9,"url":"\x","ts":1700000000009}"#.into(),
    );
    lines.join("\n") + "\n"
}

fn job(input: &std::path::Path, out: &std::path::Path, dead_letters: bool) -> String {
    let dead = if dead_letters {
        format!(
            r#"
      - {{name: dead, input: sel.deadLetter, file: {{path: "{}"}}}}
      - {{name: malformed, input: in.deadLetter, file: {{path: "{}"}}}}"#,
            p(&out.join("dead")),
            p(&out.join("malformed"))
        )
    } else {
        String::new()
    };
    format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: fields}}
spec:
  image: weir-runtime:dev
  checkpoint: {{interval: 10s}}
  pipeline:
    sources:
      - name: in
        file: {{path: "{input}"}}
        eventTime: {{field: ts, maxOutOfOrderness: 1s}}
    operators:
      - {{name: sel, input: in, filter: "e.kind == 'a' && e.n % 2 == 0"}}
      - {{name: proj, input: sel, map: "{{'n': e.n, 'url': e.url}}"}}
      - {{name: lefts, input: in, filter: "e.kind == 'a'"}}
      - {{name: rights, input: in, filter: "e.kind == 'b'"}}
      - name: pairs
        inputs: [lefts, rights]
        intervalJoin:
          left: lefts
          right: rights
          leftKey: e.n / 3
          rightKey: e.n / 3
          before: 1h
          after: 1h
          emit: "{{'l': l.n, 'r': r.n, 'u': r.url}}"
    sinks:
      - {{name: out, input: proj, file: {{path: "{out}"}}}}
      - {{name: joined, input: pairs, file: {{path: "{joined}"}}}}{dead}
"#,
        input = p(input),
        out = p(&out.join("out")),
        joined = p(&out.join("joined")),
    )
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

#[test]
fn outputs_are_the_same_whether_or_not_the_source_builds_every_field() {
    let dir = tmp();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, input_lines()).unwrap();
    let run = |name: &str, dead_letters: bool| {
        let out = dir.path().join(name);
        let f = dir.path().join(format!("{name}.yaml"));
        write(&f, &job(&input, &out, dead_letters));
        run_file_to_end(&f, &dir.path().join(format!("{name}-state")), &[]);
        out
    };
    // with dead letters consumed the filter's input is needed whole, so this run builds every
    // field; without, the source builds only kind, n, url and ts
    let whole = run("whole", true);
    let pruned = run("pruned", false);
    let out = committed_lines(&pruned.join("out"));
    assert_eq!(out.len(), 7, "{out:?}");
    assert_eq!(out[0], r#"{"n":0,"url":"http://x/0"}"#);
    assert_eq!(sorted(out), sorted(committed_lines(&whole.join("out"))));
    let joined = committed_lines(&pruned.join("joined"));
    assert!(!joined.is_empty());
    assert_eq!(
        sorted(joined),
        sorted(committed_lines(&whole.join("joined")))
    );
    // the filter's dead letter carries the whole record, the malformed line its raw text
    let dead = committed_lines(&whole.join("dead"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    let letter: serde_json::Value = serde_json::from_str(&dead[0]).unwrap();
    assert_eq!(
        letter["record"],
        serde_json::json!({"kind":"a","n":"seven","url":"u","ts":1700000000007i64})
    );
    let malformed = committed_lines(&whole.join("malformed"));
    assert_eq!(malformed.len(), 1, "{malformed:?}");
}
