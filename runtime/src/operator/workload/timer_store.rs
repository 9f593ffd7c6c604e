//! Event-time timers of a workload operator, kept by its adapter next to its state.
//!
//! The workload operators register about one event-time timer per record (pattern and
//! accumulate release each key's buffered records at their timestamp) or per key (splice), and
//! most of those fire before the next checkpoint. This store persists only what a checkpoint
//! must hold: a timer registered and fired between two flushes is never written, and a delete
//! is written only for a timer that was persisted. Timers are fired in `(time, key)` order, and
//! registering the same `(time, key)` twice yields one firing.
//!
//! Each timer is one allocation holding its RocksDB key suffix (order-preserving time, then the
//! key), so the in-memory order is the on-disk order and a flush writes in key order without
//! sorting or copying.
//!
//! Layout in the operator's column family: `\x02wtimers\x00` + big-endian order-preserving
//! time + key, empty value.

use crate::state::{StateError, StateHandle};
use std::cmp::Ordering;
use std::collections::BTreeMap;

const PREFIX: &[u8] = b"\x02wtimers\x00";

/// A timer's RocksDB key without [`PREFIX`]: order-preserving time, then the key's bytes.
/// Ordered like its bytes, comparing the time as one integer first.
#[derive(PartialEq, Eq)]
struct TimerKey(Box<[u8]>);

impl TimerKey {
    fn time_bits(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(b)
    }
}

impl Ord for TimerKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.time_bits()
            .cmp(&other.time_bits())
            .then_with(|| self.0[8..].cmp(&other.0[8..]))
    }
}

impl PartialOrd for TimerKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One operator's event-time timers.
#[derive(Default)]
pub struct EventTimers {
    /// Every registered timer, with whether RocksDB holds it.
    due: BTreeMap<TimerKey, bool>,
    /// Persisted timers fired since the last flush (to delete from RocksDB).
    fired: Vec<TimerKey>,
}

fn encode(time: i64, key: &str) -> TimerKey {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&((time as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    TimerKey(k.into_boxed_slice())
}

fn time_of(k: &[u8]) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&k[..8]);
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

impl EventTimers {
    /// Loads the timers persisted in `state`.
    pub fn load(state: &StateHandle) -> Result<Self, StateError> {
        let mut t = EventTimers::default();
        for (k, _) in state.scan_prefix(PREFIX)? {
            let rest = &k[PREFIX.len()..];
            if rest.len() < 8 || std::str::from_utf8(&rest[8..]).is_err() {
                continue;
            }
            t.due.insert(TimerKey(rest.into()), true);
        }
        Ok(t)
    }

    /// Registers a timer for `key` at `time` (idempotent).
    pub fn register(&mut self, time: i64, key: &str) {
        self.due.entry(encode(time, key)).or_insert(false);
    }

    /// Whether a timer is due at `watermark` (time <= watermark).
    pub fn has_due(&self, watermark: i64) -> bool {
        self.due
            .first_key_value()
            .is_some_and(|(first, _)| time_of(&first.0) <= watermark)
    }

    /// Removes and returns the earliest timer due at `watermark` (time <= watermark).
    pub fn pop_due(&mut self, watermark: i64) -> Option<(i64, String)> {
        let (first, _) = self.due.first_key_value()?;
        if time_of(&first.0) > watermark {
            return None;
        }
        let (k, persisted) = self.due.pop_first()?;
        let time = time_of(&k.0);
        let key = String::from_utf8_lossy(&k.0[8..]).into_owned();
        if persisted {
            self.fired.push(k);
        }
        Some((time, key))
    }

    /// Number of registered timers.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// Whether no timers are registered.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }

    /// Writes the changes since the last flush to `state`.
    pub fn flush(&mut self, state: &StateHandle) -> Result<(), StateError> {
        // A persisted timer fired and registered again is still in RocksDB: keep it.
        let mut fired = std::mem::take(&mut self.fired);
        fired.retain(|k| match self.due.get_mut(k) {
            Some(persisted) => {
                *persisted = true;
                false
            }
            None => true,
        });
        fired.sort_unstable();
        state.write_ordered(PREFIX, fired.iter().map(|k| (&k.0[..], None)))?;
        let added = self
            .due
            .iter()
            .filter(|(_, persisted)| !**persisted)
            .map(|(k, _)| (&k.0[..], Some(&[][..])));
        state.write_ordered(PREFIX, added)?;
        for persisted in self.due.values_mut() {
            *persisted = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{operator_cf, StateStore};

    #[test]
    fn fire_in_order_persist_only_what_outlives_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("x");
        let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        let h = store.handle(&cf);
        let mut t = EventTimers::default();
        t.register(20, "b");
        t.register(-5, "a");
        t.register(20, "b");
        t.register(30, "c");
        assert_eq!(t.len(), 3);
        assert_eq!(t.pop_due(25), Some((-5, "a".to_string())));
        t.flush(&h).unwrap();
        // only b and c were written; a fired before the flush
        assert_eq!(h.scan_prefix(PREFIX).unwrap().len(), 2);
        assert_eq!(t.pop_due(25), Some((20, "b".to_string())));
        assert_eq!(t.pop_due(25), None);
        t.register(40, "d");
        t.flush(&h).unwrap();
        let mut loaded = EventTimers::load(&h).unwrap();
        assert_eq!(loaded.len(), 2, "b's deletion and d were written");
        assert_eq!(loaded.pop_due(i64::MAX), Some((30, "c".to_string())));
        assert_eq!(loaded.pop_due(i64::MAX), Some((40, "d".to_string())));
        assert!(loaded.is_empty());
    }

    #[test]
    fn a_persisted_timer_fired_and_registered_again_before_a_flush_stays_stored() {
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("x");
        let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        let h = store.handle(&cf);
        let mut t = EventTimers::default();
        t.register(i64::MIN, "low");
        t.register(10, "k");
        t.flush(&h).unwrap();
        assert_eq!(t.pop_due(i64::MIN), Some((i64::MIN, "low".to_string())));
        assert_eq!(t.pop_due(10), Some((10, "k".to_string())));
        t.register(10, "k");
        t.flush(&h).unwrap();
        let mut loaded = EventTimers::load(&h).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded.pop_due(i64::MAX), Some((10, "k".to_string())));
    }
}
