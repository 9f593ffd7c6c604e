//! `weir-runtime bench`: events per CPU-second and peak RSS for Nexmark-style queries (q0
//! passthrough, q1 map, q2 filter, a keyed tumbling window), the checkpoints of a dedup job
//! whose input ends with a million keys in its cache, and an incremental checkpoint of a large
//! state with 1% changed. Each query runs as one task through the real engine into a file sink.
//! It prints numbers and never fails on speed.

use crate::checkpoint::catalog::RestoreFrom;
use crate::checkpoint::storage::CheckpointStorage;
use crate::checkpoint::transfer::{upload_task, write_marker, StoredSsts};
use crate::checkpoint::{CompletedMarker, TaskManifest};
use crate::job::{run_job, JobConfig, Mode};
use crate::plan::plan_job;
use crate::state::{operator_cf, KeyedState, StateStore};
use std::path::Path;
use std::time::Instant;
use weir_crds::manifest::parse_stream_job;

/// A benchmark failure (setup, not speed).
#[derive(Debug, thiserror::Error)]
#[error("benchmark: {0}")]
pub struct BenchError(pub String);

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Events per query.
    pub events: u64,
    /// Sections to run: `q0`, `q1`, `q2`, `qw`, `dedup`, `state` (all when empty).
    pub only: Vec<String>,
    /// Size of the state for the incremental-checkpoint section, MiB.
    pub state_mib: u64,
}

impl BenchOptions {
    fn wants(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

/// CPU time (user + system) this process has used so far, in seconds, from
/// `/proc/self/stat` (clock ticks of 1/100 s); includes threads that have exited.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // fields after the parenthesised command name: state is field 3, utime 14, stime 15
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

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

/// Wall and CPU seconds of one run.
struct Timing {
    wall: f64,
    cpu: f64,
}

fn run_one(name: &str, text: &str, dir: &std::path::Path) -> Result<Timing, BenchError> {
    let job = parse_stream_job(name, text).map_err(|e| BenchError(e.to_string()))?;
    let plan = plan_job(&job).map_err(|e| BenchError(weir_crds::validate::describe(&e)))?;
    let storage_url = job.spec.checkpoint.storage.clone();
    let started = Instant::now();
    let cpu_before = process_cpu_seconds().unwrap_or(0.0);
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
    Ok(Timing {
        wall: started.elapsed().as_secs_f64(),
        cpu: process_cpu_seconds().unwrap_or(0.0) - cpu_before,
    })
}

/// Runs the selected sections and prints the results.
pub fn run(opts: &BenchOptions) -> Result<(), BenchError> {
    let events = opts.events;
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
    println!("weir-runtime bench: {events} events per query, 1 task, generator -> operators -> file sink");
    println!("(CPU = user + system time of the whole process, generator and sink included)");
    println!(
        "{:<4} {:<44} {:>8} {:>8} {:>12} {:>14} {:>9}",
        "q", "query", "wall s", "CPU s", "events/s", "events/CPU-s", "RSS MiB"
    );
    for (q, what, sink_input, ops) in &queries {
        if !opts.wants(q) {
            continue;
        }
        let text = manifest(
            &format!("bench-{q}"),
            events,
            ops,
            sink_input,
            &format!("{d}/out-{q}"),
            &format!("{d}/ck"),
            "1h",
        );
        let t = run_one(q, &text, &tmp)?;
        println!(
            "{:<4} {:<44} {:>8.2} {:>8.2} {:>12.0} {:>14.0} {:>9.1}",
            q,
            what,
            t.wall,
            t.cpu,
            events as f64 / t.wall,
            events as f64 / t.cpu.max(0.01),
            peak_rss_kib().unwrap_or(0) as f64 / 1024.0
        );
    }
    if opts.wants("dedup") {
        dedup_checkpoints(events, &tmp)?;
    }
    if opts.wants("state") && opts.state_mib > 0 {
        incremental_checkpoint(opts.state_mib, &tmp)?;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// A dedup job with `events` distinct keys: its checkpoints, the last one taken when input
/// ends with every key (and its TTL timer) in the write-back cache.
fn dedup_checkpoints(events: u64, tmp: &Path) -> Result<(), BenchError> {
    let d = tmp.display().to_string();
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
    let t = run_one("ckpt", &text, tmp)?;
    println!(
        "\ncheckpoints of a dedup job ({events} keys, interval 1s, {:.1}s run, {:.1} CPU-s):",
        t.wall, t.cpu
    );
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
    println!("(retain 3: only the newest checkpoints remain; the last is the end-of-input one)");
    Ok(())
}

/// One checkpoint of the state bench: what the coordinator and a task do at a barrier.
fn bench_checkpoint(
    id: u64,
    state: &mut KeyedState<String>,
    store: &StateStore,
    storage: &CheckpointStorage,
    known: &mut StoredSsts,
    local: &Path,
) -> Result<(f64, TaskManifest, u64, [f64; 3]), BenchError> {
    let e = |e: &dyn std::fmt::Display| BenchError(format!("checkpoint {id}: {e}"));
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    state.flush().map_err(|x| e(&x))?;
    let flushed = started.elapsed().as_secs_f64();
    let dir = local.join(format!("chk-{id}"));
    store.checkpoint_to(&dir).map_err(|x| e(&x))?;
    let snapshotted = started.elapsed().as_secs_f64();
    let mut manifest = TaskManifest {
        checkpoint_id: id,
        task: 0,
        job: "bench-state".into(),
        created_at: chrono::Utc::now(),
        sources: vec![],
        watermark: i64::MIN,
        finished: false,
        files: vec![],
        operators: vec![operator_cf("big")],
        sinks: Default::default(),
    };
    let uploaded = upload_task(storage, &dir, &mut manifest, known).map_err(|x| e(&x))?;
    let _ = std::fs::remove_dir_all(&dir);
    write_marker(
        storage,
        &CompletedMarker {
            checkpoint_id: id,
            started_at,
            completed_at: chrono::Utc::now(),
            tasks: vec![0],
            total_size_bytes: manifest.total_size(),
            uploaded_bytes: uploaded,
            replicas: 1,
            is_final: false,
            pinned_from: None,
            key_groups: None,
        },
    )
    .map_err(|x| e(&x))?;
    let total = started.elapsed().as_secs_f64();
    Ok((
        total,
        manifest,
        uploaded,
        [flushed, snapshotted - flushed, total - snapshotted],
    ))
}

/// A value of `len` letters determined by `seed` (incompressible enough that the state on
/// disk is about as large as the data).
fn bench_value(seed: u64, len: usize) -> String {
    let mut x = crate::generator::mix(seed);
    let mut s = String::with_capacity(len);
    for i in 0..len {
        if i % 12 == 0 {
            x = crate::generator::mix(x);
        }
        s.push(char::from(b'a' + ((x >> ((i % 12) * 5)) & 31) as u8 % 26));
    }
    s
}

/// Builds `mib` MiB of state through the state layer (1 KiB values in one column family),
/// checkpoints it to `file://` storage, changes 1% of the keys and checkpoints again.
fn incremental_checkpoint(mib: u64, tmp: &Path) -> Result<(), BenchError> {
    const VALUE_LEN: usize = 1000;
    let keys = mib * 1024 * 1024 / (VALUE_LEN as u64 + 24);
    let e = |what: &str, x: &dyn std::fmt::Display| BenchError(format!("{what}: {x}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|x| e("starting the I/O runtime", &x))?;
    let cf = operator_cf("big");
    let root = tmp.join("state-bench");
    let (store, _) = StateStore::open(&root.join("db"), std::slice::from_ref(&cf))
        .map_err(|x| e("opening state", &x))?;
    let storage = CheckpointStorage::open(
        &format!("file://{}", root.join("ck").display()),
        "local",
        "bench-state",
        rt.handle().clone(),
    )
    .map_err(|x| e("opening storage", &x))?;
    let mut state: KeyedState<String> = KeyedState::new(store.handle(&cf), "v", 100_000);
    let mut known = StoredSsts::default();
    let local = root.join("local-checkpoints");
    std::fs::create_dir_all(&local).map_err(|x| e("creating local-checkpoints", &x))?;

    println!("
incremental checkpoint: {mib} MiB of state ({keys} keys x {VALUE_LEN} B values), then 1% of the keys changed");
    let started = Instant::now();
    for k in 0..keys {
        state
            .put(&format!("{k:012}"), bench_value(k, VALUE_LEN))
            .map_err(|x| e("writing state", &x))?;
    }
    state.flush().map_err(|x| e("writing state", &x))?;
    println!("  loaded in {:.1}s", started.elapsed().as_secs_f64());
    println!(
        "{:>4} {:>10} {:>10} {:>12} {:>10} {:>14} {:>14}",
        "id", "total ms", "flush ms", "snapshot ms", "upload ms", "state bytes", "uploaded bytes"
    );
    let changed = (keys / 100).max(1);
    for id in 1..=2u64 {
        if id == 2 {
            for j in 0..changed {
                let k = crate::generator::mix(j ^ 0xC0FFEE) % keys;
                state
                    .put(&format!("{k:012}"), bench_value(k ^ (1 << 40), VALUE_LEN))
                    .map_err(|x| e("changing state", &x))?;
            }
        }
        let (total, manifest, uploaded, phases) =
            bench_checkpoint(id, &mut state, &store, &storage, &mut known, &local)?;
        println!(
            "{:>4} {:>10.0} {:>10.0} {:>12.0} {:>10.0} {:>14} {:>14}",
            id,
            total * 1000.0,
            phases[0] * 1000.0,
            phases[1] * 1000.0,
            phases[2] * 1000.0,
            manifest.total_size(),
            uploaded
        );
    }
    println!("  (checkpoint 2: {changed} keys changed; flush = write-back cache to RocksDB, snapshot = memtable flush + hard-link checkpoint, upload = hash and copy new files to storage)");
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
