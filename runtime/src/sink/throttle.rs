//! A sink's `maxRecordsPerSecond`: a token bucket in front of any sink. Records always go
//! through, but once the sink is ahead of its budget it asks the task to stop reading (see
//! [`Sink::backoff`]) until the debt is paid, so the whole pipeline slows down as it would
//! behind a slow external system, and the wait is counted as backpressure.

use super::{Sink, SinkError};
use crate::record::Record;
use std::time::{Duration, Instant};

/// A token bucket that may go into debt: `take` never refuses, `wait` says how long until the
/// debt is paid back at the configured rate.
#[derive(Clone, Debug)]
pub struct RateLimit {
    per_second: f64,
    /// Most tokens saved up while idle (a short burst: a tenth of a second's worth, at least one).
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// A full bucket refilling at `per_second` (which must be positive; the spec is validated).
    pub fn new(per_second: f64, now: Instant) -> Self {
        let per_second = if per_second.is_finite() && per_second > 0.0 {
            per_second
        } else {
            f64::MIN_POSITIVE
        };
        let capacity = (per_second / 10.0).max(1.0);
        RateLimit {
            per_second,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last = now;
    }

    /// Spends `n` tokens at `now` (the balance may go negative).
    pub fn take(&mut self, n: u64, now: Instant) {
        self.refill(now);
        self.tokens -= n as f64;
    }

    /// How long from `now` until the balance is back at zero; zero when it is not negative.
    pub fn wait(&self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        let balance = self.tokens + elapsed * self.per_second;
        if balance >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-balance / self.per_second)
        }
    }
}

/// Records a task reads from one input per round when its sinks have these limits: about a
/// tenth of a second's worth of the tightest limit (at least one), at most `max`. Reading less
/// keeps a throttled sink's output smooth (no bursts of a whole batch followed by long waits).
pub fn read_batch(limits: impl IntoIterator<Item = Option<f64>>, max: usize) -> usize {
    limits
        .into_iter()
        .flatten()
        .map(|rate| (rate / 10.0).ceil().clamp(1.0, max as f64) as usize)
        .min()
        .unwrap_or(max)
        .min(max)
}

/// Wraps `sink` in a [`Throttled`] sink when `max_records_per_second` is set.
pub fn limit(sink: Box<dyn Sink>, max_records_per_second: Option<f64>) -> Box<dyn Sink> {
    match max_records_per_second {
        Some(rate) => Box::new(Throttled {
            inner: sink,
            limit: RateLimit::new(rate, Instant::now()),
        }),
        None => sink,
    }
}

/// A sink with a rate limit; every other call goes to the wrapped sink unchanged.
pub struct Throttled {
    inner: Box<dyn Sink>,
    limit: RateLimit,
}

impl Sink for Throttled {
    fn on_restore(
        &mut self,
        restored: Option<u64>,
        position: Option<&serde_json::Value>,
    ) -> Result<(), SinkError> {
        self.inner.on_restore(restored, position)
    }

    fn write(&mut self, record: &Record) -> Result<(), SinkError> {
        self.inner.write(record)?;
        self.limit.take(1, Instant::now());
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.inner.flush()
    }

    fn prepare(&mut self, id: u64) -> Result<(), SinkError> {
        self.inner.prepare(id)
    }

    fn position(&self) -> Option<serde_json::Value> {
        self.inner.position()
    }
    fn commit(&mut self, id: u64) -> Result<(), SinkError> {
        self.inner.commit(id)
    }

    fn backoff(&self) -> Duration {
        self.limit.wait(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_runs_into_debt_that_is_paid_back_at_the_rate() {
        let t0 = Instant::now();
        let mut l = RateLimit::new(10.0, t0);
        // capacity is one record at 10/s: the first is free, the next 20 cost 2 s.
        l.take(1, t0);
        assert_eq!(l.wait(t0), Duration::ZERO);
        l.take(20, t0);
        assert_eq!(l.wait(t0), ms(2000));
        assert_eq!(l.wait(t0 + ms(500)), ms(1500));
        assert_eq!(l.wait(t0 + ms(2000)), Duration::ZERO);
        // idle time saves up no more than the capacity
        let later = t0 + Duration::from_secs(60);
        l.take(2, later);
        assert_eq!(l.wait(later), ms(100));
    }

    #[test]
    fn a_high_rate_allows_a_tenth_of_a_second_burst() {
        let t0 = Instant::now();
        let mut l = RateLimit::new(1000.0, t0);
        l.take(100, t0);
        assert_eq!(l.wait(t0), Duration::ZERO);
        l.take(50, t0);
        assert_eq!(l.wait(t0), ms(50));
    }

    #[test]
    fn the_tightest_limit_sets_the_read_batch() {
        assert_eq!(read_batch([None, None], 1024), 1024);
        assert_eq!(read_batch([None, Some(200.0), Some(55.0)], 1024), 6);
        assert_eq!(read_batch([Some(0.5)], 1024), 1);
        assert_eq!(read_batch([Some(1e9)], 1024), 1024);
    }

    struct Counting(u64);
    impl Sink for Counting {
        fn write(&mut self, _record: &Record) -> Result<(), SinkError> {
            self.0 += 1;
            Ok(())
        }
    }

    #[test]
    fn only_a_configured_limit_wraps_the_sink_and_asks_for_a_wait() {
        let unlimited = limit(Box::new(Counting(0)), None);
        assert_eq!(unlimited.backoff(), Duration::ZERO);
        let mut limited = limit(Box::new(Counting(0)), Some(2.0));
        let rec = Record::new(0, weir_expr::Value::Null, 0);
        for _ in 0..5 {
            assert!(limited.write(&rec).is_ok());
        }
        // one free record, four more at 2/s: about 2 s to wait
        let wait = limited.backoff();
        assert!(wait > ms(1900) && wait <= ms(2000), "{wait:?}");
    }
}
