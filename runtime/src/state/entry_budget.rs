//! How many decoded entries a cache may hold: a byte budget divided by an estimate of what one
//! decoded entry takes, learned from the size of the entries' encoding.
//!
//! A decoded value (record maps with `Arc` strings, vectors with their headers and spare room,
//! boxes) takes several times its encoding, and it is not measured directly: every time a cache
//! encodes values anyway (writing them at a checkpoint, moving them to an encoded table) it
//! reports their total encoded size, and an entry is estimated at [`DECODED_PER_ENCODED`] times
//! their mean plus the cache's own per-entry overhead. Used by [`crate::state::KeyedState`] and
//! the workload cache's hot table.

/// Bytes a decoded value is taken to need per byte of its encoding.
pub const DECODED_PER_ENCODED: usize = 4;

/// A cache's byte budget and its current entry capacity.
#[derive(Debug, Clone, Copy)]
pub struct EntryBudget {
    bytes: usize,
    /// Bytes of an entry besides its decoded value (table slot, key allocation, boxes).
    overhead: usize,
    min_entries: usize,
    max_entries: usize,
    entry_bytes: usize,
    capacity: usize,
}

impl EntryBudget {
    /// A budget of `bytes` of decoded entries, each estimated at `initial_entry_bytes` until
    /// values are seen, `overhead` bytes besides its value, and a capacity kept within
    /// `min_entries..=max_entries` (`max_entries` is raised to `min_entries` if below it).
    pub fn new(
        bytes: usize,
        initial_entry_bytes: usize,
        overhead: usize,
        min_entries: usize,
        max_entries: usize,
    ) -> Self {
        let mut b = EntryBudget {
            bytes,
            overhead,
            min_entries,
            max_entries: max_entries.max(min_entries),
            entry_bytes: initial_entry_bytes,
            capacity: 0,
        };
        b.capacity = b.capacity_for(b.entry_bytes);
        b
    }

    fn capacity_for(&self, entry_bytes: usize) -> usize {
        (self.bytes / entry_bytes.max(1)).clamp(self.min_entries, self.max_entries)
    }

    /// Entries the cache may hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The current estimate of one decoded entry, in bytes.
    pub fn entry_bytes(&self) -> usize {
        self.entry_bytes
    }

    /// `entries` values were just encoded, `encoded_bytes` together: the estimate moves
    /// halfway towards what they suggest (nothing encoded: unchanged).
    pub fn observe(&mut self, encoded_bytes: usize, entries: usize) {
        if entries == 0 {
            return;
        }
        let seen = self.overhead + DECODED_PER_ENCODED * encoded_bytes.div_ceil(entries);
        self.entry_bytes = (self.entry_bytes + seen).div_ceil(2);
        self.capacity = self.capacity_for(self.entry_bytes);
    }
}
