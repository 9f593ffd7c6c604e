//! The checkpoint catalog and restore-point choice: pure functions over what storage holds.
//!
//! Load a [`Catalog`] with `transfer::load_catalog` (I/O), then call [`choose_restore_point`].
//! Verification of file contents is I/O too: mark entries that failed it with
//! [`CatalogEntry::problem`] and choose again; the choice walks back to older checkpoints.

use super::CompletedMarker;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// One `chk-<id>` directory in storage.
#[derive(Clone, Debug, PartialEq)]
pub struct CatalogEntry {
    /// Checkpoint id.
    pub id: u64,
    /// The completion marker, if present and readable.
    pub marker: Option<CompletedMarker>,
    /// Why the entry cannot be used (unreadable marker, failed verification), if known.
    pub problem: Option<String>,
}

/// All checkpoints of one job, in any order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Catalog {
    /// The entries.
    pub entries: Vec<CatalogEntry>,
}

impl Catalog {
    /// Completed (marker present) entries, newest first.
    pub fn completed(&self) -> Vec<&CatalogEntry> {
        let mut v: Vec<&CatalogEntry> =
            self.entries.iter().filter(|e| e.marker.is_some()).collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.id));
        v
    }

    /// The largest id present (complete or not).
    pub fn max_id(&self) -> Option<u64> {
        self.entries.iter().map(|e| e.id).max()
    }

    /// Marks `id` as unusable for `reason`.
    pub fn mark_problem(&mut self, id: u64, reason: impl Into<String>) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.id == id) {
            e.problem = Some(reason.into());
        }
    }
}

/// Which checkpoint a (re)start should restore from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreFrom {
    /// The newest usable one, walking back past bad ones.
    Latest,
    /// This id, or, once a run started from it has checkpointed, the newest checkpoint of
    /// such runs (their markers name this id in `pinnedFrom`).
    Id(u64),
    /// Start without state.
    None,
}

impl RestoreFrom {
    /// Parses `latest`, `none`, an id, or a path ending in `chk-<id>` (optionally with a trailing `/`).
    pub fn parse(s: &str) -> Result<RestoreFrom, String> {
        let t = s.trim().trim_end_matches('/');
        match t {
            "" | "latest" => return Ok(RestoreFrom::Latest),
            "none" => return Ok(RestoreFrom::None),
            _ => {}
        }
        if let Ok(id) = t.parse() {
            return Ok(RestoreFrom::Id(id));
        }
        let last = t.rsplit('/').next().unwrap_or(t);
        super::parse_checkpoint_dir(last)
            .map(RestoreFrom::Id)
            .ok_or_else(|| format!("'{s}' is not latest, none, a checkpoint id or a chk-<id> path"))
    }
}

/// The outcome of choosing a restore point.
#[derive(Clone, Debug, PartialEq)]
pub struct RestoreChoice {
    /// The checkpoint to restore from; `None` means start without state.
    pub chosen: Option<u64>,
    /// Newer checkpoints passed over, newest first, with why.
    pub skipped: Vec<(u64, String)>,
    /// Storage holds checkpoints for this job, so starting empty would lose state.
    pub state_expected: bool,
}

/// Chooses the checkpoint to restore from.
///
/// Walks from the newest checkpoint back, skipping those without a completion marker
/// (in progress or failed), those with a known problem, and (with `max_age`) those that
/// completed more than `max_age` before `now`. With [`RestoreFrom::Id`] only that id and the
/// newer checkpoints taken by runs pinned to it are considered. The caller refuses to start empty when `state_expected` (some checkpoint
/// completed, even if it is now unusable) and nothing was chosen.
pub fn choose_restore_point(
    catalog: &Catalog,
    from: &RestoreFrom,
    max_age: Option<Duration>,
    now: DateTime<Utc>,
) -> RestoreChoice {
    // only a checkpoint that completed (marker written) ever held committed state; directories
    // without a marker are attempts (possibly a sibling pod's first one) and lose nothing
    let state_expected = catalog
        .entries
        .iter()
        .any(|e| e.marker.is_some() || e.problem.is_some());
    if *from == RestoreFrom::None {
        return RestoreChoice {
            chosen: None,
            skipped: vec![],
            state_expected: false,
        };
    }
    let mut entries: Vec<&CatalogEntry> = catalog.entries.iter().collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.id));
    let mut skipped = vec![];
    for e in entries {
        if let RestoreFrom::Id(want) = from {
            let descends = e.id > *want
                && e.marker
                    .as_ref()
                    .is_some_and(|m| m.pinned_from == Some(*want));
            if e.id != *want && !descends {
                continue;
            }
        }
        let Some(marker) = &e.marker else {
            skipped.push((
                e.id,
                e.problem
                    .clone()
                    .unwrap_or_else(|| "no _COMPLETED marker (in progress or failed)".to_string()),
            ));
            continue;
        };
        if let Some(p) = &e.problem {
            skipped.push((e.id, p.clone()));
            continue;
        }
        if let Some(max) = max_age {
            let age = now.signed_duration_since(marker.completed_at);
            if age.to_std().is_ok_and(|a| a > max) {
                skipped.push((
                    e.id,
                    format!(
                        "older than restore.maxAge ({}s > {}s)",
                        age.num_seconds(),
                        max.as_secs()
                    ),
                ));
                continue;
            }
        }
        return RestoreChoice {
            chosen: Some(e.id),
            skipped,
            state_expected,
        };
    }
    if let RestoreFrom::Id(want) = from {
        if !catalog.entries.iter().any(|e| e.id == *want) {
            skipped.push((*want, "no such checkpoint in storage".to_string()));
        }
    }
    RestoreChoice {
        chosen: None,
        skipped,
        state_expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(id: u64, completed_at: DateTime<Utc>) -> CompletedMarker {
        CompletedMarker {
            checkpoint_id: id,
            started_at: completed_at,
            completed_at,
            tasks: vec![0],
            total_size_bytes: 1,
            uploaded_bytes: 1,
            replicas: 1,
            is_final: false,
            pinned_from: None,
            key_groups: None,
        }
    }

    fn catalog(now: DateTime<Utc>) -> Catalog {
        Catalog {
            entries: vec![
                CatalogEntry {
                    id: 1,
                    marker: Some(marker(1, now - chrono::Duration::hours(2))),
                    problem: None,
                },
                CatalogEntry {
                    id: 2,
                    marker: Some(marker(2, now - chrono::Duration::minutes(5))),
                    problem: None,
                },
                CatalogEntry {
                    id: 3,
                    marker: Some(marker(3, now - chrono::Duration::minutes(1))),
                    problem: None,
                },
                CatalogEntry {
                    id: 4,
                    marker: None,
                    problem: None,
                },
            ],
        }
    }

    #[test]
    fn latest_skips_in_progress() {
        let now = Utc::now();
        let c = choose_restore_point(&catalog(now), &RestoreFrom::Latest, None, now);
        assert_eq!(c.chosen, Some(3));
        assert_eq!(c.skipped.len(), 1);
        assert_eq!(c.skipped[0].0, 4);
        assert!(c.skipped[0].1.contains("no _COMPLETED marker"));
    }

    #[test]
    fn a_pinned_id_continues_from_the_runs_started_at_it() {
        let now = Utc::now();
        let mut cat = catalog(now);
        // 2 and 3 were taken by a run started from 1; 4 is in progress
        for e in cat.entries.iter_mut().filter(|e| e.id == 2 || e.id == 3) {
            if let Some(m) = e.marker.as_mut() {
                m.pinned_from = Some(1);
            }
        }
        let c = choose_restore_point(&cat, &RestoreFrom::Id(1), None, now);
        assert_eq!(c.chosen, Some(3));
        // a bad descendant is walked past, down to the pin itself
        cat.mark_problem(3, "bad");
        cat.mark_problem(2, "bad");
        let c = choose_restore_point(&cat, &RestoreFrom::Id(1), None, now);
        assert_eq!(c.chosen, Some(1));
        assert_eq!(
            c.skipped.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![3, 2]
        );
        // a run pinned elsewhere does not count
        let c = choose_restore_point(&catalog(now), &RestoreFrom::Id(1), None, now);
        assert_eq!(c.chosen, Some(1));
    }

    #[test]
    fn walks_back_over_corrupt() {
        let now = Utc::now();
        let mut cat = catalog(now);
        cat.mark_problem(3, "sha256 mismatch for sst/x");
        let c = choose_restore_point(&cat, &RestoreFrom::Latest, None, now);
        assert_eq!(c.chosen, Some(2));
        assert_eq!(c.skipped[1], (3, "sha256 mismatch for sst/x".to_string()));
    }

    #[test]
    fn max_age_and_explicit_id() {
        let now = Utc::now();
        let mut cat = catalog(now);
        cat.mark_problem(3, "bad");
        cat.mark_problem(2, "bad");
        let c = choose_restore_point(
            &cat,
            &RestoreFrom::Latest,
            Some(Duration::from_secs(600)),
            now,
        );
        assert_eq!(c.chosen, None);
        assert!(c.state_expected);
        assert!(c
            .skipped
            .iter()
            .any(|(id, r)| *id == 1 && r.contains("maxAge")));

        let c = choose_restore_point(&catalog(now), &RestoreFrom::Id(1), None, now);
        assert_eq!(c.chosen, Some(1));
        let c = choose_restore_point(&catalog(now), &RestoreFrom::Id(4), None, now);
        assert_eq!(c.chosen, None);
        let c = choose_restore_point(&catalog(now), &RestoreFrom::Id(9), None, now);
        assert!(c.skipped[0].1.contains("no such checkpoint"));
    }

    #[test]
    fn only_in_progress_checkpoints_expect_no_state() {
        let now = Utc::now();
        let cat = Catalog {
            entries: vec![CatalogEntry {
                id: 7,
                marker: None,
                problem: None,
            }],
        };
        let c = choose_restore_point(&cat, &RestoreFrom::Latest, None, now);
        assert_eq!(c.chosen, None);
        assert!(!c.state_expected);
        assert_eq!(c.skipped.len(), 1);
    }

    #[test]
    fn none_and_empty() {
        let now = Utc::now();
        let c = choose_restore_point(&catalog(now), &RestoreFrom::None, None, now);
        assert_eq!(c.chosen, None);
        assert!(!c.state_expected);
        let c = choose_restore_point(&Catalog::default(), &RestoreFrom::Latest, None, now);
        assert_eq!(c.chosen, None);
        assert!(!c.state_expected);
    }

    #[test]
    fn parses_restore_from() {
        assert_eq!(RestoreFrom::parse("latest"), Ok(RestoreFrom::Latest));
        assert_eq!(RestoreFrom::parse("none"), Ok(RestoreFrom::None));
        assert_eq!(RestoreFrom::parse("17"), Ok(RestoreFrom::Id(17)));
        assert_eq!(
            RestoreFrom::parse("s3://b/ns/job/chk-12/"),
            Ok(RestoreFrom::Id(12))
        );
        assert!(RestoreFrom::parse("yesterday").is_err());
    }
}
