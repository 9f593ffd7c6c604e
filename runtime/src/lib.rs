//! Weir's streaming runtime: runs a StreamJob's pipeline as partition-parallel tasks with
//! RocksDB state, incremental checkpoints to `file://` or `s3://`, exactly-once file output,
//! Prometheus metrics and an admin API.
//!
//! - [`cli`]: command-line and environment settings, and `weir-runtime bench`
//! - [`plan`]: spec → job plan (pure; also the `validate` output), repartition expansion
//! - [`job`]: one pod's process: start-up and restore, the checkpoint coordinator (pure) and
//!   its driver, admin API, status, shutdown
//! - [`exchange`]: moving records between a pod's tasks by key (batches, backpressure,
//!   watermarks, aligned checkpoint barriers)
//! - [`task`]: one task on one thread: graph wiring (pure), connector factory, dataflow, loop
//! - [`operator`]: the operator trait, its registry and one file per kind
//! - [`time`]: watermarks and timers; [`state`]: RocksDB with a write-back cache
//! - [`checkpoint`]: layout, catalog and restore-point choice (pure), storage I/O
//! - [`source`], [`sink`]: files, generators, stdout; [`kafka`]: Kafka source and sink
//! - [`record`], [`metrics`]: the record type and the Prometheus metrics
//! - [`lookup`]: the key-value stores lookupJoin reads (Redis)
//! - `allocator`: mimalloc for the whole process (RocksDB's C++ allocations included)

mod allocator;
pub mod checkpoint;
pub mod cli;
pub mod exchange;
pub mod generator;
pub mod job;
pub mod kafka;
pub mod lookup;
pub mod metrics;
pub mod operator;
pub mod plan;
pub mod record;
pub mod sink;
pub mod source;
pub mod state;
pub mod task;
pub mod time;
