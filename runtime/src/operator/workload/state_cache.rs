//! The workload operators' keyed state in the task's RocksDB, behind a write-back cache tuned
//! for their access pattern: every record takes its key's value out and usually puts it back.
//!
//! - A hit takes and puts in place: no key allocation, no RocksDB access.
//! - A key created and removed between two checkpoints (a pattern's partial match, a splice
//!   sample that fired) never reaches RocksDB: the cache remembers which keys RocksDB holds
//!   and writes deletes only for those.
//! - When the cache is full it writes its dirty entries and evicts removed keys and half of the
//!   clean ones, instead of dropping everything (which made every live key a RocksDB read
//!   again).
//! - Keys are hashed with a fast multiplicative hash (the state is the task's own, not
//!   attacker-facing), values are JSON in RocksDB (the same layout as [`crate::state::KeyedState`]:
//!   `<name>\0<key>`), so checkpoints of earlier builds restore.
//!
//! [`flush`](WorkloadState::flush) writes every dirty entry; the adapter calls it at each
//! checkpoint barrier.

use super::{StateBackendError, StateMap};
use crate::state::StateHandle;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A fast non-cryptographic hasher for state keys (multiply-rotate over 8-byte words).
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl KeyHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        // spread the high bits down: hashbrown takes its control bits from the top
        self.0 ^ (self.0 >> 29)
    }
}

/// A `HashMap` keyed by state keys with [`KeyHasher`].
pub type KeyMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

struct Slot<V> {
    /// The current value (`None`: removed).
    value: Option<V>,
    /// Differs from what RocksDB holds.
    dirty: bool,
    /// RocksDB holds a value for this key (so a removal must be written).
    stored: bool,
}

/// One workload operator's keyed state: RocksDB behind a write-back cache.
pub struct WorkloadState<V> {
    handle: StateHandle,
    prefix: Vec<u8>,
    /// `prefix` followed by the key of the last RocksDB read (reused, no allocation per miss).
    read_key: Vec<u8>,
    cache: KeyMap<String, Slot<V>>,
    capacity: usize,
}

fn backend(action: &str, e: impl std::fmt::Display) -> StateBackendError {
    StateBackendError(format!("{action}: {e}"))
}

impl<V: Serialize + DeserializeOwned> WorkloadState<V> {
    /// The state named `name` (a key prefix) in `handle`'s column family, caching up to
    /// `capacity` keys.
    pub fn new(handle: StateHandle, name: &str, capacity: usize) -> Self {
        let mut prefix = name.as_bytes().to_vec();
        prefix.push(0);
        WorkloadState {
            handle,
            read_key: prefix.clone(),
            prefix,
            cache: KeyMap::default(),
            capacity: capacity.max(16),
        }
    }

    /// Reads `key`'s value from RocksDB, decoding it straight from the pinned bytes.
    fn read(&mut self, key: &str) -> Result<Option<V>, StateBackendError> {
        self.read_key.truncate(self.prefix.len());
        self.read_key.extend_from_slice(key.as_bytes());
        let decoded = self
            .handle
            .get_with(&self.read_key, |bytes| serde_json::from_slice::<V>(bytes))
            .map_err(|e| backend("reading", e))?;
        match decoded {
            None => Ok(None),
            Some(Ok(v)) => Ok(Some(v)),
            Some(Err(e)) => Err(backend(&format!("decoding the value of key '{key}'"), e)),
        }
    }

    /// Writes every dirty entry to RocksDB (one batch, WAL off).
    pub fn flush(&mut self) -> Result<(), StateBackendError> {
        let mut ops = Vec::new();
        for (k, slot) in self.cache.iter_mut().filter(|(_, s)| s.dirty) {
            if slot.value.is_none() && !slot.stored {
                slot.dirty = false; // created and removed since the last flush
                continue;
            }
            let mut key = Vec::with_capacity(self.prefix.len() + k.len());
            key.extend_from_slice(&self.prefix);
            key.extend_from_slice(k.as_bytes());
            let value = match &slot.value {
                Some(v) => Some(serde_json::to_vec(v).map_err(|e| backend("encoding", e))?),
                None => None,
            };
            slot.stored = value.is_some();
            slot.dirty = false;
            ops.push((key, value));
        }
        if ops.is_empty() {
            return Ok(());
        }
        self.handle
            .write_batch(ops)
            .map_err(|e| backend("writing", e))
    }

    /// Makes room: writes dirty entries, forgets removed keys, then evicts clean entries
    /// until the cache is half full.
    fn make_room(&mut self) -> Result<(), StateBackendError> {
        self.flush()?;
        self.cache.retain(|_, s| s.value.is_some());
        let target = self.capacity / 2;
        if self.cache.len() > target {
            let mut excess = self.cache.len() - target;
            self.cache.retain(|_, _| {
                if excess > 0 {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
        Ok(())
    }

    /// The column family this state lives in.
    pub fn handle(&self) -> &StateHandle {
        &self.handle
    }

    /// Number of cached keys (live or removed).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

impl<V: Serialize + DeserializeOwned> StateMap<V> for WorkloadState<V> {
    fn take(&mut self, key: &str) -> Result<Option<V>, StateBackendError> {
        if let Some(slot) = self.cache.get_mut(key) {
            if slot.value.is_some() {
                slot.dirty = true;
            }
            return Ok(slot.value.take());
        }
        let Some(value) = self.read(key)? else {
            return Ok(None);
        };
        if self.cache.len() >= self.capacity {
            self.make_room()?;
        }
        // taken out: RocksDB still holds it, so a removal must be written unless it is put back
        self.cache.insert(
            key.to_string(),
            Slot {
                value: None,
                dirty: true,
                stored: true,
            },
        );
        Ok(Some(value))
    }

    fn put(&mut self, key: &str, value: V) -> Result<(), StateBackendError> {
        if let Some(slot) = self.cache.get_mut(key) {
            slot.value = Some(value);
            slot.dirty = true;
            return Ok(());
        }
        if self.cache.len() >= self.capacity {
            self.make_room()?;
        }
        self.cache.insert(
            key.to_string(),
            Slot {
                value: Some(value),
                dirty: true,
                stored: false,
            },
        );
        Ok(())
    }
}

impl<V> WorkloadState<V> {
    /// Whether RocksDB holds `key` as far as the cache knows (for tests).
    #[cfg(test)]
    fn stored(&self, key: &str) -> Option<bool> {
        self.cache.get(key).map(|s| s.stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{operator_cf, StateStore};

    #[test]
    fn values_survive_flush_eviction_and_reopen_and_removals_reach_rocksdb() {
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("w");
        let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        let mut s: WorkloadState<u64> = WorkloadState::new(store.handle(&cf), "workload", 16);
        for i in 0..100u64 {
            s.put(&format!("k{i}"), i).unwrap();
            assert!(s.cached() <= 16, "the cache stays within its capacity");
        }
        // read-modify-write of an evicted key, removal of another
        let v = s.take("k5").unwrap().unwrap();
        s.put("k5", v + 1000).unwrap();
        assert_eq!(s.take("k7").unwrap(), Some(7));
        s.flush().unwrap();
        let mut fresh: WorkloadState<u64> = WorkloadState::new(store.handle(&cf), "workload", 16);
        assert_eq!(fresh.take("k5").unwrap(), Some(1005));
        assert_eq!(fresh.take("k99").unwrap(), Some(99));
        assert_eq!(fresh.take("k7").unwrap(), None, "the removal was written");
        // same layout as KeyedState: a value written by it is read here
        let mut ks = crate::state::KeyedState::<u64>::new(store.handle(&cf), "workload", 16);
        assert_eq!(ks.get("k0").unwrap(), Some(&0));
    }

    #[test]
    fn keys_created_and_removed_between_flushes_never_reach_rocksdb() {
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("w");
        let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        let mut s: WorkloadState<u64> = WorkloadState::new(store.handle(&cf), "workload", 1024);
        s.put("short", 1).unwrap();
        assert_eq!(s.take("short").unwrap(), Some(1));
        s.put("kept", 2).unwrap();
        s.flush().unwrap();
        assert_eq!(s.stored("short"), Some(false));
        assert_eq!(s.stored("kept"), Some(true));
        assert_eq!(
            store.handle(&cf).scan_prefix(b"workload\0").unwrap().len(),
            1
        );
    }
}
