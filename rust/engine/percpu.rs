// SPDX-License-Identifier: GPL-2.0

//! Engine `percpu`: Zijlstra's scalable rw_mutex (seed 004, 2007) in place of
//! `mmap_sem`.
//!
//! The region tree sits under a [`PercpuRwLock`] (`percpu_rw.rs`, protocol in
//! `protocol/percpu_rw.rs`). A fault holds it for read for the whole fault, exactly
//! as `rwsem` holds its semaphore (so slow backings work the same): with no writer
//! announced that is one add to this CPU's counter and one subtract — no write to a
//! line another CPU writes. A writer takes the writers' mutex, announces itself,
//! waits a grace period and then until the counters of all CPUs sum to zero
//! (Dumazet's objection: O(CPUs) per writer); faults that find it announced queue on
//! the writers' mutex (2 shared-line writes). `map_pages` may not sleep: it only
//! tries (fails while a writer is announced).
//!
//! Quiescence (engine contract, `protocol/writer.rs`): as `rwsem`: a fault installs
//! PTEs only while counted in as a reader; the publish held the lock for write, so
//! every fault that could have seen a removed region has finished.
//!
//! Lock order: `mmap_lock` / per-VMA lock → `tree` (its writers' mutex, then its
//! waiter).

#![deny(unsafe_code)]

use crate::{
    engine::{self, Budget, Engine, Unpublished},
    percpu_rw::PercpuRwLock,
    protocol::percpu_rw::ReadPath,
    region::{Change, Prot, Region, RegionTree},
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

/// Shared-line writes of a slow-path read lock: the writers' mutex, taken and
/// released.
const SLOW_WRITES: u64 = 2;

/// Zijlstra's engine.
#[pin_data]
pub(crate) struct PercpuEngine {
    #[pin]
    tree: PercpuRwLock<RegionTree>,
    /// `VMALAB_MUTANT_*` bits armed by the test hook (0 in normal use).
    mutants: Atomic<u32>,
}

impl PercpuEngine {
    /// An engine with no regions for an arena of `arena_pages` pages.
    pub(crate) fn new(arena_pages: usize) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            tree <- PercpuRwLock::new(RegionTree::new(arena_pages)),
            mutants: Atomic::new(0),
        }? Error)
    }
}

/// Counts a read lock's shared-line writes (none on the fast path).
fn count(path: ReadPath, stats: &Stats) {
    if path == ReadPath::Slow {
        stats.add(uapi::VMALAB_CTR_SHARED_WRITES, SLOW_WRITES);
    }
}

impl Engine for PercpuEngine {
    fn id(&self) -> u32 {
        uapi::VMALAB_ENGINE_PERCPU
    }

    fn map_pages(&self, f: &FaultAround<'_>, stats: &Stats) -> bool {
        let Some(tree) = self.tree.try_read() else {
            return false;
        };
        tree.with_region(f.pgoff(), |start, region| {
            region.map_present(start, f, stats)
        })
        .unwrap_or(false)
    }

    fn fault(&self, f: &Fault<'_>, stats: &Stats) -> FaultOutcome {
        let (tree, path) = self.tree.read();
        count(path, stats);
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
        let (tree, path) = self.tree.read();
        count(path, stats);
        tree.with_region(pgoff, |_, region| region.prot())
    }

    fn publish(&self, change: Change, budget: &dyn Budget, stats: &Stats) -> Result<Unpublished> {
        let mut tree = self.tree.write();
        stats.add(uapi::VMALAB_CTR_PERCPU_LINES, self.tree.take_lines_read());
        engine::publish_locked(&mut tree, change, budget)
    }

    // `quiesce`: the default (the write lock waited for every reader).

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
        let (tree, _) = self.tree.read();
        (tree.len(), tree.meta_bytes())
    }
}
