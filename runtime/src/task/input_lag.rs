//! How far behind its input a task is, in a measure that means something for every source.
//!
//! - **Input delay** (`weir_task_input_delay_ms`), processing time behind the input's head:
//!   a rate-limited generator reports how far behind its schedule it is; a Kafka partition is
//!   0 once caught up (no records behind) and otherwise the age of what the task is reading
//!   (wall clock − watermark: Kafka's event times follow the wall clock); an unbounded-rate
//!   generator is never behind (0); a file replay has no schedule (undefined, no series).
//! - **Event-time lag** (`weir_task_event_time_lag_ms`, wall clock − watermark) only when every
//!   input's event time follows the wall clock (Kafka). Generators and file replays carry
//!   synthetic or historical event times (a generator starts at a 2023 epoch), for which the
//!   difference to now is years and says nothing about the job.

/// What one input knows about its own lag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InputLagFacts {
    /// Processing-time delay behind the input's schedule, when the reader has one.
    pub schedule_delay_ms: Option<u64>,
    /// Records between the reader's position and the partition's end, when it knows.
    pub records_behind: Option<u64>,
    /// Whether the input's event times follow the wall clock.
    pub wall_clock: bool,
}

/// The delay of one input: its schedule delay; else 0 when no records are behind, else the
/// event-time lag when its event time follows the wall clock; else unknown.
fn input_delay(i: &InputLagFacts, event_lag_ms: Option<i64>) -> Option<i64> {
    if let Some(d) = i.schedule_delay_ms {
        return Some(i64::try_from(d).unwrap_or(i64::MAX));
    }
    match i.records_behind {
        Some(0) => Some(0),
        Some(_) if i.wall_clock => event_lag_ms,
        _ => None,
    }
}

/// The task's input delay: the largest over its inputs that know theirs (`None` if none does).
pub fn task_input_delay_ms(
    inputs: &[InputLagFacts],
    now_ms: i64,
    watermark: Option<i64>,
) -> Option<i64> {
    let event_lag = watermark.map(|w| now_ms.saturating_sub(w).max(0));
    inputs
        .iter()
        .filter_map(|i| input_delay(i, event_lag))
        .max()
}

/// The task's event-time lag, exported only when every input's event time follows the wall
/// clock (and the task has inputs and a watermark).
pub fn task_event_time_lag_ms(
    inputs: &[InputLagFacts],
    now_ms: i64,
    watermark: Option<i64>,
) -> Option<i64> {
    let wall = !inputs.is_empty() && inputs.iter().all(|i| i.wall_clock);
    watermark
        .filter(|_| wall)
        .map(|w| now_ms.saturating_sub(w).max(0))
}

/// How far a rate-limited reader is behind its schedule: `emitted` records at `rate` per
/// second should have taken `emitted / rate` seconds; any more time elapsed is delay. With
/// nothing pending (the reader waits for its next slot) it is 0.
pub fn schedule_delay_ms(elapsed_ms: u64, rate_per_second: f64, emitted: u64) -> u64 {
    if !(rate_per_second.is_finite() && rate_per_second > 0.0) {
        return 0;
    }
    let due_ms = emitted as f64 * 1000.0 / rate_per_second;
    (elapsed_ms as f64 - due_ms).max(0.0) as u64
}

/// The lag part of the local progress line (`weir-runtime run`).
pub fn progress_text(
    input_delay_ms: Option<i64>,
    kafka_records: Option<i64>,
    event_time_lag_ms: Option<i64>,
) -> String {
    let secs = |ms: i64| format!("{:.1}s", ms as f64 / 1000.0);
    let mut parts = vec![format!(
        "input delay {}",
        input_delay_ms.map_or_else(|| "-".into(), secs)
    )];
    if let Some(r) = kafka_records {
        parts.push(format!("Kafka lag {r} records"));
    }
    if let Some(l) = event_time_lag_ms {
        parts.push(format!("event-time lag {}", secs(l)));
    }
    parts.join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const YEARS_AGO: i64 = 1_672_531_200_000; // the generators' 2023 epoch

    fn generator(delay: u64) -> InputLagFacts {
        InputLagFacts {
            schedule_delay_ms: Some(delay),
            ..Default::default()
        }
    }

    fn kafka(behind: u64) -> InputLagFacts {
        InputLagFacts {
            records_behind: Some(behind),
            wall_clock: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_generator_is_as_late_as_its_schedule_not_its_2023_event_time() {
        let g = [generator(1500)];
        assert_eq!(task_input_delay_ms(&g, NOW, Some(YEARS_AGO)), Some(1500));
        assert_eq!(task_event_time_lag_ms(&g, NOW, Some(YEARS_AGO)), None);
    }

    #[test]
    fn kafka_is_zero_when_caught_up_and_the_age_of_its_position_when_behind() {
        assert_eq!(
            task_input_delay_ms(&[kafka(0)], NOW, Some(NOW - 90_000)),
            Some(0)
        );
        assert_eq!(
            task_input_delay_ms(&[kafka(12)], NOW, Some(NOW - 90_000)),
            Some(90_000)
        );
        assert_eq!(
            task_event_time_lag_ms(&[kafka(0)], NOW, Some(NOW - 90_000)),
            Some(90_000)
        );
        assert_eq!(
            task_input_delay_ms(&[kafka(0), generator(200)], NOW, Some(YEARS_AGO)),
            Some(200)
        );
        assert_eq!(
            task_event_time_lag_ms(&[kafka(0), generator(0)], NOW, Some(NOW)),
            None,
            "one synthetic input makes the task's event time synthetic"
        );
    }

    #[test]
    fn replays_and_unknown_inputs_have_no_delay() {
        let file = [InputLagFacts::default()];
        assert_eq!(task_input_delay_ms(&file, NOW, Some(YEARS_AGO)), None);
        assert_eq!(task_event_time_lag_ms(&file, NOW, Some(YEARS_AGO)), None);
        assert_eq!(task_input_delay_ms(&[], NOW, None), None);
        assert_eq!(task_event_time_lag_ms(&[kafka(3)], NOW, None), None);
    }

    #[test]
    fn schedule_delay_counts_only_time_beyond_the_schedule() {
        assert_eq!(schedule_delay_ms(10_000, 40.0, 400), 0, "on schedule");
        assert_eq!(schedule_delay_ms(10_000, 40.0, 401), 0, "ahead by one slot");
        assert_eq!(schedule_delay_ms(10_000, 40.0, 20), 9_500, "throttled");
        assert_eq!(schedule_delay_ms(10_000, 0.0, 0), 0);
    }

    #[test]
    fn the_progress_line_names_each_measure_it_has() {
        assert_eq!(progress_text(Some(1500), None, None), "input delay 1.5s");
        assert_eq!(
            progress_text(Some(0), Some(7), Some(2300)),
            "input delay 0.0s | Kafka lag 7 records | event-time lag 2.3s"
        );
        assert_eq!(progress_text(None, None, None), "input delay -");
    }
}
