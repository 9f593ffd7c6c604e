//! Which checkpoints to delete: a pure plan over ids, applied by the coordinator.

/// Ids to delete, given every checkpoint id with whether it completed.
///
/// Keeps the newest `retain` completed checkpoints and every id in `protected` (e.g. the one
/// this process restored from, or one in progress); deletes older completed ones and
/// incomplete ones older than the newest completed checkpoint.
pub fn plan_retention(checkpoints: &[(u64, bool)], retain: usize, protected: &[u64]) -> Vec<u64> {
    let mut completed: Vec<u64> = checkpoints
        .iter()
        .filter(|(_, c)| *c)
        .map(|(id, _)| *id)
        .collect();
    completed.sort_unstable_by(|a, b| b.cmp(a));
    let newest = completed.first().copied();
    let keep: Vec<u64> = completed.iter().take(retain.max(1)).copied().collect();
    let mut delete: Vec<u64> = checkpoints
        .iter()
        .filter(|(id, done)| {
            if protected.contains(id) || keep.contains(id) {
                return false;
            }
            if *done {
                true
            } else {
                newest.is_some_and(|n| *id < n)
            }
        })
        .map(|(id, _)| *id)
        .collect();
    delete.sort_unstable();
    delete
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_newest_n_completed() {
        let cps = [(1, true), (2, true), (3, true), (4, true)];
        assert_eq!(plan_retention(&cps, 2, &[]), vec![1, 2]);
    }

    #[test]
    fn never_deletes_protected_restore_point() {
        let cps = [(1, true), (2, true), (3, true), (4, true)];
        assert_eq!(plan_retention(&cps, 2, &[1]), vec![2]);
    }

    #[test]
    fn deletes_abandoned_but_not_newer_in_progress() {
        let cps = [(1, true), (2, false), (3, true), (4, false)];
        assert_eq!(plan_retention(&cps, 1, &[]), vec![1, 2]);
    }

    #[test]
    fn nothing_completed_deletes_nothing() {
        let cps = [(1, false), (2, false)];
        assert!(plan_retention(&cps, 1, &[]).is_empty());
    }
}
