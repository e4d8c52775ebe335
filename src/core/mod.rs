//! The engine's vocabulary, shared by every stage and importing none of them: how rows are
//! hashed and typed, operations, change batches and their source order, checkpoints, digest
//! keys and dates (DESIGN.md, "Vocabulary").
//! [`spill`] holds batches partitioned by keyhash under a memory budget, on disk past it (the
//! snapshot diff's partitions and a change-log run's).

pub mod batch;
pub mod change;
pub mod checkpoint;
pub mod hash;
pub mod key;
pub mod op;
pub mod schema;
pub mod spill;
pub mod store;
pub mod threads;
pub mod time;
