//! `weir-runtime bench`: events/s per core and peak RSS for Nexmark-style queries (q0
//! passthrough, q1 map, q2 filter, a keyed tumbling window) and incremental checkpoint timing.
//! Each query runs as one task (one core) through the real engine into a file sink. It prints
//! numbers and never fails on speed.

use crate::checkpoint::catalog::RestoreFrom;
use crate::checkpoint::CompletedMarker;
use crate::job::{run_job, JobConfig, Mode};
use crate::plan::plan_job;
use std::time::Instant;
use weir_crds::manifest::parse_stream_job;

/// A benchmark failure (setup, not speed).
#[derive(Debug, thiserror::Error)]
#[error("benchmark: {0}")]
pub struct BenchError(pub String);

/// Peak resident set size of this process in KiB (VmHWM), if known.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn manifest(
    name: &str,
    events: u64,
    operators: &str,
    sink_input: &str,
    out: &str,
    ckpt: &str,
    interval: &str,
) -> String {
    format!(
        r#"
kind: StreamJob
metadata: {{name: {name}}}
spec:
  image: bench
  checkpoint: {{interval: {interval}, retain: 3, storage: "file://{ckpt}"}}
  pipeline:
    sources:
      - {{name: gen, generator: {{kind: nexmark, count: {events}, partitions: 1}}}}
    operators:
{operators}
    sinks:
      - {{name: out, input: {sink_input}, file: {{path: "{out}"}}}}
"#
    )
}

fn run_one(name: &str, text: &str, dir: &std::path::Path) -> Result<f64, BenchError> {
    let job = parse_stream_job(name, text).map_err(|e| BenchError(e.to_string()))?;
    let plan = plan_job(&job).map_err(|e| BenchError(weir_crds::validate::describe(&e)))?;
    let storage_url = job.spec.checkpoint.storage.clone();
    let started = Instant::now();
    run_job(JobConfig {
        job,
        plan,
        state_dir: dir.join(format!("state-{name}")),
        storage_url,
        ordinal: 0,
        replicas: 1,
        restore_from: RestoreFrom::None,
        allow_non_restored_state: true,
        mode: Mode::Local,
        admin_port: None,
        progress: false,
    })
    .map_err(|e| BenchError(e.to_string()))?;
    Ok(started.elapsed().as_secs_f64())
}

/// Runs every query with `events` events and prints the results.
pub fn run(events: u64) -> Result<(), BenchError> {
    let tmp = std::env::temp_dir().join(format!("weir-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| BenchError(e.to_string()))?;
    let d = tmp.display().to_string();
    let queries: Vec<(&str, &str, &str, String)> = vec![
        ("q0", "passthrough", "pass", String::from("      - {name: pass, input: gen, filter: \"true\"}")),
        ("q1", "map: currency conversion", "conv", String::from(
            "      - {name: bids, input: gen, filter: \"e.type == 'bid'\"}\n      - {name: conv, input: bids, map: \"{'auction': e.auction, 'bidder': e.bidder, 'price': e.price * 908 / 1000, 'dateTime': e.dateTime}\"}",
        )),
        ("q2", "filter: auction % 123 == 0", "sel", String::from(
            "      - {name: sel, input: gen, filter: \"e.type == 'bid' && e.auction % 123 == 0\"}",
        )),
        ("qw", "tumbling 10s window, count+max per auction", "win", String::from(
            "      - {name: bids, input: gen, filter: \"e.type == 'bid'\"}\n      - {name: win, input: bids, window: {type: tumbling, size: 10s, key: e.auction, aggregates: [{name: n, op: count}, {name: top, op: max, of: e.price}]}}",
        )),
    ];
    println!("weir-runtime bench: {events} events per query, 1 task (1 core), generator -> operators -> file sink");
    println!(
        "{:<4} {:<44} {:>12} {:>14} {:>14}",
        "q", "query", "seconds", "events/s/core", "peak RSS MiB"
    );
    for (q, what, sink_input, ops) in &queries {
        let text = manifest(
            &format!("bench-{q}"),
            events,
            ops,
            sink_input,
            &format!("{d}/out-{q}"),
            &format!("{d}/ck"),
            "1h",
        );
        let secs = run_one(q, &text, &tmp)?;
        println!(
            "{:<4} {:<44} {:>12.2} {:>14.0} {:>14.1}",
            q,
            what,
            secs,
            events as f64 / secs,
            peak_rss_kib().unwrap_or(0) as f64 / 1024.0
        );
    }

    // incremental checkpoints: dedup state grows; each checkpoint uploads only new SSTs
    let ops = "      - {name: uniq, input: gen, dedup: {key: \"string(e.type) + ':' + string(e.dateTime)\", ttl: 1d}}";
    let text = manifest(
        "bench-ckpt",
        events,
        ops,
        "uniq",
        &format!("{d}/out-ckpt"),
        &format!("{d}/ck"),
        "1s",
    );
    let secs = run_one("ckpt", &text, &tmp)?;
    println!("\ncheckpoints of a dedup job ({events} keys, interval 1s, {secs:.1}s run):");
    println!(
        "{:>6} {:>12} {:>16} {:>16}",
        "id", "duration ms", "total bytes", "uploaded bytes"
    );
    let root = tmp.join("ck/local/bench-ckpt");
    let mut markers: Vec<CompletedMarker> = std::fs::read_dir(&root)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read(e.path().join("_COMPLETED")).ok())
                .filter_map(|b| serde_json::from_slice(&b).ok())
                .collect()
        })
        .unwrap_or_default();
    markers.sort_by_key(|m| m.checkpoint_id);
    for m in &markers {
        println!(
            "{:>6} {:>12} {:>16} {:>16}",
            m.checkpoint_id,
            (m.completed_at - m.started_at).num_milliseconds(),
            m.total_size_bytes,
            m.uploaded_bytes
        );
    }
    println!("(retain 3: only the newest checkpoints remain)");
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
