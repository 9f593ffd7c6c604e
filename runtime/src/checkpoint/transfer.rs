//! Moving checkpoints between a task's local RocksDB checkpoint directory and storage:
//! incremental upload, verified download, catalog loading and marker writing.

use super::catalog::{Catalog, CatalogEntry};
use super::storage::{CheckpointStorage, StorageError};
use super::{
    checkpoint_dir, marker_path, parse_checkpoint_dir, stopped_note_path, task_manifest_path,
    CompletedMarker, FileRef, StoppedNote, TaskManifest,
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

/// A transfer that failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Storage I/O failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Local file I/O failed.
    #[error("{action} {path}: {source}")]
    Local {
        /// What was done.
        action: &'static str,
        /// Local path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The checkpoint is unusable (missing, truncated or altered file, bad manifest).
    #[error("{0}")]
    Corrupt(String),
}

fn local<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl Fn(std::io::Error) -> TransferError + 'a {
    move |source| TransferError::Local {
        action,
        path: path.display().to_string(),
        source,
    }
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lists every `chk-<id>` of the job with its marker (unreadable markers become problems).
pub fn load_catalog(storage: &CheckpointStorage) -> Result<Catalog, TransferError> {
    let mut entries = vec![];
    for dir in storage.list_dirs("")? {
        let Some(id) = parse_checkpoint_dir(&dir) else {
            continue;
        };
        let (marker, problem) = match storage.get(&marker_path(id))? {
            None => (None, None),
            Some(bytes) => match serde_json::from_slice::<CompletedMarker>(&bytes) {
                Ok(m) => (Some(m), None),
                Err(e) => (None, Some(format!("_COMPLETED marker unreadable: {e}"))),
            },
        };
        entries.push(CatalogEntry {
            id,
            marker,
            problem,
        });
    }
    entries.sort_by_key(|e| e.id);
    Ok(Catalog { entries })
}

/// The SST files of one task that are already in storage, by their local RocksDB file name.
///
/// RocksDB never reuses an SST file number within a database's history and never changes an
/// SST, so a name (with its size) seen in the restored manifest or uploaded by this process
/// stands for the same content: such files are neither read, hashed nor uploaded again.
#[derive(Clone, Debug, Default)]
pub struct StoredSsts {
    by_name: HashMap<String, FileRef>,
}

impl StoredSsts {
    /// The SSTs referenced by a restored task manifest.
    pub fn from_manifest(manifest: &TaskManifest) -> Self {
        StoredSsts {
            by_name: manifest
                .files
                .iter()
                .filter(|f| f.key.starts_with("sst/"))
                .map(|f| (f.name.clone(), f.clone()))
                .collect(),
        }
    }

    /// Forgets the SST stored under `key` (deleted from storage by retention).
    pub fn forget_key(&mut self, key: &str) {
        self.by_name.retain(|_, f| f.key != key);
    }

    /// Number of SSTs known.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether none is known.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Uploads the RocksDB checkpoint in `local_dir` as task `manifest.task` of checkpoint
/// `manifest.checkpoint_id`, skipping SSTs already stored (see [`StoredSsts`]). Fills
/// `manifest.files`, writes the task manifest, and returns the number of bytes uploaded.
pub fn upload_task(
    storage: &CheckpointStorage,
    local_dir: &Path,
    manifest: &mut TaskManifest,
    known_ssts: &mut StoredSsts,
) -> Result<u64, TransferError> {
    let id = manifest.checkpoint_id;
    let task = manifest.task;
    let mut names: Vec<String> = std::fs::read_dir(local_dir)
        .map_err(local("listing", local_dir))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    let mut uploaded = 0u64;
    let mut files = vec![];
    for name in names {
        let path = local_dir.join(&name);
        let is_sst = name.ends_with(".sst");
        if is_sst {
            let size = std::fs::metadata(&path)
                .map_err(local("reading", &path))?
                .len();
            if let Some(known) = known_ssts.by_name.get(&name).filter(|f| f.size == size) {
                files.push(known.clone());
                continue;
            }
        }
        let bytes = std::fs::read(&path).map_err(local("reading", &path))?;
        let sha = sha256_hex(&bytes);
        let size = bytes.len() as u64;
        let key = if is_sst {
            let key = format!("sst/task-{task}/{sha}.sst");
            if storage.size(&key)? != Some(size) {
                storage.put(&key, bytes)?;
                uploaded += size;
            }
            known_ssts.by_name.insert(
                name.clone(),
                FileRef {
                    name: name.clone(),
                    key: key.clone(),
                    size,
                    sha256: sha.clone(),
                },
            );
            key
        } else {
            let key = format!("{}/task-{task}/files/{name}", checkpoint_dir(id));
            storage.put(&key, bytes)?;
            uploaded += size;
            key
        };
        files.push(FileRef {
            name,
            key,
            size,
            sha256: sha,
        });
    }
    manifest.files = files;
    let json = serde_json::to_vec_pretty(manifest)
        .map_err(|e| TransferError::Corrupt(format!("encoding manifest: {e}")))?;
    storage.put(&task_manifest_path(id, task), json)?;
    Ok(uploaded)
}

/// Reads task `task`'s manifest of checkpoint `id`.
pub fn read_manifest(
    storage: &CheckpointStorage,
    id: u64,
    task: u32,
) -> Result<TaskManifest, TransferError> {
    let path = task_manifest_path(id, task);
    let bytes = storage
        .get(&path)?
        .ok_or_else(|| TransferError::Corrupt(format!("{path} is missing")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| TransferError::Corrupt(format!("{path} is unreadable: {e}")))
}

/// Downloads task `task` of checkpoint `id` into `target` (created fresh), verifying the
/// presence, size and sha256 of every file. `Corrupt` means: walk back to an older checkpoint.
pub fn download_task(
    storage: &CheckpointStorage,
    id: u64,
    task: u32,
    target: &Path,
) -> Result<TaskManifest, TransferError> {
    let manifest = read_manifest(storage, id, task)?;
    if manifest.checkpoint_id != id || manifest.task != task {
        return Err(TransferError::Corrupt(format!(
            "{} names checkpoint {} task {}",
            task_manifest_path(id, task),
            manifest.checkpoint_id,
            manifest.task
        )));
    }
    if target.exists() {
        std::fs::remove_dir_all(target).map_err(local("removing", target))?;
    }
    std::fs::create_dir_all(target).map_err(local("creating", target))?;
    for f in &manifest.files {
        let bytes = storage
            .get(&f.key)?
            .ok_or_else(|| TransferError::Corrupt(format!("{} is missing", f.key)))?;
        if bytes.len() as u64 != f.size {
            return Err(TransferError::Corrupt(format!(
                "{} has {} bytes, the manifest says {}",
                f.key,
                bytes.len(),
                f.size
            )));
        }
        if sha256_hex(&bytes) != f.sha256 {
            return Err(TransferError::Corrupt(format!(
                "{} does not match its sha256 in the manifest",
                f.key
            )));
        }
        if f.name.contains('/') || f.name.contains("..") {
            return Err(TransferError::Corrupt(format!(
                "manifest names an invalid file '{}'",
                f.name
            )));
        }
        let path = target.join(&f.name);
        std::fs::write(&path, &bytes).map_err(local("writing", &path))?;
    }
    Ok(manifest)
}

/// Writes the completion marker (the last write of a checkpoint).
pub fn write_marker(
    storage: &CheckpointStorage,
    marker: &CompletedMarker,
) -> Result<(), TransferError> {
    let json = serde_json::to_vec_pretty(marker)
        .map_err(|e| TransferError::Corrupt(format!("encoding marker: {e}")))?;
    storage.put(&marker_path(marker.checkpoint_id), json)?;
    Ok(())
}

/// Reads the marker of `id`, if present.
pub fn read_marker(
    storage: &CheckpointStorage,
    id: u64,
) -> Result<Option<CompletedMarker>, TransferError> {
    match storage.get(&marker_path(id))? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| TransferError::Corrupt(format!("{} unreadable: {e}", marker_path(id)))),
    }
}

/// Leaves the note that this pod exited after its final checkpoint `note.checkpoint_id`.
pub fn write_stopped_note(
    storage: &CheckpointStorage,
    note: &StoppedNote,
) -> Result<(), TransferError> {
    let json = serde_json::to_vec_pretty(note)
        .map_err(|e| TransferError::Corrupt(format!("encoding stopped note: {e}")))?;
    storage.put(&stopped_note_path(note.ordinal), json)?;
    Ok(())
}

/// Pod `ordinal`'s stopped note, if it left one (an unreadable note counts as none).
pub fn read_stopped_note(
    storage: &CheckpointStorage,
    ordinal: u32,
) -> Result<Option<StoppedNote>, TransferError> {
    Ok(storage
        .get(&stopped_note_path(ordinal))?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Removes pod `ordinal`'s stopped note (it runs again).
pub fn delete_stopped_note(storage: &CheckpointStorage, ordinal: u32) -> Result<(), StorageError> {
    storage.delete(&stopped_note_path(ordinal))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(id: u64) -> TaskManifest {
        TaskManifest {
            checkpoint_id: id,
            task: 0,
            job: "j".into(),
            created_at: chrono::Utc::now(),
            sources: vec![],
            watermark: 0,
            finished: false,
            files: vec![],
            operators: vec![],
            sinks: Default::default(),
        }
    }

    #[test]
    fn known_ssts_are_not_uploaded_again_and_restore_verifies_them() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = format!("file://{}", dir.path().join("ck").display());
        let storage = CheckpointStorage::open(&url, "local", "j", rt.handle().clone()).unwrap();
        let local = dir.path().join("local");
        std::fs::create_dir_all(&local).unwrap();
        std::fs::write(local.join("000001.sst"), vec![1u8; 1000]).unwrap();
        std::fs::write(local.join("MANIFEST-000002"), b"m1").unwrap();
        let mut known = StoredSsts::default();
        let mut m1 = manifest(1);
        let up1 = upload_task(&storage, &local, &mut m1, &mut known).unwrap();
        assert_eq!(up1, 1002);
        assert_eq!(known.len(), 1);

        // next checkpoint: a new SST appears; the old one is known by name and size and is not
        // read again (to show it, its bytes change behind RocksDB's back, which RocksDB never
        // does: the stored hash is kept)
        std::fs::write(local.join("000001.sst"), vec![9u8; 1000]).unwrap();
        std::fs::write(local.join("000003.sst"), vec![3u8; 500]).unwrap();
        std::fs::write(local.join("MANIFEST-000002"), b"m2").unwrap();
        let mut m2 = manifest(2);
        let up2 = upload_task(&storage, &local, &mut m2, &mut known).unwrap();
        assert_eq!(up2, 502, "only the new SST and the small file");
        let old = m2.files.iter().find(|f| f.name == "000001.sst").unwrap();
        assert_eq!(
            old,
            m1.files.iter().find(|f| f.name == "000001.sst").unwrap()
        );

        // a restored process knows the SSTs of its manifest; a file of another size is new
        let mut restored = StoredSsts::from_manifest(&m2);
        std::fs::write(local.join("000003.sst"), vec![4u8; 600]).unwrap();
        let mut m3 = manifest(3);
        let up3 = upload_task(&storage, &local, &mut m3, &mut restored).unwrap();
        assert_eq!(up3, 602);
        let target = dir.path().join("restore");
        let back = download_task(&storage, 3, 0, &target).unwrap();
        assert_eq!(back.files.len(), 3);
        assert_eq!(
            std::fs::read(target.join("000003.sst")).unwrap(),
            vec![4u8; 600]
        );

        // retention deleted an SST: it is uploaded again when still referenced locally
        restored.forget_key(&old.key);
        storage.delete(&old.key).unwrap();
        let mut m4 = manifest(4);
        let up4 = upload_task(&storage, &local, &mut m4, &mut restored).unwrap();
        assert_eq!(up4, 1002);
    }
}
