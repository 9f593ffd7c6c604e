//! Per-key buffering that releases events in a deterministic event-time order.
//!
//! Pattern and accumulate must not depend on the order in which records of different inputs
//! happen to arrive. They buffer each key's events until the watermark passes their
//! timestamp (an event-time timer at the event's `ts`), then process them sorted by
//! `(ts, rank, arrival)`, where `rank` is the input's place in the operator's tie-break order
//! (e.g. `sameTimestampOrder: [impressions, clicks]`). Equal-millisecond events of different
//! inputs are therefore handled identically whichever arrived first.

use super::{put, take, Ctx, Event, Timer, WorkloadError};
use serde::{Deserialize, Serialize};
use weir_crds::pipeline::TimeDomain;

/// One buffered event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Buffered {
    /// Tie-break rank of the event's input (lower first).
    pub rank: u32,
    /// Arrival number within the key, the last tie-break.
    pub seq: u64,
    /// The input the event came from.
    pub input: u32,
    /// The event.
    pub event: Event,
}

/// A key's events not yet released, kept sorted by `(ts, rank, seq)`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderedBuffer {
    /// Pending events in release order.
    pub pending: Vec<Buffered>,
    /// The next arrival number.
    pub next_seq: u64,
}

impl OrderedBuffer {
    /// Buffers `event` from `input` with tie-break `rank`.
    pub fn push(&mut self, input: u32, rank: u32, event: Event) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let sort_key = (event.ts, rank, seq);
        let at = self
            .pending
            .partition_point(|b| (b.event.ts, b.rank, b.seq) <= sort_key);
        self.pending.insert(
            at,
            Buffered {
                rank,
                seq,
                input,
                event,
            },
        );
    }

    /// Removes and returns, in release order, every event with `ts <= up_to`.
    pub fn release(&mut self, up_to: i64) -> Vec<Buffered> {
        let n = self.pending.partition_point(|b| b.event.ts <= up_to);
        let rest = self.pending.split_off(n);
        std::mem::replace(&mut self.pending, rest)
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Operator state that holds its key's events in an [`OrderedBuffer`].
pub trait Buffering {
    /// The key's buffer.
    fn buffer(&mut self) -> &mut OrderedBuffer;
}

/// Holds `event` (from `input`, tie-break `rank`) in the buffer of `key`'s state `st` until
/// the watermark passes it: stores `st` and registers an event-time timer at the event's time
/// (see [`released`]).
pub(crate) fn hold<S: Buffering>(
    operator: &str,
    key: &str,
    mut st: S,
    (input, rank): (usize, u32),
    event: Event,
    ctx: &mut Ctx<'_, S>,
) -> Result<(), WorkloadError> {
    let ts = event.ts;
    st.buffer()
        .push(u32::try_from(input).unwrap_or(u32::MAX), rank, event);
    put(ctx, operator, key, st)?;
    ctx.timers.register(TimeDomain::EventTime, key, ts);
    Ok(())
}

/// At an event-time timer of `timer.key`: takes the key's state out and the events it holds
/// with `ts <= timer.ts`, in release order (`None` if the key has no state).
pub(crate) fn released<S: Buffering>(
    operator: &str,
    timer: &Timer,
    ctx: &mut Ctx<'_, S>,
) -> Result<Option<(S, Vec<Buffered>)>, WorkloadError> {
    let Some(mut st) = take(ctx, operator, &timer.key)? else {
        return Ok(None);
    };
    let events = st.buffer().release(timer.ts);
    Ok(Some((st, events)))
}

/// The tie-break rank of each input: its place in `order` if listed, otherwise after all listed
/// inputs in declared input order.
pub fn input_ranks(inputs: &[String], order: &[String]) -> Vec<u32> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let r = order
                .iter()
                .position(|o| o == name)
                .unwrap_or(order.len() + i);
            u32::try_from(r).unwrap_or(u32::MAX)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_expr::Value;

    #[test]
    fn releases_by_time_then_rank_then_arrival() {
        let mut b = OrderedBuffer::default();
        b.push(1, 1, Event::new(10, Value::Int(1)));
        b.push(0, 0, Event::new(10, Value::Int(2)));
        b.push(0, 0, Event::new(5, Value::Int(3)));
        b.push(0, 0, Event::new(10, Value::Int(4)));
        b.push(0, 0, Event::new(11, Value::Int(5)));
        let out: Vec<i64> = b
            .release(10)
            .iter()
            .map(|x| x.event.value.as_i64().unwrap_or(-1))
            .collect();
        assert_eq!(out, vec![3, 2, 4, 1]);
        assert_eq!(b.pending.len(), 1);
    }

    #[test]
    fn unlisted_inputs_rank_after_listed_ones() {
        let inputs = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(input_ranks(&inputs, &["c".to_string()]), vec![1, 2, 0]);
    }
}
