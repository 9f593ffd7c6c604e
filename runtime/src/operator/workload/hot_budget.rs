//! How many decoded keys the workload cache's hot table may hold: its byte budget over the
//! estimated size of one decoded entry ([`EntryBudget`]), with the hot table's own overhead and
//! limits.

use crate::state::entry_budget::EntryBudget;

/// Bytes of a hot entry besides its value: its table slot (with the table's slack), the key's
/// allocation and the value's box.
pub const ENTRY_OVERHEAD: usize = 112;
/// The estimate before anything has been encoded.
pub const INITIAL_ENTRY_BYTES: usize = 512;
/// The hot table never holds fewer keys than this ...
pub const MIN_ENTRIES: usize = 4;
/// ... nor more.
pub const MAX_ENTRIES: usize = 262_144;

/// The hot table's budget: `bytes` of decoded entries.
pub fn hot_budget(bytes: usize) -> EntryBudget {
    EntryBudget::new(
        bytes,
        INITIAL_ENTRY_BYTES,
        ENTRY_OVERHEAD,
        MIN_ENTRIES,
        MAX_ENTRIES,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_the_budget_over_the_initial_estimate_until_values_are_seen() {
        let b = hot_budget(8 << 20);
        assert_eq!(b.capacity(), (8 << 20) / INITIAL_ENTRY_BYTES);
        let mut c = b;
        c.observe(12345, 0);
        assert_eq!(c.entry_bytes(), INITIAL_ENTRY_BYTES);
    }

    #[test]
    fn large_values_shrink_the_capacity_and_small_ones_grow_it() {
        let mut b = hot_budget(8 << 20);
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
        let mut tiny = hot_budget(100);
        tiny.observe(1 << 20, 1);
        assert_eq!(tiny.capacity(), MIN_ENTRIES);
        let mut huge = hot_budget(1 << 40);
        huge.observe(1, 1);
        assert_eq!(huge.capacity(), MAX_ENTRIES);
    }
}
