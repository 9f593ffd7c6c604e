//! Event time: per-partition watermarks and per-key timers.

pub mod timers;
pub mod watermark;

pub use timers::{TimeDomain, Timer, TimerService};
pub use watermark::{task_watermark, PartitionWatermark};
