// SPDX-License-Identifier: GPL-2.0

//! Engine `rwsem`: the `mmap_sem` baseline.
//!
//! One `rw_semaphore` (`rwsem.rs`) guards the region tree, held as `locked.rs`
//! describes: every fault takes it for read — both `down_read` and `up_read` are atomic
//! writes to the semaphore's count, a cache line every faulting CPU shares — and holds
//! it across page allocation and PTE install, so a writer (which takes it for write)
//! waits for all faults in flight and stalls all new ones. `map_pages` only tries it.
//!
//! Lock order: `mmap_lock` / per-VMA lock → `tree`.

#![deny(unsafe_code)]

use crate::{
    engine::locked::{LockedEngine, ReadCost, TreeLock},
    region::RegionTree,
    rwsem::{self, new_rwsem, RwSem},
    uapi,
};
use kernel::prelude::*;

/// Shared-line writes per read-side critical section: `down_read` + `up_read`.
const LOCK_WRITES: u64 = 2;

/// The baseline engine.
pub(crate) type RwsemEngine = LockedEngine<RwSem<RegionTree>>;

/// An engine with no regions for an arena of `arena_pages` pages.
pub(crate) fn new(arena_pages: usize) -> impl PinInit<RwsemEngine> {
    RwsemEngine::new(new_rwsem!(
        RegionTree::new(arena_pages),
        c"vmalab_rwsem_tree"
    ))
}

impl TreeLock for RwSem<RegionTree> {
    const ENGINE: u32 = uapi::VMALAB_ENGINE_RWSEM;
    type Read<'a> = rwsem::ReadGuard<'a, RegionTree>;
    type Write<'a> = rwsem::WriteGuard<'a, RegionTree>;

    fn read(&self) -> (Self::Read<'_>, ReadCost) {
        // A try first, to know whether it waits (a failed try is one more atomic
        // attempt on the shared count).
        match RwSem::try_read(self) {
            Some(guard) => (guard, ReadCost::fast(LOCK_WRITES)),
            None => (RwSem::read(self), ReadCost::waited(LOCK_WRITES + 1)),
        }
    }

    fn try_read(&self) -> (Option<Self::Read<'_>>, u64) {
        // `down_read_trylock` is one atomic attempt on the shared count.
        match RwSem::try_read(self) {
            Some(guard) => (Some(guard), LOCK_WRITES),
            None => (None, 1),
        }
    }

    fn write(&self) -> Self::Write<'_> {
        RwSem::write(self)
    }
}
