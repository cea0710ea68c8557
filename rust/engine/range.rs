// SPDX-License-Identifier: GPL-2.0

//! Engine `range`: Lespinasse's fine-grained MM locking (seed 003, part II) — "a lock
//! that is only held for short periods of time to protect mm-wide data structures
//! (including the vma tree), and another that functions as a range lock and can be
//! held for longer periods of time", so that a MAP in one range, an UNMAP in another
//! and faults in a third proceed in parallel.
//!
//! - `tree` is the short lock: writers plan and commit under it; faults never take it
//!   (they look regions up in an RCU map, as `rcu` does).
//! - `ranges` ([`RangeLock`]) is the range lock. A fault holds its page for read from
//!   before its lookup until after its install — across the slow backing's sleep, as
//!   faults hold `mmap_lock` for read. A writer holds the pages its plan takes out or
//!   puts in for write (`Plan::lo`/`hi`) while it publishes: it waits for the faults
//!   in that range only, and faults elsewhere never wait for it.
//!
//! Writer: guess the range under `tree` (`RegionTree::reach`), lock it for write, plan
//! under `tree` again; if the tree changed meanwhile and the plan reaches beyond the
//! range held, unlock and retry with the larger range. Then publish (map stores,
//! commit) and unlock the range. No quiesce: no fault in the range was running
//! (they hold the range for read) or can find the old regions after the publish; so
//! the map entries taken out are freed at once. `Space` zaps and frees after, and
//! its retiring list keeps an overlapping writer from publishing before that zap.
//!
//! The cost made visible, as Lespinasse reported it: every fault registers its page in
//! the range lock's shared structure and unregisters it — [`READ_WRITES`] shared-line
//! writes per fault (counted in `shared_writes`, against `rwsem`'s 2 and `rcu`'s 0),
//! plus 2 for the region reference a fault that must sleep takes. `map_pages` cannot
//! register (it runs in atomic context and the registration may allocate), so this
//! engine has no fault-around: every fault takes `->fault`.
//!
//! Lock order: `mmap_lock` / per-VMA lock → read range (faults); write range → `tree`
//! → the map's internal spinlock (writers); the range lock's own mutex is innermost.

#![deny(unsafe_code)]

use crate::{
    engine::{mapped_usage, publish_mapped, Budget, Engine, Slot, Unpublished},
    range_lock::{RangeLock, READ_WRITES},
    rcu_tree::{RcuRangeMap, Wait},
    region::{Change, Prot, Region, RegionTree},
    stats::Stats,
    uapi,
    vm_ops::{Fault, FaultAround, FaultOutcome},
};
use kernel::{
    new_mutex,
    prelude::*,
    sync::{atomic::Atomic, rcu, Arc, Mutex},
};

/// Shared-line writes of a slow-path fault's region reference (increment, decrement).
const REF_WRITES: u64 = 2;

/// The range-lock engine.
#[pin_data]
pub(crate) struct RangeEngine {
    /// The short lock: the writers' index (placement, plans).
    #[pin]
    tree: Mutex<RegionTree>,
    /// What faults look up.
    #[pin]
    map: RcuRangeMap<Slot>,
    /// Faults' pages (read) and writers' ranges (write).
    #[pin]
    ranges: RangeLock,
    /// `VMALAB_MUTANT_*` bits armed by the test hook (0 in normal use; the two this
    /// engine accepts are carried out by `Space`).
    mutants: Atomic<u32>,
}

impl RangeEngine {
    /// An engine with no regions for an arena of `arena_pages` pages.
    pub(crate) fn new(arena_pages: usize) -> impl PinInit<Self> {
        pin_init!(Self {
            tree <- new_mutex!(RegionTree::new(arena_pages), "vmalab_range_tree"),
            map <- RcuRangeMap::new(),
            ranges <- RangeLock::new(),
            mutants: Atomic::new(0),
        })
    }
}

impl Engine for RangeEngine {
    fn id(&self) -> u32 {
        uapi::VMALAB_ENGINE_RANGE
    }

    fn map_pages(&self, _f: &FaultAround<'_>, _stats: &Stats) -> bool {
        false // A fault must register in the range lock, which may sleep: `->fault`.
    }

    fn fault(&self, f: &Fault<'_>, stats: &Stats) -> FaultOutcome {
        let (range, waited) = match self.ranges.read(f.pgoff()) {
            Ok(r) => r,
            Err(_) => return FaultOutcome::Oom,
        };
        stats.add(uapi::VMALAB_CTR_SHARED_WRITES, READ_WRITES);
        if waited {
            stats.inc(uapi::VMALAB_CTR_READ_WAITS);
        }
        // While we hold the page for read, no writer can take its region out.
        let (start, region) = {
            let guard = rcu::read_lock();
            let Some(slot) = self.map.load(f.pgoff(), &guard) else {
                return FaultOutcome::SigBus;
            };
            if let Some(out) = slot.region.fault_atomic(slot.start, f, stats, || true) {
                return out;
            }
            stats.add(uapi::VMALAB_CTR_SHARED_WRITES, REF_WRITES);
            (slot.start, slot.region.clone())
        };
        let out = region.fault(start, f, stats, || true);
        // The reference goes before the range: never the last one.
        drop(region);
        drop(range);
        out
    }

    fn prot_at(&self, pgoff: usize, stats: &Stats) -> Option<Prot> {
        let (_range, waited) = self.ranges.read(pgoff).ok()?;
        stats.add(uapi::VMALAB_CTR_SHARED_WRITES, READ_WRITES);
        if waited {
            stats.inc(uapi::VMALAB_CTR_READ_WAITS);
        }
        let guard = rcu::read_lock();
        self.map.load(pgoff, &guard).map(|slot| slot.region.prot())
    }

    fn publish(&self, change: Change, budget: &dyn Budget, stats: &Stats) -> Result<Unpublished> {
        let (mut lo, mut hi) = self.tree.lock().reach(&change)?;
        loop {
            let range = self.ranges.write(lo, hi)?;
            if range.waited() {
                stats.inc(uapi::VMALAB_CTR_WRITER_WAITS);
            }
            let mut tree = self.tree.lock();
            let plan = tree.plan(change.clone())?;
            if !plan.is_empty() && (plan.lo < lo || plan.hi > hi) {
                // The tree changed since the guess: hold the larger range and replan.
                (lo, hi) = (lo.min(plan.lo), hi.max(plan.hi));
                continue;
            }
            let mut out = publish_mapped(&mut tree, &self.map, plan, budget)?;
            // No fault in [lo, hi) runs (we hold it for write), and faults after us
            // find the new entries: the old ones are nobody's.
            let entries = core::mem::take(&mut out.entries);
            self.map.reclaim(entries, Wait::Excluded, drop);
            return Ok(out);
        }
    }

    fn set_test_hooks(&self, hooks: &uapi::VmalabTestHooks) -> Result {
        let ours = uapi::VMALAB_MUTANT_SKIP_ZAP | uapi::VMALAB_MUTANT_SKIP_RETIRE_WAIT;
        crate::engine::arm_mutants(hooks, ours, &self.mutants)
    }

    fn drain(&self, removed: &mut KVec<(usize, Arc<Region>)>) -> Result {
        self.tree.lock().drain(removed)
    }

    fn usage(&self) -> (usize, usize) {
        mapped_usage(&self.tree.lock())
    }
}
