//! Weir operator (work in progress).

pub mod alerting;
