//! Tributary: change-data-capture into Delta Lake tables.
//!
//! Data flows one way: `source` (extract files to typed, hashed batches) → `spill` (both sides
//! partitioned by keyhash, within the memory `plan`) → `join`/`diff` (operations per row, one
//! partition at a time) → `lake` (current and history Delta tables, committed together). A run
//! whose current table fits in memory as an index skips the partitions: `source` → `probe`
//! (each batch classified as it is read) → `join` (output rows) → `lake`. `run` ties the stages
//! together for one business day; `generate` makes synthetic data.
//!
//! Change logs take a shorter path: `source::changes` (DMS and Debezium files to
//! [`change::ChangeBatch`]es) → `change` (last change per key) → `apply` (impacted files of
//! current, history, applied files; one run commit). `controller` runs it per landing-zone table
//! listed in the `tables` file.

pub mod allocator;
pub mod apply;
pub mod change;
pub mod check;
pub mod config;
pub mod controller;
pub mod demo;
pub mod diff;
pub mod error;
pub mod generate;
pub mod hash;
pub mod join;
pub mod lake;
pub mod plan;
pub mod probe;
pub mod progress;
pub mod rejects;
pub mod run;
pub mod schema;
pub mod source;
pub mod spill;
pub mod summary;
pub mod tables;

pub use error::{Error, Result};
