// SPDX-License-Identifier: GPL-2.0

//! Engine `rwsem`: the `mmap_sem` baseline.
//!
//! One `rw_semaphore` guards the region tree. Every fault takes it for read — both
//! `down_read` and `up_read` are atomic writes to the semaphore's count, a cache line
//! every faulting CPU shares — and holds it across page allocation and PTE install, so
//! a writer (which takes it for write) waits for all faults in flight and stalls all
//! new ones. `map_pages` may not sleep, so it only tries the lock.
//!
//! Quiescence (engine contract, `protocol/writer.rs`): a fault installs PTEs only while
//! holding the semaphore for read; a writer's publish removes regions under it for
//! write. When the publish returns, every fault that could have seen a removed region
//! has finished, so there is nothing left to quiesce.
//!
//! Lock order: `mmap_lock` / per-VMA lock → `tree`.

#![deny(unsafe_code)]

use crate::{
    engine::{self, Budget, Engine, Unpublished},
    region::{Change, Prot, Region, RegionTree},
    rwsem::{new_rwsem, RwSem},
    stats::Stats,
    uapi,
    vm_ops::{Fault, FaultAround, FaultOutcome},
};
use kernel::{
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc,
    },
};

/// Shared-line writes per read-side critical section: `down_read` + `up_read`.
const LOCK_WRITES: u64 = 2;

/// The baseline engine.
#[pin_data]
pub(crate) struct RwsemEngine {
    #[pin]
    tree: RwSem<RegionTree>,
    /// `VMALAB_MUTANT_*` bits armed by the test hook (0 in normal use).
    mutants: Atomic<u32>,
}

impl RwsemEngine {
    /// An engine with no regions for an arena of `arena_pages` pages.
    pub(crate) fn new(arena_pages: usize) -> impl PinInit<Self> {
        pin_init!(Self {
            tree <- new_rwsem!(RegionTree::new(arena_pages), c"vmalab_rwsem_tree"),
            mutants: Atomic::new(0),
        })
    }
}

impl Engine for RwsemEngine {
    fn id(&self) -> u32 {
        uapi::VMALAB_ENGINE_RWSEM
    }

    fn map_pages(&self, f: &FaultAround<'_>, stats: &Stats) -> bool {
        // `down_read_trylock` is one atomic attempt on the shared count.
        let Some(tree) = self.tree.try_read() else {
            stats.add(uapi::VMALAB_CTR_SHARED_WRITES, 1);
            return false;
        };
        stats.add(uapi::VMALAB_CTR_SHARED_WRITES, LOCK_WRITES);
        tree.with_region(f.pgoff(), |start, region| {
            region.map_present(start, f, stats)
        })
        .unwrap_or(false)
    }

    fn fault(&self, f: &Fault<'_>, stats: &Stats) -> FaultOutcome {
        let tree = self.tree.read();
        stats.add(uapi::VMALAB_CTR_SHARED_WRITES, LOCK_WRITES);
        if self.mutants.load(Relaxed) & uapi::VMALAB_MUTANT_UNLOCKED_INSTALL != 0 {
            // Mutant: look up under the lock, install without it.
            let Some((start, region)) = tree.with_region(f.pgoff(), |s, r| (s, r.clone())) else {
                return FaultOutcome::SigBus;
            };
            drop(tree);
            return region.fault(start, f, stats);
        }
        tree.with_region(f.pgoff(), |start, region| region.fault(start, f, stats))
            .unwrap_or(FaultOutcome::SigBus)
    }

    fn prot_at(&self, pgoff: usize, stats: &Stats) -> Option<Prot> {
        let tree = self.tree.read();
        stats.add(uapi::VMALAB_CTR_SHARED_WRITES, LOCK_WRITES);
        tree.with_region(pgoff, |_, region| region.prot())
    }

    fn publish(&self, change: Change, budget: &dyn Budget, _stats: &Stats) -> Result<Unpublished> {
        // Plans (and allocates the new regions) under the write lock: the plan must
        // see the set it changes.
        engine::publish_locked(&mut self.tree.write(), change, budget)
    }

    // `quiesce`: the default. The write lock taken by the publish waited for every
    // fault that could have found an old region, and faults install only under the
    // read lock.

    fn set_test_hooks(&self, hooks: &uapi::VmalabTestHooks) -> Result {
        let ours = uapi::VMALAB_MUTANT_SKIP_ZAP
            | uapi::VMALAB_MUTANT_SKIP_RETIRE_WAIT
            | uapi::VMALAB_MUTANT_UNLOCKED_INSTALL;
        engine::arm_mutants(hooks, ours, &self.mutants)
    }

    fn drain(&self, removed: &mut KVec<(usize, Arc<Region>)>) -> Result {
        self.tree.write().drain(removed)
    }

    fn usage(&self) -> (usize, usize) {
        let tree = self.tree.read();
        (tree.len(), tree.meta_bytes())
    }
}
