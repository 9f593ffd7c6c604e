//! A tiny deterministic, seekable Nexmark-like generator used until `crate::generator` lands.
//!
//! Event `i` of partition `p` is a pure function of (seed, p, i), so seeking is O(1).

use weir_crds::pipeline::{GeneratorKind, GeneratorSpec};
use weir_expr::Value;

/// Event time of the first event, epoch ms (fixed so output is reproducible).
pub const BASE_TIME_MS: i64 = 1_700_000_000_000;
/// Event-time distance between consecutive events of the whole generator, ms.
pub const EVENT_SPACING_MS: i64 = 10;

/// Deterministic generator for one partition.
pub struct PlaceholderGenerator {
    kind: GeneratorKind,
    seed: u64,
    partition: u32,
    partitions: u32,
    limit: Option<u64>,
    next: u64,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl PlaceholderGenerator {
    /// The generator of `partition` of `partitions`.
    pub fn new(spec: &GeneratorSpec, partition: u32, partitions: u32) -> Result<Self, String> {
        if partitions == 0 || partition >= partitions {
            return Err(format!(
                "partition {partition} out of range 0..{partitions}"
            ));
        }
        let limit = spec.count.map(|c| {
            let base = c / u64::from(partitions);
            base + u64::from(u64::from(partition) < c % u64::from(partitions))
        });
        Ok(PlaceholderGenerator {
            kind: spec.kind,
            seed: spec.seed,
            partition,
            partitions,
            limit,
            next: 0,
        })
    }

    /// The next event (event time ms, value), or `None` when the partition's count is reached.
    pub fn next_event(&mut self) -> Option<(i64, Value)> {
        if self.limit.is_some_and(|l| self.next >= l) {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let global = i
            .saturating_mul(u64::from(self.partitions))
            .saturating_add(u64::from(self.partition));
        let ts = BASE_TIME_MS + i64::try_from(global).unwrap_or(i64::MAX / 32) * EVENT_SPACING_MS;
        let h = mix(self.seed ^ mix(global));
        let id = i64::try_from(global).unwrap_or(0);
        let v = match self.kind {
            GeneratorKind::Nexmark => match global % 50 {
                0 => Value::map([
                    ("type", Value::str("person")),
                    ("id", Value::Int(id)),
                    ("name", Value::str(&format!("person-{}", h % 1000))),
                    (
                        "state",
                        Value::str(["OR", "ID", "CA", "WA"][(h % 4) as usize]),
                    ),
                    ("dateTime", Value::Int(ts)),
                ]),
                1..=3 => Value::map([
                    ("type", Value::str("auction")),
                    ("id", Value::Int(id)),
                    ("seller", Value::Int((h % 1000) as i64)),
                    ("category", Value::Int((h % 10) as i64)),
                    ("initialBid", Value::Int((h % 500) as i64)),
                    ("dateTime", Value::Int(ts)),
                ]),
                _ => Value::map([
                    ("type", Value::str("bid")),
                    ("auction", Value::Int(1000 + (h % 1000) as i64)),
                    ("bidder", Value::Int(((h >> 16) % 10_000) as i64)),
                    ("price", Value::Int(100 + ((h >> 32) % 10_000) as i64)),
                    (
                        "channel",
                        Value::str(["web", "app", "api"][((h >> 8) % 3) as usize]),
                    ),
                    ("dateTime", Value::Int(ts)),
                ]),
            },
            GeneratorKind::AdEvents => {
                let t = match h % 10 {
                    0 => "click",
                    1..=3 => "heartbeat",
                    _ => "impression",
                };
                Value::map([
                    ("type", Value::str(t)),
                    ("requestId", Value::str(&format!("r{}", global / 4))),
                    ("adId", Value::Int((h % 100) as i64)),
                    ("ts", Value::Int(ts)),
                ])
            }
        };
        Some((ts, v))
    }

    /// Events produced so far (the resume offset).
    pub fn offset(&self) -> u64 {
        self.next
    }

    /// Resumes at `offset`.
    pub fn seek(&mut self, offset: u64) {
        self.next = offset;
    }
}
