//! Event-time timers of a workload operator, kept by its adapter next to its state.
//!
//! The workload operators register about one event-time timer per record (pattern and
//! accumulate release each key's buffered records at their timestamp), and most of those fire
//! before the next checkpoint. This store persists only what a checkpoint must hold: a timer
//! registered and fired between two flushes is never written, and a delete is written only
//! for a timer that was persisted. Timers are fired in `(time, key)` order, and registering the
//! same `(time, key)` twice yields one firing.
//!
//! Layout in the operator's column family: `\x02wtimers\x00` + big-endian order-preserving
//! time + key, empty value.

use super::state_cache::KeyMap;
use crate::state::{StateError, StateHandle};
use std::collections::BTreeSet;
use std::sync::Arc;

const PREFIX: &[u8] = b"\x02wtimers\x00";

type Entry = (i64, Arc<str>);

/// One operator's event-time timers.
#[derive(Default)]
pub struct EventTimers {
    due: BTreeSet<Entry>,
    /// Registered since the last flush (not in RocksDB).
    added: KeyMap<Entry, ()>,
    /// Persisted timers fired since the last flush (to delete from RocksDB).
    removed: KeyMap<Entry, ()>,
}

fn encode(time: i64, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(PREFIX.len() + 8 + key.len());
    k.extend_from_slice(PREFIX);
    k.extend_from_slice(&((time as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

impl EventTimers {
    /// Loads the timers persisted in `state`.
    pub fn load(state: &StateHandle) -> Result<Self, StateError> {
        let mut t = EventTimers::default();
        for (k, _) in state.scan_prefix(PREFIX)? {
            let rest = &k[PREFIX.len()..];
            if rest.len() < 8 {
                continue;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&rest[..8]);
            let time = (u64::from_be_bytes(b) ^ (1 << 63)) as i64;
            let key: Arc<str> = String::from_utf8_lossy(&rest[8..]).into();
            t.due.insert((time, key));
        }
        Ok(t)
    }

    /// Registers a timer for `key` at `time` (idempotent).
    pub fn register(&mut self, time: i64, key: Arc<str>) {
        let entry: Entry = (time, key);
        if self.due.insert(entry.clone()) && self.removed.remove(&entry).is_none() {
            self.added.insert(entry, ());
        }
    }

    /// Removes and returns the earliest timer due at `watermark` (time <= watermark).
    pub fn pop_due(&mut self, watermark: i64) -> Option<(i64, Arc<str>)> {
        if self.due.first()?.0 > watermark {
            return None;
        }
        let entry = self.due.pop_first()?;
        if self.added.remove(&entry).is_none() {
            self.removed.insert(entry.clone(), ());
        }
        Some(entry)
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
        if self.added.is_empty() && self.removed.is_empty() {
            return Ok(());
        }
        let deletes = self
            .removed
            .drain()
            .map(|((t, k), ())| (encode(t, &k), None));
        let puts = self
            .added
            .drain()
            .map(|((t, k), ())| (encode(t, &k), Some(Vec::new())));
        let ops: Vec<_> = deletes.chain(puts).collect();
        state.write_batch(ops)
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
        t.register(20, Arc::from("b"));
        t.register(-5, Arc::from("a"));
        t.register(20, Arc::from("b"));
        t.register(30, Arc::from("c"));
        assert_eq!(t.len(), 3);
        assert_eq!(t.pop_due(25), Some((-5, Arc::from("a"))));
        t.flush(&h).unwrap();
        // only b and c were written; a fired before the flush
        assert_eq!(h.scan_prefix(PREFIX).unwrap().len(), 2);
        assert_eq!(t.pop_due(25), Some((20, Arc::from("b"))));
        assert_eq!(t.pop_due(25), None);
        t.register(40, Arc::from("d"));
        t.flush(&h).unwrap();
        let mut loaded = EventTimers::load(&h).unwrap();
        assert_eq!(loaded.len(), 2, "b's deletion and d were written");
        assert_eq!(loaded.pop_due(i64::MAX), Some((30, Arc::from("c"))));
        assert_eq!(loaded.pop_due(i64::MAX), Some((40, Arc::from("d"))));
        assert!(loaded.is_empty());
    }
}
