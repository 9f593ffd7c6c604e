//! Task state: one RocksDB per task, a column family per operator, WAL off, and a
//! write-back cache ([`KeyedState`]) in front that is flushed on checkpoint or eviction.
//!
//! Durability comes from checkpoints, not from the WAL: after a crash the local database is
//! thrown away and the task restores from the checkpoint it is told to use.

pub mod codec;
pub mod entry_budget;
pub mod memory;

use entry_budget::EntryBudget;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Column family holding task-level data (not owned by an operator).
pub const TASK_CF: &str = "task";

/// A state operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Opening the database failed.
    #[error("opening state database {path}: {source}")]
    Open {
        /// Database directory.
        path: PathBuf,
        /// The RocksDB error.
        source: rocksdb::Error,
    },
    /// A read or write failed.
    #[error("state {action} in column family '{cf}': {message}")]
    Access {
        /// What was being done.
        action: &'static str,
        /// The column family.
        cf: String,
        /// Why it failed.
        message: String,
    },
    /// Taking the local hard-link checkpoint failed.
    #[error("creating local checkpoint at {path}: {source}")]
    Checkpoint {
        /// Target directory.
        path: PathBuf,
        /// The RocksDB error.
        source: rocksdb::Error,
    },
}

/// Share of the memtable's size given to its whole-key bloom filter (160 KB of an 8 MB
/// memtable: about 25 bits per entry of a full one).
const MEMTABLE_BLOOM_RATIO: f64 = 0.02;

/// Options of every column family: a bloom filter on each SST, so that looking up a key that
/// is not stored (a new key, the common case for dedup and windows) rarely reads a data block,
/// and one on the memtable, so that reading a key that lives in an SST does not search the
/// memtable's skip list first (with a million live keys that search was a third of a `Get`).
/// Memtables and block cache are sized by the task's [`memory::RocksMemory`], the block cache
/// (`cache`) shared by all of them.
fn column_family_options(memory: &memory::RocksMemory, cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(false);
    table.set_block_cache(cache);
    let mut cf = Options::default();
    cf.set_block_based_table_factory(&table);
    cf.set_write_buffer_size(memory.write_buffer_per_cf);
    cf.set_memtable_whole_key_filtering(true);
    cf.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO);
    cf
}

/// Operations per RocksDB write batch of [`StateHandle::write_ordered`] at most ...
pub const ORDERED_BATCH_OPS: usize = 32_768;
/// ... and bytes (a batch is written once it reaches this size).
pub const ORDERED_BATCH_BYTES: usize = 1 << 20;
/// Dirty entries [`KeyedState::flush`] encodes and writes at a time.
const FLUSH_CHUNK: usize = 4_096;

/// The column family name of an operator's state.
pub fn operator_cf(operator: &str) -> String {
    format!("op-{operator}")
}

/// One task's RocksDB.
pub struct StateStore {
    db: Arc<DB>,
    path: PathBuf,
    cfs: Vec<String>,
}

impl StateStore {
    /// Opens (creating if needed) the database at `path` with the given column families.
    ///
    /// Returns the store and the column families found in the database that are not in `cfs`
    /// (state that does not map onto the current graph).
    pub fn open(path: &Path, cfs: &[String]) -> Result<(StateStore, Vec<String>), StateError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(1);
        let memory = memory::from_env();
        opts.set_db_write_buffer_size(memory.write_buffers_total);
        let cache = Cache::new_lru_cache(memory.block_cache);
        let existing = DB::list_cf(&opts, path).unwrap_or_default();
        let mut all: Vec<String> = cfs.to_vec();
        if !all.iter().any(|c| c == TASK_CF) {
            all.push(TASK_CF.to_string());
        }
        let orphans: Vec<String> = existing
            .iter()
            .filter(|c| c.as_str() != "default" && !all.contains(c))
            .cloned()
            .collect();
        for c in &existing {
            if c != "default" && !all.contains(c) {
                all.push(c.clone());
            }
        }
        let descriptors = all
            .iter()
            .map(|c| ColumnFamilyDescriptor::new(c, column_family_options(&memory, &cache)));
        let db = DB::open_cf_descriptors(&opts, path, descriptors).map_err(|source| {
            StateError::Open {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok((
            StateStore {
                db: Arc::new(db),
                path: path.to_path_buf(),
                cfs: all,
            },
            orphans,
        ))
    }

    /// A handle on one column family.
    pub fn handle(&self, cf: &str) -> StateHandle {
        StateHandle {
            db: self.db.clone(),
            cf: cf.to_string(),
        }
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes memtables and writes a hard-link checkpoint of the database to `dir`.
    pub fn checkpoint_to(&self, dir: &Path) -> Result<(), StateError> {
        let err = |source| StateError::Checkpoint {
            path: dir.to_path_buf(),
            source,
        };
        for cf in &self.cfs {
            if let Some(h) = self.db.cf_handle(cf) {
                self.db.flush_cf(&h).map_err(err)?;
            }
        }
        let cp = rocksdb::checkpoint::Checkpoint::new(self.db.as_ref()).map_err(err)?;
        cp.create_checkpoint(dir).map_err(err)
    }
}

/// Raw key-value pairs.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Access to one column family of a task's database.
#[derive(Clone)]
pub struct StateHandle {
    db: Arc<DB>,
    cf: String,
}

impl StateHandle {
    fn access_err(&self, action: &'static str, message: impl ToString) -> StateError {
        StateError::Access {
            action,
            cf: self.cf.clone(),
            message: message.to_string(),
        }
    }

    /// Reads one raw value.
    pub fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let cf = self
            .db
            .cf_handle(&self.cf)
            .ok_or_else(|| self.access_err("read", "column family missing"))?;
        self.db
            .get_cf(&cf, key)
            .map_err(|e| self.access_err("read", e))
    }

    /// Reads one raw value in place: `decode` sees RocksDB's pinned bytes (no copy).
    pub fn get_with<T>(
        &self,
        key: &[u8],
        decode: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>, StateError> {
        let cf = self
            .db
            .cf_handle(&self.cf)
            .ok_or_else(|| self.access_err("read", "column family missing"))?;
        let pinned = self
            .db
            .get_pinned_cf(&cf, key)
            .map_err(|e| self.access_err("read", e))?;
        Ok(pinned.map(|v| decode(&v)))
    }

    /// Applies puts (`Some`) and deletes (`None`) without the WAL, in batches of
    /// [`ORDERED_BATCH_OPS`] operations (so a flush of many keys does not build one batch as
    /// large as all of them; not atomic as a whole, like [`StateHandle::write_ordered`]: the
    /// state is read back only through the checkpoint taken after the flush).
    ///
    /// The operations are applied in key order (a stable sort: for a key given twice the later
    /// operation still wins): RocksDB's memtable inserts keys that follow each other much
    /// faster than keys in hash order.
    pub fn write_batch(
        &self,
        ops: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), StateError> {
        let ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = ops.into_iter().collect();
        // sort positions, not the (large) entries; ties keep their order
        let mut order: Vec<usize> = (0..ops.len()).collect();
        order.sort_unstable_by(|&a, &b| ops[a].0.cmp(&ops[b].0).then(a.cmp(&b)));
        self.write_ordered(
            &[],
            order
                .into_iter()
                .map(|i| (&ops[i].0[..], ops[i].1.as_deref())),
        )
    }

    /// Writes puts (`Some`) and deletes (`None`) given in ascending key order, each key
    /// prefixed with `prefix`, without the WAL, in batches of [`ORDERED_BATCH_OPS`]
    /// operations. Nothing is copied before RocksDB's own batch, and in key order RocksDB's
    /// memtable inserts quickly. The batches are not applied atomically as a whole: callers
    /// use it for state that a checkpoint snapshots after the call (a crash in between
    /// restores from the previous checkpoint, never from this database).
    pub fn write_ordered<'a>(
        &self,
        prefix: &[u8],
        ops: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    ) -> Result<(), StateError> {
        let cf = self
            .db
            .cf_handle(&self.cf)
            .ok_or_else(|| self.access_err("write", "column family missing"))?;
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        let mut batch = WriteBatch::default();
        let mut key = prefix.to_vec();
        for (k, v) in ops {
            key.truncate(prefix.len());
            key.extend_from_slice(k);
            match v {
                Some(v) => batch.put_cf(&cf, &key, v),
                None => batch.delete_cf(&cf, &key),
            }
            if batch.len() >= ORDERED_BATCH_OPS || batch.size_in_bytes() >= ORDERED_BATCH_BYTES {
                let full = std::mem::take(&mut batch);
                self.db
                    .write_opt(full, &wo)
                    .map_err(|e| self.access_err("write", e))?;
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.db
            .write_opt(batch, &wo)
            .map_err(|e| self.access_err("write", e))
    }

    /// All raw entries whose key starts with `prefix`.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StateError> {
        let cf = self
            .db
            .cf_handle(&self.cf)
            .ok_or_else(|| self.access_err("scan", "column family missing"))?;
        let mut out = vec![];
        let iter = self.db.iterator_cf(
            &cf,
            rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(|e| self.access_err("scan", e))?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

struct Slot<V> {
    value: Option<V>,
    dirty: bool,
    /// Whether RocksDB may hold the key (false once a read found nothing there and no flush
    /// wrote it since): removing such a key writes no tombstone.
    stored: bool,
}

/// A keyed map of serde values in one column family, behind a write-back cache.
///
/// Reads go to the cache, then RocksDB; writes stay in the cache until [`KeyedState::flush`]
/// (called by the operator's `snapshot` hook) or until the cache exceeds its capacity.
pub struct KeyedState<V> {
    handle: StateHandle,
    prefix: Vec<u8>,
    cache: HashMap<String, Slot<V>>,
    /// The most keys cached: the smaller of the count given and [`KEYED_CACHE_BYTES`] over
    /// the estimated size of an entry (learned from the encoded size at each flush).
    budget: EntryBudget,
}

/// Bytes of decoded entries one [`KeyedState`] caches at most (estimated).
pub const KEYED_CACHE_BYTES: usize = 16 << 20;
/// The estimate of a cached entry before the first flush.
const KEYED_ENTRY_BYTES: usize = 256;
/// Bytes of a cached entry besides its decoded value: its hash table bucket (with slack) and
/// the key's allocation.
const KEYED_ENTRY_OVERHEAD: usize = 128;

/// The budget of a cache of at most `max_keys` keys and about [`KEYED_CACHE_BYTES`] (never
/// fewer than 16 keys).
fn keyed_budget(max_keys: usize) -> EntryBudget {
    EntryBudget::new(
        KEYED_CACHE_BYTES,
        KEYED_ENTRY_BYTES,
        KEYED_ENTRY_OVERHEAD,
        16,
        max_keys,
    )
}

impl<V: Serialize + DeserializeOwned> KeyedState<V> {
    /// A state named `name` (a key prefix) in `handle`'s column family, caching at most
    /// `capacity` keys and about [`KEYED_CACHE_BYTES`].
    pub fn new(handle: StateHandle, name: &str, capacity: usize) -> Self {
        let mut prefix = name.as_bytes().to_vec();
        prefix.push(0);
        KeyedState {
            handle,
            prefix,
            cache: HashMap::new(),
            budget: keyed_budget(capacity),
        }
    }

    fn db_key(&self, key: &str) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// The value of `key` in RocksDB.
    fn read(&self, key: &str) -> Result<Option<V>, StateError> {
        match self.handle.get_raw(&self.db_key(key))? {
            Some(bytes) => Ok(Some(
                serde_json::from_slice(&bytes).map_err(|e| self.handle.access_err("decode", e))?,
            )),
            None => Ok(None),
        }
    }

    fn load(&mut self, key: &str) -> Result<(), StateError> {
        if self.cache.contains_key(key) {
            return Ok(());
        }
        if self.cache.len() >= self.budget.capacity() {
            self.flush()?;
            self.cache.clear();
        }
        let value = self.read(key)?;
        self.cache.insert(
            key.to_string(),
            Slot {
                stored: value.is_some(),
                value,
                dirty: false,
            },
        );
        Ok(())
    }

    /// The value of `key` (marked dirty), set to `make()` first when there is none; the flag
    /// says whether it was made. One cache lookup when the key is cached.
    pub fn get_or_insert_with(
        &mut self,
        key: &str,
        make: impl FnOnce() -> V,
    ) -> Result<(&mut V, bool), StateError> {
        let slot = if self.cache.contains_key(key) {
            let handle = &self.handle;
            self.cache
                .get_mut(key)
                .ok_or_else(|| handle.access_err("read", "key vanished from the cache"))?
        } else {
            if self.cache.len() >= self.budget.capacity() {
                self.flush()?;
                self.cache.clear();
            }
            let value = self.read(key)?;
            self.cache.entry(key.to_string()).or_insert(Slot {
                stored: value.is_some(),
                value,
                dirty: false,
            })
        };
        slot.dirty = true;
        let made = slot.value.is_none();
        Ok((slot.value.get_or_insert_with(make), made))
    }

    /// The value of `key`, if any.
    pub fn get(&mut self, key: &str) -> Result<Option<&V>, StateError> {
        self.load(key)?;
        Ok(self.cache.get(key).and_then(|s| s.value.as_ref()))
    }

    /// A mutable reference to the value of `key` (marks it dirty), if any.
    pub fn get_mut(&mut self, key: &str) -> Result<Option<&mut V>, StateError> {
        self.load(key)?;
        Ok(self.cache.get_mut(key).and_then(|s| {
            s.dirty = true;
            s.value.as_mut()
        }))
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &str, value: V) -> Result<(), StateError> {
        if !self.cache.contains_key(key) && self.cache.len() >= self.budget.capacity() {
            self.flush()?;
            self.cache.clear();
        }
        let stored = self.cache.get(key).is_none_or(|s| s.stored);
        self.cache.insert(
            key.to_string(),
            Slot {
                value: Some(value),
                dirty: true,
                stored,
            },
        );
        Ok(())
    }

    /// Removes `key` without reading its value (no RocksDB read when it is not cached).
    /// A key RocksDB does not hold leaves the cache at once (no tombstone kept until the flush).
    pub fn delete(&mut self, key: &str) -> Result<(), StateError> {
        if self.cache.get(key).is_some_and(|s| !s.stored) {
            self.cache.remove(key);
            return Ok(());
        }
        if !self.cache.contains_key(key) && self.cache.len() >= self.budget.capacity() {
            self.flush()?;
            self.cache.clear();
        }
        let stored = self.cache.get(key).is_none_or(|s| s.stored);
        self.cache.insert(
            key.to_string(),
            Slot {
                value: None,
                dirty: true,
                stored,
            },
        );
        Ok(())
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Result<Option<V>, StateError> {
        self.load(key)?;
        if self.cache.get(key).is_some_and(|s| !s.stored) {
            return Ok(self.cache.remove(key).and_then(|s| s.value));
        }
        Ok(self.cache.get_mut(key).and_then(|s| {
            s.dirty = true;
            s.value.take()
        }))
    }

    /// Writes dirty entries to RocksDB (WAL off), in key order, encoding and writing
    /// [`FLUSH_CHUNK`] of them at a time (a flush of a full cache never holds every encoded
    /// value at once).
    pub fn flush(&mut self) -> Result<(), StateError> {
        let mut dirty: Vec<(&str, Option<&V>)> = self
            .cache
            .iter()
            .filter(|(_, s)| s.dirty && (s.value.is_some() || s.stored))
            .map(|(k, s)| (k.as_str(), s.value.as_ref()))
            .collect();
        dirty.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut scratch = Vec::new();
        let mut at = Vec::with_capacity(FLUSH_CHUNK.min(dirty.len()));
        let (mut encoded, mut values) = (0, 0);
        for chunk in dirty.chunks(FLUSH_CHUNK) {
            scratch.clear();
            at.clear();
            for (_, v) in chunk {
                at.push(match v {
                    Some(v) => {
                        let start = scratch.len();
                        serde_json::to_writer(&mut scratch, v)
                            .map_err(|e| self.handle.access_err("encode", e))?;
                        Some(start..scratch.len())
                    }
                    None => None,
                });
            }
            encoded += scratch.len() + chunk.iter().map(|(k, _)| k.len()).sum::<usize>();
            values += at.iter().filter(|r| r.is_some()).count();
            self.handle.write_ordered(
                &self.prefix,
                chunk
                    .iter()
                    .zip(&at)
                    .map(|((k, _), r)| (k.as_bytes(), r.clone().map(|r| &scratch[r]))),
            )?;
        }
        drop(dirty);
        self.budget.observe(encoded, values);
        for slot in self.cache.values_mut().filter(|s| s.dirty) {
            slot.dirty = false;
            // a removed key RocksDB never held is dropped below: nothing was written for it
            slot.stored = slot.value.is_some();
        }
        self.cache.retain(|_, s| s.value.is_some());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_with_a_key_twice_keeps_the_later_operation() {
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("b");
        let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        let h = store.handle(&cf);
        h.write_batch([
            (b"z".to_vec(), Some(b"1".to_vec())),
            (b"a".to_vec(), Some(b"old".to_vec())),
            (b"z".to_vec(), None),
            (b"a".to_vec(), Some(b"new".to_vec())),
        ])
        .unwrap();
        assert_eq!(h.get_raw(b"a").unwrap(), Some(b"new".to_vec()));
        assert_eq!(h.get_raw(b"z").unwrap(), None);
    }

    #[test]
    fn write_back_cache_persists_on_flush_and_survives_eviction() {
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("w");
        let (store, orphans) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        assert!(orphans.is_empty());
        let mut s: KeyedState<u64> = KeyedState::new(store.handle(&cf), "counts", 16);
        for i in 0..100u64 {
            s.put(&format!("k{i}"), i).unwrap();
        }
        *s.get_mut("k5").unwrap().unwrap() += 1000;
        s.remove("k7").unwrap();
        s.delete("k8").unwrap();
        s.delete("never-stored").unwrap();
        s.flush().unwrap();
        let mut fresh: KeyedState<u64> = KeyedState::new(store.handle(&cf), "counts", 16);
        assert_eq!(fresh.get("k5").unwrap(), Some(&1005));
        assert_eq!(fresh.get("k99").unwrap(), Some(&99));
        assert_eq!(fresh.get("k7").unwrap(), None);
        assert_eq!(fresh.get("k8").unwrap(), None);
        assert_eq!(fresh.get("k9").unwrap(), Some(&9));
        assert_eq!(fresh.get("never-stored").unwrap(), None);
    }

    #[test]
    fn a_batch_larger_than_one_rocksdb_batch_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("big");
        let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        let h = store.handle(&cf);
        let n = ORDERED_BATCH_OPS * 2 + 7;
        h.write_batch((0..n).map(|i| (format!("k{i:06}").into_bytes(), Some(vec![1u8]))))
            .unwrap();
        assert_eq!(h.scan_prefix(b"k").unwrap().len(), n);
    }

    #[test]
    fn the_cache_holds_fewer_keys_as_its_values_grow() {
        assert_eq!(keyed_budget(100_000).capacity(), 65_536);
        assert_eq!(
            keyed_budget(1_000).capacity(),
            1_000,
            "the count still bounds"
        );
        let mut huge = keyed_budget(100_000);
        huge.observe(1 << 30, 1);
        assert_eq!(huge.capacity(), 16, "never below 16");
        // 100-byte encodings: 128 + 400 per entry, approached halfway per flush
        let mut b = keyed_budget(100_000);
        for _ in 0..20 {
            b.observe(100 * 50, 50);
        }
        let e = b.entry_bytes();
        assert!((526..=530).contains(&e), "{e}");
        b.observe(999, 0);
        assert_eq!(b.entry_bytes(), e, "nothing encoded: unchanged");
        assert_eq!(b.capacity(), KEYED_CACHE_BYTES / e);
        // a real flush moves the estimate
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("w");
        let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        let mut s: KeyedState<String> = KeyedState::new(store.handle(&cf), "s", 1_000_000);
        for i in 0..100 {
            s.put(&format!("k{i}"), "x".repeat(1000)).unwrap();
        }
        s.flush().unwrap();
        assert!(s.budget.entry_bytes() > 2000, "{}", s.budget.entry_bytes());
        assert_eq!(
            s.budget.capacity(),
            KEYED_CACHE_BYTES / s.budget.entry_bytes()
        );
    }

    #[test]
    fn a_batch_of_large_values_is_cut_by_bytes_and_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("wide");
        let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        let h = store.handle(&cf);
        let value = vec![7u8; ORDERED_BATCH_BYTES / 3 + 1];
        h.write_batch((0..10).map(|i| (format!("k{i}").into_bytes(), Some(value.clone()))))
            .unwrap();
        let all = h.scan_prefix(b"k").unwrap();
        assert_eq!(all.len(), 10);
        assert!(all.iter().all(|(_, v)| *v == value));
    }

    #[test]
    fn a_flush_of_more_than_one_chunk_writes_every_dirty_key() {
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("w");
        let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        let h = store.handle(&cf);
        let n = FLUSH_CHUNK * 2 + 3;
        let mut s: KeyedState<u64> = KeyedState::new(h.clone(), "c", n * 2);
        for i in 0..n as u64 {
            s.put(&format!("k{i}"), i).unwrap();
        }
        s.flush().unwrap();
        assert_eq!(h.scan_prefix(b"c\0").unwrap().len(), n);
        // a second flush: some changed, some deleted, one made and removed in between
        for i in (0..n as u64).step_by(3) {
            s.delete(&format!("k{i}")).unwrap();
        }
        *s.get_mut("k1").unwrap().unwrap() = 1001;
        s.put("new", 1).unwrap();
        s.delete("new").unwrap();
        s.flush().unwrap();
        let mut fresh: KeyedState<u64> = KeyedState::new(h.clone(), "c", 16);
        assert_eq!(fresh.get("k0").unwrap(), None);
        assert_eq!(fresh.get("k1").unwrap(), Some(&1001));
        assert_eq!(fresh.get("k2").unwrap(), Some(&2));
        assert_eq!(fresh.get("new").unwrap(), None);
        assert_eq!(h.scan_prefix(b"c\0").unwrap().len(), n - n.div_ceil(3));
    }

    #[test]
    fn a_key_made_and_removed_between_flushes_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("w");
        let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        let h = store.handle(&cf);
        let mut s: KeyedState<u64> = KeyedState::new(h.clone(), "n", 16);
        let (v, made) = s.get_or_insert_with("a", || 1).unwrap();
        assert!(made);
        *v += 1;
        assert_eq!(s.get_or_insert_with("a", || 7).unwrap(), (&mut 2, false));
        assert_eq!(s.remove("a").unwrap(), Some(2));
        assert!(
            !s.cache.contains_key("a"),
            "never stored: no tombstone kept in the cache"
        );
        s.put("c", 3).unwrap();
        s.delete("c").unwrap();
        assert!(
            s.cache.contains_key("c"),
            "RocksDB may hold c: the delete is kept"
        );
        s.put("b", 5).unwrap();
        s.flush().unwrap();
        assert_eq!(
            h.scan_prefix(b"n\0").unwrap().len(),
            1,
            "only b, no tombstone for a"
        );
        // a stored key removed later is deleted
        assert_eq!(s.remove("b").unwrap(), Some(5));
        s.flush().unwrap();
        assert_eq!(h.scan_prefix(b"n\0").unwrap().len(), 0);
        let mut fresh: KeyedState<u64> = KeyedState::new(h, "n", 16);
        assert_eq!(fresh.get("b").unwrap(), None);
    }
}
