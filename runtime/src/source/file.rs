//! JSON-lines file source: one partition per file, offset = byte position, optional follow.

use super::{PartitionReader, ReadStatus, SourceError};
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
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

/// Reads one file line by line.
pub struct FileReader {
    source_name: String,
    partition: u32,
    path: PathBuf,
    follow: bool,
    reader: Option<BufReader<File>>,
    pos: u64,
    line: String,
    malformed: u64,
}

impl FileReader {
    /// A reader of `path` from the start.
    pub fn new(source_name: &str, partition: u32, path: PathBuf, follow: bool) -> Self {
        FileReader {
            source_name: source_name.to_string(),
            partition,
            path,
            follow,
            reader: None,
            pos: 0,
            line: String::new(),
            malformed: 0,
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

    fn open(&mut self) -> Result<&mut BufReader<File>, SourceError> {
        if self.reader.is_none() {
            let mut f = File::open(&self.path).map_err(|e| self.err(e))?;
            f.seek(SeekFrom::Start(self.pos)).map_err(|e| self.err(e))?;
            self.reader = Some(BufReader::with_capacity(1 << 16, f));
        }
        let err = self.err("reader not open");
        self.reader.as_mut().ok_or(err)
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
            self.line.clear();
            let follow = self.follow;
            let mut line = std::mem::take(&mut self.line);
            let res = self.open()?.read_line(&mut line);
            let read = match res {
                Ok(r) => r,
                Err(e) => return Err(self.err(e)),
            };
            if read == 0 {
                self.line = line;
                return Ok(if n > 0 {
                    ReadStatus::Data
                } else if follow {
                    ReadStatus::Waiting
                } else {
                    ReadStatus::Exhausted
                });
            }
            if !line.ends_with('\n') && follow {
                // a partial line being written: re-read it later from its start
                self.reader = None;
                self.line = line;
                return Ok(if n > 0 {
                    ReadStatus::Data
                } else {
                    ReadStatus::Waiting
                });
            }
            self.pos += read as u64;
            let text = line.trim();
            if !text.is_empty() {
                match Value::from_json(text) {
                    Ok(v) => {
                        out.push((None, v));
                        n += 1;
                    }
                    Err(e) => {
                        self.malformed += 1;
                        if self.malformed <= 5 {
                            tracing::warn!(
                                source = %self.source_name,
                                file = %self.path.display(),
                                offset = self.pos - read as u64,
                                "skipping malformed JSON line: {e}"
                            );
                        }
                    }
                }
            }
            self.line = line;
        }
        Ok(ReadStatus::Data)
    }

    fn offset(&self) -> u64 {
        self.pos
    }

    fn seek(&mut self, offset: u64) -> Result<(), SourceError> {
        self.pos = offset;
        self.reader = None;
        Ok(())
    }

    fn malformed(&self) -> u64 {
        self.malformed
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
}
