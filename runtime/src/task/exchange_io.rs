//! A task's part in the keyed exchanges of its pod (`crate::exchange`): sending records to the
//! task that owns their key, taking in what other tasks sent, the watermark of each stage,
//! the end of the input, and checkpoints with aligned barriers.

use super::graph::ExchangeEdge;
use super::{Task, TaskError, TaskEvent};
use crate::exchange::inbound::Inbound;
use crate::exchange::outbound::Outbound;
use crate::exchange::{Message, TaskChannels};
use crate::record::Record;
use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use weir_expr::Expr;

/// Envelopes taken from the inbox per round, so commands and sources get their turn.
const INBOX_PER_ROUND: usize = 64;

/// The exchange state of one task.
pub(super) struct TaskExchange {
    pub(super) edges: Vec<ExchangeEdge>,
    keys: Vec<Option<Expr>>,
    inbound: Inbound,
    outbound: Outbound,
    inbox: Receiver<crate::exchange::Envelope>,
    /// Per stage (index 0 unused: the task's own watermark), the watermark its operators saw.
    stage_wm: Vec<i64>,
    /// Per stage, whether its end was passed on.
    ended: Vec<bool>,
    /// Per edge, the last watermark sent.
    sent_wm: Vec<(i64, bool)>,
    /// The checkpoint being aligned, and per stage whether its barrier was passed on.
    aligning: Option<(u64, Vec<bool>)>,
    /// Checkpoints asked for while another was aligning.
    queued: VecDeque<u64>,
}

impl TaskExchange {
    /// The exchange state of a task with `edges`, over `channels`.
    pub(super) fn new(
        edges: Vec<ExchangeEdge>,
        channels: TaskChannels,
        me: u32,
        key_groups: u32,
    ) -> Result<TaskExchange, String> {
        let keys = edges
            .iter()
            .map(|e| match &e.key {
                Some(k) => Expr::compile(k, &["e"])
                    .map(Some)
                    .map_err(|err| format!("exchange key {k}: {err}")),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let stages = edges.iter().map(|e| e.to_stage).max().unwrap_or(0) + 1;
        let senders: Vec<u32> = channels.outboxes.iter().map(|(t, _)| *t).collect();
        let to_stages: Vec<usize> = edges.iter().map(|e| e.to_stage).collect();
        Ok(TaskExchange {
            inbound: Inbound::new(&to_stages, &senders),
            outbound: Outbound::new(me, channels.outboxes, edges.len(), key_groups),
            inbox: channels.inbox,
            stage_wm: vec![i64::MIN; stages],
            ended: vec![false; stages],
            sent_wm: vec![(i64::MIN, false); edges.len()],
            aligning: None,
            queued: VecDeque::new(),
            keys,
            edges,
        })
    }

    fn stages(&self) -> usize {
        self.stage_wm.len()
    }
}

impl Task {
    /// Sends `record` through exchange `x` to the task owning its key. A key that cannot be
    /// evaluated goes to the owner of the empty key, whose operator dead-letters it.
    pub(super) fn send_to_owner(&mut self, x: usize, record: Record) {
        let Some(ex) = self.exchange.as_mut() else {
            return;
        };
        let key = ex.keys[x].as_ref().map(|k| {
            k.eval(&[&record.value])
                .map(|v| v.key_string())
                .unwrap_or_default()
        });
        ex.outbound.push(x, key.as_deref(), record);
    }

    /// Sends stage `stage`'s watermark on the exchanges it feeds, if it moved.
    pub(super) fn forward_watermark(&mut self, stage: usize, wm: i64, idle: bool) {
        let Some(ex) = self.exchange.as_mut() else {
            return;
        };
        for x in 0..ex.edges.len() {
            if ex.edges[x].from_stage == stage && (wm > ex.sent_wm[x].0 || idle != ex.sent_wm[x].1)
            {
                ex.sent_wm[x] = (wm.max(ex.sent_wm[x].0), idle);
                ex.outbound.broadcast(x, || Message::Watermark { wm, idle });
            }
        }
    }

    fn broadcast_from_stage(&mut self, stage: usize, make: impl Fn() -> Message) {
        let Some(ex) = self.exchange.as_mut() else {
            return;
        };
        for x in 0..ex.edges.len() {
            if ex.edges[x].from_stage == stage {
                ex.outbound.broadcast(x, &make);
            }
        }
    }

    /// Whether records wait for room in another task's inbox (then the task reads no input).
    pub(super) fn exchange_backpressured(&self) -> bool {
        self.exchange
            .as_ref()
            .is_some_and(|e| e.outbound.has_overflow())
    }

    /// Whether a checkpoint is being aligned (then the task reads no input).
    pub(super) fn aligning(&self) -> bool {
        self.exchange.as_ref().is_some_and(|e| e.aligning.is_some())
    }

    /// Whether every stage behind an exchange has ended and everything was sent.
    pub(super) fn exchange_done(&self) -> bool {
        self.exchange
            .as_ref()
            .is_none_or(|e| (1..e.stages()).all(|s| e.ended[s]) && !e.outbound.has_overflow())
    }

    /// One round of exchange work: send what waits, take in up to a round's envelopes and
    /// process their records, move the stages' watermarks, pass ends on, and go on with an
    /// alignment. Returns how many records came in.
    pub(super) fn pump_exchange(&mut self, events: &Sender<TaskEvent>) -> Result<usize, TaskError> {
        let Some(ex) = self.exchange.as_mut() else {
            return Ok(0);
        };
        ex.outbound.flush();
        let mut received = 0;
        for _ in 0..INBOX_PER_ROUND {
            let Some(ex) = self.exchange.as_mut() else {
                break;
            };
            let env = match ex.inbox.try_recv() {
                Ok(env) => env,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            };
            if let Some((x, records)) = ex.inbound.receive(env) {
                received += records.len();
                self.process_exchanged(x, records)?;
            }
        }
        self.advance_exchange_stages()?;
        self.progress_alignment(events)?;
        if let Some(ex) = self.exchange.as_mut() {
            ex.outbound.flush();
        }
        Ok(received)
    }

    fn advance_exchange_stages(&mut self) -> Result<(), TaskError> {
        let stages = self.exchange.as_ref().map_or(0, |e| e.stages());
        for stage in 1..stages {
            let (wm, ended, was_ended, prev) = match self.exchange.as_ref() {
                Some(e) => (
                    e.inbound.watermark(stage),
                    e.inbound.ended(stage),
                    e.ended[stage],
                    e.stage_wm[stage],
                ),
                None => return Ok(()),
            };
            if wm > prev {
                if let Some(e) = self.exchange.as_mut() {
                    e.stage_wm[stage] = wm;
                }
                self.advance_stage_and_forward(stage, wm)?;
            }
            if ended && !was_ended {
                if let Some(e) = self.exchange.as_mut() {
                    e.ended[stage] = true;
                }
                self.broadcast_from_stage(stage, || Message::End);
            }
        }
        Ok(())
    }

    /// The task's sources are exhausted: the end of stage 0 goes to every task.
    pub(super) fn end_own_stage(&mut self) {
        let first = match self.exchange.as_mut() {
            Some(e) if !e.ended[0] => {
                e.ended[0] = true;
                true
            }
            _ => false,
        };
        if first {
            self.forward_watermark(0, i64::MAX, false);
            self.broadcast_from_stage(0, || Message::End);
        }
    }

    /// Checkpoint `id` was asked for: without exchanges the snapshot is taken at once;
    /// with them the task stops reading, sends its barrier, and takes the snapshot once every
    /// sender's barrier arrived ([`Task::pump_exchange`]).
    pub(super) fn begin_checkpoint(
        &mut self,
        id: u64,
        events: &Sender<TaskEvent>,
    ) -> Result<(), TaskError> {
        let Some(ex) = self.exchange.as_mut() else {
            self.snapshot_and_report(id, events);
            return Ok(());
        };
        if ex.aligning.is_some() {
            ex.queued.push_back(id);
            return Ok(());
        }
        let stages = ex.stages();
        ex.aligning = Some((id, vec![false; stages]));
        self.progress_alignment(events)
    }

    fn progress_alignment(&mut self, events: &Sender<TaskEvent>) -> Result<(), TaskError> {
        loop {
            let Some(ex) = self.exchange.as_mut() else {
                return Ok(());
            };
            let Some((id, forwarded)) = ex.aligning.as_mut() else {
                return Ok(());
            };
            let id = *id;
            // stage 0 is aligned at once (no input is read while aligning); a later stage
            // once every sender's barrier arrived
            let mut newly = vec![];
            for (stage, done) in forwarded.iter_mut().enumerate() {
                if !*done && (stage == 0 || ex.inbound.aligned(stage, id)) {
                    *done = true;
                    newly.push(stage);
                }
            }
            let all = forwarded.iter().all(|f| *f);
            for stage in newly {
                self.broadcast_from_stage(stage, || Message::Barrier(id));
            }
            if !all {
                return Ok(());
            }
            self.snapshot_and_report(id, events);
            let Some(ex) = self.exchange.as_mut() else {
                return Ok(());
            };
            ex.aligning = None;
            let held = ex.inbound.release();
            for env in held {
                let Some(ex) = self.exchange.as_mut() else {
                    break;
                };
                if let Some((x, records)) = ex.inbound.receive(env) {
                    self.process_exchanged(x, records)?;
                }
            }
            let Some(ex) = self.exchange.as_mut() else {
                return Ok(());
            };
            match ex.queued.pop_front() {
                Some(next) => {
                    let stages = ex.stages();
                    ex.aligning = Some((next, vec![false; stages]));
                }
                None => return Ok(()),
            }
        }
    }

    /// Takes this task's part of checkpoint `id` and reports it to the coordinator.
    pub(super) fn snapshot_and_report(&mut self, id: u64, events: &Sender<TaskEvent>) {
        match self.snapshot(id) {
            Ok((dir, manifest)) => {
                let _ = events.send(TaskEvent::Snapshot {
                    task: self.id,
                    dir,
                    manifest,
                });
            }
            Err(e) => {
                let _ = events.send(TaskEvent::SnapshotFailed {
                    task: self.id,
                    id,
                    error: e.to_string(),
                });
            }
        }
    }
}
