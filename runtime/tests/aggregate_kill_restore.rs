//! `kill -9` of a job with two chained `aggregate` operators (the second consuming the
//! first's retractions), twice, then a restart: the committed changelogs equal those of an
//! uninterrupted run, so the running aggregates came back from the checkpoint intact.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
use common::*;
use std::path::Path;

fn job(out: &Path, ckpt: &Path) -> String {
    format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: agg}}
spec:
  image: weir-runtime:dev
  checkpoint: {{interval: 300ms, retain: 2, storage: "file://{ckpt}"}}
  pipeline:
    sources:
      - name: gen
        generator: {{kind: nexmark, count: 30000, rate: 6000, partitions: 2, seed: 11}}
    operators:
      - {{name: bids, input: gen, filter: "e.type == 'bid'"}}
      - name: perBidder
        input: bids
        aggregate:
          key: e.bidder
          emitRetractions: true
          aggregates:
            - {{name: top, op: max, of: e.price}}
            - {{name: n, op: count}}
      - name: perGroup
        input: perBidder
        aggregate:
          key: e.key % 7
          retractWhen: e.retract
          aggregates:
            - {{name: total, op: sum, of: e.top}}
            - {{name: bidders, op: count}}
            - {{name: best, op: max, of: e.top}}
    sinks:
      - {{name: out, input: perBidder, file: {{path: "{out}/bidders"}}}}
      - {{name: out2, input: perGroup, file: {{path: "{out}/groups"}}}}
      - {{name: bad, input: perGroup.deadLetter, file: {{path: "{out}/dead"}}}}
"#,
        out = out.display(),
        ckpt = ckpt.display()
    )
}

fn run(dir: &Path, kills: usize) -> String {
    let f = dir.join("job.yaml");
    let ck = dir.join("ck");
    write(&f, &job(&dir.join("out"), &ck));
    let state = dir.join("st");
    let args = ["run", "-q", "-f", &p(&f), "--state-dir", &p(&state)];
    for k in 0..kills {
        let have = completed_checkpoints(&job_root(&ck, "agg")).len();
        kill_after_checkpoints(&args, &[], &job_root(&ck, "agg"), have.max(k) + 1);
    }
    run_to_end(&args, &[])
}

#[test]
fn chained_aggregates_survive_kill_9() {
    let base = tmp();
    run(base.path(), 0);
    let crash = tmp();
    let stderr = run(crash.path(), 2);
    assert!(stderr.contains("restored from checkpoint"), "{stderr}");
    // Both partitions' bids meet per bidder in one task (a keyed exchange), in an order that
    // varies between runs, so the changelogs differ on the way and agree on the result.
    for sub in ["bidders", "groups"] {
        let expected = final_by_key(&base.path().join("out").join(sub));
        let got = final_by_key(&crash.path().join("out").join(sub));
        assert!(!expected.is_empty(), "no output for {sub}");
        assert_eq!(expected.len(), got.len(), "{sub}: key count differs");
        assert!(expected == got, "{sub}: final results differ");
    }
    let bidders = committed_lines(&crash.path().join("out/bidders"));
    assert!(
        bidders.iter().any(|l| l.contains(r#""retract":true"#)),
        "the first aggregate emitted retractions"
    );
    assert!(committed_lines(&crash.path().join("out/dead")).is_empty());
}
