//! The workload operators' keyed state in the task's RocksDB, behind a write-back cache tuned
//! for their access pattern: every record takes its key's value out and usually puts it back.
//!
//! - Entries are compact: the key and the value's binary encoding ([`codec`]) in one
//!   allocation, in a hash table of 24-byte slots (pointer, length, hash, flags); the cache is bounded in bytes (keys, values
//!   and a per-entry overhead), so it holds as many keys as fit rather than a fixed count.
//! - A key created in the cache starts decoded in a hot table, so short-lived keys (a
//!   pattern's partial match) are never encoded until a checkpoint; the hot table is bounded
//!   in bytes too (by default 1/64 of the cache, [`hot_budget`]: its key capacity follows the size
//!   of the values it encodes), and when it fills, its oldest keys (by generation: one per
//!   half of its capacity of new keys) move to the compact table, encoded.
//! - A hit in the compact table decodes the value and encodes it back in place: no key
//!   allocation, no RocksDB access.
//! - A key created and removed between two checkpoints (a pattern's partial match, a splice
//!   sample that fired) never reaches RocksDB: the cache remembers which keys RocksDB holds
//!   and writes deletes only for those.
//! - When the cache is full it writes its dirty entries and evicts removed keys and clean ones
//!   until it is half full, instead of dropping everything (which made every live key a
//!   RocksDB read again).
//! - Writes go to RocksDB in key order (the memtable inserts consecutive keys fastest) within
//!   each batch of 65,536, so a flush never lists every dirty key at once.
//! - Keys taken out of the compact table and not put back are forgotten once they are a
//!   quarter of it (or at the next flush), instead of being kept as absent markers.
//! - Keys are hashed with a fast multiplicative hash (the state is the task's own, not
//!   attacker-facing). RocksDB keys are `<name>\0<key>` as in [`crate::state::KeyedState`];
//!   values written by earlier builds as JSON are still read.
//!
//! [`flush`](WorkloadState::flush) writes every dirty entry; the adapter calls it at each
//! checkpoint barrier.

use super::hot_budget::hot_budget;
use super::{StateBackendError, StateMap};
use crate::state::entry_budget::EntryBudget;
use crate::state::{codec, StateHandle};
use hashbrown::HashTable;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::hash::Hasher;

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

/// Entry flags.
const PRESENT: u8 = 1;
/// Differs from what RocksDB holds.
const DIRTY: u8 = 2;
/// RocksDB holds a value for this key (so a removal must be written).
const STORED: u8 = 4;

/// Bytes an entry costs besides its key and value: its slot in the table (with the table's
/// slack) and the allocator's rounding.
const ENTRY_OVERHEAD: usize = 48;

/// One cached key: its bytes followed by its encoded value, in one allocation, with its hash
/// (so that growing the table does not read every entry's key again).
struct Entry {
    /// The key's length (varint), the key, then the value's encoding (stale unless `PRESENT`).
    data: Box<[u8]>,
    hash: u32,
    flags: u8,
}

/// Bytes of the varint `n`.
fn varint_len(n: usize) -> usize {
    (usize::BITS - (n | 1).leading_zeros()).div_ceil(7) as usize
}

impl Entry {
    fn new(hash: u32, key: &[u8], value: &[u8], flags: u8) -> Self {
        let mut data = Vec::with_capacity(varint_len(key.len()) + key.len() + value.len());
        let mut n = key.len();
        while n >= 0x80 {
            data.push((n as u8) | 0x80);
            n >>= 7;
        }
        data.push(n as u8);
        data.extend_from_slice(key);
        data.extend_from_slice(value);
        Entry {
            data: data.into_boxed_slice(),
            hash,
            flags,
        }
    }
    /// Where the value starts, and the key's range.
    fn split(&self) -> (usize, std::ops::Range<usize>) {
        let mut len = 0usize;
        let mut at = 0;
        while let Some(&b) = self.data.get(at) {
            len |= usize::from(b & 0x7f) << (7 * at);
            at += 1;
            if b < 0x80 {
                break;
            }
        }
        (at + len, at..at + len)
    }
    fn key(&self) -> &[u8] {
        &self.data[self.split().1]
    }
    fn value(&self) -> &[u8] {
        &self.data[self.split().0..]
    }
    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
    fn cost(&self) -> usize {
        entry_cost(self.data.len())
    }
    /// Replaces the value, reusing the allocation when the length is unchanged; returns the
    /// change in cost.
    fn set_value(&mut self, value: &[u8]) -> isize {
        let value_at = self.split().0;
        if self.data.len() == value_at + value.len() {
            self.data[value_at..].copy_from_slice(value);
            return 0;
        }
        let before = self.cost();
        let mut data = Vec::with_capacity(value_at + value.len());
        data.extend_from_slice(&self.data[..value_at]);
        data.extend_from_slice(value);
        self.data = data.into_boxed_slice();
        self.cost() as isize - before as isize
    }
    fn table_hash(&self) -> u64 {
        spread(self.hash)
    }
}

/// What an entry of `data_len` key and value bytes costs (allocations round to 16 bytes).
fn entry_cost(data_len: usize) -> usize {
    data_len.div_ceil(16) * 16 + ENTRY_OVERHEAD
}

/// The 32-bit hash kept in each entry.
fn hash_key(key: &[u8]) -> u32 {
    let mut h = KeyHasher::default();
    h.write(key);
    let x = h.finish();
    (x ^ (x >> 32)) as u32
}

/// The table's 64-bit hash of a 32-bit one: the table takes bucket bits from the bottom and
/// tag bits from the top.
fn spread(h: u32) -> u64 {
    (u64::from(h) << 32) | u64::from(h)
}

/// A key created in the cache, kept decoded until it is demoted to the compact table.
struct HotEntry<V> {
    key: Box<[u8]>,
    hash: u32,
    /// `DIRTY` and `STORED` (present is `value.is_some()`).
    flags: u8,
    /// The hot table's generation when the key was created (demotion moves older ones first).
    born: u16,
    /// Boxed: the table's slots stay 32 bytes whatever `V` is (a table of 262,144 keys has
    /// 524,288 slots, and rehashing holds the old and the new one).
    value: Option<Box<V>>,
}

/// The hot table's byte budget is the cache's capacity over this.
const HOT_SHARE: usize = 64;
/// Writes a flush sorts and hands to RocksDB at a time.
const FLUSH_OPS: usize = 65_536;
/// The hot table forgets removed keys RocksDB never held once there are more than this many
/// and they are at least half of it (so it does not fill with them between checkpoints).
const HOT_DROPPED_SWEEP: usize = 4_096;

/// One workload operator's keyed state: RocksDB behind a write-back cache of encoded values
/// ([`codec`]), bounded in bytes, with newly created keys kept decoded in a small hot table.
pub struct WorkloadState<V> {
    handle: StateHandle,
    prefix: Vec<u8>,
    /// `prefix` followed by the key of the last RocksDB read (reused, no allocation per miss).
    read_key: Vec<u8>,
    /// The encoding of the value being put (reused).
    scratch: Vec<u8>,
    /// Keys created in the cache, decoded (short-lived keys live and die here).
    hot: HashTable<HotEntry<V>>,
    hot_budget: EntryBudget,
    /// The generation new hot keys are born in: it moves on every half of the hot table's
    /// capacity of new keys, and demotion moves the oldest generations first.
    hot_generation: u16,
    /// Keys born in the current generation.
    hot_born: usize,
    /// Entries of `hot` without a value that RocksDB does not hold (removed, nothing to write).
    hot_dropped: usize,
    /// Keys with encoded values: demoted from `hot` or read from RocksDB.
    table: HashTable<Entry>,
    /// Entries of `table` taken out that RocksDB does not hold (garbage unless put back).
    table_dropped: usize,
    capacity_bytes: usize,
    used_bytes: usize,
}

fn backend(action: &str, e: impl std::fmt::Display) -> StateBackendError {
    StateBackendError(format!("{action}: {e}"))
}

fn encode<V: Serialize>(key: &[u8], value: &V, out: &mut Vec<u8>) -> Result<(), StateBackendError> {
    codec::encode_into(value, out).map_err(|e| {
        backend(
            &format!("encoding the value of '{}'", String::from_utf8_lossy(key)),
            e,
        )
    })
}

impl<V: Serialize + DeserializeOwned> WorkloadState<V> {
    /// The state named `name` (a key prefix) in `handle`'s column family, caching up to
    /// `capacity_bytes` of keys and encoded values (entry overhead included) plus new keys
    /// decoded up to an estimated sixty-fourth of that.
    pub fn new(handle: StateHandle, name: &str, capacity_bytes: usize) -> Self {
        let hot_bytes = capacity_bytes.max(16 * entry_cost(64)) / HOT_SHARE;
        Self::with_hot_bytes(handle, name, capacity_bytes, hot_bytes)
    }

    /// Like [`WorkloadState::new`], with the hot table's decoded entries estimated at no more
    /// than `hot_bytes`.
    pub fn with_hot_bytes(
        handle: StateHandle,
        name: &str,
        capacity_bytes: usize,
        hot_bytes: usize,
    ) -> Self {
        let mut prefix = name.as_bytes().to_vec();
        prefix.push(0);
        let capacity_bytes = capacity_bytes.max(16 * entry_cost(64));
        WorkloadState {
            handle,
            read_key: prefix.clone(),
            prefix,
            scratch: Vec::new(),
            hot: HashTable::new(),
            hot_budget: hot_budget(hot_bytes),
            hot_generation: 0,
            hot_born: 0,
            hot_dropped: 0,
            table: HashTable::new(),
            table_dropped: 0,
            capacity_bytes,
            used_bytes: 0,
        }
    }

    /// Reads `key`'s value from RocksDB: the decoded value and its stored bytes.
    fn read(&mut self, key: &str, hash: u32) -> Result<Option<(V, Entry)>, StateBackendError> {
        self.read_key.truncate(self.prefix.len());
        self.read_key.extend_from_slice(key.as_bytes());
        let read = self
            .handle
            .get_with(&self.read_key, |bytes| {
                codec::decode::<V>(bytes).map(|v| (v, Entry::new(hash, key.as_bytes(), bytes, 0)))
            })
            .map_err(|e| backend("reading", e))?;
        match read {
            None => Ok(None),
            Some(Ok(v)) => Ok(Some(v)),
            Some(Err(e)) => Err(backend(&format!("decoding the value of key '{key}'"), e)),
        }
    }

    /// Writes every dirty entry of both tables to RocksDB, in key order.
    pub fn flush(&mut self) -> Result<(), StateBackendError> {
        let WorkloadState {
            handle,
            prefix,
            scratch,
            hot,
            table,
            hot_budget,
            ..
        } = self;
        // hot values are encoded into `scratch` first
        scratch.clear();
        let mut hot_dirty = Vec::new();
        for e in hot.iter().filter(|e| e.flags & DIRTY != 0) {
            match &e.value {
                Some(v) => {
                    let at = scratch.len();
                    encode(&e.key, v, scratch)?;
                    hot_dirty.push((&e.key[..], Some(at..scratch.len())));
                }
                None if e.flags & STORED != 0 => hot_dirty.push((&e.key[..], None)),
                None => {}
            }
        }
        hot_budget.observe(
            scratch.len(),
            hot_dirty.iter().filter(|(_, v)| v.is_some()).count(),
        );
        let mut table_ops = table
            .iter()
            .filter(|e| e.has(DIRTY) && (e.has(PRESENT) || e.has(STORED)))
            .map(|e| {
                (
                    order_prefix(e.key()),
                    e.key(),
                    e.has(PRESENT).then(|| e.value()),
                )
            });
        let mut hot_ops = hot_dirty
            .into_iter()
            .map(|(k, v)| (order_prefix(k), k, v.map(|r| &scratch[r])));
        // a bounded batch of writes at a time, each in key order
        let mut ops: Vec<WriteOp<'_>> = Vec::new();
        loop {
            ops.clear();
            ops.extend(table_ops.by_ref().take(FLUSH_OPS));
            ops.extend(hot_ops.by_ref().take(FLUSH_OPS - ops.len()));
            if ops.is_empty() {
                break;
            }
            ops.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
            handle
                .write_ordered(prefix, ops.iter().map(|&(_, k, v)| (k, v)))
                .map_err(|e| backend("writing", e))?;
        }
        drop(ops);
        for e in table.iter_mut().filter(|e| e.has(DIRTY)) {
            e.flags &= !(DIRTY | STORED);
            if e.has(PRESENT) {
                e.flags |= STORED;
            }
        }
        // removed keys are known absent from RocksDB now: forget them (a read finds nothing)
        let mut freed = 0;
        table.retain(|e| {
            if e.has(PRESENT) {
                return true;
            }
            freed += e.cost();
            false
        });
        self.used_bytes -= freed;
        self.table_dropped = 0;
        // removed hot keys are gone from RocksDB now (or never reached it)
        self.hot_dropped = 0;
        hot.retain(|e| {
            if e.flags & DIRTY != 0 {
                e.flags = STORED;
            }
            e.value.is_some()
        });
        Ok(())
    }

    /// Forgets compact entries taken out and not put back that RocksDB does not hold (nothing
    /// to write for them; a later read of the key finds nothing in RocksDB either).
    fn sweep_table(&mut self) {
        let mut freed = 0;
        self.table.retain(|e| {
            if e.has(PRESENT) || e.has(STORED) {
                return true;
            }
            freed += e.cost();
            false
        });
        self.used_bytes -= freed;
        self.table_dropped = 0;
    }

    /// Makes room in the compact table: writes dirty entries, forgets removed keys, then
    /// evicts clean entries until it is half full.
    fn make_room(&mut self) -> Result<(), StateBackendError> {
        self.flush()?;
        let target = self.capacity_bytes / 2;
        let mut used = self.used_bytes;
        self.table.retain(|e| {
            if e.has(PRESENT) && used <= target {
                return true;
            }
            used -= e.cost();
            false
        });
        self.used_bytes = used;
        Ok(())
    }

    /// Makes room in the hot table: forgets keys removed before they reached RocksDB, then
    /// moves keys to the compact table (encoded) until it is half full.
    fn demote(&mut self) -> Result<(), StateBackendError> {
        self.hot_dropped = 0;
        let mut moving: Vec<HotEntry<V>> = self
            .hot
            .extract_if(|e| e.value.is_none())
            .filter(|e| e.flags & STORED != 0)
            .collect();
        let mut excess = self
            .hot
            .len()
            .saturating_sub(self.hot_budget.capacity() / 2);
        // the oldest keys first (a new key is usually used again soon): generations older
        // than the previous one, then the previous one, then the current one
        let current = self.hot_generation;
        for min_age in [2u16, 1, 0] {
            moving.extend(self.hot.extract_if(|e| {
                let out = excess > 0 && current.wrapping_sub(e.born) >= min_age;
                excess -= usize::from(out);
                out
            }));
        }
        let (mut encoded, mut values) = (0, 0);
        for e in moving {
            self.scratch.clear();
            let mut flags = e.flags;
            if let Some(v) = &e.value {
                encode(&e.key, v, &mut self.scratch)?;
                flags |= PRESENT;
                encoded += self.scratch.len();
                values += 1;
            }
            let entry = Entry::new(e.hash, &e.key, &self.scratch, flags);
            self.insert(entry)?;
        }
        self.hot_budget.observe(encoded, values);
        Ok(())
    }

    /// Adds an entry for a key that is not cached, making room first if needed.
    fn insert(&mut self, entry: Entry) -> Result<(), StateBackendError> {
        if self.used_bytes + entry.cost() > self.capacity_bytes {
            self.make_room()?;
        }
        self.used_bytes += entry.cost();
        self.table
            .insert_unique(entry.table_hash(), entry, Entry::table_hash);
        Ok(())
    }

    /// The column family this state lives in.
    pub fn handle(&self) -> &StateHandle {
        &self.handle
    }

    /// Number of cached keys (live or removed).
    pub fn cached(&self) -> usize {
        self.hot.len() + self.table.len()
    }

    /// Bytes the compact table accounts for (keys, encoded values, per-entry overhead).
    pub fn cached_bytes(&self) -> usize {
        self.used_bytes
    }
}

/// A write of a flush: the key's [`order_prefix`], the key, the value (`None`: delete).
type WriteOp<'a> = (u64, &'a [u8], Option<&'a [u8]>);

/// The first eight bytes of `key`, big-endian: sorting by it sorts most keys.
fn order_prefix(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

impl<V: Serialize + DeserializeOwned> StateMap<V> for WorkloadState<V> {
    fn take(&mut self, key: &str) -> Result<Option<V>, StateBackendError> {
        let k = key.as_bytes();
        let hash = hash_key(k);
        // a key is in at most one table; the compact one first: it holds most keys when there
        // are many, and is nearly empty (a cheap miss) when keys are short-lived
        if let Some(e) = self
            .table
            .find_mut(spread(hash), |e| e.hash == hash && e.key() == k)
        {
            if !e.has(PRESENT) {
                return Ok(None);
            }
            let v = codec::decode(e.value())
                .map_err(|err| backend(&format!("decoding the cached value of '{key}'"), err))?;
            e.flags = (e.flags & !PRESENT) | DIRTY;
            if !e.has(STORED) {
                self.table_dropped += 1;
                if self.table_dropped > HOT_DROPPED_SWEEP
                    && self.table_dropped * 4 > self.table.len()
                {
                    self.sweep_table();
                }
            }
            return Ok(Some(v));
        }
        if let Some(e) = self
            .hot
            .find_mut(spread(hash), |e| e.hash == hash && *e.key == *k)
        {
            let v = e.value.take().map(|v| *v);
            if v.is_some() {
                e.flags |= DIRTY;
                if e.flags & STORED == 0 {
                    self.hot_dropped += 1;
                }
            }
            return Ok(v);
        }
        let Some((value, mut entry)) = self.read(key, hash)? else {
            return Ok(None);
        };
        // taken out: RocksDB still holds it, so a removal must be written unless it is put back
        entry.flags = DIRTY | STORED;
        self.insert(entry)?;
        Ok(Some(value))
    }

    fn put(&mut self, key: &str, value: V) -> Result<(), StateBackendError> {
        let k = key.as_bytes();
        let hash = hash_key(k);
        if let Some(e) = self
            .table
            .find_mut(spread(hash), |e| e.hash == hash && e.key() == k)
        {
            if !e.has(PRESENT) && !e.has(STORED) {
                self.table_dropped = self.table_dropped.saturating_sub(1);
            }
            self.scratch.clear();
            encode(k, &value, &mut self.scratch)?;
            let grew = e.set_value(&self.scratch);
            e.flags |= PRESENT | DIRTY;
            self.used_bytes = self.used_bytes.saturating_add_signed(grew);
            return Ok(());
        }
        if let Some(e) = self
            .hot
            .find_mut(spread(hash), |e| e.hash == hash && *e.key == *k)
        {
            if e.value.is_none() && e.flags & STORED == 0 {
                self.hot_dropped = self.hot_dropped.saturating_sub(1);
            }
            match &mut e.value {
                Some(held) => **held = value,
                None => e.value = Some(Box::new(value)),
            }
            e.flags |= DIRTY;
            return Ok(());
        }
        if self.hot.len() >= self.hot_budget.capacity() {
            self.demote()?;
        } else if self.hot_dropped > HOT_DROPPED_SWEEP && self.hot_dropped * 2 > self.hot.len() {
            self.hot
                .retain(|e| e.value.is_some() || e.flags & STORED != 0);
            self.hot_dropped = 0;
        }
        let entry = HotEntry {
            key: k.into(),
            hash,
            flags: DIRTY,
            born: self.hot_generation,
            value: Some(Box::new(value)),
        };
        self.hot_born += 1;
        if self.hot_born * 2 >= self.hot_budget.capacity() {
            self.hot_generation = self.hot_generation.wrapping_add(1);
            self.hot_born = 0;
        }
        self.hot
            .insert_unique(spread(hash), entry, |e| spread(e.hash));
        Ok(())
    }
}

impl<V> WorkloadState<V> {
    /// Whether `key` is in the hot table (for tests).
    #[cfg(test)]
    fn is_hot(&self, key: &str) -> bool {
        let k = key.as_bytes();
        let hash = hash_key(k);
        self.hot
            .find(spread(hash), |e| e.hash == hash && *e.key == *k)
            .is_some()
    }

    /// Whether RocksDB holds `key` as far as the cache knows (for tests).
    #[cfg(test)]
    fn stored(&self, key: &str) -> Option<bool> {
        let k = key.as_bytes();
        let hash = hash_key(k);
        let hot = self
            .hot
            .find(spread(hash), |e| e.hash == hash && *e.key == *k)
            .map(|e| e.flags & STORED != 0);
        hot.or_else(|| {
            self.table
                .find(spread(hash), |e| e.hash == hash && e.key() == k)
                .map(|e| e.has(STORED))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::workload::hot_budget;
    use crate::state::{operator_cf, StateStore};

    /// Room for about `n` small entries (`k<i>` -> u64).
    fn room_for(n: usize) -> usize {
        n * entry_cost(8)
    }

    #[test]
    fn values_survive_flush_eviction_and_reopen_and_removals_reach_rocksdb() {
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("w");
        let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        let capacity = room_for(40);
        let mut s: WorkloadState<u64> = WorkloadState::new(store.handle(&cf), "workload", capacity);
        for i in 0..1000u64 {
            s.put(&format!("k{i}"), i).unwrap();
            assert!(
                s.cached_bytes() <= capacity,
                "the cache stays within its capacity"
            );
        }
        assert!(s.cached() >= 20, "evicts to half, not to nothing");
        // read-modify-write of an evicted key, removal of another
        let v = s.take("k5").unwrap().unwrap();
        s.put("k5", v + 1000).unwrap();
        assert_eq!(s.take("k7").unwrap(), Some(7));
        // a value that grows past the small-integer encoding is rewritten
        s.put("k999", u64::MAX).unwrap();
        s.flush().unwrap();
        let mut fresh: WorkloadState<u64> =
            WorkloadState::new(store.handle(&cf), "workload", capacity);
        assert_eq!(fresh.take("k5").unwrap(), Some(1005));
        assert_eq!(fresh.take("k99").unwrap(), Some(99));
        assert_eq!(fresh.take("k999").unwrap(), Some(u64::MAX));
        assert_eq!(fresh.take("k7").unwrap(), None, "the removal was written");
    }

    #[test]
    fn json_values_of_earlier_builds_are_read_and_rewritten_in_the_binary_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("w");
        let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        // the layout KeyedState writes (and this cache wrote before the binary encoding)
        let mut ks = crate::state::KeyedState::<Vec<i64>>::new(store.handle(&cf), "workload", 16);
        ks.put("old", vec![1, -2, 300]).unwrap();
        ks.flush().unwrap();
        let mut s: WorkloadState<Vec<i64>> =
            WorkloadState::new(store.handle(&cf), "workload", room_for(100));
        let mut v = s.take("old").unwrap().unwrap();
        assert_eq!(v, vec![1, -2, 300]);
        v.push(4);
        s.put("old", v).unwrap();
        s.flush().unwrap();
        let raw = store
            .handle(&cf)
            .get_raw(b"workload\0old")
            .unwrap()
            .unwrap();
        assert_eq!(raw[0], codec::MARK);
        let mut fresh: WorkloadState<Vec<i64>> =
            WorkloadState::new(store.handle(&cf), "workload", room_for(100));
        assert_eq!(fresh.take("old").unwrap(), Some(vec![1, -2, 300, 4]));
    }

    #[test]
    fn a_key_taken_and_dropped_while_the_cache_makes_room_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("w");
        let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        let capacity = room_for(40);
        let mut s: WorkloadState<u64> = WorkloadState::new(store.handle(&cf), "workload", capacity);
        s.put("gone", 1).unwrap();
        s.flush().unwrap();
        assert_eq!(s.take("gone").unwrap(), Some(1));
        for i in 0..200u64 {
            s.put(&format!("k{i}"), i).unwrap();
        }
        s.flush().unwrap();
        let mut fresh: WorkloadState<u64> =
            WorkloadState::new(store.handle(&cf), "workload", capacity);
        assert_eq!(fresh.take("gone").unwrap(), None);
        assert_eq!(fresh.take("k0").unwrap(), Some(0));
    }

    #[test]
    fn removed_keys_rocksdb_never_held_do_not_fill_the_hot_table() {
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("w");
        let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        let mut s: WorkloadState<u64> =
            WorkloadState::new(store.handle(&cf), "workload", 128 << 20);
        s.put("stored", 1).unwrap();
        s.flush().unwrap();
        assert_eq!(s.take("stored").unwrap(), Some(1));
        for i in 0..100_000u64 {
            let k = format!("k{i}");
            s.put(&k, i).unwrap();
            assert_eq!(s.take(&k).unwrap(), Some(i));
        }
        assert!(s.cached() < 10_000, "{} keys cached", s.cached());
        s.flush().unwrap();
        let mut fresh: WorkloadState<u64> =
            WorkloadState::new(store.handle(&cf), "workload", 128 << 20);
        assert_eq!(
            fresh.take("stored").unwrap(),
            None,
            "its removal was still written"
        );
        assert!(store
            .handle(&cf)
            .scan_prefix(b"workload\0")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn demotion_moves_the_oldest_keys_first() {
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("w");
        let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        // 64 keys at the initial estimate; small values make the estimate (and room) grow
        let mut s: WorkloadState<u64> = WorkloadState::with_hot_bytes(
            store.handle(&cf),
            "workload",
            128 << 20,
            64 * hot_budget::INITIAL_ENTRY_BYTES,
        );
        // keys born in the current generation are never the ones moved
        let mut generation_start = 0;
        for i in 0..2000u64 {
            let generation = s.hot_generation;
            s.put(&format!("k{i}"), i).unwrap();
            for j in generation_start..=i {
                assert!(s.is_hot(&format!("k{j}")), "k{j} after putting k{i}");
            }
            if s.hot_generation != generation {
                generation_start = i + 1;
            }
        }
        assert!(!s.is_hot("k0"));
        assert!(s.hot.len() <= s.hot_budget.capacity());
        assert!(s.hot_budget.capacity() > 64, "u64 values are small");
        for i in 0..2000u64 {
            assert_eq!(s.take(&format!("k{i}")).unwrap(), Some(i));
        }
    }

    #[test]
    fn compact_keys_taken_and_not_put_back_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("w");
        let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        // a hot table of the minimum size: nearly every key is demoted, encoded
        let mut s: WorkloadState<u64> =
            WorkloadState::with_hot_bytes(store.handle(&cf), "workload", 128 << 20, 0);
        s.put("stored", 1).unwrap();
        s.flush().unwrap();
        let n = 40_000u64;
        for i in 0..n {
            s.put(&format!("k{i}"), i).unwrap();
        }
        assert!(s.cached() > n as usize - 10);
        let before = s.cached_bytes();
        for i in 0..n {
            assert_eq!(s.take(&format!("k{i}")).unwrap(), Some(i));
        }
        assert!(
            s.cached() < n as usize / 3,
            "{} keys cached: swept as they were taken",
            s.cached()
        );
        assert!(s.cached_bytes() < before / 3);
        assert_eq!(s.take("stored").unwrap(), Some(1));
        s.flush().unwrap();
        assert_eq!(s.cached(), 0, "removed keys are not kept as absent markers");
        assert_eq!(s.cached_bytes(), 0);
        assert!(store
            .handle(&cf)
            .scan_prefix(b"workload\0")
            .unwrap()
            .is_empty());
        let mut fresh: WorkloadState<u64> =
            WorkloadState::new(store.handle(&cf), "workload", 128 << 20);
        assert_eq!(fresh.take("stored").unwrap(), None);
        assert_eq!(fresh.take("k5").unwrap(), None);
    }

    #[test]
    fn keys_created_and_removed_between_flushes_never_reach_rocksdb() {
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("w");
        let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        let mut s: WorkloadState<u64> =
            WorkloadState::new(store.handle(&cf), "workload", room_for(1024));
        s.put("short", 1).unwrap();
        assert_eq!(s.take("short").unwrap(), Some(1));
        s.put("kept", 2).unwrap();
        s.flush().unwrap();
        assert_ne!(s.stored("short"), Some(true), "forgotten or known absent");
        assert_eq!(s.stored("kept"), Some(true));
        assert_eq!(
            store.handle(&cf).scan_prefix(b"workload\0").unwrap().len(),
            1
        );
    }
}
