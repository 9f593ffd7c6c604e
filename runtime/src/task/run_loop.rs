//! The task thread's loop: commands from the coordinator (checkpoint, commit, pause, stop)
//! between batches, reading while there is input, waiting behind a rate-limited sink, idling
//! when there is none, and the busy/idle/backpressured time it reports.

use super::{Task, TaskCommand, TaskError, TaskEvent, SINK_BACKOFF_SLICE};
use crate::record::now_ms;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant};

impl Task {
    /// Handles one command; returns false on Stop.
    pub(super) fn handle(
        &mut self,
        cmd: TaskCommand,
        events: &Sender<TaskEvent>,
    ) -> Result<bool, TaskError> {
        match cmd {
            TaskCommand::Checkpoint(id) => self.begin_checkpoint(id, events)?,
            TaskCommand::Commit(id) => self.commit(id)?,
            TaskCommand::Pause => self.paused = true,
            TaskCommand::Stop => return Ok(false),
        }
        Ok(true)
    }

    /// The task loop: runs until Stop (or a failure, reported as [`TaskEvent::Failed`]).
    pub fn run(mut self, commands: Receiver<TaskCommand>, events: Sender<TaskEvent>) {
        let id = self.id;
        if let Err(e) = self.run_inner(&commands, &events) {
            tracing::error!(task = id, "task failed: {e}");
            let _ = events.send(TaskEvent::Failed {
                task: id,
                error: e.to_string(),
            });
        }
        for slot in self.ops.iter_mut() {
            let _ = slot.op.on_close();
        }
    }

    fn run_inner(
        &mut self,
        commands: &Receiver<TaskCommand>,
        events: &Sender<TaskEvent>,
    ) -> Result<(), TaskError> {
        let has_idle = self.inputs.iter().any(|i| i.wm.idle_timeout_ms.is_some());
        let exchanging = self.exchange.is_some();
        loop {
            loop {
                match commands.try_recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd, events)? {
                            return Ok(());
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Ok(()),
                }
            }
            let exchanged = if exchanging {
                self.now = now_ms();
                let n = self.pump_exchange(events)?;
                self.flush_sinks()?;
                n
            } else {
                0
            };
            if self.finished || self.paused || self.aligning() || self.exchange_backpressured() {
                // nothing to read: wait for a command (and, with exchanges, keep taking in
                // what other tasks send, and pass on barriers)
                let backpressured = self.exchange_backpressured();
                let wait = if !exchanging {
                    Duration::from_millis(200)
                } else if exchanged > 0 || backpressured {
                    Duration::ZERO
                } else if self.finished {
                    // only barriers still come; a command wakes the task at once
                    Duration::from_millis(20)
                } else {
                    Duration::from_millis(1)
                };
                let blocked = Instant::now();
                let command = commands.recv_timeout(wait);
                if backpressured {
                    self.count_blocked(blocked.elapsed());
                }
                if !self.handle_received(command, events)? {
                    return Ok(());
                }
                if !self.finished && self.all_exhausted() && self.exchange_done() {
                    self.finished = true;
                    let _ = events.send(TaskEvent::Finished { task: self.id });
                }
                continue;
            }
            let backoff = self.sinks.iter().map(|s| s.backoff()).max();
            if let Some(backoff) = backoff.filter(|b| !b.is_zero()) {
                // A rate-limited sink is ahead of its budget: read nothing until it caught up.
                let blocked = Instant::now();
                let command = commands.recv_timeout(backoff.min(SINK_BACKOFF_SLICE));
                self.count_blocked(blocked.elapsed());
                if !self.handle_received(command, events)? {
                    return Ok(());
                }
                continue;
            }
            let started = Instant::now();
            self.now = now_ms();
            let n = self.poll_inputs()?;
            self.fire_processing_timers()?;
            if has_idle || self.announced_inputs || self.all_exhausted() {
                self.update_watermark_from_inputs()?;
            }
            if self.all_exhausted() {
                self.end_own_stage();
            }
            self.flush_sinks()?;
            self.busy_us += started.elapsed().as_micros();
            if self.busy_us >= 1000 {
                self.metrics.busy_ms.inc_by((self.busy_us / 1000) as u64);
                self.busy_us %= 1000;
            }
            if self.all_exhausted() && self.exchange_done() {
                self.finished = true;
                let _ = events.send(TaskEvent::Finished { task: self.id });
                continue;
            }
            if n == 0 && exchanged == 0 {
                let idle = Instant::now();
                let wait = Duration::from_millis(if exchanging { 1 } else { 5 });
                if !self.handle_received(commands.recv_timeout(wait), events)? {
                    return Ok(());
                }
                self.idle_us += idle.elapsed().as_micros();
                if self.idle_us >= 1000 {
                    self.metrics.idle_ms.inc_by((self.idle_us / 1000) as u64);
                    self.idle_us %= 1000;
                }
            }
        }
    }

    /// Handles what a wait for a command brought; false when the task must stop.
    fn handle_received(
        &mut self,
        received: Result<TaskCommand, RecvTimeoutError>,
        events: &Sender<TaskEvent>,
    ) -> Result<bool, TaskError> {
        match received {
            Ok(cmd) => self.handle(cmd, events),
            Err(RecvTimeoutError::Timeout) => Ok(true),
            Err(RecvTimeoutError::Disconnected) => Ok(false),
        }
    }

    /// Time spent waiting for a rate-limited sink: backpressured, and busy (as time blocked in
    /// a sink flush is).
    pub(super) fn count_blocked(&mut self, blocked: Duration) {
        let us = blocked.as_micros();
        self.metrics
            .backpressured_ms
            .inc_by(((us + 500) / 1000) as u64);
        self.busy_us += us;
        if self.busy_us >= 1000 {
            self.metrics.busy_ms.inc_by((self.busy_us / 1000) as u64);
            self.busy_us %= 1000;
        }
    }
}
