//! Integration tests over real files and real Delta tables.

mod bad_input;
mod capture;
mod capture_model;
mod change_feed;
mod common;
mod concurrency;
mod crash;
mod first_hour;
mod golden;
mod hostile_input;
mod maintain;
mod model;
mod object_store;
mod readers;
#[cfg(unix)]
mod shared;
mod snapshot;
mod spill;
mod sql;
mod stats;
mod sync;
mod sync_model;
