// SPDX-License-Identifier: GPL-2.0

//! Engine `rcu`: Wilcox's design (seed 002) — RCU region lookup, per-region
//! references only for faults that must sleep.
//!
//! Readers:
//! - `map_pages` and the first step of `->fault` look the region up in an RCU-mode
//!   maple tree ([`RcuRangeMap`]) and map a present page (or one allocated with
//!   `GFP_NOWAIT`) without writing to any line shared with other faulting CPUs: no
//!   region refcount, no lock. Per-page atomics (the page's own refcount, the PTE
//!   lock of its page table) stay — they are not shared by threads on other pages.
//! - A fault that must sleep (slow backing, no memory without reclaim, no PTE table
//!   yet) *holds* the region (one atomic increment), leaves the read section,
//!   produces the page, installs the PTE, and releases the hold. It completes rather
//!   than returning `VM_FAULT_RETRY`: under the per-VMA lock a retry would be redone
//!   under `mmap_lock` (`arch/x86/mm/fault.c`), the very lock this design avoids.
//!
//! The fault's order is `protocol/rcu_fault.rs`, shared with the loom model.
//!
//! Writers (serialised by `writer`, which also owns placement; the order is
//! `protocol/writer.rs`, the wait `protocol/reclaim.rs`, both shared with the model):
//! 1. publish: `mtree_store_range` calls make the new set visible (a split stores
//!    the parts that stay first, then empties the hole: a reader sees old or new);
//! 2. quiesce: `synchronize_rcu()` — every fast-path fault that could have found an
//!    old region has finished (a fast-path fault installs its PTE inside its read
//!    section) — then wait for holds on the old regions to drain: every slow-path
//!    fault on them has installed its PTE;
//! 3. `Space` zaps the range and 4. frees the pages.
//!
//! `synchronize_rcu()` sets the writer's latency: the zap must wait for the fast-path
//! readers (their PTEs would survive it) — unless the readers check, under the PTE
//! lock, that their region is still published. By default not the expedited variant,
//! which IPIs every CPU — the faulting ones included — on each writer operation.
//! `VMALAB_CONFIG_EXPEDITED` selects `synchronize_rcu_expedited()` so the benchmark
//! can show both sides.
//!
//! `VMALAB_CONFIG_DEFERRED` (`rcu+def`, beyond the seeds) takes that "unless": every
//! install (fast path, held slow path, fault-around) is made under the PTE lock only
//! if `Region::still_published()` — a load after a full barrier, no shared write —
//! and `Space` retires the regions a writer took out before its zap. So the writer
//! skips step 2 and returns after the zap; the grace period, the drain of the holds
//! and the free run in a worker (`deferred.rs`). A fault whose check fails installs
//! nothing and returns; the access faults again and finds the new set
//! (`fault_retry`).
//!
//! Lock order: `mmap_lock` / per-VMA lock → RCU read section; `writer` → the maple
//! tree's internal spinlock → the map's drain mutex.

#![deny(unsafe_code)]

use crate::{
    engine::{mapped_usage, publish_mapped, Budget, Engine, Slot, Unpublished},
    protocol::rcu_fault::{self, RcuFault},
    rcu_tree::{Held, Node, RcuRangeMap, Wait},
    region::{Change, Prot, Region, RegionTree},
    stats::Stats,
    uapi,
    vm_ops::{Fault, FaultAround, FaultOutcome},
};
use kernel::{
    new_mutex,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        rcu, Arc, Mutex,
    },
};

/// Shared-line writes of one slow-path hold: increment and decrement.
const HOLD_WRITES: u64 = 2;

/// The RCU engine.
#[pin_data]
pub(crate) struct RcuEngine {
    /// The writers' index (placement, coverage checks); serialises writers.
    #[pin]
    writer: Mutex<RegionTree>,
    /// What faults see.
    #[pin]
    map: RcuRangeMap<Slot>,
    /// Wait with `synchronize_rcu_expedited()` (`VMALAB_CONFIG_EXPEDITED`).
    expedited: bool,
    /// Validate installs and reclaim in a worker (`VMALAB_CONFIG_DEFERRED`).
    deferred: bool,
    /// `VMALAB_MUTANT_*` bits armed by the test hook (0 in normal use).
    mutants: Atomic<u32>,
    /// Test hook: microseconds a fault spins between lookup and install (0: off).
    install_delay_us: Atomic<u32>,
}

impl RcuEngine {
    /// An engine with no regions for an arena of `arena_pages` pages.
    pub(crate) fn new(arena_pages: usize, expedited: bool, deferred: bool) -> impl PinInit<Self> {
        pin_init!(Self {
            writer <- new_mutex!(RegionTree::new(arena_pages), "vmalab_rcu_writer"),
            map <- RcuRangeMap::new(),
            expedited,
            deferred,
            mutants: Atomic::new(0),
            install_delay_us: Atomic::new(0),
        })
    }

    /// Whether this fault must check its region under the PTE lock: deferred reclaim,
    /// unless the mutant that skips the check is armed.
    #[inline]
    fn validates(&self) -> bool {
        self.deferred && self.mutants.load(Relaxed) & uapi::VMALAB_MUTANT_SKIP_VALIDATE == 0
    }

    /// The wait the armed mutants leave of writer step 2.
    fn wait(&self) -> Wait {
        let mutants = self.mutants.load(Relaxed);
        if mutants & uapi::VMALAB_MUTANT_SKIP_GRACE_PERIOD != 0 {
            Wait::MutantSkipGracePeriod
        } else if mutants & uapi::VMALAB_MUTANT_SKIP_DRAIN != 0 {
            Wait::MutantSkipDrain
        } else if self.expedited {
            Wait::Expedited
        } else {
            Wait::Normal
        }
    }
}

/// One fault's steps for `protocol/rcu_fault.rs`.
struct RcuFaultSteps<'a, 'f> {
    engine: &'a RcuEngine,
    f: &'a Fault<'f>,
    stats: &'a Stats,
    /// Check each install under the PTE lock ([`RcuEngine::validates`]).
    validate: bool,
}

impl<'a> RcuFault for RcuFaultSteps<'a, '_> {
    type Guard = rcu::Guard;
    type Found<'g>
        = &'g Node<Slot>
    where
        Self: 'g;
    type Held = Held<'a, Slot>;
    type Out = FaultOutcome;

    #[inline]
    fn read_lock(&self) -> rcu::Guard {
        rcu::read_lock()
    }

    #[inline]
    fn lookup<'g>(&'g self, guard: &'g rcu::Guard) -> Option<&'g Node<Slot>> {
        self.engine.map.load(self.f.pgoff(), guard)
    }

    fn missing(&self) -> FaultOutcome {
        FaultOutcome::SigBus
    }

    #[inline]
    fn map_atomic(&self, slot: &&Node<Slot>) -> Option<FaultOutcome> {
        test_spin(&self.engine.install_delay_us);
        let region = &slot.region;
        region.fault_atomic(slot.start, self.f, self.stats, || {
            !self.validate || region.still_published()
        })
    }

    fn hold<'g>(&'g self, slot: &'g Node<Slot>, guard: &'g rcu::Guard) -> Held<'a, Slot> {
        self.stats.add(uapi::VMALAB_CTR_SHARED_WRITES, HOLD_WRITES);
        self.engine.map.hold(slot, guard)
    }

    fn map_held(&self, held: Held<'a, Slot>) -> FaultOutcome {
        let region = &held.region;
        region.fault(held.start, self.f, self.stats, || {
            !self.validate || region.still_published()
        })
        // `held` drops here: the hold is released after the install.
    }
}

impl Engine for RcuEngine {
    fn id(&self) -> u32 {
        uapi::VMALAB_ENGINE_RCU
    }

    fn map_pages(&self, f: &FaultAround<'_>, stats: &Stats) -> bool {
        // `do_fault_around` already holds rcu_read_lock; nesting costs a per-task count.
        let guard = rcu::read_lock();
        let validate = self.validates();
        let found = self.map.load(f.pgoff(), &guard);
        test_spin(&self.install_delay_us);
        match found {
            Some(slot) => slot.region.map_present(slot.start, f, stats, || {
                !validate || slot.region.still_published()
            }),
            None => false,
        }
    }

    fn fault(&self, f: &Fault<'_>, stats: &Stats) -> FaultOutcome {
        rcu_fault::fault(&RcuFaultSteps {
            engine: self,
            f,
            stats,
            validate: self.validates(),
        })
    }

    fn prot_at(&self, pgoff: usize, _stats: &Stats) -> Option<Prot> {
        let guard = rcu::read_lock();
        self.map.load(pgoff, &guard).map(|slot| slot.region.prot())
    }

    fn publish(&self, change: Change, budget: &dyn Budget, _stats: &Stats) -> Result<Unpublished> {
        let mut writer = self.writer.lock();
        let plan = writer.plan(change)?;
        publish_mapped(&mut writer, &self.map, plan, budget)
    }

    fn quiesce(&self, unpublished: &mut Unpublished, stats: &Stats) {
        if self.deferred {
            return; // The worker reclaims the entries (`reclaim_deferred`).
        }
        let entries = core::mem::take(&mut unpublished.entries);
        if entries.is_empty() {
            return;
        }
        stats.inc(uapi::VMALAB_CTR_GRACE_PERIODS);
        // Freeing an entry drops its reference to the region; `unpublished.regions`
        // keeps the region (and its pages) for the zap.
        let waits = self.map.reclaim(entries, self.wait(), drop);
        stats.add(uapi::VMALAB_CTR_REFCOUNT_WAITS, waits);
    }

    fn deferred(&self) -> bool {
        self.deferred
    }

    fn reclaim_deferred(&self, unpublished: &mut Unpublished, stats: &Stats) {
        let entries = core::mem::take(&mut unpublished.entries);
        // The worker waited for the grace period: only the holds are left to drain.
        let waits = self.map.reclaim(entries, Wait::Elapsed, drop);
        stats.add(uapi::VMALAB_CTR_REFCOUNT_WAITS, waits);
    }

    fn set_test_hooks(&self, hooks: &uapi::VmalabTestHooks) -> Result {
        // The deferred configuration has a check to skip, not a wait.
        let ours = uapi::VMALAB_MUTANT_SKIP_ZAP
            | uapi::VMALAB_MUTANT_SKIP_RETIRE_WAIT
            | if self.deferred {
                uapi::VMALAB_MUTANT_SKIP_VALIDATE
            } else {
                uapi::VMALAB_MUTANT_SKIP_GRACE_PERIOD | uapi::VMALAB_MUTANT_SKIP_DRAIN
            };
        if hooks.mutants & !ours != 0 {
            return Err(EINVAL);
        }
        self.mutants.store(hooks.mutants, Relaxed);
        self.map.set_test_release_delay(hooks.release_delay_us);
        self.install_delay_us.store(hooks.install_delay_us, Relaxed);
        Ok(())
    }

    fn drain(&self, removed: &mut KVec<(usize, Arc<Region>)>) -> Result {
        // Release: no VMA is left, so no reader; the map frees its slots on drop.
        self.writer.lock().drain(removed)
    }

    fn usage(&self) -> (usize, usize) {
        mapped_usage(&self.writer.lock())
    }
}

/// Test hook (`install_delay_us`): spins that many microseconds, inside the fault's
/// read section, between its lookup and its install (0 in normal use: one load).
#[inline]
pub(crate) fn test_spin(us: &Atomic<u32>) {
    let us = us.load(Relaxed);
    if us != 0 {
        kernel::time::delay::udelay(kernel::time::Delta::from_micros(i64::from(us)));
    }
}
