// SPDX-License-Identifier: GPL-2.0

//! Protocol cores: the parts of the engines that decide with atomics, locks and waits,
//! written once, generic over a small sync interface, and compiled twice — into the
//! module with the kernel's primitives, and into `tools/model` (a user-space crate
//! that includes these files by `#[path]`, as `tools/libvmalab` includes `uapi.rs`)
//! where `loom` explores every interleaving of them. No copy can drift from the
//! module's.
//!
//! These files depend on `core` only.

pub(crate) mod hold;
pub(crate) mod percpu_rw;
pub(crate) mod pi_rw;
pub(crate) mod rcu_fault;
pub(crate) mod reclaim;
pub(crate) mod retire;
pub(crate) mod writer;
