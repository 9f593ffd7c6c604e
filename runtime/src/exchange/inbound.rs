//! A task's receiving side of its exchanges, pure: per sender its watermark, idleness, end and
//! checkpoint barrier; what a sender sent after its barrier is held until the checkpoint is
//! taken; per stage the watermark (minimum over senders, idle ones aside), whether every
//! sender's barrier arrived, and whether every sender ended.

use super::{Envelope, Message};
use crate::record::Record;
use std::collections::{BTreeMap, VecDeque};

#[derive(Debug, Default)]
struct Sender {
    wm: Option<i64>,
    idle: bool,
    ended: bool,
    barrier: Option<u64>,
    held: VecDeque<Message>,
}

#[derive(Debug)]
struct ExchangeIn {
    stage: usize,
    senders: BTreeMap<u32, Sender>,
}

/// The receiving side of every exchange of one task.
#[derive(Debug)]
pub struct Inbound {
    exchanges: Vec<ExchangeIn>,
}

impl Inbound {
    /// Exchange `x` feeds stage `stages[x]`; every task in `senders` sends on every exchange.
    pub fn new(stages: &[usize], senders: &[u32]) -> Self {
        Inbound {
            exchanges: stages
                .iter()
                .map(|&stage| ExchangeIn {
                    stage,
                    senders: senders.iter().map(|&s| (s, Sender::default())).collect(),
                })
                .collect(),
        }
    }

    /// Takes in one envelope; returns the records to process now (`None` for other messages,
    /// and for records held behind a barrier).
    pub fn receive(&mut self, env: Envelope) -> Option<(usize, Vec<Record>)> {
        let x = env.exchange;
        let sender = self.exchanges.get_mut(x)?.senders.get_mut(&env.sender)?;
        if sender.barrier.is_some() {
            sender.held.push_back(env.message);
            return None;
        }
        match env.message {
            Message::Records(records) => return Some((x, records)),
            Message::Watermark { wm, idle } => {
                sender.wm = Some(sender.wm.map_or(wm, |w| w.max(wm)));
                sender.idle = idle;
            }
            Message::Barrier(id) => sender.barrier = Some(id),
            Message::End => sender.ended = true,
        }
        None
    }

    fn stage_senders(&self, stage: usize) -> impl Iterator<Item = &Sender> {
        self.exchanges
            .iter()
            .filter(move |x| x.stage == stage)
            .flat_map(|x| x.senders.values())
    }

    /// The watermark of stage `stage`: the minimum over its senders that are neither idle nor
    /// ended (a sender not heard from yet holds it at "none"); with every sender idle, the
    /// largest of theirs; with every sender ended, the end of time.
    pub fn watermark(&self, stage: usize) -> i64 {
        let mut min_active: Option<i64> = None;
        let mut max_idle: Option<i64> = None;
        for s in self.stage_senders(stage) {
            if s.ended {
                continue;
            }
            let w = s.wm.unwrap_or(i64::MIN);
            if s.idle {
                max_idle = Some(max_idle.map_or(w, |m| m.max(w)));
            } else {
                min_active = Some(min_active.map_or(w, |m| m.min(w)));
            }
        }
        min_active.or(max_idle).unwrap_or(i64::MAX)
    }

    /// Whether every sender of stage `stage` ended.
    pub fn ended(&self, stage: usize) -> bool {
        self.stage_senders(stage).all(|s| s.ended)
    }

    /// Whether every sender of stage `stage` sent the barrier of checkpoint `id`.
    pub fn aligned(&self, stage: usize, id: u64) -> bool {
        self.stage_senders(stage).all(|s| s.barrier == Some(id))
    }

    /// The checkpoint is taken: lifts every barrier and returns what the senders sent after
    /// theirs, in order per sender, to be received again (a later barrier among them holds
    /// that sender again).
    pub fn release(&mut self) -> Vec<Envelope> {
        let mut out = vec![];
        for (x, ex) in self.exchanges.iter_mut().enumerate() {
            for (&sender, s) in ex.senders.iter_mut() {
                s.barrier = None;
                out.extend(s.held.drain(..).map(|message| Envelope {
                    exchange: x,
                    sender,
                    message,
                }));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_expr::Value;

    fn env(exchange: usize, sender: u32, message: Message) -> Envelope {
        Envelope {
            exchange,
            sender,
            message,
        }
    }

    fn records(ids: &[i64]) -> Message {
        Message::Records(
            ids.iter()
                .map(|i| Record::new(*i, Value::Int(*i), 0))
                .collect(),
        )
    }

    fn wm(wm: i64) -> Message {
        Message::Watermark { wm, idle: false }
    }

    #[test]
    fn the_watermark_is_the_minimum_over_senders_and_waits_for_all() {
        let mut i = Inbound::new(&[1], &[0, 1]);
        assert_eq!(i.watermark(1), i64::MIN);
        i.receive(env(0, 0, wm(100)));
        assert_eq!(i.watermark(1), i64::MIN, "sender 1 not heard from");
        i.receive(env(0, 1, wm(50)));
        assert_eq!(i.watermark(1), 50);
        i.receive(env(0, 1, wm(40)));
        assert_eq!(i.watermark(1), 50, "a sender's watermark never goes back");
        i.receive(env(0, 1, wm(300)));
        assert_eq!(i.watermark(1), 100);
    }

    #[test]
    fn idle_senders_do_not_hold_it_back_and_ended_ones_are_done() {
        let mut i = Inbound::new(&[1], &[0, 1]);
        i.receive(env(0, 0, wm(100)));
        i.receive(env(0, 1, Message::Watermark { wm: 10, idle: true }));
        assert_eq!(i.watermark(1), 100);
        i.receive(env(
            0,
            0,
            Message::Watermark {
                wm: 120,
                idle: true,
            },
        ));
        assert_eq!(i.watermark(1), 120, "all idle: the largest");
        i.receive(env(0, 0, Message::End));
        i.receive(env(0, 1, Message::End));
        assert!(i.ended(1));
        assert_eq!(i.watermark(1), i64::MAX);
    }

    #[test]
    fn records_after_a_barrier_wait_until_the_checkpoint_is_taken() {
        let mut i = Inbound::new(&[1], &[0, 1]);
        assert!(i.receive(env(0, 0, records(&[1]))).is_some());
        i.receive(env(0, 0, Message::Barrier(7)));
        assert!(i.receive(env(0, 0, records(&[2]))).is_none(), "held");
        assert!(!i.aligned(1, 7));
        let (x, r) = i
            .receive(env(0, 1, records(&[3])))
            .expect("sender 1 is before its barrier");
        assert_eq!((x, r.len()), (0, 1));
        i.receive(env(0, 1, Message::Barrier(7)));
        assert!(i.aligned(1, 7));
        let released = i.release();
        assert_eq!(released.len(), 1);
        assert!(!i.aligned(1, 7));
        let again: Vec<_> = released.into_iter().filter_map(|e| i.receive(e)).collect();
        assert_eq!(again[0].1[0].ts, 2);
    }

    #[test]
    fn a_second_barrier_among_held_messages_holds_the_sender_again() {
        let mut i = Inbound::new(&[1], &[0]);
        i.receive(env(0, 0, Message::Barrier(1)));
        i.receive(env(0, 0, records(&[5])));
        i.receive(env(0, 0, Message::Barrier(2)));
        i.receive(env(0, 0, records(&[6])));
        let mut delivered = vec![];
        for e in i.release() {
            delivered.extend(i.receive(e));
        }
        assert_eq!(delivered.len(), 1, "only the record before barrier 2");
        assert!(i.aligned(1, 2));
        let after: Vec<_> = i
            .release()
            .into_iter()
            .filter_map(|e| i.receive(e))
            .collect();
        assert_eq!(after[0].1[0].ts, 6);
    }

    #[test]
    fn stages_are_separate() {
        let mut i = Inbound::new(&[1, 2], &[0]);
        i.receive(env(0, 0, Message::Barrier(3)));
        assert!(i.aligned(1, 3));
        assert!(!i.aligned(2, 3));
        assert_eq!(i.watermark(3), i64::MAX, "a stage without exchanges");
    }
}
