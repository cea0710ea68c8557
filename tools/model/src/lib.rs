//! Model checks of vmalab's protocol cores under `loom`.
//!
//! The cores live in the module's tree (`rust/protocol/*.rs`, `core` only) and are
//! included by `#[path]` into the tests of this crate (`tests/*.rs`), where loom
//! supplies the atomics, mutexes, condvars and threads and explores every
//! interleaving. See `README.md` ("Model checking") for what is modelled and what is
//! not.
