//! Tributary: change-data-capture into Delta Lake tables.
//!
//! Data flows one way, and the folders follow it (`docs/architecture.md` draws it):
//!
//! ```text
//! source ──▶ snapshot (diff) ──┐
//!   extract/ csv, parquet      ├──▶ sink: one run transaction ──▶ delta/ current, history,
//!   changelog/ dms, debezium ──┴─▶ changelog (last change per key, merge)      rejects, applied
//! ```
//!
//! - [`core`]: the vocabulary every stage shares (hashing, column types, operations, change
//!   batches, checkpoints, digest keys, dates); imports no other module.
//! - [`config`]: the YAML files, validated into sections (table, lake, source, snapshot).
//! - [`report`]: progress and memory figures.
//! - [`source`]: extract files into hashed batches; change logs into change batches, behind the
//!   [`source::ChangeSource`] trait.
//! - [`sink`]: the [`sink::Sink`] contract and the run transaction; Delta tables in
//!   [`sink::delta`].
//! - [`snapshot`]: `tributary run`: a business day's extract diffed against the current table.
//! - [`changelog`]: `tributary sync`: the last change per key merged into the tables, driven by
//!   a controller over any change source.
//! - [`generate`]: the synthetic data generator.
//! - [`query`]: `tributary sql`: DataFusion over the lake's tables, with time travel, SCD2 views
//!   and as-of queries.
//! - [`cli`]: one file per command, with its output.
//! - `fuzzing` (hidden): the entry points of the `cargo fuzz` targets (docs/fuzzing.md).
//!
//! A module imports only from the modules listed before it (`core` first, `cli` last).

pub mod changelog;
pub mod cli;
pub mod config;
pub mod core;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod generate;
pub mod query;
pub mod report;
pub mod sink;
pub mod snapshot;
pub mod source;

pub use error::{Error, Result};
