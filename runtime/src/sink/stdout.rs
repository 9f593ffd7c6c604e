//! Standard-output sink: one JSON line per record, at-least-once (for debugging).

use super::{Sink, SinkError};
use crate::record::Record;
use std::io::Write;

/// Prints records to stdout.
pub struct StdoutSink {
    name: String,
    buf: Vec<u8>,
}

impl StdoutSink {
    /// A stdout sink named `name`.
    pub fn new(name: &str) -> Self {
        StdoutSink {
            name: name.to_string(),
            buf: Vec::with_capacity(1 << 16),
        }
    }
}

impl Sink for StdoutSink {
    fn write(&mut self, record: &Record) -> Result<(), SinkError> {
        record.value.write_json(&mut self.buf);
        self.buf.push(b'\n');
        if self.buf.len() > 1 << 16 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        let res = out.write_all(&self.buf).and_then(|_| out.flush());
        self.buf.clear();
        res.map_err(|source| SinkError::Io {
            sink: self.name.clone(),
            action: "writing",
            path: "stdout".into(),
            source,
        })
    }
}
