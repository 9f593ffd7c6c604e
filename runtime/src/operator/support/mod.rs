//! shared building blocks of the operators

pub mod accumulators;
pub mod legacy;
pub mod retraction;

#[cfg(test)]
mod parity_tests;
