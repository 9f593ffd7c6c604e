//! Prints ns/eval for the compiled evaluator and the `cel` interpreter on typical
//! operator expressions: `cargo bench -p weir-expr --bench eval`.

use std::hint::black_box;
use std::time::{Duration, Instant};
use weir_expr::{Expr, Value};

/// Expressions measured, by name.
const CASES: &[(&str, &str)] = &[
    ("field read", "e.price"),
    ("filter", "e.auction % 123 == 0 && e.price > 100"),
    (
        "map literal",
        "{'auction': e.auction, 'price': e.price * 2, 'bidder': e.bidder, 'kind': 'bid'}",
    ),
    ("string compare", "e.channel == 'Google'"),
    ("key concat", "e.channel + ':' + string(e.auction)"),
    ("exists macro", "e.tags.exists(t, t == 'hot')"),
];

/// Bid records with varying values, as a Nexmark source produces them.
fn records() -> Vec<Value> {
    (0..1024)
        .map(|i: i64| {
            Value::from_json(&format!(
                r#"{{"type":"bid","auction":{},"bidder":{},"price":{},"channel":"{}","url":"https://www.nexmark.com/item/{i}","dateTime":{},"extra":"","tags":["a","b","{}"]}}"#,
                1000 + i * 7,
                2000 + i % 13,
                (i * 37) % 400,
                ["Google", "Facebook", "Baidu", "Apple"][(i % 4) as usize],
                1_700_000_000_000i64 + i,
                if i % 5 == 0 { "hot" } else { "c" },
            ))
            .expect("valid JSON")
        })
        .collect()
}

/// CPU time this thread has run, from `/proc/thread-self/schedstat` (Linux): the build
/// machine is shared, so wall time overstates the cost when other work preempts us.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Mean (wall ns, CPU ns) per evaluation over about `budget` of wall time.
fn measure(expr: &Expr, records: &[Value], budget: Duration) -> (f64, Option<f64>) {
    let mut evals = 0u64;
    let cpu_start = thread_cpu_ns();
    let start = Instant::now();
    while start.elapsed() < budget {
        for r in records {
            black_box(expr.eval(&[black_box(r)]).ok());
        }
        evals += records.len() as u64;
    }
    let wall = start.elapsed().as_nanos() as f64 / evals as f64;
    let cpu = cpu_start
        .zip(thread_cpu_ns())
        .map(|(a, b)| b.saturating_sub(a) as f64 / evals as f64);
    (wall, cpu)
}

fn show(ns: (f64, Option<f64>)) -> String {
    match ns.1 {
        Some(cpu) => format!("{cpu:.1} ({:.0})", ns.0),
        None => format!("- ({:.0})", ns.0),
    }
}

fn main() {
    let records = records();
    println!("ns/eval: CPU time (wall time in parentheses)");
    println!(
        "{:<16} {:>20} {:>20} {:>8}",
        "case", "compiled", "cel interpreter", "speedup"
    );
    for (name, source) in CASES {
        let fast = Expr::compile(source, &["e"]).expect("compiles");
        assert_eq!(fast.interpreter_reason(), None, "{source} should compile");
        let slow = Expr::compile_interpreted(source, &["e"]).expect("compiles");
        // Warm up, then measure.
        measure(&fast, &records, Duration::from_millis(100));
        let f = measure(&fast, &records, Duration::from_millis(700));
        measure(&slow, &records, Duration::from_millis(100));
        let s = measure(&slow, &records, Duration::from_millis(700));
        let speedup = match (f.1, s.1) {
            (Some(f), Some(s)) => s / f,
            _ => s.0 / f.0,
        };
        println!("{name:<16} {:>20} {:>20} {speedup:>7.0}x", show(f), show(s));
    }
}
