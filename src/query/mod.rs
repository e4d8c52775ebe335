//! `tributary sql`: a DataFusion session over a lake's Delta tables, with the queries the seed
//! systems end in: time travel by version and by time, the history as SCD type 2, and the
//! state of a table as of a business date.
//!
//! Every table is registered by name (`<table>` for current, `<table>_history`, and the view
//! `<table>_scd2`); tables of a `sync` lake are registered in their schema (`sales.orders`).
//! Table functions, since DataFusion's SQL parser has no `VERSION AS OF` clause:
//!
//! | function | rows | standard |
//! |---|---|---|
//! | `version_as_of('t', 12)` | the table `t` (or `t_history`) at Delta version 12 | Delta `VERSION AS OF` |
//! | `timestamp_as_of('t', '2021-12-30 14:00:00')` | the table at the latest version committed at or before that time (UTC) | Delta `TIMESTAMP AS OF` |
//! | `as_of('t', DATE '2019-06-18')` | the state of `t` after the run of that business date, from its history | the seed's SCD2 rule |
//! | `changes('t', 3, 5)` | the rows `t`'s history gained after history version 3 up to 5, with `commit_version` | Hudi incremental query |
//! | `table_changes('t', 3, 5)` | the Delta change data feed of `t` (or `t_history`) from version 3 to 5: its columns, `_change_type`, `_commit_version`, `_commit_timestamp` | Delta change data feed, Databricks `table_changes` |
//! | `runs('t')` | one row per run in the history table's log: version, time, run number and id, business date, input fingerprint, files, rows and bytes added | Delta `DESCRIBE HISTORY` |
//!
//! `as_of` takes, for each key, the history version with the latest `eff_start_date` on or
//! before the date (then the latest `source_position`, where the table keeps one), and drops
//! keys whose version is a delete (`operation = 'D'`): the seed article's rule that a version
//! ends where the next one of its key starts. Its columns are history's without `operation`.

pub mod catalog;
pub mod functions;
pub mod output;
pub mod session;

pub use catalog::LakeTable;
pub use session::Lake;
