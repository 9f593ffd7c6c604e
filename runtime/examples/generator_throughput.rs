//! Prints how many events per second each generator produces on one thread:
//! `cargo run -p weir-runtime --release --example generator_throughput`.

use std::time::Instant;
use weir_crds::pipeline::{GeneratorKind, GeneratorSpec};
use weir_runtime::generator::Generator;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const EVENTS: u64 = 2_000_000;
    for kind in [GeneratorKind::Nexmark, GeneratorKind::AdEvents] {
        let spec = GeneratorSpec {
            kind,
            seed: 1,
            count: Some(EVENTS),
            partitions: 1,
            ..GeneratorSpec::default()
        };
        let generator = Generator::new(&spec, 0)?;
        let start = Instant::now();
        let mut fields = 0usize;
        for (_, record) in generator {
            if let weir_expr::Value::Map(m) = &record {
                fields += m.len();
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "{kind:?}: {:.0} events/s ({:.1} fields/event)",
            EVENTS as f64 / seconds,
            fields as f64 / EVENTS as f64
        );
    }
    Ok(())
}
