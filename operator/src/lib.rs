//! Weir operator (work in progress).
