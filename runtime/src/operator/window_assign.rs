//! Pure window arithmetic: which tumbling/sliding windows a timestamp falls in, and session merging.

/// A half-open window `[start, end)` in epoch ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowBounds {
    /// Inclusive start.
    pub start: i64,
    /// Exclusive end.
    pub end: i64,
}

impl WindowBounds {
    /// The last timestamp inside the window; the window fires when the watermark reaches it.
    pub fn max_timestamp(&self) -> i64 {
        self.end - 1
    }
}

/// The windows of `size` starting every `slide` that contain `ts` (tumbling: slide == size),
/// earliest first.
pub fn assign(ts: i64, size: i64, slide: i64) -> Vec<WindowBounds> {
    let mut out = Vec::with_capacity(usize::try_from(size / slide.max(1)).unwrap_or(1));
    let last_start = ts - ts.rem_euclid(slide);
    let mut start = last_start;
    while start > ts - size {
        out.push(WindowBounds {
            start,
            end: start + size,
        });
        start -= slide;
    }
    out.reverse();
    out
}

/// Whether a window is past its allowed lateness at watermark `wm`.
pub fn is_late(w: &WindowBounds, allowed_lateness: i64, wm: i64) -> bool {
    w.max_timestamp().saturating_add(allowed_lateness) <= wm
}

/// Indices of `sessions` that overlap or touch `[start, end)` (sessions merge when they do).
pub fn overlapping(sessions: &[WindowBounds], new: WindowBounds) -> Vec<usize> {
    sessions
        .iter()
        .enumerate()
        .filter(|(_, s)| s.start <= new.end && new.start <= s.end)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(start: i64, end: i64) -> WindowBounds {
        WindowBounds { start, end }
    }

    #[test]
    fn tumbling_assigns_exactly_one_window() {
        assert_eq!(assign(0, 1000, 1000), vec![w(0, 1000)]);
        assert_eq!(assign(999, 1000, 1000), vec![w(0, 1000)]);
        assert_eq!(assign(1000, 1000, 1000), vec![w(1000, 2000)]);
        assert_eq!(assign(-1, 1000, 1000), vec![w(-1000, 0)]);
    }

    #[test]
    fn sliding_assigns_size_over_slide_windows() {
        assert_eq!(
            assign(1500, 3000, 1000),
            vec![w(-1000, 2000), w(0, 3000), w(1000, 4000)]
        );
        assert_eq!(assign(2000, 2000, 1000), vec![w(1000, 3000), w(2000, 4000)]);
    }

    #[test]
    fn lateness_counts_from_the_window_end() {
        let win = w(0, 1000);
        assert!(!is_late(&win, 0, 998));
        assert!(is_late(&win, 0, 999));
        assert!(!is_late(&win, 500, 1200));
        assert!(is_late(&win, 500, 1499));
    }

    #[test]
    fn sessions_merge_when_touching() {
        let s = vec![w(0, 100), w(200, 300), w(500, 600)];
        assert_eq!(overlapping(&s, w(90, 210)), vec![0, 1]);
        assert_eq!(overlapping(&s, w(300, 310)), vec![1]);
        assert_eq!(overlapping(&s, w(350, 400)), Vec::<usize>::new());
    }
}
