//! The workload examples (`examples/{splice,impression-click,effective-click,feature-join,
//! window-3m}.yaml`) run end to end through the real `weir-runtime run` binary, and a run
//! that is killed with SIGKILL and restarted commits exactly the output of an uninterrupted
//! run. Only checkpoint and output locations (and the generator's rate, so that there is time
//! to kill it) are changed from the examples as shipped.
// Test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
use common::redis_server::start_redis;
use common::*;
use serde_yaml::Value as Yaml;
use std::path::{Path, PathBuf};

fn example_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("examples")
        .join(format!("{name}.yaml"))
}

/// The example with checkpoints in `ck` every 300 ms, sinks under `out/<sink>`, generators
/// at `rate` events/s, and Redis at `redis_port` (if given).
fn patched(name: &str, out: &Path, ck: &Path, rate: u64, redis_port: Option<u16>) -> String {
    let text = std::fs::read_to_string(example_path(name)).unwrap();
    let mut job: Yaml = serde_yaml::from_str(&text).unwrap();
    let spec = &mut job["spec"];
    spec["checkpoint"] = serde_yaml::from_str(&format!(
        "{{interval: 300ms, retain: 2, storage: \"file://{}\"}}",
        ck.display()
    ))
    .unwrap();
    let pipeline = &mut spec["pipeline"];
    if let Some(sources) = pipeline["sources"].as_sequence_mut() {
        for s in sources {
            if s["generator"].is_mapping() {
                s["generator"]["rate"] = Yaml::from(rate);
            }
        }
    }
    if let Some(sinks) = pipeline["sinks"].as_sequence_mut() {
        for s in sinks {
            let sink = s["name"].as_str().unwrap().to_string();
            s["file"]["path"] = Yaml::from(out.join(&sink).display().to_string());
        }
    }
    if let (Some(port), Some(ops)) = (redis_port, pipeline["operators"].as_sequence_mut()) {
        for o in ops {
            if o["lookupJoin"].is_mapping() {
                o["lookupJoin"]["store"]["redis"] = Yaml::from(format!("redis://127.0.0.1:{port}"));
            }
        }
    }
    serde_yaml::to_string(&job).unwrap()
}

fn job_name(example: &str) -> String {
    let text = std::fs::read_to_string(example_path(example)).unwrap();
    let job: Yaml = serde_yaml::from_str(&text).unwrap();
    job["metadata"]["name"].as_str().unwrap().to_string()
}

/// Runs `example` once to the end and once with `kills` SIGKILLs and restarts; asserts that
/// the sinks in `non_empty` produced output and that every sink's committed output is equal.
fn run_with_kills(
    example: &str,
    sinks: &[&str],
    non_empty: &[&str],
    kills: usize,
    redis: Option<u16>,
) {
    let name = job_name(example);
    let base = tmp();
    let f = base.path().join("job.yaml");
    write(
        &f,
        &patched(
            example,
            &base.path().join("out"),
            &base.path().join("ck"),
            20_000,
            redis,
        ),
    );
    let stderr = run_to_end(
        &[
            "run",
            "-q",
            "-f",
            &p(&f),
            "--state-dir",
            &p(&base.path().join("st")),
        ],
        &[],
    );
    for sink in non_empty {
        let lines = committed_lines(&base.path().join("out").join(sink));
        assert!(
            !lines.is_empty(),
            "{example}: sink {sink} committed nothing; stderr:\n{stderr}"
        );
    }

    let crash = tmp();
    let f2 = crash.path().join("job.yaml");
    let ck = crash.path().join("ck");
    write(
        &f2,
        &patched(example, &crash.path().join("out"), &ck, 20_000, redis),
    );
    let state = crash.path().join("st");
    let args = ["run", "-q", "-f", &p(&f2), "--state-dir", &p(&state)];
    for k in 0..kills {
        let have = completed_checkpoints(&job_root(&ck, &name)).len();
        kill_after_checkpoints(&args, &[], &job_root(&ck, &name), have.max(k) + 1);
    }
    let stderr = run_to_end(&args, &[]);
    assert!(stderr.contains("restored from checkpoint"), "{stderr}");
    for sink in sinks {
        let expected = committed_lines(&base.path().join("out").join(sink));
        let got = committed_lines(&crash.path().join("out").join(sink));
        assert_eq!(
            expected.len(),
            got.len(),
            "{example}: sink {sink}: record count differs after kill -9"
        );
        assert!(
            expected == got,
            "{example}: sink {sink}: records differ after kill -9"
        );
    }
}

#[test]
fn splice_example_merges_samples_and_survives_kill_9() {
    run_with_kills(
        "splice",
        &["samples-out", "bad-records"],
        &["samples-out"],
        2,
        None,
    );
}

#[test]
fn impression_click_example_matches_and_survives_kill_9() {
    run_with_kills(
        "impression-click",
        &["clicked", "not-clicked"],
        &["clicked", "not-clicked"],
        2,
        None,
    );
}

#[test]
fn effective_click_example_emits_and_expires_and_survives_kill_9() {
    run_with_kills(
        "effective-click",
        &["effective-out", "expired-out"],
        &["effective-out", "expired-out"],
        2,
        None,
    );
}

#[test]
fn window_3m_example_runs_and_survives_kill_9() {
    run_with_kills("window-3m", &["warehouse"], &["warehouse"], 2, None);
}

#[test]
fn feature_join_example_enriches_from_redis_and_survives_kill_9() {
    let Some(redis) = start_redis() else {
        eprintln!("redis-server is not installed; skipping the feature-join example");
        return;
    };
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port)).unwrap();
    let mut conn = client.get_connection().unwrap();
    // Every ad but ad-7 has features; clicks on ad-7 wait in the retry queue.
    for ad in (0..1000).filter(|ad| *ad != 7) {
        let value = format!("{{\"ctr\":0.0{},\"category\":{}}}", ad % 10, ad % 7);
        let key = format!("features:ad-{ad}");
        redis::cmd("SET")
            .arg(&key)
            .arg(&value)
            .query::<()>(&mut conn)
            .unwrap();
    }
    run_with_kills(
        "feature-join",
        &["enriched", "expired"],
        &["enriched"],
        2,
        Some(redis.port),
    );
}
