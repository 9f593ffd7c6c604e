//! A window feeding another event-time operator: the results a window emits for watermark W
//! must reach the downstream window before W does, so none of them is late there. (Found by
//! Nexmark q5: the task used to advance every operator's watermark before the first one fired,
//! and the second window sent all its input to `<op>.late`.)

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::Path;

const EVENTS: i64 = 20_000;
const KEYS: i64 = 7;

fn write_input(path: &Path) {
    let mut text = String::new();
    for i in 0..EVENTS {
        // 10 ms apart, up to 400 ms out of order
        let ts = 1_700_000_000_000 + i * 10 - (i % 5) * 100;
        text.push_str(&format!("{{\"k\":{},\"ts\":{ts}}}\n", i % KEYS));
    }
    write(path, &text);
}

fn job(input: &Path, out: &Path, ckpt: &Path) -> String {
    format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: chained}}
spec:
  image: weir-runtime:dev
  checkpoint: {{interval: 1s, retain: 2, storage: "file://{ckpt}"}}
  pipeline:
    sources:
      - name: events
        file: {{path: "{input}"}}
        eventTime: {{field: ts, maxOutOfOrderness: 500ms}}
    operators:
      - name: perSecond
        input: events
        window:
          type: tumbling
          key: e.k
          size: 1s
          aggregates:
            - {{name: n, op: count}}
      - name: perFiveSeconds
        input: perSecond
        window:
          type: tumbling
          key: e.key
          size: 5s
          aggregates:
            - {{name: total, op: sum, of: e.n}}
            - {{name: windows, op: count}}
    sinks:
      - {{name: out, input: perFiveSeconds, file: {{path: "{out}/five"}}}}
      - {{name: late, input: perFiveSeconds.late, file: {{path: "{out}/late"}}}}
"#,
        input = input.display(),
        out = out.display(),
        ckpt = ckpt.display()
    )
}

#[test]
fn window_results_are_not_late_for_a_downstream_window() {
    let base = tmp();
    let input = base.path().join("events.jsonl");
    write_input(&input);
    let out = base.path().join("out");
    let f = base.path().join("job.yaml");
    write(&f, &job(&input, &out, &base.path().join("ck")));
    run_file_to_end(&f, &base.path().join("state"), &[]);

    let late = committed_lines(&out.join("late"));
    assert!(
        late.is_empty(),
        "{} window results were late downstream: {:?}",
        late.len(),
        late.first()
    );

    let mut per_key: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for line in committed_lines(&out.join("five")) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let e = per_key.entry(v["key"].as_i64().unwrap()).or_default();
        e.0 += v["total"].as_i64().unwrap();
        e.1 += v["windows"].as_i64().unwrap();
    }
    assert_eq!(per_key.len() as i64, KEYS, "{per_key:?}");
    let total: i64 = per_key.values().map(|(t, _)| t).sum();
    assert_eq!(
        total, EVENTS,
        "every event counted once through both windows"
    );
    // 200 s of event time, 1 s windows: every key has a result in (nearly) every second
    for (k, (_, windows)) in &per_key {
        assert!(
            *windows >= 195,
            "key {k}: only {windows} one-second windows"
        );
    }
}
