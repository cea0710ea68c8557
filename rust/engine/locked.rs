// SPDX-License-Identifier: GPL-2.0

//! The engines whose region tree sits under one reader-writer lock: `rwsem` (the
//! kernel's `rw_semaphore`), `percpu` (Zijlstra's per-CPU rw_mutex, or the kernel's
//! `percpu_rw_semaphore` as `percpu+sem`) and `pi` (Nielsen's read-side priority-
//! inheriting rw lock). They differ only in the lock, a [`TreeLock`]; each engine's
//! file implements it and says what its lock costs.
//!
//! A fault holds the lock for read for the whole fault — lookup, page allocation (a
//! slow backing sleeps here), PTE install — exactly as a fault holds `mmap_sem`.
//! `map_pages` may not sleep: it only tries the lock. A writer's publish holds it for
//! write.
//!
//! Quiescence (engine contract, `protocol/writer.rs`): a fault installs PTEs only while
//! it holds the lock for read, and a publish removes regions while it holds it for
//! write. When the publish returns, every fault that could have seen a removed region
//! has finished: there is nothing left to quiesce.
//!
//! Lock order: `mmap_lock` / per-VMA lock → the tree lock (and whatever it takes
//! inside, documented in its file).

#![deny(unsafe_code)]

use crate::{
    engine::{self, Budget, Engine, Unpublished},
    region::{Change, Prot, Region, RegionTree},
    stats::Stats,
    uapi,
    vm_ops::{Fault, FaultAround, FaultOutcome},
};
use core::ops::{Deref, DerefMut};
use kernel::{
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc,
    },
};

/// What taking a read lock cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReadCost {
    /// Writes to cache lines other CPUs write (taking and releasing the lock).
    pub(crate) shared_writes: u64,
    /// Whether the reader had to wait for a writer (the lock's slow path).
    pub(crate) waited: bool,
}

impl ReadCost {
    /// `shared_writes` writes, without waiting.
    pub(crate) const fn fast(shared_writes: u64) -> Self {
        Self {
            shared_writes,
            waited: false,
        }
    }

    /// `shared_writes` writes, after waiting for a writer.
    pub(crate) const fn waited(shared_writes: u64) -> Self {
        Self {
            shared_writes,
            waited: true,
        }
    }
}

/// The lock around a [`LockedEngine`]'s region tree.
pub(crate) trait TreeLock: Send + Sync {
    /// The engine's UAPI id.
    const ENGINE: u32;
    /// The `VMALAB_MUTANT_*` bits this engine offers besides the common ones.
    const MUTANTS: u32 = 0;

    /// A held read lock.
    type Read<'a>: Deref<Target = RegionTree>
    where
        Self: 'a;
    /// A held write lock.
    type Write<'a>: DerefMut<Target = RegionTree>
    where
        Self: 'a;

    /// Takes the lock for read (may sleep): the guard, and what it cost.
    fn read(&self) -> (Self::Read<'_>, ReadCost);
    /// Takes the lock for read if that needs no sleep (atomic context): the guard if
    /// it got one, and the shared-line writes of the attempt (and release).
    fn try_read(&self) -> (Option<Self::Read<'_>>, u64);
    /// Takes the lock for write.
    fn write(&self) -> Self::Write<'_>;
    /// Per-CPU counters the writers' sums read since the last call (0: none, or not
    /// counted).
    fn take_lines_read(&self) -> u64 {
        0
    }
}

/// Mutants every locked engine offers.
const COMMON_MUTANTS: u32 = uapi::VMALAB_MUTANT_SKIP_ZAP
    | uapi::VMALAB_MUTANT_SKIP_RETIRE_WAIT
    | uapi::VMALAB_MUTANT_UNLOCKED_INSTALL;

/// An engine whose region tree is under the lock `L`.
#[pin_data]
pub(crate) struct LockedEngine<L> {
    #[pin]
    tree: L,
    /// `VMALAB_MUTANT_*` bits armed by the test hook (0 in normal use).
    mutants: Atomic<u32>,
}

impl<L: TreeLock> LockedEngine<L> {
    /// An engine around `tree`, a lock holding an empty region tree.
    pub(crate) fn new<E>(tree: impl PinInit<L, E>) -> impl PinInit<Self, E> {
        try_pin_init!(Self {
            tree <- tree,
            mutants: Atomic::new(0),
        }? E)
    }

    /// Takes the read lock for a fault: normally [`TreeLock::read`]; under
    /// `VMALAB_MUTANT_POLL_READ` by retrying [`TreeLock::try_read`] with a sleep in
    /// between, a wait that lends the writer nothing (the `pi` engine's negative
    /// control: its boost must then be missing).
    /// `mutants` is the armed set, loaded once by the caller.
    fn read(&self, stats: &Stats, mutants: u32) -> L::Read<'_> {
        if mutants & uapi::VMALAB_MUTANT_POLL_READ != 0 {
            loop {
                let (guard, writes) = self.tree.try_read();
                stats.add(uapi::VMALAB_CTR_SHARED_WRITES, writes);
                if let Some(guard) = guard {
                    return guard;
                }
                kernel::time::delay::fsleep(kernel::time::Delta::from_micros(1000));
            }
        }
        let (guard, cost) = self.tree.read();
        stats.add(uapi::VMALAB_CTR_SHARED_WRITES, cost.shared_writes);
        if cost.waited {
            stats.inc(uapi::VMALAB_CTR_READ_WAITS);
        }
        guard
    }
}

impl<L: TreeLock> Engine for LockedEngine<L> {
    fn id(&self) -> u32 {
        L::ENGINE
    }

    fn map_pages(&self, f: &FaultAround<'_>, stats: &Stats) -> bool {
        let (tree, writes) = self.tree.try_read();
        stats.add(uapi::VMALAB_CTR_SHARED_WRITES, writes);
        let Some(tree) = tree else {
            return false;
        };
        tree.with_region(f.pgoff(), |start, region| {
            region.map_present(start, f, stats, || true)
        })
        .unwrap_or(false)
    }

    fn fault(&self, f: &Fault<'_>, stats: &Stats) -> FaultOutcome {
        let mutants = self.mutants.load(Relaxed);
        let tree = self.read(stats, mutants);
        if mutants & uapi::VMALAB_MUTANT_UNLOCKED_INSTALL != 0 {
            // Mutant: look up under the lock, install without it.
            let Some((start, region)) = tree.with_region(f.pgoff(), |s, r| (s, r.clone())) else {
                return FaultOutcome::SigBus;
            };
            drop(tree);
            return region.fault(start, f, stats, || true);
        }
        tree.with_region(f.pgoff(), |start, region| {
            region.fault(start, f, stats, || true)
        })
        .unwrap_or(FaultOutcome::SigBus)
    }

    fn prot_at(&self, pgoff: usize, stats: &Stats) -> Option<Prot> {
        self.read(stats, self.mutants.load(Relaxed))
            .with_region(pgoff, |_, region| region.prot())
    }

    fn publish(&self, change: Change, budget: &dyn Budget, stats: &Stats) -> Result<Unpublished> {
        let mut tree = self.tree.write();
        stats.add(uapi::VMALAB_CTR_PERCPU_LINES, self.tree.take_lines_read());
        engine::publish_locked(&mut tree, change, budget)
    }

    // `quiesce`: the default (the write lock waited for every reader).

    fn set_test_hooks(&self, hooks: &uapi::VmalabTestHooks) -> Result {
        engine::arm_mutants(hooks, COMMON_MUTANTS | L::MUTANTS, &self.mutants)
    }

    fn drain(&self, removed: &mut KVec<(usize, Arc<Region>)>) -> Result {
        self.tree.write().drain(removed)
    }

    fn usage(&self) -> (usize, usize) {
        let (tree, _) = self.tree.read();
        (tree.len(), tree.meta_bytes())
    }
}
