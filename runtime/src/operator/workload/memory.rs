//! An in-memory driver for workload operators: keyed state in a hash map, timers in ordered
//! sets, outputs in a vector, and time that moves only when the caller says so.
//!
//! Tests and benchmarks use it to run an operator exactly; [`MemoryDriver::snapshot`] and
//! [`MemoryDriver::restore`] model a checkpoint (state serialised to JSON, timers, clocks) and
//! a restart from it.

use super::{
    Collector, Ctx, Event, LookupRequest, Output, StateBackendError, StateMap, Timer, TimerService,
    WorkloadError, WorkloadOperator,
};
use crate::state::codec;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use weir_crds::pipeline::TimeDomain;
use weir_expr::Value;

/// Keyed state in a hash map.
#[derive(Debug)]
pub struct MemoryState<V> {
    entries: HashMap<String, V>,
}

impl<V> Default for MemoryState<V> {
    fn default() -> Self {
        MemoryState {
            entries: HashMap::new(),
        }
    }
}

impl<V> StateMap<V> for MemoryState<V> {
    fn take(&mut self, key: &str) -> Result<Option<V>, StateBackendError> {
        Ok(self.entries.remove(key))
    }
    fn put(&mut self, key: &str, value: V) -> Result<(), StateBackendError> {
        self.entries.insert(key.to_string(), value);
        Ok(())
    }
}

fn domain_index(d: TimeDomain) -> usize {
    match d {
        TimeDomain::EventTime => 0,
        TimeDomain::ProcessingTime => 1,
    }
}

fn domain_of(i: usize) -> TimeDomain {
    if i == 0 {
        TimeDomain::EventTime
    } else {
        TimeDomain::ProcessingTime
    }
}

/// Timers: [event time, processing time] -> ordered `(ts, key)`.
#[derive(Debug, Default)]
pub struct MemoryTimers {
    sets: [BTreeSet<(i64, String)>; 2],
}

impl MemoryTimers {
    fn pop_due(&mut self, domain: TimeDomain, now: i64) -> Option<Timer> {
        let set = &mut self.sets[domain_index(domain)];
        match set.first() {
            Some((ts, _)) if *ts <= now => {
                set.pop_first().map(|(ts, key)| Timer { domain, key, ts })
            }
            _ => None,
        }
    }
}

impl TimerService for MemoryTimers {
    fn register(&mut self, domain: TimeDomain, key: &str, ts: i64) {
        self.sets[domain_index(domain)].insert((ts, key.to_string()));
    }
}

/// Everything an operator emitted, in order.
#[derive(Debug, Default)]
pub struct MemoryOutput {
    /// Records with the output they went to.
    pub records: Vec<(Output, Event)>,
    /// Lookups requested and not yet taken by the caller.
    pub lookups: Vec<LookupRequest>,
}

impl Collector for MemoryOutput {
    fn emit(&mut self, output: Output, event: Event) {
        self.records.push((output, event));
    }
    fn request_lookup(&mut self, request: LookupRequest) {
        self.lookups.push(request);
    }
}

/// A serialisable copy of a driver's state, timers and clocks: what a checkpoint holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemorySnapshot {
    /// Key -> the state value as JSON.
    pub state: BTreeMap<String, String>,
    /// `(domain index, ts, key)`; domain 0 is event time, 1 processing time.
    pub timers: Vec<(usize, i64, String)>,
    /// The watermark at the snapshot.
    pub watermark: i64,
    /// The processing time at the snapshot.
    pub processing_time: i64,
}

/// Runs one operator against in-memory state with explicitly driven time.
#[derive(Debug)]
pub struct MemoryDriver<V> {
    state: MemoryState<V>,
    timers: MemoryTimers,
    out: MemoryOutput,
    watermark: i64,
    processing_time: i64,
}

impl<V> Default for MemoryDriver<V> {
    fn default() -> Self {
        MemoryDriver {
            state: MemoryState::default(),
            timers: MemoryTimers::default(),
            out: MemoryOutput::default(),
            watermark: i64::MIN,
            processing_time: 0,
        }
    }
}

impl<V: Serialize + DeserializeOwned> MemoryDriver<V> {
    /// An empty driver: no state, watermark at `i64::MIN`, processing time 0.
    pub fn new() -> Self {
        Self::default()
    }

    fn ctx(&mut self) -> Ctx<'_, V> {
        Ctx {
            state: &mut self.state,
            timers: &mut self.timers,
            out: &mut self.out,
            watermark: self.watermark,
            processing_time: self.processing_time,
        }
    }

    /// Calls the operator's start hook (do this first, and after [`MemoryDriver::restore`]).
    pub fn start<O: WorkloadOperator<State = V>>(
        &mut self,
        op: &mut O,
    ) -> Result<(), WorkloadError> {
        op.on_start(&mut self.ctx())
    }

    /// Delivers one record from input number `input`.
    pub fn process<O: WorkloadOperator<State = V>>(
        &mut self,
        op: &mut O,
        input: usize,
        event: Event,
    ) -> Result<(), WorkloadError> {
        op.process(input, event, &mut self.ctx())
    }

    /// Moves the watermark to `watermark` (never backwards) and fires every event-time timer
    /// at or before it, in `(ts, key)` order, including timers registered while firing.
    pub fn advance_watermark<O: WorkloadOperator<State = V>>(
        &mut self,
        op: &mut O,
        watermark: i64,
    ) -> Result<(), WorkloadError> {
        self.watermark = self.watermark.max(watermark);
        self.fire(op, TimeDomain::EventTime, self.watermark)
    }

    /// Moves processing time to `now` (never backwards) and fires the processing-time timers due.
    pub fn advance_processing_time<O: WorkloadOperator<State = V>>(
        &mut self,
        op: &mut O,
        now: i64,
    ) -> Result<(), WorkloadError> {
        self.processing_time = self.processing_time.max(now);
        self.fire(op, TimeDomain::ProcessingTime, self.processing_time)
    }

    fn fire<O: WorkloadOperator<State = V>>(
        &mut self,
        op: &mut O,
        domain: TimeDomain,
        now: i64,
    ) -> Result<(), WorkloadError> {
        while let Some(timer) = self.timers.pop_due(domain, now) {
            op.on_timer(&timer, &mut self.ctx())?;
        }
        Ok(())
    }

    /// Delivers the answer to lookup `id`.
    pub fn lookup_result<O: WorkloadOperator<State = V>>(
        &mut self,
        op: &mut O,
        id: u64,
        result: Option<Value>,
    ) -> Result<(), WorkloadError> {
        op.on_lookup_result(id, result, &mut self.ctx())
    }

    /// Takes the records emitted so far.
    pub fn take_output(&mut self) -> Vec<(Output, Event)> {
        std::mem::take(&mut self.out.records)
    }

    /// Takes the lookups requested so far.
    pub fn take_lookups(&mut self) -> Vec<LookupRequest> {
        std::mem::take(&mut self.out.lookups)
    }

    /// Number of keys with state.
    pub fn state_len(&self) -> usize {
        self.state.entries.len()
    }

    /// Number of timers registered and not yet fired.
    pub fn timer_len(&self) -> usize {
        self.timers.sets[0].len() + self.timers.sets[1].len()
    }

    /// The current watermark.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The current processing time.
    pub fn processing_time(&self) -> i64 {
        self.processing_time
    }

    /// A copy of state, timers and clocks (not the emitted records or pending lookup requests,
    /// which in a real job belong to the sink and the network).
    pub fn snapshot(&self) -> Result<MemorySnapshot, serde_json::Error> {
        let mut state = BTreeMap::new();
        for (k, v) in &self.state.entries {
            state.insert(k.clone(), serde_json::to_string(v)?);
        }
        let timers = self
            .timers
            .sets
            .iter()
            .enumerate()
            .flat_map(|(d, s)| s.iter().map(move |(ts, k)| (d, *ts, k.clone())))
            .collect();
        Ok(MemorySnapshot {
            state,
            timers,
            watermark: self.watermark,
            processing_time: self.processing_time,
        })
    }

    /// A driver resuming from `snapshot`; call [`MemoryDriver::start`] before continuing.
    pub fn restore(snapshot: &MemorySnapshot) -> Result<Self, serde_json::Error> {
        let mut d = MemoryDriver {
            watermark: snapshot.watermark,
            processing_time: snapshot.processing_time,
            ..MemoryDriver::default()
        };
        for (k, v) in &snapshot.state {
            d.state.entries.insert(k.clone(), serde_json::from_str(v)?);
        }
        for (domain, ts, key) in &snapshot.timers {
            d.timers.register(domain_of(*domain), key, *ts);
        }
        Ok(d)
    }

    /// Snapshots, serialises the snapshot, and restores a fresh driver from the bytes — the
    /// round trip a checkpoint and restart go through. Pending output is dropped. Each state
    /// value also goes through the engine's binary encoding ([`codec`]), as it does in RocksDB.
    pub fn checkpoint_and_restore(&self) -> Result<Self, serde_json::Error> {
        let bytes = serde_json::to_vec(&self.snapshot()?)?;
        let mut d = Self::restore(&serde_json::from_slice(&bytes)?)?;
        let mut buf = Vec::new();
        for v in d.state.entries.values_mut() {
            buf.clear();
            let codec_err = <serde_json::Error as serde::de::Error>::custom;
            codec::encode_into(&*v, &mut buf).map_err(codec_err)?;
            *v = codec::decode(&buf).map_err(codec_err)?;
        }
        Ok(d)
    }
}
