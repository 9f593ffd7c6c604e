//! How records, watermarks and timers move through a task: reading a batch from every input,
//! pushing each record depth-first through the operators and sinks that consume its stream,
//! advancing the watermark operator by operator, firing timers, and flushing sinks.

use super::graph::Consumer;
use super::input_lag::{self, InputLagFacts};
use super::{Task, TaskError};
use crate::operator::repartition::ANNOUNCE_FIELD;
use crate::operator::{self, Context};
use crate::record::Record;
use crate::source::ReadStatus;
use crate::time::{task_watermark, TimeDomain};
use std::time::Instant;

impl Task {
    /// Pushes `rec` on `stream` through every consumer, depth first.
    pub(super) fn dispatch(&mut self, stream: usize, rec: Record) -> Result<(), TaskError> {
        let mut stack = std::mem::take(&mut self.stack);
        stack.push((stream, rec));
        let res = self.drain(&mut stack);
        stack.clear();
        self.stack = stack;
        res
    }

    pub(super) fn drain(&mut self, stack: &mut Vec<(usize, Record)>) -> Result<(), TaskError> {
        while let Some((s, rec)) = stack.pop() {
            let n = self.consumers[s].len();
            let mut rec = Some(rec);
            for ci in 0..n {
                let c = self.consumers[s][ci];
                let r = if ci + 1 == n { rec.take() } else { rec.clone() };
                let Some(r) = r else { continue };
                match c {
                    Consumer::Op { op, input } => self.process_at(op, input, r, stack)?,
                    Consumer::Exchange(x) => self.send_to_owner(x, r),
                    Consumer::Sink(k) => {
                        self.sinks[k].write(&r).map_err(self.sink_err())?;
                        self.pending_out += 1;
                        let lat = (self.now - r.ingest_ms).max(0) as f64 / 1000.0;
                        self.metrics.latency.observe(lat);
                    }
                }
            }
        }
        Ok(())
    }

    /// Calls a hook of operator `idx` and dispatches what it emitted.
    pub(super) fn call_op(
        &mut self,
        idx: usize,
        f: impl FnOnce(&mut dyn operator::Operator, &mut Context<'_>) -> operator::OpResult,
    ) -> Result<(), TaskError> {
        let slot = &mut self.ops[idx];
        let mut ctx = Context::new(
            slot.watermark,
            self.now,
            slot.side_outputs,
            &mut self.out_buf,
            &mut slot.timers,
            &mut slot.dead_letters,
        );
        f(slot.op.as_mut(), &mut ctx).map_err(self.op_err())?;
        let outs: Vec<(usize, Record)> = self
            .out_buf
            .drain(..)
            .map(|(p, r)| (self.ops[idx].ports[p], r))
            .collect();
        for (s, r) in outs {
            self.dispatch(s, r)?;
        }
        Ok(())
    }

    /// The task's own watermark (stage 0: its sources) advanced to `wm`.
    pub(super) fn advance_watermark(&mut self, wm: i64) -> Result<(), TaskError> {
        if wm <= self.watermark {
            return Ok(());
        }
        self.watermark = wm;
        self.advance_stage(0, wm)?;
        if self.exchange.is_some() {
            self.forward_watermark(0, wm, self.sources_idle());
        }
        Ok(())
    }

    /// Walks stage `stage`'s operators with watermark `wm`. Operators are in topological
    /// order: each one sees the new watermark only after everything its upstream operators
    /// emitted for it has been processed.
    pub(super) fn advance_stage(&mut self, stage: usize, wm: i64) -> Result<(), TaskError> {
        for idx in 0..self.ops.len() {
            if self.op_stages[idx] != stage || self.ops[idx].watermark >= wm {
                continue;
            }
            self.ops[idx].watermark = wm;
            self.call_op(idx, |op, ctx| op.on_watermark(ctx))?;
            while self.ops[idx].op.watermark_work_left(wm) {
                self.call_op(idx, |op, ctx| op.on_watermark(ctx))?;
            }
            while let Some(t) = self.ops[idx].timers.pop_due(TimeDomain::EventTime, wm) {
                self.call_op(idx, |op, ctx| op.on_timer(t, ctx))?;
            }
        }
        Ok(())
    }

    /// Whether every source partition of this task that is not exhausted is idle.
    fn sources_idle(&self) -> bool {
        let mut live = self.inputs.iter().filter(|i| !i.wm.exhausted).peekable();
        live.peek().is_some() && live.all(|i| i.wm.is_idle(self.now))
    }

    /// Processes records that arrived through exchange `x`: each goes to the exchange's
    /// operator input, then downstream like any record.
    pub(super) fn process_exchanged(
        &mut self,
        x: usize,
        records: Vec<Record>,
    ) -> Result<(), TaskError> {
        let Some((op, input)) = self
            .exchange
            .as_ref()
            .map(|e| (e.edges[x].op, e.edges[x].input))
        else {
            return Ok(());
        };
        let mut stack = std::mem::take(&mut self.stack);
        let mut res = Ok(());
        for r in records {
            res = self
                .process_at(op, input, r, &mut stack)
                .and_then(|()| self.drain(&mut stack));
            if res.is_err() {
                break;
            }
        }
        stack.clear();
        self.stack = stack;
        res
    }

    /// Hands `record` to input `input` of operator `op`; what it emits goes on `stack`.
    fn process_at(
        &mut self,
        op: usize,
        input: usize,
        record: Record,
        stack: &mut Vec<(usize, Record)>,
    ) -> Result<(), TaskError> {
        let slot = &mut self.ops[op];
        let mut ctx = Context::new(
            slot.watermark,
            self.now,
            slot.side_outputs,
            &mut self.out_buf,
            &mut slot.timers,
            &mut slot.dead_letters,
        );
        let task = self.id;
        slot.op
            .process(input, record, &mut ctx)
            .map_err(|source| TaskError::Operator { task, source })?;
        for (port, out) in self.out_buf.drain(..).rev() {
            stack.push((slot.ports[port], out));
        }
        Ok(())
    }

    pub(super) fn fire_processing_timers(&mut self) -> Result<(), TaskError> {
        let now = self.now;
        for idx in 0..self.ops.len() {
            while let Some(t) = self.ops[idx]
                .timers
                .pop_due(TimeDomain::ProcessingTime, now)
            {
                self.call_op(idx, |op, ctx| op.on_timer(t, ctx))?;
            }
        }
        Ok(())
    }

    /// Reads one batch from every input; returns how many records were read.
    pub(super) fn poll_inputs(&mut self) -> Result<usize, TaskError> {
        let mut total = 0;
        for ii in 0..self.inputs.len() {
            if self.inputs[ii].wm.exhausted {
                continue;
            }
            let mut buf = std::mem::take(&mut self.read_buf);
            buf.clear();
            let status = self.inputs[ii]
                .reader
                .read(self.read_batch, &mut buf)
                .map_err(|source| TaskError::Source {
                    task: self.id,
                    source,
                })?;
            let announcing = self.inputs[ii].wm.writers > 0;
            let mut announcements = 0;
            let n = buf.len();
            for (ts, value) in buf.drain(..) {
                let inp = &mut self.inputs[ii];
                if announcing {
                    // a writer's watermark announcement: it moves the partition's watermark
                    // and goes no further
                    if let Some(m) = value.get(ANNOUNCE_FIELD).as_i64() {
                        let writer = value.get("w").as_i64().unwrap_or(-1);
                        inp.wm.announce(writer, m, self.now);
                        announcements += 1;
                        continue;
                    }
                }
                let ts = ts
                    .or_else(|| {
                        inp.time_field
                            .as_deref()
                            .and_then(|f| value.get(f).as_i64())
                    })
                    .unwrap_or(self.now);
                let moved = inp.wm.observe(ts, self.now) && inp.stage == 0 && !announcing;
                let stream = inp.stream;
                let candidate = inp.wm.current();
                self.dispatch(stream, Record::new(ts, value, self.now))?;
                if moved && candidate > self.watermark {
                    let wm = if self.inputs.len() == 1 {
                        candidate
                    } else {
                        self.stage_input_watermark(0)
                    };
                    self.advance_watermark(wm)?;
                }
            }
            self.read_buf = buf;
            let inp = &mut self.inputs[ii];
            let malformed = inp.reader.malformed();
            if malformed > inp.malformed_reported {
                self.metrics
                    .malformed
                    .inc_by(malformed - inp.malformed_reported);
                inp.malformed_reported = malformed;
            }
            if status == ReadStatus::Exhausted {
                inp.wm.exhausted = true;
            }
            let letters = inp.reader.take_dead_letters();
            let stream = inp.dead_letter_stream;
            for value in letters {
                self.dispatch(stream, Record::new(self.now, value, self.now))?;
            }
            self.metrics.records_in.inc_by((n - announcements) as u64);
            total += n - announcements;
            if announcements > 0 {
                let stage = self.inputs[ii].stage;
                self.advance_announced_stage(stage)?;
            }
        }
        Ok(total)
    }

    /// The watermark of stage `stage`'s inputs: the minimum over them (see
    /// `time::watermark::task_watermark`), never below what the stage already has.
    fn stage_input_watermark(&self, stage: usize) -> i64 {
        let previous = if stage == 0 {
            self.watermark
        } else {
            self.stage_watermarks[stage]
        };
        let inputs = self.inputs.iter().filter(|i| i.stage == stage);
        task_watermark(inputs.map(|i| &i.wm), previous, self.now)
    }

    /// Moves stage `stage` (fed by repartition readers, `stage > 0`) to its inputs' watermark.
    fn advance_announced_stage(&mut self, stage: usize) -> Result<(), TaskError> {
        if stage == 0 {
            let wm = self.stage_input_watermark(0);
            return self.advance_watermark(wm);
        }
        let wm = self.stage_input_watermark(stage);
        if wm <= self.stage_watermarks[stage] {
            return Ok(());
        }
        self.stage_watermarks[stage] = wm;
        self.advance_stage_and_forward(stage, wm)
    }

    /// Walks stage `stage` (> 0) with watermark `wm` and passes it on through the in-memory
    /// exchanges that stage sends to, if any.
    pub(super) fn advance_stage_and_forward(
        &mut self,
        stage: usize,
        wm: i64,
    ) -> Result<(), TaskError> {
        self.advance_stage(stage, wm)?;
        if self.exchange.is_some() {
            self.forward_watermark(stage, wm, false);
        }
        Ok(())
    }

    pub(super) fn all_exhausted(&self) -> bool {
        self.inputs.iter().all(|i| i.wm.exhausted)
    }

    /// Moves every stage to its inputs' watermark (idle and exhausted inputs, and stages that
    /// have none left, are only noticed here).
    pub(super) fn update_watermark_from_inputs(&mut self) -> Result<(), TaskError> {
        let wm = self.stage_input_watermark(0);
        self.advance_watermark(wm)?;
        if self.announced_inputs {
            for stage in 1..self.stage_watermarks.len() {
                if self.inputs.iter().any(|i| i.stage == stage) {
                    self.advance_announced_stage(stage)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn flush_sinks(&mut self) -> Result<(), TaskError> {
        let started = Instant::now();
        for s in self.sinks.iter_mut() {
            let task = self.id;
            s.flush()
                .map_err(|source| TaskError::Sink { task, source })?;
        }
        self.metrics
            .backpressured_ms
            .inc_by(started.elapsed().as_millis() as u64);
        self.metrics.records_out.inc_by(self.pending_out);
        self.pending_out = 0;
        let dead: u64 = self.ops.iter().map(|o| o.dead_letters).sum();
        if dead > self.dead_reported {
            self.metrics.dead_letters.inc_by(dead - self.dead_reported);
            self.dead_reported = dead;
        }
        if self.watermark > i64::MIN && self.watermark < i64::MAX {
            self.metrics.watermark.set(self.watermark);
        }
        self.report_source_lag();
        self.report_input_lag();
        Ok(())
    }

    /// Exports the task's input delay and, when its event time follows the wall clock, its
    /// event-time lag (see [`super::input_lag`]).
    fn report_input_lag(&mut self) {
        let facts: Vec<InputLagFacts> = self
            .inputs
            .iter()
            .map(|i| InputLagFacts {
                schedule_delay_ms: i.reader.schedule_delay_ms(),
                records_behind: i.reader.lag(),
                wall_clock: i.reader.event_time_follows_wall_clock(),
            })
            .collect();
        let wm = (self.watermark > i64::MIN && self.watermark < i64::MAX).then_some(self.watermark);
        self.metrics
            .set_input_delay(input_lag::task_input_delay_ms(&facts, self.now, wm));
        self.metrics
            .set_event_time_lag(input_lag::task_event_time_lag_ms(&facts, self.now, wm));
    }

    /// Exports the lag of every reader that knows it (Kafka partitions), when it changed, and
    /// the task's largest.
    fn report_source_lag(&mut self) {
        let mut changed = false;
        for i in self.inputs.iter_mut() {
            let lag = i.reader.lag();
            if lag != i.lag_reported {
                if let Some(l) = lag {
                    self.metrics.set_source_lag(&i.source, i.partition, l);
                }
                i.lag_reported = lag;
                changed = true;
            }
        }
        if changed {
            if let Some(max) = self.inputs.iter().filter_map(|i| i.lag_reported).max() {
                self.metrics.set_kafka_lag(max);
            }
        }
    }
}
