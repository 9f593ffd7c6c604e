//! Whether a job's lag (input delay or Kafka consumer lag) is growing: a least-squares trend
//! over recent samples.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Samples older than this are dropped.
pub const LAG_TREND_WINDOW_MS: i64 = 5 * 60 * 1000;
/// The samples must span at least this long before a trend is reported.
pub const LAG_TREND_MIN_SPAN_MS: i64 = 60 * 1000;

/// Recent `(time ms, lag ms)` samples of one job (serialisable with the engine state).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LagTrend {
    /// Samples, oldest first.
    pub samples: VecDeque<(i64, f64)>,
}

impl LagTrend {
    /// Adds a sample (a `None` lag clears the history) and returns whether lag is growing:
    /// samples span at least a minute, the newest is above the oldest, and the fitted slope is positive.
    pub fn observe(&mut self, now_ms: i64, lag_ms: Option<f64>) -> bool {
        let Some(lag) = lag_ms.filter(|l| l.is_finite()) else {
            self.samples.clear();
            return false;
        };
        if self.samples.back().is_some_and(|(t, _)| *t >= now_ms) {
            self.samples.pop_back();
        }
        self.samples.push_back((now_ms, lag));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| *t < now_ms - LAG_TREND_WINDOW_MS)
        {
            self.samples.pop_front();
        }
        self.growing()
    }

    /// Whether the current samples show growth.
    pub fn growing(&self) -> bool {
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return false;
        };
        if self.samples.len() < 3 || last.0 - first.0 < LAG_TREND_MIN_SPAN_MS || last.1 <= first.1 {
            return false;
        }
        let n = self.samples.len() as f64;
        let t0 = first.0;
        let mean_t = self
            .samples
            .iter()
            .map(|(t, _)| (t - t0) as f64)
            .sum::<f64>()
            / n;
        let mean_l = self.samples.iter().map(|(_, l)| l).sum::<f64>() / n;
        let cov: f64 = self
            .samples
            .iter()
            .map(|(t, l)| ((t - t0) as f64 - mean_t) * (l - mean_l))
            .sum();
        cov > 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_growth_is_growing_noise_and_recovery_are_not() {
        let mut t = LagTrend::default();
        assert!(!t.observe(0, Some(1000.0)));
        assert!(
            !t.observe(30_000, Some(2000.0)),
            "needs a minute of samples"
        );
        assert!(t.observe(60_000, Some(3000.0)));
        let mut flat = LagTrend::default();
        for (i, l) in [1000.0, 1500.0, 900.0, 1000.0].into_iter().enumerate() {
            flat.observe(i as i64 * 30_000, Some(l));
        }
        assert!(!flat.growing());
        assert!(
            !t.observe(90_000, Some(500.0)),
            "lag back below where it started"
        );
    }

    #[test]
    fn old_samples_leave_the_window_and_missing_lag_clears() {
        let mut t = LagTrend::default();
        for i in 0..20 {
            t.observe(i * 60_000, Some(i as f64));
        }
        assert!(t.samples.len() <= 6);
        assert!(t.growing());
        assert!(!t.observe(20 * 60_000, None));
        assert!(t.samples.is_empty());
    }
}
