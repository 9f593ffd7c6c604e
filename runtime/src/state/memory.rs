//! How much memory one task's RocksDB may use: memtables and block cache sized from one
//! budget (`WEIR_ROCKSDB_MEMORY_MIB`), so RSS does not grow with the number of operators.

/// Default budget in MiB of a task's RocksDB memtables and block cache.
pub const ROCKSDB_MEMORY_MIB: usize = 24;
/// Environment variable overriding [`ROCKSDB_MEMORY_MIB`] (e.g. through `podTemplate.env`).
pub const ROCKSDB_MEMORY_MIB_ENV: &str = "WEIR_ROCKSDB_MEMORY_MIB";

/// RocksDB's own default memtable size (the most one column family's memtable grows to).
const MAX_WRITE_BUFFER_BYTES: usize = 64 << 20;
/// The smallest memtable worth having (smaller ones flush tiny L0 files all the time).
const MIN_WRITE_BUFFER_BYTES: usize = 1 << 20;

/// RocksDB memory sizes of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RocksMemory {
    /// All memtables of the task together (RocksDB flushes the largest above this).
    pub write_buffers_total: usize,
    /// One column family's memtable before it is switched and flushed to an SST.
    pub write_buffer_per_cf: usize,
    /// The LRU block cache shared by every column family of the task.
    pub block_cache: usize,
}

/// Splits `budget_mib`: two thirds to memtables (each column family's at most half of that,
/// so one can be flushed while the next fills), one third to the block cache.
pub fn plan(budget_mib: usize) -> RocksMemory {
    let budget = budget_mib.max(3).saturating_mul(1 << 20);
    let write_buffers_total = budget / 3 * 2;
    RocksMemory {
        write_buffers_total,
        write_buffer_per_cf: (write_buffers_total / 2)
            .clamp(MIN_WRITE_BUFFER_BYTES, MAX_WRITE_BUFFER_BYTES),
        block_cache: budget - write_buffers_total,
    }
}

/// The plan for [`ROCKSDB_MEMORY_MIB_ENV`] if it is set to a number, else [`ROCKSDB_MEMORY_MIB`].
pub fn from_env() -> RocksMemory {
    plan(
        std::env::var(ROCKSDB_MEMORY_MIB_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(ROCKSDB_MEMORY_MIB),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn default_budget_splits_into_memtables_and_block_cache() {
        let m = plan(ROCKSDB_MEMORY_MIB);
        assert_eq!(m.write_buffers_total, 16 * MIB);
        assert_eq!(m.write_buffer_per_cf, 8 * MIB);
        assert_eq!(m.block_cache, 8 * MIB);
        assert_eq!(m.write_buffers_total + m.block_cache, 24 * MIB);
    }

    #[test]
    fn memtables_stay_between_rocksdb_limits() {
        assert_eq!(plan(3000).write_buffer_per_cf, 64 * MIB);
        assert_eq!(plan(0).write_buffer_per_cf, MIB);
        let tiny = plan(0);
        assert_eq!(tiny.write_buffers_total + tiny.block_cache, 3 * MIB);
    }
}
