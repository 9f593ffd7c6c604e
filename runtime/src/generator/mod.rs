//! Deterministic synthetic event generators (Nexmark, ad events) for generator sources.
//!
//! Every event is a pure function of `(seed, global index)`: partition `p` of `P` produces the
//! events whose global index `i` satisfies `i % P == p` (and `i < count`), in increasing order,
//! so [`Generator::seek`] is O(1) and a restored task produces exactly what it would have.
//! Rate limiting is not done here (the source wrapper does it).
//!
//! # Event time
//!
//! Event `i` happens at `startTime + i * eventIntervalMicros / 1000` ms (defaults:
//! 1_700_000_000_000 and 1000, i.e. 1000 events per second of event time), minus a
//! deterministic jitter in `0..=outOfOrderMs` (default 0) when `outOfOrderMs > 0`. The
//! returned event time always equals the record's time field (`dateTime` or `ts`).
//!
//! # Nexmark records (`kind: nexmark`)
//!
//! Flat records, one per event, in the standard 1:3:46 Person/Auction/Bid mix per 50
//! events, with ids, hot keys and distributions as in the reference generator (Beam/Flink
//! Nexmark): first person id 1000, first auction id 1000, categories 10..=14, prices in
//! cents `round(10^(6u) * 100)`.
//!
//! ```text
//! {"type":"person","id":1000,"name":"Peter Smith","emailAddress":"..","creditCard":"1234 5678 9012 3456",
//!  "city":"Boise","state":"ID","dateTime":ms,"extra":".."}
//! {"type":"auction","id":1000,"itemName":"..","description":"..","initialBid":..,"reserve":..,
//!  "dateTime":ms,"expires":ms,"seller":1000,"category":10,"extra":".."}
//! {"type":"bid","auction":1000,"bidder":1001,"price":250,"channel":"Google","url":"https://..",
//!  "dateTime":ms,"extra":".."}
//! ```
//!
//! Options (besides the event-time ones): `hotAuctionRatio` (2), `hotBiddersRatio` (4),
//! `hotSellersRatio` (4), `numActivePeople` (1000), `numInFlightAuctions` (100),
//! `avgPersonByteSize` (200), `avgAuctionByteSize` (500), `avgBidByteSize` (100).
//!
//! # Ad event records (`kind: adEvents`)
//!
//! ```text
//! {"type":"impression","requestId":"..","adId":"ad-17","userId":"u-4242","ts":ms}
//! {"type":"click","requestId":"..","adId":"ad-17","userId":"u-4242","ts":ms}
//! {"type":"heartbeat","requestId":"..","adId":"ad-17","userId":"u-4242","ts":ms,"playMs":3000}
//! ```
//!
//! A session is one impression, maybe one click, and for some clicks playback heartbeats
//! every 3 s (`playMs` = 3000, 6000, ...; some sessions reach 120 heartbeats = 6 minutes,
//! others stop short). Options: `clickRate` (0.1, clicks per impression), `sameMsClickRate`
//! (0.1, clicks with their impression's exact `ts`), `earlyClickRate` (0.05, clicks that come
//! before their impression in stream order), `heartbeatSessions` (0.3, clicks followed by
//! heartbeats), `keys` (1000 distinct ads), `users` (100000 distinct users). See
//! [`ad_events`] for how indices map to sessions; events are at most 3 s (one heartbeat
//! period) away from their index's event time, plus `outOfOrderMs`.

pub mod ad_events;
pub mod nexmark;

use std::collections::BTreeMap;
use weir_crds::pipeline::{GeneratorKind, GeneratorSpec};
use weir_expr::Value;

/// Default event time of event 0, epoch ms.
pub const DEFAULT_START_TIME_MS: i64 = 1_700_000_000_000;
/// Default event-time distance between consecutive events, µs.
pub const DEFAULT_EVENT_INTERVAL_MICROS: u64 = 1000;

/// Why a generator could not be created.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeneratorError {
    /// An option has a value of the wrong type or out of range.
    #[error("generator option '{option}': {message}")]
    InvalidOption {
        /// The option's name.
        option: String,
        /// What is wrong with it.
        message: String,
    },
    /// An option this generator kind does not know (a typo, usually).
    #[error("unknown generator option '{option}' (known: {known})")]
    UnknownOption {
        /// The option's name.
        option: String,
        /// The options this kind accepts.
        known: String,
    },
    /// The partition is not one of the spec's partitions.
    #[error(
        "generator partition {partition} out of range: the spec has {partitions} partition(s)"
    )]
    Partition {
        /// The partition asked for.
        partition: u32,
        /// The spec's partition count.
        partitions: u32,
    },
}

/// One partition of a deterministic, seekable generator.
pub struct Generator {
    model: Model,
    timing: Timing,
    partition: u64,
    partitions: u64,
    count: Option<u64>,
    offset: u64,
}

/// The event model.
enum Model {
    Nexmark(Box<nexmark::Nexmark>),
    AdEvents(Box<ad_events::AdEvents>),
}

impl Generator {
    /// Partition `partition` of the generator `spec`; a bad option is an error naming it.
    pub fn new(spec: &GeneratorSpec, partition: u32) -> Result<Self, GeneratorError> {
        if partition >= spec.partitions {
            return Err(GeneratorError::Partition {
                partition,
                partitions: spec.partitions,
            });
        }
        let mut options = Options::new(&spec.options);
        let timing = Timing::from_options(spec.seed, &mut options)?;
        let model = match spec.kind {
            GeneratorKind::Nexmark => Model::Nexmark(Box::new(nexmark::Nexmark::from_options(
                spec.seed,
                &timing,
                &mut options,
            )?)),
            GeneratorKind::AdEvents => Model::AdEvents(Box::new(
                ad_events::AdEvents::from_options(spec.seed, &timing, &mut options)?,
            )),
        };
        options.finish()?;
        Ok(Generator {
            model,
            timing,
            partition: u64::from(partition),
            partitions: u64::from(spec.partitions.max(1)),
            count: spec.count,
            offset: 0,
        })
    }

    /// The event with global index `index` (whichever partition produces it).
    pub fn event(&self, index: u64) -> (i64, Value) {
        match &self.model {
            Model::Nexmark(m) => m.event(index, &self.timing),
            Model::AdEvents(m) => m.event(index, &self.timing),
        }
    }

    /// Events this partition has produced so far (its resume offset).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Resumes so that the next event is this partition's `offset`-th (counting from 0).
    pub fn seek(&mut self, offset: u64) {
        self.offset = offset;
    }

    /// How many events this partition produces in all, `None` if unbounded.
    pub fn len(&self) -> Option<u64> {
        self.count.map(|count| {
            if count <= self.partition {
                0
            } else {
                (count - self.partition).div_ceil(self.partitions)
            }
        })
    }

    /// Whether this partition produces no events at all.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }
}

impl Iterator for Generator {
    type Item = (i64, Value);

    /// The next event of this partition: (event time ms, record), or `None` once the spec's
    /// `count` is reached.
    fn next(&mut self) -> Option<(i64, Value)> {
        let index = self
            .offset
            .checked_mul(self.partitions)?
            .checked_add(self.partition)?;
        if self.count.is_some_and(|count| index >= count) {
            return None;
        }
        self.offset += 1;
        Some(self.event(index))
    }
}

/// Event-time layout shared by the models.
#[derive(Debug, Clone)]
pub(crate) struct Timing {
    seed: u64,
    /// Event time of event 0, ms.
    pub start_ms: i64,
    /// Event-time distance between consecutive events, µs.
    pub interval_us: u64,
    /// Maximum jitter subtracted from event times, ms (0: in order).
    pub out_of_order_ms: u64,
}

impl Timing {
    fn from_options(seed: u64, options: &mut Options<'_>) -> Result<Self, GeneratorError> {
        let start_ms = options.int("startTime", DEFAULT_START_TIME_MS)?;
        let interval_us = options.uint("eventIntervalMicros", DEFAULT_EVENT_INTERVAL_MICROS)?;
        if interval_us == 0 {
            return Err(invalid("eventIntervalMicros", "must be at least 1"));
        }
        let out_of_order_ms = options.uint("outOfOrderMs", 0)?;
        Ok(Timing {
            seed,
            start_ms,
            interval_us,
            out_of_order_ms,
        })
    }

    /// The in-order event time of global index `index`, ms.
    pub fn index_time(&self, index: u64) -> i64 {
        let offset_ms = u128::from(index) * u128::from(self.interval_us) / 1000;
        self.start_ms
            .saturating_add(i64::try_from(offset_ms).unwrap_or(i64::MAX))
    }

    /// The jitter for `key` (an event index or a session id): `0..=outOfOrderMs`.
    pub fn jitter(&self, key: u64) -> i64 {
        if self.out_of_order_ms == 0 {
            return 0;
        }
        let j = mix(self.seed ^ mix(key ^ 0x6A09_E667_F3BC_C909)) % (self.out_of_order_ms + 1);
        i64::try_from(j).unwrap_or(0)
    }
}

/// splitmix64's finaliser: a good 64-bit mixing function.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A small seeded random stream (splitmix64), one per event or session.
pub(crate) struct Rng(u64);

impl Rng {
    /// A stream determined by `seed` and `key`.
    pub fn new(seed: u64, key: u64) -> Self {
        Rng(mix(seed ^ mix(key)))
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// The spec's options, read one by one; [`Options::finish`] rejects any left unread.
pub(crate) struct Options<'a> {
    all: &'a BTreeMap<String, serde_json::Value>,
    read: Vec<&'static str>,
}

fn invalid(option: &str, message: impl Into<String>) -> GeneratorError {
    GeneratorError::InvalidOption {
        option: option.to_string(),
        message: message.into(),
    }
}

impl<'a> Options<'a> {
    fn new(all: &'a BTreeMap<String, serde_json::Value>) -> Self {
        Options {
            all,
            read: Vec::new(),
        }
    }

    fn get(&mut self, name: &'static str) -> Option<&'a serde_json::Value> {
        self.read.push(name);
        self.all.get(name)
    }

    /// An integer option.
    pub fn int(&mut self, name: &'static str, default: i64) -> Result<i64, GeneratorError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| invalid(name, format!("expected an integer, got {v}"))),
        }
    }

    /// A non-negative integer option.
    pub fn uint(&mut self, name: &'static str, default: u64) -> Result<u64, GeneratorError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| invalid(name, format!("expected a non-negative integer, got {v}"))),
        }
    }

    /// An integer option of at least `min`.
    pub fn uint_at_least(
        &mut self,
        name: &'static str,
        default: u64,
        min: u64,
    ) -> Result<u64, GeneratorError> {
        let v = self.uint(name, default)?;
        if v < min {
            return Err(invalid(name, format!("must be at least {min}, got {v}")));
        }
        Ok(v)
    }

    /// A fraction in `[0, 1]`.
    pub fn fraction(&mut self, name: &'static str, default: f64) -> Result<f64, GeneratorError> {
        let v = match self.get(name) {
            None => return Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| invalid(name, format!("expected a number, got {v}")))?,
        };
        if !(0.0..=1.0).contains(&v) {
            return Err(invalid(name, format!("must be between 0 and 1, got {v}")));
        }
        Ok(v)
    }

    /// Fails on the first option that nothing read.
    fn finish(self) -> Result<(), GeneratorError> {
        match self.all.keys().find(|k| !self.read.contains(&k.as_str())) {
            Some(unknown) => Err(GeneratorError::UnknownOption {
                option: unknown.clone(),
                known: self.read.join(", "),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
