//! Micro-benchmark of the workload operators and a 3-minute window through the engine's
//! operator path (operator factory, RocksDB state behind the write-back cache, timers, a
//! checkpoint flush every 1,000,000 events), on one thread. Prints events per wall second and
//! per CPU-second of the whole process (RocksDB's threads included; the final flush of all
//! timers is not counted) and the peak RSS so far; it never fails on speed. Run one case per
//! process for a per-case peak RSS.
//!
//!     cargo run --release -p weir-runtime --example workload_bench [-- <events> [<case>...]]
//!
//! Cases: `splice`, `pattern`, `accumulate`, `window` (default: all).

use std::time::Instant;
use weir_crds::pipeline::OperatorSpec;
use weir_expr::Value;
use weir_runtime::operator::{self, Context, Operator};
use weir_runtime::record::Record;
use weir_runtime::state::{operator_cf, StateStore};
use weir_runtime::time::{TimeDomain, TimerService};

/// A checkpoint barrier every this many events (state and timers flushed to RocksDB).
const CHECKPOINT_EVERY: u64 = 1_000_000;

/// Epoch ms of the first event.
const T0: i64 = 1_700_000_000_000;

fn spec(yaml: &str) -> OperatorSpec {
    match serde_yaml::from_str(yaml) {
        Ok(s) => s,
        Err(e) => panic!("bad benchmark spec: {e}"),
    }
}

struct Outcome {
    events: u64,
    outputs: u64,
    secs: f64,
    cpu_secs: f64,
    flush_secs: f64,
    /// Peak RSS before the final flush.
    rss_mib: f64,
}

/// User + system CPU seconds of the whole process so far (RocksDB's threads included), from
/// `/proc/self/stat` (clock ticks of 1/100 s).
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // fields after the command name (which may contain spaces) start at state (field 3)
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15: indices 11 and 12 after the state field
    (ticks(11) + ticks(12)) / 100.0
}

/// The process's peak resident set size so far in MiB (`VmHWM`).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// Runs `events` (input index, record) through the operator `spec`, advancing the watermark
/// to `last ts − 2 s` every 1,000 records and to the end afterwards, with a checkpoint
/// barrier (operator snapshot + timer flush) every [`CHECKPOINT_EVERY`] records.
fn run(spec: &OperatorSpec, events: impl Iterator<Item = (usize, Record)>) -> Outcome {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let cf = operator_cf(&spec.name);
    let (store, _) = match StateStore::open(dir.path(), std::slice::from_ref(&cf)) {
        Ok(s) => s,
        Err(e) => panic!("state: {e}"),
    };
    let mut op: Box<dyn Operator> = match operator::build("bench", spec) {
        Ok(op) => op,
        Err(e) => panic!("build: {e:?}"),
    };
    if let Err(e) = op.on_start(&store.handle(&cf)) {
        panic!("on_start: {e}");
    }
    let side = spec.side_outputs();
    let mut timers = TimerService::default();
    let mut out = Vec::new();
    let mut dead = 0u64;
    let mut outputs = 0u64;
    let mut wm = i64::MIN;
    let mut n = 0u64;
    let start = Instant::now();
    let cpu_start = process_cpu_secs();
    for (input, rec) in events {
        let ts = rec.ts;
        {
            let mut ctx = Context::new(wm, 0, side, &mut out, &mut timers, &mut dead);
            if let Err(e) = op.process(input, rec, &mut ctx) {
                panic!("process: {e}");
            }
        }
        n += 1;
        if n.is_multiple_of(CHECKPOINT_EVERY) {
            // what a checkpoint barrier does to the operator: state and timers to RocksDB
            if let Err(e) = op.snapshot(n / CHECKPOINT_EVERY) {
                panic!("snapshot: {e}");
            }
            if let Err(e) = timers.flush(&store.handle(&cf)) {
                panic!("timers: {e}");
            }
        }
        if n.is_multiple_of(1_000) {
            wm = wm.max(ts - 2_000);
            outputs += fire(op.as_mut(), wm, side, &mut timers, &mut out, &mut dead);
        }
        outputs += out.len() as u64;
        out.clear();
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu_secs = process_cpu_secs() - cpu_start;
    let rss_mib = peak_rss_mib();
    let flush = Instant::now();
    outputs += fire(
        op.as_mut(),
        i64::MAX,
        side,
        &mut timers,
        &mut out,
        &mut dead,
    );
    Outcome {
        events: n,
        outputs,
        secs,
        cpu_secs,
        flush_secs: flush.elapsed().as_secs_f64(),
        rss_mib,
    }
}

/// Advances the watermark to `wm` and fires the event-time timers due; returns the number of
/// records emitted (and drops them, as a sink would).
fn fire(
    op: &mut dyn Operator,
    wm: i64,
    side: &'static [&'static str],
    timers: &mut TimerService,
    out: &mut Vec<(usize, Record)>,
    dead: &mut u64,
) -> u64 {
    let mut ctx = Context::new(wm, 0, side, out, timers, dead);
    if let Err(e) = op.on_watermark(&mut ctx) {
        panic!("on_watermark: {e}");
    }
    let mut emitted = out.len() as u64;
    out.clear();
    while let Some(t) = timers.pop_due(TimeDomain::EventTime, wm) {
        let mut ctx = Context::new(wm, 0, side, out, timers, dead);
        if let Err(e) = op.on_timer(t, &mut ctx) {
            panic!("on_timer: {e}");
        }
        emitted += out.len() as u64;
        out.clear();
    }
    emitted
}

fn report(name: &str, o: &Outcome) {
    println!(
        "{name:<44} {:>9} events {:>7.2} s {:>10.0} events/s  {:>6.2} CPU-s {:>10.0} events/CPU-s  {:>8} outputs (final flush {:.2} s)  peak RSS {:.0} MiB before the final flush, {:.0} MiB after",
        o.events,
        o.secs,
        o.events as f64 / o.secs.max(1e-9),
        o.cpu_secs,
        o.events as f64 / o.cpu_secs.max(1e-9),
        o.outputs,
        o.flush_secs,
        o.rss_mib,
        peak_rss_mib()
    );
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn rec(ts: i64, fields: Vec<(&'static str, Value)>) -> Record {
    Record::new(ts, Value::map(fields), 0)
}

fn main() {
    let events: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let only: Vec<String> = std::env::args().skip(2).collect();
    let wanted = |case: &str| only.is_empty() || only.iter().any(|c| c == case);
    println!("workload operators through the engine path, 1 thread, {events} events per case");

    if wanted("splice") {
        // splice: 1M live keys (timeout far beyond the stream), three inputs.
        let keys = 1_000_000u64;
        let splice = spec(
            "name: samples\ninputs: [impressions, clicks, heartbeats]\nsplice:\n  key: e.id\n  timeout: 1d\n  fields:\n    - {name: id, value: e.id, rule: first}\n    - {name: clicks, from: clicks, rule: count}\n    - {name: beats, from: heartbeats, rule: count}\n    - {name: cost, from: impressions, value: e.cost, rule: sum}\n",
        );
        let o = run(
            &splice,
            (0..events).map(|i| {
                let k = if i < keys { i } else { mix(i) % keys };
                let input = (mix(i ^ 7) % 3) as usize;
                rec(
                    T0 + i as i64,
                    vec![("id", Value::Int(k as i64)), ("cost", Value::Int(1))],
                )
                .with_input(input)
            }),
        );
        report("splice (1M live keys, 3 inputs)", &o);
    }

    if wanted("pattern") {
        // pattern: impression -> click within 5m; 4 events per request, 10% clicks.
        let pattern = spec(
            "name: sessions\ninputs: [impressions, clicks]\npattern:\n  key: e.requestId\n  sequence:\n    - {as: imp, from: impressions}\n    - {as: click, from: clicks, followedBy: true, times: oneOrMore}\n  within: 5m\n  sameTimestampOrder: [impressions, clicks]\n  emit: \"{'requestId': imp.requestId, 'clicks': size(click)}\"\n",
        );
        let o = run(
            &pattern,
            (0..events).map(|i| {
                let input = usize::from(mix(i).is_multiple_of(10));
                rec(
                    T0 + (i as i64) * 10,
                    vec![("requestId", Value::Int((i / 4) as i64))],
                )
                .with_input(input)
            }),
        );
        report("pattern (impression -> click+, within 5m)", &o);
    }

    if wanted("accumulate") {
        // accumulate: a click then heartbeats every 3 s per key, 1,000 concurrent sessions.
        let accumulate = spec(
            "name: effective\ninputs: [clicks, heartbeats]\naccumulate:\n  key: e.clickId\n  open: clicks\n  accumulate: heartbeats\n  aggregates:\n    - {name: heartbeats, op: count}\n  emitWhen: \"agg.heartbeats >= 120\"\n  ttl: 3h\n",
        );
        let o = run(
            &accumulate,
            (0..events).map(|i| {
                // event i: session (i % 1000) of round (i / 1000 / 150); the first of a round is the click
                let session = i % 1_000;
                let step = (i / 1_000) % 150;
                let round = i / 150_000;
                let ts = T0 + ((i / 1_000) as i64) * 3_000 + session as i64;
                let id = Value::Int((round * 1_000 + session) as i64);
                rec(ts, vec![("clickId", id)]).with_input(usize::from(step != 0))
            }),
        );
        report("accumulate (click + 3 s heartbeats, emit at 120)", &o);
    }

    if wanted("window") {
        // 3-minute tumbling window per ad (the engine's window operator).
        let window = spec(
            "name: per-ad\ninput: impressions\nwindow:\n  type: tumbling\n  size: 3m\n  key: e.adId\n  aggregates:\n    - {name: n, op: count}\n    - {name: requests, op: distinctCount, of: e.requestId}\n",
        );
        let o = run(
            &window,
            (0..events).map(|i| {
                let fields = vec![
                    ("adId", Value::Int((mix(i) % 1_000) as i64)),
                    ("requestId", Value::Int((i / 4) as i64)),
                ];
                rec(T0 + (i as i64) * 10, fields).with_input(0)
            }),
        );
        report("window (tumbling 3m, 1,000 ads)", &o);
    }
}

trait WithInput {
    fn with_input(self, input: usize) -> (usize, Record);
}

impl WithInput for Record {
    fn with_input(self, input: usize) -> (usize, Record) {
        (input, self)
    }
}
