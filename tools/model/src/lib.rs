//! Model checks of vmalab's protocol cores under `loom`.
//!
//! The cores live in the module's tree (`rust/protocol/*.rs`, `core` only) and are
//! included by `#[path]` into the tests of this crate (`tests/common/mod.rs`), where
//! loom supplies the atomics, mutexes, condvars and threads and explores every
//! interleaving: `tests/rcu.rs` (the `rcu` engine: fault, hold word, reclaim, writer
//! order) and `tests/rwsem.rs` (the writer order behind a lock). See `README.md`
//! ("Model checking") for what is modelled and what is not.
