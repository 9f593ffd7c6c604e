//! JSON-lines file source: one partition per file, offset = byte position, optional follow.

use super::{PartitionReader, ReadStatus, SourceError};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weir_expr::Value;

/// The partitions (files) of a file source path: the file itself, or the `*.jsonl`/`*.json`
/// files of a directory in name order.
pub fn partition_files(path: &str) -> Result<Vec<PathBuf>, String> {
    let p = Path::new(path);
    let meta = std::fs::metadata(p).map_err(|e| format!("cannot read '{path}': {e}"))?;
    if meta.is_file() {
        return Ok(vec![p.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(p)
        .map_err(|e| format!("cannot list '{path}': {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "jsonl" || x == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("directory '{path}' has no *.jsonl or *.json files"));
    }
    Ok(files)
}

/// Bytes read from the file per read call.
const READ_CHUNK: u64 = 1 << 18;

/// Reads one file line by line, in large chunks, parsing each line where it lies in the buffer.
pub struct FileReader {
    source_name: String,
    partition: u32,
    path: PathBuf,
    follow: bool,
    file: Option<File>,
    /// The file offset of `buf[start]`, the first byte not yet consumed.
    pos: u64,
    /// Bytes read from the file; `buf[start..]` are not consumed yet. The file is positioned
    /// right after `buf`'s last byte.
    buf: Vec<u8>,
    start: usize,
    malformed: u64,
    /// Malformed lines not yet taken by the task.
    dead_letters: Vec<Value>,
    /// The only top-level fields records need (`PartitionReader::keep_fields`); `None`: all.
    keep: Option<Vec<Arc<str>>>,
}

impl FileReader {
    /// A reader of `path` from the start.
    pub fn new(source_name: &str, partition: u32, path: PathBuf, follow: bool) -> Self {
        FileReader {
            source_name: source_name.to_string(),
            partition,
            path,
            follow,
            file: None,
            pos: 0,
            buf: Vec::new(),
            start: 0,
            malformed: 0,
            dead_letters: vec![],
            keep: None,
        }
    }

    fn err(&self, message: impl ToString) -> SourceError {
        SourceError::File {
            source_name: self.source_name.clone(),
            partition: self.partition,
            path: self.path.display().to_string(),
            message: message.to_string(),
        }
    }

    /// Reads the next chunk after the unconsumed bytes; returns how many bytes came.
    fn fill(&mut self) -> Result<usize, SourceError> {
        if self.file.is_none() {
            let mut f = File::open(&self.path).map_err(|e| self.err(e))?;
            f.seek(SeekFrom::Start(self.pos)).map_err(|e| self.err(e))?;
            self.buf.clear();
            self.start = 0;
            self.file = Some(f);
        }
        self.buf.drain(..self.start);
        self.start = 0;
        let res = match self.file.as_mut() {
            Some(f) => f.take(READ_CHUNK).read_to_end(&mut self.buf),
            None => Ok(0),
        };
        res.map_err(|e| self.err(e))
    }
}

impl PartitionReader for FileReader {
    fn read(
        &mut self,
        max: usize,
        out: &mut Vec<(Option<i64>, Value)>,
    ) -> Result<ReadStatus, SourceError> {
        let mut n = 0;
        while n < max {
            let line_end = match memchr::memchr(b'\n', &self.buf[self.start..]) {
                Some(i) => self.start + i + 1,
                None => {
                    if self.fill()? > 0 {
                        continue;
                    }
                    if self.start == self.buf.len() || self.follow {
                        // end of input for now; when following, a partial line being
                        // written stays buffered until its newline arrives
                        return Ok(if n > 0 {
                            ReadStatus::Data
                        } else if self.follow {
                            ReadStatus::Waiting
                        } else {
                            ReadStatus::Exhausted
                        });
                    }
                    self.buf.len() // the last line, without a newline
                }
            };
            let line = &self.buf[self.start..line_end];
            let Ok(text) = std::str::from_utf8(line) else {
                // what `BufRead::read_line` reports (the line stays unconsumed)
                return Err(self.err("stream did not contain valid UTF-8"));
            };
            let text = text.trim();
            let parsed = (!text.is_empty()).then(|| match &self.keep {
                None => Value::from_json(text),
                Some(keep) => Value::from_json_keeping(text, keep),
            });
            let line_start = self.pos;
            if let Some(Err(e)) = &parsed {
                let letter = super::dead_letter(
                    &format!("malformed JSON: {e}"),
                    text.as_bytes(),
                    self.partition,
                    line_start,
                );
                self.dead_letters.push(letter);
            }
            self.pos += line.len() as u64;
            self.start = line_end;
            match parsed {
                None => {}
                Some(Ok(v)) => {
                    out.push((None, v));
                    n += 1;
                }
                Some(Err(e)) => {
                    self.malformed += 1;
                    if self.malformed <= 5 {
                        tracing::warn!(
                            source = %self.source_name,
                            file = %self.path.display(),
                            offset = line_start,
                            "skipping malformed JSON line: {e}"
                        );
                    }
                }
            }
        }
        Ok(ReadStatus::Data)
    }

    fn offset(&self) -> u64 {
        self.pos
    }

    fn seek(&mut self, offset: u64) -> Result<(), SourceError> {
        self.pos = offset;
        self.file = None;
        self.buf.clear();
        self.start = 0;
        Ok(())
    }

    fn malformed(&self) -> u64 {
        self.malformed
    }

    fn take_dead_letters(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.dead_letters)
    }

    fn keep_fields(&mut self, fields: Vec<Arc<str>>) {
        self.keep = Some(fields);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resumes_and_skips_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.jsonl");
        std::fs::write(&f, "{\"x\":1}\nnot json\n{\"x\":2}\n{\"x\":3}\n").unwrap();
        let mut r = FileReader::new("s", 0, f.clone(), false);
        let mut out = vec![];
        assert_eq!(r.read(2, &mut out).unwrap(), ReadStatus::Data);
        assert_eq!(out.len(), 2);
        let off = r.offset();
        let mut r2 = FileReader::new("s", 0, f, false);
        r2.seek(off).unwrap();
        let mut out2 = vec![];
        r2.read(10, &mut out2).unwrap();
        assert_eq!(out2.len(), 1);
        assert_eq!(out2[0].1.get("x"), &Value::Int(3));
        assert_eq!(r2.read(10, &mut out2).unwrap(), ReadStatus::Exhausted);
        assert_eq!(r.malformed(), 1);
    }

    #[test]
    fn last_line_without_newline_crlf_blank_lines_and_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.jsonl");
        let long = "y".repeat(3 * READ_CHUNK as usize);
        let text = format!("{{\"x\":1}}\r\n\n  \n{{\"s\":\"{long}\"}}\n{{\"x\":2}}");
        std::fs::write(&f, &text).unwrap();
        let mut r = FileReader::new("s", 0, f, false);
        let mut out = vec![];
        assert_eq!(r.read(10, &mut out).unwrap(), ReadStatus::Data);
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].1.get("s").as_str().map(str::len), Some(long.len()));
        assert_eq!(out[2].1.get("x"), &Value::Int(2));
        assert_eq!(r.offset(), text.len() as u64);
        assert_eq!(r.read(10, &mut out).unwrap(), ReadStatus::Exhausted);
    }

    #[test]
    fn following_waits_for_the_newline_of_a_partial_line() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.jsonl");
        std::fs::write(&f, "{\"x\":1}\n{\"x\"").unwrap();
        let mut r = FileReader::new("s", 0, f.clone(), true);
        let mut out = vec![];
        assert_eq!(r.read(10, &mut out).unwrap(), ReadStatus::Data);
        assert_eq!(out.len(), 1);
        assert_eq!(r.offset(), 8);
        assert_eq!(r.read(10, &mut out).unwrap(), ReadStatus::Waiting);
        let mut file = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
        file.write_all(b":2}\n").unwrap();
        assert_eq!(r.read(10, &mut out).unwrap(), ReadStatus::Data);
        assert_eq!(out[1].1.get("x"), &Value::Int(2));
        assert_eq!(r.offset(), 16);
        assert_eq!(r.read(10, &mut out).unwrap(), ReadStatus::Waiting);
    }

    #[test]
    fn invalid_utf8_fails_the_read_and_consumes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.jsonl");
        std::fs::write(&f, b"{\"x\":1}\n{\"x\":\"\xff\"}\n").unwrap();
        let mut r = FileReader::new("s", 0, f, false);
        let mut out = vec![];
        let err = r.read(10, &mut out).unwrap_err();
        assert!(
            err.to_string()
                .contains("stream did not contain valid UTF-8"),
            "{err}"
        );
        assert_eq!(r.offset(), 8);
    }
}
