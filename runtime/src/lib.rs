//! Weir's streaming runtime: runs a StreamJob's pipeline as partition-parallel tasks with
//! RocksDB state, incremental checkpoints to `file://` or `s3://`, exactly-once file output,
//! Prometheus metrics and an admin API.
//!
//! - [`plan`]: spec → tasks (and the `validate` output)
//! - [`task`]: one partition's operator chain on one thread
//! - [`operator`]: the operator trait and filter, map, window, dedup
//! - [`time`]: watermarks and timers; [`state`]: RocksDB with a write-back cache
//! - [`checkpoint`]: layout, catalog and restore-point choice (pure), storage I/O
//! - [`source`], [`sink`]: files, generators, stdout; [`kafka`]: Kafka source and sink
//! - [`lookup`]: the key-value stores lookupJoin reads (Redis)
//! - [`job`]: the coordinator; [`admin`], [`metrics`], [`status`]: observability
//! - [`config`]: command-line and environment settings; [`bench`]: throughput benchmark
//! - [`shutdown`]: SIGTERM/SIGINT handling and the Kubernetes termination message
//! - `allocator`: mimalloc for the whole process (RocksDB's C++ allocations included)

pub mod admin;
mod allocator;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod generator;
pub mod job;
pub mod kafka;
pub mod lookup;
pub mod metrics;
pub mod operator;
pub mod plan;
pub mod record;
pub mod restore;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod state;
pub mod status;
pub mod task;
pub mod time;
