//! Tributary: change-data-capture into Delta Lake tables.
//!
//! Data flows one way: `source` (extract files to typed, hashed batches) → `diff` (operations
//! per row) → `lake` (current and history Delta tables, committed together). `run` ties the
//! stages together for one business day; `generate` makes synthetic data.

pub mod config;
pub mod demo;
pub mod diff;
pub mod error;
pub mod generate;
pub mod hash;
pub mod lake;
pub mod progress;
pub mod rejects;
pub mod run;
pub mod schema;
pub mod source;
pub mod summary;

pub use error::{Error, Result};
