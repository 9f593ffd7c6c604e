//! The process's memory allocator: mimalloc, for Rust and (through its `override` feature,
//! which replaces `malloc`/`free`) for RocksDB's and librdkafka's C and C++ allocations too.
//!
//! Profiling splice with a million live keys showed about a fifth of its CPU time in glibc's
//! `malloc`/`free` (`malloc_consolidate`, `unlink_chunk`): the write-back cache evicts and
//! refills hundreds of thousands of small values at a time, and every RocksDB read of an
//! evicted key allocates block buffers. Every binary that links the runtime uses it.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
