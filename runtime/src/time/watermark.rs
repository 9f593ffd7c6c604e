//! Bounded-out-of-orderness watermarks per input partition, and the task watermark over them.
//!
//! A partition's watermark is `max event time seen − maxOutOfOrderness − 1` (Flink's convention:
//! a record whose time equals the watermark is late). The task watermark is the minimum over its
//! partitions, except that exhausted partitions do not count and partitions idle for longer than
//! their idle timeout do not hold it back. It never goes backwards.
//!
//! A partition of a repartition or exchange topic is written by every upstream task; its
//! watermark is not guessed from its records but announced by those tasks
//! ([`PartitionWatermark::announce`]): the minimum over them, as across Flink's network
//! exchange, and the partition ends when every writer has ended.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Watermark of the task before any record was seen.
pub const NO_WATERMARK: i64 = i64::MIN;

/// Watermark state of one input partition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartitionWatermark {
    /// Largest event time seen (epoch ms), `i64::MIN` if none.
    pub max_ts: i64,
    /// Allowed out-of-orderness, ms.
    pub out_of_orderness_ms: i64,
    /// After this many ms without records the partition is idle; `None` = never idle.
    #[serde(default)]
    pub idle_timeout_ms: Option<i64>,
    /// Wall-clock ms of the last record (not persisted meaningfully; reset on restore).
    #[serde(default)]
    pub last_active_ms: i64,
    /// The partition has ended (bounded source exhausted).
    #[serde(default)]
    pub exhausted: bool,
    /// For a partition of a repartition or exchange topic: how many tasks write it. Its
    /// watermark is then the minimum of what they announced (none until each has), and it
    /// ends when each has announced its end; 0 for any other partition.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub writers: u32,
    /// Per writing task, the watermark it announced last.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub announced: BTreeMap<i64, i64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl PartitionWatermark {
    /// A partition with the given bounds that has seen nothing yet.
    pub fn new(out_of_orderness_ms: i64, idle_timeout_ms: Option<i64>, now_ms: i64) -> Self {
        PartitionWatermark {
            max_ts: i64::MIN,
            out_of_orderness_ms,
            idle_timeout_ms,
            last_active_ms: now_ms,
            exhausted: false,
            writers: 0,
            announced: BTreeMap::new(),
        }
    }

    /// A partition whose watermark `writers` tasks announce (a repartition topic's).
    pub fn announced_by(writers: u32, now_ms: i64) -> Self {
        PartitionWatermark {
            writers: writers.max(1),
            ..PartitionWatermark::new(0, None, now_ms)
        }
    }

    /// Writer `writer` announced `watermark` (an announcing partition; see
    /// [`PartitionWatermark::announced_by`]). Returns whether the partition's watermark moved;
    /// the partition is exhausted once every writer announced its end (`i64::MAX`).
    pub fn announce(&mut self, writer: i64, watermark: i64, now_ms: i64) -> bool {
        self.last_active_ms = now_ms;
        let before = self.current();
        let slot = self.announced.entry(writer).or_insert(i64::MIN);
        *slot = (*slot).max(watermark);
        self.exhausted = self.exhausted || self.every_writer_ended();
        self.current() != before
    }

    /// Takes the announcements a checkpoint stored (a partition whose writers all ended before
    /// it stays ended).
    pub fn restore_announced(&mut self, announced: BTreeMap<i64, i64>) {
        self.announced = announced;
        self.exhausted = self.writers > 0 && self.every_writer_ended();
    }

    fn every_writer_ended(&self) -> bool {
        let writers = usize::try_from(self.writers).unwrap_or(usize::MAX);
        self.announced.len() >= writers && self.announced.values().all(|w| *w == i64::MAX)
    }

    /// Records a record's event time; returns true if the partition watermark moved.
    pub fn observe(&mut self, ts: i64, now_ms: i64) -> bool {
        self.last_active_ms = now_ms;
        if ts > self.max_ts {
            self.max_ts = ts;
            true
        } else {
            false
        }
    }

    /// The partition's watermark.
    pub fn current(&self) -> i64 {
        if self.exhausted {
            return i64::MAX;
        }
        if self.writers > 0 {
            let writers = usize::try_from(self.writers).unwrap_or(usize::MAX);
            return match self.announced.values().min() {
                Some(&min) if self.announced.len() >= writers => min,
                _ => NO_WATERMARK,
            };
        }
        if self.max_ts == i64::MIN {
            return NO_WATERMARK;
        }
        self.max_ts
            .saturating_sub(self.out_of_orderness_ms)
            .saturating_sub(1)
    }

    /// Whether the partition has been idle past its timeout at `now_ms`.
    pub fn is_idle(&self, now_ms: i64) -> bool {
        self.idle_timeout_ms
            .is_some_and(|t| now_ms.saturating_sub(self.last_active_ms) >= t)
    }
}

/// The task watermark over `parts` at `now_ms`, never below `previous`.
///
/// Idle partitions are skipped; if every live partition is idle the largest of their
/// watermarks is used so that an entirely quiet input still lets time advance.
pub fn task_watermark<'a>(
    parts: impl IntoIterator<Item = &'a PartitionWatermark>,
    previous: i64,
    now_ms: i64,
) -> i64 {
    let mut min_active: Option<i64> = None;
    let mut max_idle: Option<i64> = None;
    for p in parts {
        let w = p.current();
        if !p.exhausted && p.is_idle(now_ms) {
            max_idle = Some(max_idle.map_or(w, |m| m.max(w)));
        } else {
            min_active = Some(min_active.map_or(w, |m| m.min(w)));
        }
    }
    let candidate = match (min_active, max_idle) {
        (Some(a), _) => a,
        (None, Some(i)) => i,
        (None, None) => i64::MAX,
    };
    candidate.max(previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announced_partition_waits_for_every_writer_and_ends_with_the_last() {
        let mut p = PartitionWatermark::announced_by(3, 0);
        assert!(!p.announce(0, 5_000, 1));
        assert!(!p.announce(1, 7_000, 1));
        assert_eq!(p.current(), NO_WATERMARK, "writer 2 has not announced");
        assert!(p.announce(2, 6_000, 1));
        assert_eq!(p.current(), 5_000, "the minimum over the writers");
        // records far ahead of the announcements do not move it
        p.observe(90_000, 2);
        assert_eq!(p.current(), 5_000);
        assert!(!p.announce(0, 4_000, 3), "announcements never go backwards");
        for w in 0..3 {
            p.announce(w, i64::MAX, 4);
        }
        assert!(p.exhausted);
        assert_eq!(p.current(), i64::MAX);
        // what a checkpoint stores restores the same watermark
        let json = serde_json::to_string(&PartitionWatermark {
            exhausted: false,
            ..PartitionWatermark::announced_by(2, 0)
        })
        .unwrap();
        let mut back: PartitionWatermark = serde_json::from_str(&json).unwrap();
        back.announce(0, 10, 0);
        back.announce(1, 20, 0);
        let again: PartitionWatermark =
            serde_json::from_str(&serde_json::to_string(&back).unwrap()).unwrap();
        assert_eq!(again.current(), 10);
        let mut restored = PartitionWatermark::announced_by(2, 0);
        restored.restore_announced([(0, i64::MAX), (1, i64::MAX)].into());
        assert!(
            restored.exhausted,
            "writers that ended before the checkpoint stay ended"
        );
    }

    #[test]
    fn partition_watermark_lags_max_by_out_of_orderness() {
        let mut p = PartitionWatermark::new(5_000, None, 0);
        assert_eq!(p.current(), NO_WATERMARK);
        p.observe(10_000, 0);
        p.observe(8_000, 0);
        assert_eq!(p.current(), 4_999);
    }

    #[test]
    fn task_watermark_is_min_over_partitions_and_monotonic() {
        let mut a = PartitionWatermark::new(0, None, 0);
        let mut b = PartitionWatermark::new(0, None, 0);
        a.observe(100, 0);
        b.observe(50, 0);
        assert_eq!(task_watermark(&[a.clone(), b.clone()], NO_WATERMARK, 0), 49);
        // never goes back
        assert_eq!(task_watermark(&[a.clone(), b.clone()], 70, 0), 70);
        b.exhausted = true;
        assert_eq!(task_watermark(&[a, b], NO_WATERMARK, 0), 99);
    }

    #[test]
    fn idle_partition_does_not_hold_back() {
        let mut a = PartitionWatermark::new(0, Some(1_000), 0);
        let mut b = PartitionWatermark::new(0, Some(1_000), 0);
        a.observe(100, 5_000);
        b.observe(10, 0);
        // at 5_500 b is idle (last active 0), a is not
        assert_eq!(
            task_watermark(&[a.clone(), b.clone()], NO_WATERMARK, 5_500),
            99
        );
        // before b's timeout, b holds the task back
        assert_eq!(
            task_watermark(&[a.clone(), b.clone()], NO_WATERMARK, 500),
            9
        );
        // both idle: the largest idle watermark
        assert_eq!(task_watermark(&[a, b], NO_WATERMARK, 60_000), 99);
    }

    #[test]
    fn all_exhausted_is_end_of_time() {
        let mut a = PartitionWatermark::new(0, None, 0);
        a.exhausted = true;
        assert_eq!(task_watermark(&[a], NO_WATERMARK, 0), i64::MAX);
    }
}
