//! The engine's vocabulary, shared by every stage and importing none of them: how rows are
//! hashed and typed, operations, change batches and their source order, checkpoints, digest
//! keys and dates (DESIGN.md, "Vocabulary").

pub mod batch;
pub mod change;
pub mod checkpoint;
pub mod hash;
pub mod key;
pub mod op;
pub mod schema;
pub mod store;
pub mod threads;
pub mod time;
