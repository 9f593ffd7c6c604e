//! Moving records between the tasks of one pod by key, so that every record of a key meets
//! its state in one task whatever the partitioning of the input.
//!
//! A keyed operator whose input is not partitioned by its key (`plan::partitioning`) reads
//! that input through an *exchange*: the producing task evaluates the key, maps it to one of
//! the job's key groups (`spec.maxParallelism`, default [`DEFAULT_KEY_GROUPS`]; murmur2 of the key's bytes, as Kafka's Java client hashes keys)
//! and the key group to the task that owns it ([`owner`], Flink's contiguous ranges), and hands
//! the record to that task in memory. Every task both sends and receives; each has one bounded
//! inbox ([`Envelope`]s from every task, itself included).
//!
//! - **Order and batching** ([`outbound`]): records are batched per target; a watermark, a
//!   barrier or the end of the input goes behind everything sent before it.
//! - **Backpressure** ([`outbound`]): a full inbox keeps the rest in the sender's overflow, and
//!   a task with overflow reads no input until it drained, counting that time as backpressured.
//!   It keeps handling its own inbox meanwhile, so two tasks full of each other's records
//!   cannot block each other.
//! - **Event time** ([`inbound`]): the watermark after an exchange is the minimum over its
//!   senders; idle senders do not hold it back, ended ones count as done.
//! - **Checkpoints** ([`inbound`]): aligned barriers. On a checkpoint a task stops reading its
//!   sources and sends the barrier to every task; it takes its snapshot once every sender's
//!   barrier arrived, holding back what a sender sent after its barrier. So the snapshot of
//!   every task covers exactly the records read before the sources' checkpointed offsets.
//! - **Stages**: an exchange behind an exchange forwards its barrier, watermark and end once
//!   the stage before it is aligned, passed it or ended.
//!
//! Only within one pod: across pods an exchange has to go through Kafka (`repartition`).

pub mod inbound;
pub mod outbound;

use crate::kafka::partitioner::{murmur2, to_positive};
use crate::record::Record;

/// Key groups when `spec.maxParallelism` is not set (Flink's default): the unit keyed state
/// is organised in behind an in-memory exchange; such a stage runs at most this many tasks.
pub const DEFAULT_KEY_GROUPS: u32 = 128;

/// Records per batch sent to one task.
pub const BATCH: usize = 256;

/// Envelopes an inbox holds before senders keep the rest in their overflow.
pub const INBOX_CAPACITY: usize = 64;

/// The key group (of `groups`) of `key`.
pub fn key_group(key: &str, groups: u32) -> u32 {
    to_positive(murmur2(key.as_bytes())).unsigned_abs() % groups.max(1)
}

/// The task (of `tasks`) that owns key group `group` (of `groups`): contiguous ranges, as
/// Flink assigns them.
pub fn owner(group: u32, tasks: u32, groups: u32) -> u32 {
    let tasks = tasks.max(1);
    ((u64::from(group) * u64::from(tasks)) / u64::from(groups.max(1))) as u32
}

/// What goes through an exchange, in order per sender.
#[derive(Debug)]
pub enum Message {
    /// Records for the receiving task.
    Records(Vec<Record>),
    /// The sender's watermark of the exchanged stream; `idle`: every input of the sender is
    /// idle, so it must not hold the receiver back.
    Watermark {
        /// Event time, epoch ms.
        wm: i64,
        /// Whether the sender is idle.
        idle: bool,
    },
    /// Checkpoint barrier: everything before it belongs to checkpoint `id`.
    Barrier(u64),
    /// The sender will send no more records or watermarks (barriers may still come).
    End,
}

/// A message with where it comes from.
#[derive(Debug)]
pub struct Envelope {
    /// The exchange (index into the task's exchanges).
    pub exchange: usize,
    /// The sending task.
    pub sender: u32,
    /// What it carries.
    pub message: Message,
}

/// The channels of one pod's exchanges: per task its inbox, and a sender to every inbox.
pub struct Channels {
    inboxes: Vec<(u32, std::sync::mpsc::Receiver<Envelope>)>,
    senders: Vec<(u32, std::sync::mpsc::SyncSender<Envelope>)>,
}

/// One task's end of the exchanges.
pub struct TaskChannels {
    /// Its inbox.
    pub inbox: std::sync::mpsc::Receiver<Envelope>,
    /// Every task's inbox, by task id.
    pub outboxes: Vec<(u32, std::sync::mpsc::SyncSender<Envelope>)>,
}

impl Channels {
    /// Inboxes for `tasks`.
    pub fn new(tasks: &[u32]) -> Self {
        let mut inboxes = vec![];
        let mut senders = vec![];
        for &t in tasks {
            let (tx, rx) = std::sync::mpsc::sync_channel(INBOX_CAPACITY);
            inboxes.push((t, rx));
            senders.push((t, tx));
        }
        Channels { inboxes, senders }
    }

    /// Takes task `task`'s end; `None` if it is not one of the tasks or was taken.
    pub fn take(&mut self, task: u32) -> Option<TaskChannels> {
        let i = self.inboxes.iter().position(|(t, _)| *t == task)?;
        let (_, inbox) = self.inboxes.swap_remove(i);
        Some(TaskChannels {
            inbox,
            outboxes: self.senders.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_groups_spread_keys_and_owners_cover_every_task_in_contiguous_ranges() {
        let mut seen = [0u32; DEFAULT_KEY_GROUPS as usize];
        for i in 0..10_000 {
            seen[key_group(&format!("user-{i}"), DEFAULT_KEY_GROUPS) as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n > 30), "{seen:?}");
        for groups in [DEFAULT_KEY_GROUPS, 7, 1000] {
            for tasks in [1u32, 2, 3, 4, 7].into_iter().filter(|t| *t <= groups) {
                let owners: Vec<u32> = (0..groups).map(|g| owner(g, tasks, groups)).collect();
                assert!(owners.windows(2).all(|w| w[0] <= w[1]), "contiguous");
                assert_eq!(owners.first(), Some(&0));
                assert_eq!(owners.last(), Some(&(tasks - 1)));
            }
        }
    }
}
