//! How many decoded keys the workload cache's hot table may hold: a byte budget divided by an
//! estimate of what one decoded entry takes, learned from the size of the entries' encoding.
//!
//! A decoded value (record maps with `Arc` strings, vectors with their headers and spare
//! room, the boxed state) takes several times its compact encoding, and it is not measured
//! directly: every time the cache encodes hot values anyway (moving them to the compact table,
//! writing them at a checkpoint) it takes their mean encoded size, and an entry is estimated
//! at [`DECODED_PER_ENCODED`] times that plus [`ENTRY_OVERHEAD`].

/// Bytes a decoded value is taken to need per byte of its encoding.
pub const DECODED_PER_ENCODED: usize = 4;
/// Bytes of a hot entry besides its value: its table slot (with the table's slack), the key's
/// allocation and the value's box.
pub const ENTRY_OVERHEAD: usize = 112;
/// The estimate before anything has been encoded.
pub const INITIAL_ENTRY_BYTES: usize = 512;
/// The hot table never holds fewer keys than this ...
pub const MIN_ENTRIES: usize = 4;
/// ... nor more.
pub const MAX_ENTRIES: usize = 262_144;

/// The hot table's byte budget and its current key capacity.
#[derive(Debug, Clone, Copy)]
pub struct HotBudget {
    bytes: usize,
    entry_bytes: usize,
    capacity: usize,
}

impl HotBudget {
    /// A budget of `bytes` of decoded entries.
    pub fn new(bytes: usize) -> Self {
        let mut b = HotBudget {
            bytes,
            entry_bytes: INITIAL_ENTRY_BYTES,
            capacity: 0,
        };
        b.capacity = b.capacity_for(b.entry_bytes);
        b
    }

    fn capacity_for(&self, entry_bytes: usize) -> usize {
        (self.bytes / entry_bytes.max(1)).clamp(MIN_ENTRIES, MAX_ENTRIES)
    }

    /// Keys the hot table may hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The current estimate of one decoded entry, in bytes.
    pub fn entry_bytes(&self) -> usize {
        self.entry_bytes
    }

    /// `entries` hot values were just encoded, `encoded_bytes` together: the estimate moves
    /// halfway towards what they suggest.
    pub fn observe(&mut self, encoded_bytes: usize, entries: usize) {
        if entries == 0 {
            return;
        }
        let seen = ENTRY_OVERHEAD + DECODED_PER_ENCODED * encoded_bytes.div_ceil(entries);
        self.entry_bytes = (self.entry_bytes + seen).div_ceil(2);
        self.capacity = self.capacity_for(self.entry_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_the_budget_over_the_initial_estimate_until_values_are_seen() {
        let b = HotBudget::new(8 << 20);
        assert_eq!(b.capacity(), (8 << 20) / INITIAL_ENTRY_BYTES);
        let mut c = b;
        c.observe(12345, 0);
        assert_eq!(c.entry_bytes(), INITIAL_ENTRY_BYTES);
    }

    #[test]
    fn large_values_shrink_the_capacity_and_small_ones_grow_it() {
        let mut b = HotBudget::new(8 << 20);
        // values of 150 encoded bytes: 112 + 600 = 712 per entry, approached halfway per batch
        for _ in 0..20 {
            b.observe(150 * 1000, 1000);
        }
        assert!(
            (710..=716).contains(&b.entry_bytes()),
            "{}",
            b.entry_bytes()
        );
        assert_eq!(b.capacity(), (8 << 20) / b.entry_bytes());
        for _ in 0..20 {
            b.observe(8 * 1000, 1000);
        }
        assert!(
            (144..=150).contains(&b.entry_bytes()),
            "{}",
            b.entry_bytes()
        );
        assert!(b.capacity() > 50_000);
    }

    #[test]
    fn capacity_stays_within_its_limits() {
        let mut tiny = HotBudget::new(100);
        tiny.observe(1 << 20, 1);
        assert_eq!(tiny.capacity(), MIN_ENTRIES);
        let mut huge = HotBudget::new(1 << 40);
        huge.observe(1, 1);
        assert_eq!(huge.capacity(), MAX_ENTRIES);
    }
}
