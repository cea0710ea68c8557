// SPDX-License-Identifier: GPL-2.0

//! Engine `percpu`: Zijlstra's scalable rw_mutex (seed 004, 2007) in place of
//! `mmap_sem`.
//!
//! The region tree sits under a [`PercpuRwLock`] (`percpu_rw.rs`, protocol in
//! `protocol/percpu_rw.rs`), held as `locked.rs` describes: a fault holds it for read
//! for the whole fault, exactly as `rwsem` holds its semaphore (so slow backings work
//! the same). With no writer announced that is one add to this CPU's counter and one
//! subtract — no write to a line another CPU writes. A writer takes the writers' mutex,
//! announces itself, waits a grace period and then until the counters of all CPUs sum
//! to zero (Dumazet's objection: O(CPUs) per writer, counted as `percpu_lines`); faults
//! that find it announced queue on the writers' mutex (2 shared-line writes).
//! `map_pages` only tries (fails while a writer is announced).
//!
//! Configuration `percpu+sem` (`VMALAB_CONFIG_KERNEL_LOCK`): the same engine on the
//! kernel's descendant of the idea, `percpu_rw_semaphore` (`percpu_rwsem.rs`), so the
//! 2007 design and today's run in the same benchmark. Its writers' per-CPU sums happen
//! inside the kernel and are not counted (`percpu_lines` stays 0); a reader counts as
//! slow (2 shared-line writes: the wait queue's lock) when a writer held the semaphore
//! as it arrived.
//!
//! Lock order: `mmap_lock` / per-VMA lock → `tree` (its writers' mutex, then its
//! waiter; `percpu+sem`: the semaphore).

#![deny(unsafe_code)]

use crate::{
    engine::locked::{LockedEngine, ReadCost, TreeLock},
    percpu_rw::{self, PercpuRwLock},
    percpu_rwsem::{self, new_percpu_rwsem, PercpuRwSem},
    protocol::percpu_rw::ReadPath,
    region::RegionTree,
    uapi,
};
use kernel::prelude::*;

/// Shared-line writes of a read lock that waited for a writer: the writers' mutex
/// (`percpu+sem`: the wait queue's lock), taken and released.
const SLOW_WRITES: u64 = 2;

/// Zijlstra's engine.
pub(crate) type PercpuEngine = LockedEngine<PercpuRwLock<RegionTree>>;
/// The same on the kernel's `percpu_rw_semaphore` (`percpu+sem`).
pub(crate) type PercpuSemEngine = LockedEngine<PercpuRwSem<RegionTree>>;

/// An engine on Zijlstra's lock with no regions for an arena of `arena_pages` pages.
pub(crate) fn new(arena_pages: usize) -> impl PinInit<PercpuEngine, Error> {
    PercpuEngine::new(PercpuRwLock::new(RegionTree::new(arena_pages)))
}

/// An engine on the kernel's `percpu_rw_semaphore` (`percpu+sem`).
pub(crate) fn new_kernel_lock(arena_pages: usize) -> impl PinInit<PercpuSemEngine, Error> {
    PercpuSemEngine::new(new_percpu_rwsem!(
        RegionTree::new(arena_pages),
        c"vmalab_percpu_sem"
    ))
}

impl TreeLock for PercpuRwLock<RegionTree> {
    const ENGINE: u32 = uapi::VMALAB_ENGINE_PERCPU;
    type Read<'a> = percpu_rw::ReadGuard<'a, RegionTree>;
    type Write<'a> = percpu_rw::WriteGuard<'a, RegionTree>;

    fn read(&self) -> (Self::Read<'_>, ReadCost) {
        let (guard, path) = PercpuRwLock::read(self);
        let cost = match path {
            ReadPath::Slow => ReadCost::waited(SLOW_WRITES),
            ReadPath::Fast => ReadCost::fast(0),
        };
        (guard, cost)
    }

    fn try_read(&self) -> (Option<Self::Read<'_>>, u64) {
        (PercpuRwLock::try_read(self), 0)
    }

    fn write(&self) -> Self::Write<'_> {
        PercpuRwLock::write(self)
    }

    fn take_lines_read(&self) -> u64 {
        PercpuRwLock::take_lines_read(self)
    }
}

impl TreeLock for PercpuRwSem<RegionTree> {
    const ENGINE: u32 = uapi::VMALAB_ENGINE_PERCPU;
    type Read<'a> = percpu_rwsem::ReadGuard<'a, RegionTree>;
    type Write<'a> = percpu_rwsem::WriteGuard<'a, RegionTree>;

    fn read(&self) -> (Self::Read<'_>, ReadCost) {
        let (guard, queued) = PercpuRwSem::read(self);
        let cost = if queued {
            ReadCost::waited(SLOW_WRITES)
        } else {
            ReadCost::fast(0)
        };
        (guard, cost)
    }

    fn try_read(&self) -> (Option<Self::Read<'_>>, u64) {
        (PercpuRwSem::try_read(self), 0)
    }

    fn write(&self) -> Self::Write<'_> {
        PercpuRwSem::write(self)
    }
}
