//! Per-operator timers on event time and processing time, keyed by a state key, persisted in
//! the operator's column family at each checkpoint.

use crate::state::{StateError, StateHandle};
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};

/// Which clock a timer runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeDomain {
    /// Fires when the task watermark reaches the timer's time.
    EventTime,
    /// Fires when the wall clock reaches the timer's time.
    ProcessingTime,
}

/// A due timer handed to an operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    /// The clock.
    pub domain: TimeDomain,
    /// When it fires, epoch ms.
    pub time: i64,
    /// The key the operator registered it under.
    pub key: String,
}

const PREFIX: &[u8] = b"\x01timers\x00";

/// The timers of one operator in one task.
#[derive(Default)]
pub struct TimerService {
    event: BTreeSet<(i64, String)>,
    processing: BTreeSet<(i64, String)>,
    changes: HashMap<(TimeDomain, i64, String), Change>,
}

/// A timer changed since the last flush: whether the flushed state has it, and whether it
/// is registered now (a timer registered and fired between two flushes writes nothing).
#[derive(Clone, Copy)]
struct Change {
    persisted: bool,
    present: bool,
}

impl TimerService {
    /// Registers a timer (idempotent).
    pub fn register(&mut self, domain: TimeDomain, time: i64, key: &str) {
        let set = match domain {
            TimeDomain::EventTime => &mut self.event,
            TimeDomain::ProcessingTime => &mut self.processing,
        };
        if set.insert((time, key.to_string())) {
            self.record(domain, time, key.to_string(), true);
        }
    }

    /// Notes that a timer was added or removed (the set changed). A timer back in its
    /// flushed state (registered and fired between two flushes) is forgotten, so the changes
    /// stay as many as the timers that differ from the flushed ones.
    fn record(&mut self, domain: TimeDomain, time: i64, key: String, present: bool) {
        match self.changes.entry((domain, time, key)) {
            Entry::Occupied(change) if change.get().persisted == present => {
                change.remove();
            }
            Entry::Occupied(mut change) => change.get_mut().present = present,
            Entry::Vacant(v) => {
                v.insert(Change {
                    persisted: !present,
                    present,
                });
            }
        }
    }

    /// Deletes a timer if present.
    pub fn delete(&mut self, domain: TimeDomain, time: i64, key: &str) {
        let set = match domain {
            TimeDomain::EventTime => &mut self.event,
            TimeDomain::ProcessingTime => &mut self.processing,
        };
        let k = (time, key.to_string());
        if set.remove(&k) {
            self.record(domain, time, k.1, false);
        }
    }

    /// Removes and returns the earliest timer of `domain` due at `now` (time <= now).
    pub fn pop_due(&mut self, domain: TimeDomain, now: i64) -> Option<Timer> {
        let set = match domain {
            TimeDomain::EventTime => &mut self.event,
            TimeDomain::ProcessingTime => &mut self.processing,
        };
        let first = set.first()?;
        if first.0 > now {
            return None;
        }
        let (time, key) = set.pop_first()?;
        self.record(domain, time, key.clone(), false);
        Some(Timer { domain, time, key })
    }

    /// Number of registered timers.
    pub fn len(&self) -> usize {
        self.event.len() + self.processing.len()
    }

    /// Whether no timers are registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn encode(domain: TimeDomain, time: i64, key: &str) -> Vec<u8> {
        let mut k = PREFIX.to_vec();
        k.push(match domain {
            TimeDomain::EventTime => b'e',
            TimeDomain::ProcessingTime => b'p',
        });
        // order-preserving encoding of i64
        k.extend_from_slice(&((time as u64) ^ (1 << 63)).to_be_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// Writes the changes since the last flush.
    pub fn flush(&mut self, state: &StateHandle) -> Result<(), StateError> {
        if self.changes.is_empty() {
            return Ok(());
        }
        let ops: Vec<_> = self
            .changes
            .drain()
            .filter(|(_, c)| c.present != c.persisted)
            .map(|((d, t, k), c)| (Self::encode(d, t, &k), c.present.then(Vec::new)))
            .collect();
        if ops.is_empty() {
            return Ok(());
        }
        state.write_batch(ops)
    }

    /// Loads all persisted timers.
    pub fn load(state: &StateHandle) -> Result<TimerService, StateError> {
        let mut s = TimerService::default();
        for (k, _) in state.scan_prefix(PREFIX)? {
            let rest = &k[PREFIX.len()..];
            if rest.len() < 9 {
                continue;
            }
            let mut t = [0u8; 8];
            t.copy_from_slice(&rest[1..9]);
            let time = (u64::from_be_bytes(t) ^ (1 << 63)) as i64;
            let key = String::from_utf8_lossy(&rest[9..]).to_string();
            match rest[0] {
                b'e' => s.event.insert((time, key)),
                _ => s.processing.insert((time, key)),
            };
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{operator_cf, StateStore};

    #[test]
    fn timers_fire_in_order_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("x");
        let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        let h = store.handle(&cf);
        let mut t = TimerService::default();
        t.register(TimeDomain::EventTime, 20, "b");
        t.register(TimeDomain::EventTime, -5, "a");
        t.register(TimeDomain::EventTime, 30, "c");
        t.delete(TimeDomain::EventTime, 30, "c");
        t.flush(&h).unwrap();
        let mut loaded = TimerService::load(&h).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded.pop_due(TimeDomain::EventTime, 25).unwrap().key, "a");
        assert_eq!(loaded.pop_due(TimeDomain::EventTime, 25).unwrap().time, 20);
        assert_eq!(loaded.pop_due(TimeDomain::EventTime, 25), None);
    }

    #[test]
    fn only_changes_against_the_flushed_timers_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("x");
        let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        let h = store.handle(&cf);
        let stored = |h: &StateHandle| h.scan_prefix(PREFIX).unwrap().len();
        let mut t = TimerService::default();
        t.register(TimeDomain::EventTime, 10, "fired-before-flush");
        t.register(TimeDomain::EventTime, 20, "kept");
        assert_eq!(t.pop_due(TimeDomain::EventTime, 15).unwrap().time, 10);
        assert_eq!(
            t.changes.len(),
            1,
            "a timer registered and fired leaves no change"
        );
        t.flush(&h).unwrap();
        assert_eq!(stored(&h), 1);
        // removed and registered again between flushes: still stored, nothing to write
        t.delete(TimeDomain::EventTime, 20, "kept");
        t.register(TimeDomain::EventTime, 20, "kept");
        assert!(
            t.changes.is_empty(),
            "back to the flushed state: nothing to remember"
        );
        t.flush(&h).unwrap();
        assert_eq!(stored(&h), 1);
        assert_eq!(t.pop_due(TimeDomain::EventTime, 25).unwrap().key, "kept");
        t.flush(&h).unwrap();
        assert_eq!(stored(&h), 0);
        assert!(TimerService::load(&h).unwrap().is_empty());
    }
}
