// SPDX-License-Identifier: GPL-2.0

//! Engine `pi`: Esben Nielsen's read-side priority-inheriting rw lock (seed 004, 2007)
//! in place of `mmap_sem`: "a reader boosts the writer, but a writer can't boost the
//! readers".
//!
//! The region tree sits under a [`PiRwLock`] (`pi_rw.rs`; protocol, and the holes of
//! his sketch it closes, in `protocol/pi_rw.rs`), held as `locked.rs` describes: a
//! fault holds it for read for the whole fault. With no writer that is a
//! compare-and-swap up and an add down on one shared word (2 shared-line writes, as
//! `rwsem`). A writer owns an `rt_mutex` from before it waits for the readers inside
//! until it unlocks; a fault that finds a writer in or waiting sleeps on that
//! `rt_mutex`, lending the writer its priority (4 shared-line writes: the `rt_mutex`
//! taken and released besides the count). So a real-time thread whose fault waits for
//! a low-priority writer preempted by medium-priority work gets the writer run at its
//! own priority, instead of waiting for the medium-priority work to stop (the
//! inversion `rwsem` and `percpu` have). `map_pages` only tries.
//!
//! Mutant `VMALAB_MUTANT_POLL_READ` (test hooks): faults wait for the writer by
//! retrying the lock with a sleep in between instead of on the `rt_mutex` — no boost;
//! the selftest that watches the writer's priority must catch it.
//!
//! Lock order: `mmap_lock` / per-VMA lock → `tree` (its `rt_mutex`, then its waiter).

#![deny(unsafe_code)]

use crate::{
    engine::locked::{LockedEngine, ReadCost, TreeLock},
    pi_rw::{self, new_pi_rw, PiRwLock},
    protocol::pi_rw::ReadPath,
    region::RegionTree,
    uapi,
};
use kernel::prelude::*;

/// Shared-line writes of a read lock without a writer: the count, up and down.
const FAST_WRITES: u64 = 2;
/// Shared-line writes of a read lock that waited for a writer: the count, and the
/// `rt_mutex` taken and released.
const SLOW_WRITES: u64 = 4;

/// Nielsen's engine.
pub(crate) type PiEngine = LockedEngine<PiRwLock<RegionTree>>;

/// An engine with no regions for an arena of `arena_pages` pages.
pub(crate) fn new(arena_pages: usize) -> impl PinInit<PiEngine> {
    PiEngine::new(new_pi_rw!(RegionTree::new(arena_pages), c"vmalab_pi_tree"))
}

impl TreeLock for PiRwLock<RegionTree> {
    const ENGINE: u32 = uapi::VMALAB_ENGINE_PI;
    const MUTANTS: u32 = uapi::VMALAB_MUTANT_POLL_READ;
    type Read<'a> = pi_rw::ReadGuard<'a, RegionTree>;
    type Write<'a> = pi_rw::WriteGuard<'a, RegionTree>;

    fn read(&self) -> (Self::Read<'_>, ReadCost) {
        let (guard, path) = PiRwLock::read(self);
        let cost = match path {
            ReadPath::Slow => ReadCost::waited(SLOW_WRITES),
            ReadPath::Fast => ReadCost::fast(FAST_WRITES),
        };
        (guard, cost)
    }

    fn try_read(&self) -> (Option<Self::Read<'_>>, u64) {
        match PiRwLock::try_read(self) {
            Some(guard) => (Some(guard), FAST_WRITES),
            None => (None, 0),
        }
    }

    fn write(&self) -> Self::Write<'_> {
        PiRwLock::write(self)
    }
}
