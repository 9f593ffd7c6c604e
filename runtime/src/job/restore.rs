//! Restoring a pod's tasks at start: choose a checkpoint from the catalog, download and verify
//! every file of this pod's tasks, walk back past corrupt ones, refuse to start empty when state
//! was expected.

use crate::checkpoint::catalog::{choose_restore_point, Catalog, RestoreFrom};
use crate::checkpoint::storage::CheckpointStorage;
use crate::checkpoint::transfer::{download_task, load_catalog, TransferError};
use crate::checkpoint::TaskManifest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A restore that cannot proceed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Storage could not be read.
    #[error("reading checkpoints: {0}")]
    Transfer(#[from] TransferError),
    /// State was expected but nothing can be restored.
    #[error("refusing to start without state: {looked_at}; {how_to_proceed}")]
    NothingRestorable {
        /// What was examined and why each was rejected.
        looked_at: String,
        /// What the user can do.
        how_to_proceed: String,
    },
    /// Local file handling failed.
    #[error("preparing local state in {path}: {message}")]
    Local {
        /// Directory.
        path: String,
        /// What failed.
        message: String,
    },
}

/// What was restored.
#[derive(Debug, Default)]
pub struct RestoreOutcome {
    /// The checkpoint restored from.
    pub checkpoint_id: Option<u64>,
    /// When that checkpoint completed.
    pub completed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Each task's manifest.
    pub manifests: BTreeMap<u32, TaskManifest>,
    /// Checkpoints passed over, with why (newest first).
    pub skipped: Vec<(u64, String)>,
    /// The catalog as found (for choosing the next checkpoint id).
    pub catalog: Catalog,
}

/// Options for [`restore_tasks`].
pub struct RestoreOptions<'a> {
    /// Which checkpoint.
    pub from: RestoreFrom,
    /// Maximum age.
    pub max_age: Option<Duration>,
    /// Start empty when nothing is restorable.
    pub allow_empty: bool,
    /// Why starting empty is allowed or how to allow it, for messages.
    pub storage_desc: &'a str,
}

fn task_dir(state_dir: &Path, task: u32) -> PathBuf {
    state_dir.join(format!("task-{task}"))
}

/// Restores `tasks` into `state_dir/task-<n>/db` (fresh empty directories if nothing is restored).
pub fn restore_tasks(
    storage: &CheckpointStorage,
    state_dir: &Path,
    tasks: &[u32],
    opts: &RestoreOptions<'_>,
) -> Result<RestoreOutcome, RestoreError> {
    let local = |p: &Path, e: std::io::Error| RestoreError::Local {
        path: p.display().to_string(),
        message: e.to_string(),
    };
    for &t in tasks {
        let db = task_dir(state_dir, t).join("db");
        if db.exists() {
            std::fs::remove_dir_all(&db).map_err(|e| local(&db, e))?;
        }
    }
    let mut catalog = load_catalog(storage)?;
    let original = catalog.clone();
    loop {
        let choice = choose_restore_point(&catalog, &opts.from, opts.max_age, chrono::Utc::now());
        let Some(id) = choice.chosen else {
            if choice.state_expected && !opts.allow_empty {
                let looked_at = if choice.skipped.is_empty() {
                    format!("{} holds checkpoints but none matched", opts.storage_desc)
                } else {
                    format!(
                        "looked at {} — {}",
                        opts.storage_desc,
                        choice
                            .skipped
                            .iter()
                            .map(|(id, why)| format!("chk-{id}: {why}"))
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                };
                return Err(RestoreError::NothingRestorable {
                    looked_at,
                    how_to_proceed: "to start with empty state anyway set spec.restore.allowNonRestoredState: true (or WEIR_ALLOW_NON_RESTORED_STATE=true, or upgradeMode: stateless), or restore from an explicit checkpoint with restore.from / WEIR_RESTORE_FROM".into(),
                });
            }
            for (id, why) in &choice.skipped {
                tracing::warn!("not restoring from checkpoint {id}: {why}");
            }
            if choice.state_expected {
                tracing::warn!("starting with empty state although {} holds checkpoints (allowed by configuration)", opts.storage_desc);
            }
            return Ok(RestoreOutcome {
                skipped: choice.skipped,
                catalog: original,
                ..Default::default()
            });
        };
        let mut manifests = BTreeMap::new();
        let mut problem = None;
        for &t in tasks {
            let target = task_dir(state_dir, t).join("restore");
            match download_task(storage, id, t, &target) {
                Ok(m) => {
                    manifests.insert(t, m);
                }
                Err(TransferError::Corrupt(why)) => {
                    problem = Some(format!("task {t}: {why}"));
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(why) = problem {
            tracing::warn!(
                "checkpoint {id} is unusable ({why}); walking back to an older checkpoint"
            );
            eprintln!(
                "weir: checkpoint {id} is unusable ({why}); walking back to an older checkpoint"
            );
            catalog.mark_problem(id, why);
            continue;
        }
        for &t in tasks {
            let dir = task_dir(state_dir, t);
            let from = dir.join("restore");
            let to = dir.join("db");
            std::fs::rename(&from, &to).map_err(|e| local(&from, e))?;
        }
        let completed_at = catalog
            .entries
            .iter()
            .find(|e| e.id == id)
            .and_then(|e| e.marker.as_ref().map(|m| m.completed_at));
        for (sid, why) in &choice.skipped {
            eprintln!("weir: skipped checkpoint {sid}: {why}");
        }
        return Ok(RestoreOutcome {
            checkpoint_id: Some(id),
            completed_at,
            manifests,
            skipped: choice.skipped,
            catalog: original,
        });
    }
}
