//! Two-phase JSON-lines file sink (exactly-once).
//!
//! Records written between checkpoints `c−1` and `c` go to `.pending-part-<task>-<c>.jsonl`.
//! At barrier `c` that file is synced and closed (phase one); when checkpoint `c` completes,
//! every pending file of this task with epoch `<= c` is renamed to `part-<task>-<epoch>.jsonl`
//! (phase two). On restore from checkpoint `r`: pending files with epoch `<= r` belong to
//! completed checkpoints and are committed; pending files with epoch `> r` are discarded (their
//! records will be produced again); committed files with epoch `> r` (from a newer checkpoint
//! that could not be restored) are moved aside to `.rolled-back-part-...` so output stays
//! exactly-once.

use super::{Sink, SinkError};
use crate::record::Record;
use std::fs::File;
use std::io::Write;

/// Encoded output is written to the file in pieces of about this size.
const PENDING_BYTES: usize = 1 << 16;
use std::path::{Path, PathBuf};

/// A task's file sink.
pub struct FileSink {
    name: String,
    dir: PathBuf,
    task: u32,
    epoch: u64,
    file: Option<File>,
    /// Encoded lines not yet written to `file` (records are encoded straight into it).
    pending: Vec<u8>,
}

/// Parses `<prefix><task>-<epoch>.jsonl` into the epoch if `task` matches.
fn epoch_of(file: &str, prefix: &str, task: u32) -> Option<u64> {
    let rest = file.strip_prefix(prefix)?.strip_suffix(".jsonl")?;
    let (t, e) = rest.split_once('-')?;
    (t.parse::<u32>().ok()? == task).then_some(())?;
    e.parse().ok()
}

impl FileSink {
    /// The sink `name` writing into `dir` for task `task`; `next_epoch` is the next checkpoint id.
    pub fn new(name: &str, dir: &Path, task: u32, next_epoch: u64) -> Self {
        FileSink {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            task,
            epoch: next_epoch,
            file: None,
            pending: Vec::with_capacity(PENDING_BYTES + 4096),
        }
    }

    fn io(&self, action: &'static str, path: &Path) -> impl Fn(std::io::Error) -> SinkError {
        let sink = self.name.clone();
        let path = path.display().to_string();
        move |source| SinkError::Io {
            sink: sink.clone(),
            action,
            path: path.clone(),
            source,
        }
    }

    fn pending_path(&self, epoch: u64) -> PathBuf {
        self.dir
            .join(format!(".pending-part-{}-{epoch}.jsonl", self.task))
    }

    fn committed_path(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!("part-{}-{epoch}.jsonl", self.task))
    }

    fn files(&self) -> Result<Vec<String>, SinkError> {
        let rd = std::fs::read_dir(&self.dir).map_err(self.io("listing", &self.dir))?;
        Ok(rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect())
    }

    /// Writes the encoded lines to the open pending file.
    fn write_pending(&mut self) -> Result<(), SinkError> {
        if let Some(f) = self.file.as_mut() {
            if let Err(e) = f.write_all(&self.pending) {
                let path = self.pending_path(self.epoch);
                return Err(self.io("writing", &path)(e));
            }
        }
        self.pending.clear();
        Ok(())
    }

    fn commit_up_to(&mut self, id: u64) -> Result<(), SinkError> {
        for f in self.files()? {
            if let Some(e) = epoch_of(&f, ".pending-part-", self.task) {
                if e <= id {
                    let from = self.dir.join(&f);
                    let to = self.committed_path(e);
                    std::fs::rename(&from, &to).map_err(self.io("committing", &from))?;
                }
            }
        }
        Ok(())
    }
}

impl Sink for FileSink {
    fn on_restore(
        &mut self,
        restored: Option<u64>,
        _position: Option<&serde_json::Value>,
    ) -> Result<(), SinkError> {
        std::fs::create_dir_all(&self.dir).map_err(self.io("creating", &self.dir))?;
        let r = restored.unwrap_or(0);
        self.commit_up_to(r)?;
        for f in self.files()? {
            let path = self.dir.join(&f);
            if epoch_of(&f, ".pending-part-", self.task).is_some_and(|e| e > r) {
                std::fs::remove_file(&path).map_err(self.io("discarding", &path))?;
            } else if epoch_of(&f, "part-", self.task).is_some_and(|e| e > r) {
                let aside = self.dir.join(format!(".rolled-back-{f}"));
                tracing::warn!(sink = %self.name, file = %f, "moving aside output of a checkpoint newer than the restore point");
                std::fs::rename(&path, &aside).map_err(self.io("moving aside", &path))?;
            }
        }
        Ok(())
    }

    fn write(&mut self, record: &Record) -> Result<(), SinkError> {
        if self.file.is_none() {
            let path = self.pending_path(self.epoch);
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(self.io("opening", &path))?;
            self.file = Some(f);
        }
        record.value.write_json(&mut self.pending);
        self.pending.push(b'\n');
        if self.pending.len() >= PENDING_BYTES {
            self.write_pending()?;
        }
        Ok(())
    }

    fn prepare(&mut self, id: u64) -> Result<(), SinkError> {
        let path = self.pending_path(self.epoch);
        self.write_pending()?;
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(self.io("syncing", &path))?;
            if self.epoch != id {
                let target = self.pending_path(id);
                std::fs::rename(&path, &target).map_err(self.io("renaming", &path))?;
            }
        }
        self.epoch = id + 1;
        Ok(())
    }

    fn commit(&mut self, id: u64) -> Result<(), SinkError> {
        self.commit_up_to(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_expr::Value;

    fn rec(i: i64) -> Record {
        Record::new(i, Value::map([("i", Value::Int(i))]), 0)
    }

    #[test]
    fn two_phase_commit_and_restore() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileSink::new("out", dir.path(), 0, 1);
        s.on_restore(None, None).unwrap();
        s.write(&rec(1)).unwrap();
        s.prepare(1).unwrap();
        s.write(&rec(2)).unwrap();
        s.prepare(2).unwrap();
        s.write(&rec(3)).unwrap();
        s.flush().unwrap();
        s.commit(1).unwrap();
        assert!(dir.path().join("part-0-1.jsonl").exists());
        assert!(dir.path().join(".pending-part-0-2.jsonl").exists());
        // crash; restore from checkpoint 2 (completed, but not yet committed)
        let mut s2 = FileSink::new("out", dir.path(), 0, 3);
        s2.on_restore(Some(2), None).unwrap();
        assert!(dir.path().join("part-0-2.jsonl").exists());
        assert!(!dir.path().join(".pending-part-0-3.jsonl").exists());
        // restore from 1 only: the newer committed output is moved aside
        let mut s3 = FileSink::new("out", dir.path(), 0, 4);
        s3.on_restore(Some(1), None).unwrap();
        assert!(!dir.path().join("part-0-2.jsonl").exists());
        assert!(dir.path().join(".rolled-back-part-0-2.jsonl").exists());
    }
}
