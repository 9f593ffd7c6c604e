//! Weir runtime (work in progress).
