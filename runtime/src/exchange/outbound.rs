//! A task's sending side of its exchanges: records batched per target task, watermarks,
//! barriers and ends broadcast behind them, and per target an overflow for what a full inbox
//! did not take (sent first, in order, as soon as there is room).

use super::{key_group, owner, Envelope, Message, BATCH};
use crate::record::Record;
use std::collections::VecDeque;
use std::sync::mpsc::{SyncSender, TrySendError};

/// The sending side of every exchange of one task.
pub struct Outbound {
    me: u32,
    /// The job's key groups (`spec.maxParallelism`).
    key_groups: u32,
    /// Inboxes of tasks `0..n`, by task id.
    targets: Vec<SyncSender<Envelope>>,
    /// `[exchange][target]`: records not sent yet.
    batches: Vec<Vec<Vec<Record>>>,
    /// Per target: what its inbox had no room for, oldest first.
    overflow: Vec<VecDeque<Envelope>>,
}

impl Outbound {
    /// Task `me`'s side of `exchanges` exchanges to `outboxes` (every task's inbox; the ids
    /// must be `0..n`, which holds for the tasks of one pod that runs them all), keys spread
    /// over `key_groups` key groups.
    pub fn new(
        me: u32,
        mut outboxes: Vec<(u32, SyncSender<Envelope>)>,
        exchanges: usize,
        key_groups: u32,
    ) -> Self {
        outboxes.sort_by_key(|(t, _)| *t);
        debug_assert!(outboxes
            .iter()
            .enumerate()
            .all(|(i, (t, _))| i as u32 == *t));
        let n = outboxes.len();
        Outbound {
            me,
            key_groups,
            targets: outboxes.into_iter().map(|(_, s)| s).collect(),
            batches: (0..exchanges).map(|_| vec![Vec::new(); n]).collect(),
            overflow: (0..n).map(|_| VecDeque::new()).collect(),
        }
    }

    /// The number of tasks records are spread over.
    pub fn tasks(&self) -> u32 {
        self.targets.len() as u32
    }

    /// Sends `record` on `exchange` to the task owning `key` (`None`: task 0, for operators
    /// that need every record in one task).
    pub fn push(&mut self, exchange: usize, key: Option<&str>, record: Record) {
        let target = match key {
            Some(k) => owner(key_group(k, self.key_groups), self.tasks(), self.key_groups) as usize,
            None => 0,
        };
        let batch = &mut self.batches[exchange][target];
        batch.push(record);
        if batch.len() >= BATCH {
            let records = std::mem::take(batch);
            self.enqueue(target, exchange, Message::Records(records));
        }
    }

    /// Sends what `make` builds to every task on `exchange`, behind the records before it.
    pub fn broadcast(&mut self, exchange: usize, make: impl Fn() -> Message) {
        self.send_batches(exchange);
        for target in 0..self.targets.len() {
            self.enqueue(target, exchange, make());
        }
    }

    fn send_batches(&mut self, exchange: usize) {
        for target in 0..self.targets.len() {
            let records = std::mem::take(&mut self.batches[exchange][target]);
            if !records.is_empty() {
                self.enqueue(target, exchange, Message::Records(records));
            }
        }
    }

    fn enqueue(&mut self, target: usize, exchange: usize, message: Message) {
        let env = Envelope {
            exchange,
            sender: self.me,
            message,
        };
        if !self.overflow[target].is_empty() {
            self.overflow[target].push_back(env);
            return;
        }
        match self.targets[target].try_send(env) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(env)) => self.overflow[target].push_back(env),
        }
    }

    /// Sends every batch, then as much of the overflow as the inboxes take; true when
    /// nothing is left waiting.
    pub fn flush(&mut self) -> bool {
        for x in 0..self.batches.len() {
            self.send_batches(x);
        }
        for (target, queue) in self.overflow.iter_mut().enumerate() {
            while let Some(env) = queue.pop_front() {
                match self.targets[target].try_send(env) {
                    Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                    Err(TrySendError::Full(env)) => {
                        queue.push_front(env);
                        break;
                    }
                }
            }
        }
        !self.has_overflow()
    }

    /// Whether some inbox did not take everything yet (the task then reads no input).
    pub fn has_overflow(&self) -> bool {
        self.overflow.iter().any(|q| !q.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::DEFAULT_KEY_GROUPS;
    use std::sync::mpsc::{sync_channel, Receiver};
    use weir_expr::Value;

    fn rec(i: i64) -> Record {
        Record::new(i, Value::Int(i), 0)
    }

    fn drain(rx: &Receiver<Envelope>) -> Vec<Message> {
        rx.try_iter().map(|e| e.message).collect()
    }

    #[test]
    fn records_go_to_the_owner_of_their_key_in_order_before_a_broadcast() {
        let (tx0, rx0) = sync_channel(16);
        let (tx1, rx1) = sync_channel(16);
        let mut out = Outbound::new(0, vec![(1, tx1), (0, tx0)], 1, DEFAULT_KEY_GROUPS);
        // find one key per task
        let key_for = |t: u32| {
            (0..1000)
                .map(|i| format!("k{i}"))
                .find(|k| owner(key_group(k, DEFAULT_KEY_GROUPS), 2, DEFAULT_KEY_GROUPS) == t)
                .expect("a key")
        };
        let (k0, k1) = (key_for(0), key_for(1));
        out.push(0, Some(&k1), rec(1));
        out.push(0, Some(&k0), rec(2));
        out.push(0, Some(&k1), rec(3));
        out.broadcast(0, || Message::Barrier(9));
        assert!(out.flush());
        let to1 = drain(&rx1);
        match &to1[..] {
            [Message::Records(r), Message::Barrier(9)] => {
                assert_eq!(r.iter().map(|r| r.ts).collect::<Vec<_>>(), vec![1, 3])
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&drain(&rx0)[..], [Message::Records(r), Message::Barrier(9)] if r[0].ts == 2)
        );
    }

    #[test]
    fn a_full_inbox_overflows_in_order_and_drains_when_there_is_room() {
        let (tx, rx) = sync_channel(1);
        let mut out = Outbound::new(0, vec![(0, tx)], 1, DEFAULT_KEY_GROUPS);
        out.broadcast(0, || Message::Barrier(1));
        out.broadcast(0, || Message::Barrier(2));
        out.broadcast(0, || Message::End);
        assert!(out.has_overflow());
        assert!(!out.flush(), "still no room");
        let mut got = vec![];
        while out.has_overflow() || got.is_empty() {
            got.extend(drain(&rx));
            out.flush();
        }
        got.extend(drain(&rx));
        let order: Vec<String> = got.iter().map(|m| format!("{m:?}")).collect();
        assert_eq!(order, vec!["Barrier(1)", "Barrier(2)", "End"]);
    }

    #[test]
    fn full_batches_are_sent_at_once() {
        let (tx, rx) = sync_channel(16);
        let mut out = Outbound::new(0, vec![(0, tx)], 1, DEFAULT_KEY_GROUPS);
        for i in 0..BATCH as i64 {
            out.push(0, None, rec(i));
        }
        assert!(matches!(&drain(&rx)[..], [Message::Records(r)] if r.len() == BATCH));
    }
}
