//! The generator source: wraps a deterministic generator partition with the spec's rate limit
//! (`rate` events/s over all partitions, split evenly).

use super::{PartitionReader, ReadStatus, SourceError};
use crate::generator::Generator;
use std::time::Instant;
use weir_crds::pipeline::GeneratorSpec;
use weir_expr::Value;

/// A rate-limited generator partition.
pub struct GeneratorReader {
    generator: Generator,
    rate_per_partition: Option<f64>,
    started: Instant,
    emitted_since_start: u64,
}

impl GeneratorReader {
    /// Partition `partition` of `partitions` of the generator `spec`.
    pub fn new(
        source_name: &str,
        spec: &GeneratorSpec,
        partition: u32,
        partitions: u32,
    ) -> Result<Self, SourceError> {
        let generator = Generator::new(spec, partition).map_err(|e| SourceError::Generator {
            source_name: source_name.to_string(),
            message: e.to_string(),
        })?;
        Ok(GeneratorReader {
            generator,
            rate_per_partition: spec.rate.map(|r| r as f64 / f64::from(partitions.max(1))),
            started: Instant::now(),
            emitted_since_start: 0,
        })
    }
}

impl PartitionReader for GeneratorReader {
    fn read(
        &mut self,
        max: usize,
        out: &mut Vec<(Option<i64>, Value)>,
    ) -> Result<ReadStatus, SourceError> {
        let mut budget = max as u64;
        if let Some(rate) = self.rate_per_partition {
            let allowed = (self.started.elapsed().as_secs_f64() * rate) as u64 + 1;
            budget = budget.min(allowed.saturating_sub(self.emitted_since_start));
            if budget == 0 {
                return Ok(ReadStatus::Waiting);
            }
        }
        let mut n = 0;
        while n < budget {
            match self.generator.next() {
                Some((ts, v)) => {
                    out.push((Some(ts), v));
                    n += 1;
                }
                None => break,
            }
        }
        self.emitted_since_start += n;
        Ok(if n > 0 {
            ReadStatus::Data
        } else {
            ReadStatus::Exhausted
        })
    }

    fn schedule_delay_ms(&self) -> Option<u64> {
        Some(self.rate_per_partition.map_or(0, |rate| {
            let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            crate::task::input_lag::schedule_delay_ms(elapsed, rate, self.emitted_since_start)
        }))
    }

    fn offset(&self) -> u64 {
        self.generator.offset()
    }

    fn seek(&mut self, offset: u64) -> Result<(), SourceError> {
        self.generator.seek(offset);
        Ok(())
    }
}
