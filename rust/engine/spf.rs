// SPDX-License-Identifier: GPL-2.0

//! Engine `spf`: Lespinasse's speculative page faults (seed 003, part I) — "take no
//! lock; at the last moment, after taking the page table lock, verify that there has
//! been no race with any mmap writer".
//!
//! A fault holds nothing and writes no shared line:
//! 1. it reads the arena's sequence count `seq` (acquire);
//! 2. in an RCU read section it looks its region up in the RCU map (as `rcu` does) and
//!    tries to finish ([`Region::fault_speculative`]): the page is present, or
//!    allocatable without sleeping, or was prepared by an earlier try; the PTE table
//!    exists. Then, under the PTE lock, it checks that `seq` has not moved (a load
//!    after a full barrier, see `Region::still_published` for why that suffices) and
//!    installs;
//! 3. what would sleep — the slow backing's delay, an allocation that may reclaim, a
//!    PTE table — it does outside the read section holding *no* reference to the
//!    region (it only keeps the zeroed page it prepared), then goes back to step 1:
//!    the region may be gone by then, and the new lookup decides;
//! 4. a failed check means a writer took a region out since step 1: nothing was
//!    installed, and the fault tries again (`fault_retry`). After [`MAX_TRIES`] failed
//!    checks it takes the writers' mutex and faults as `rwsem` would
//!    (`fault_fallback`), so a storm of writers cannot starve it.
//!
//! Writers (serialised by `writer`, a mutex that is also the fallback's lock):
//! 1. publish as `rcu` does (the map's stores: readers see old or new, never a gap);
//! 2. if regions left, bump `seq` (fully ordered); `Space` also retires them — no wait;
//! 3. `Space` zaps the range: a PTE installed before the check could fail is removed,
//!    and no check after the bump passes;
//! 4. a worker frees after a grace period (`deferred.rs`): a fault still in its read
//!    section may be storing its prepared page into an old region's slot.
//!
//! Granularity (the question): `seq` is per arena, so a writer that takes out
//! any region makes every fault in flight anywhere in the arena retry, and a fault
//! that slept (slow backing) retries if any writer ran meanwhile — with a writer
//! looping, those are the faults that fall back to the mutex. With
//! `VMALAB_CONFIG_REGION_SEQ` (`spf+region`) the check is the region's own retire
//! mark instead: only faults on regions a writer took out retry. The per-arena count
//! is what Lespinasse's patches used (`mm->mmap_seq`); the per-region mark needs the
//! region to be immutable once published, which ours are (a writer replaces regions,
//! it never edits one).
//!
//! Lock order: `mmap_lock` / per-VMA lock → `writer` (fallback faults, writers) →
//! RCU read section → PTE lock.

#![deny(unsafe_code)]

use crate::{
    engine::{mapped_usage, publish_mapped, rcu::test_spin, Budget, Engine, Slot, Unpublished},
    rcu_tree::{RcuRangeMap, Wait},
    region::{Change, Prot, RegionTree, Speculative},
    stats::Stats,
    uapi,
    vm_ops::{Fault, FaultAround, FaultOutcome},
};
use kernel::{
    new_mutex,
    page::Page,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Full, Relaxed},
        barrier::smp_mb,
        rcu, Arc, Mutex,
    },
};

/// Failed checks before a fault falls back to the writers' mutex.
const MAX_TRIES: u32 = 3;

/// Tries of any kind (prepare a page, allocate a table, retry) before the fallback:
/// bounds a fault whose PTE table keeps being reclaimed under it.
const MAX_STEPS: u32 = 8;

/// Shared-line writes of a fallback fault: the mutex's lock and unlock.
const FALLBACK_WRITES: u64 = 2;

/// The speculative-fault engine.
#[pin_data]
pub(crate) struct SpfEngine {
    /// The writers' index (placement, coverage checks); serialises writers and
    /// fallback faults.
    #[pin]
    writer: Mutex<RegionTree>,
    /// What faults see.
    #[pin]
    map: RcuRangeMap<Slot>,
    /// Publishes that took regions out (per arena); faults check it under the PTE lock.
    seq: Atomic<u64>,
    /// Check the region's retire mark instead of `seq` (`VMALAB_CONFIG_REGION_SEQ`).
    per_region: bool,
    /// `VMALAB_MUTANT_*` bits armed by the test hook (0 in normal use).
    mutants: Atomic<u32>,
    /// Test hook: microseconds a fault spins between lookup and install (0: off).
    install_delay_us: Atomic<u32>,
}

impl SpfEngine {
    /// An engine with no regions for an arena of `arena_pages` pages.
    pub(crate) fn new(arena_pages: usize, per_region: bool) -> impl PinInit<Self> {
        pin_init!(Self {
            writer <- new_mutex!(RegionTree::new(arena_pages), "vmalab_spf_writer"),
            map <- RcuRangeMap::new(),
            seq: Atomic::new(0),
            per_region,
            mutants: Atomic::new(0),
            install_delay_us: Atomic::new(0),
        })
    }

    /// Whether faults check their install (not with the mutant that skips it).
    #[inline]
    fn validates(&self) -> bool {
        self.mutants.load(Relaxed) & uapi::VMALAB_MUTANT_SKIP_VALIDATE == 0
    }

    /// The check under the PTE lock for a fault that read `seen` from `seq` before
    /// it looked `slot` up.
    #[inline]
    fn still_valid(&self, slot: &Slot, seen: u64) -> bool {
        if self.per_region {
            slot.region.still_published()
        } else {
            // As `Region::still_published`: the full barrier orders our table (if we
            // allocated it) before this load, against the writer's bump and walk.
            smp_mb(Full);
            self.seq.load(Relaxed) == seen
        }
    }

    /// The fallback: the fault as `rwsem` runs it, under the writers' mutex.
    fn fault_locked(&self, f: &Fault<'_>, stats: &Stats) -> FaultOutcome {
        stats.inc(uapi::VMALAB_CTR_FAULT_FALLBACK);
        stats.add(uapi::VMALAB_CTR_SHARED_WRITES, FALLBACK_WRITES);
        let tree = self.writer.lock();
        // No writer can publish while we hold the mutex: the region is current.
        tree.with_region(f.pgoff(), |start, region| {
            region.fault(start, f, stats, || true)
        })
        .unwrap_or(FaultOutcome::SigBus)
    }
}

impl Engine for SpfEngine {
    fn id(&self) -> u32 {
        uapi::VMALAB_ENGINE_SPF
    }

    fn map_pages(&self, f: &FaultAround<'_>, stats: &Stats) -> bool {
        let validate = self.validates();
        let seen = self.seq.load(Acquire);
        let guard = rcu::read_lock();
        let found = self.map.load(f.pgoff(), &guard);
        test_spin(&self.install_delay_us);
        match found {
            Some(slot) => slot.region.map_present(slot.start, f, stats, || {
                !validate || self.still_valid(slot, seen)
            }),
            None => false,
        }
    }

    fn fault(&self, f: &Fault<'_>, stats: &Stats) -> FaultOutcome {
        let validate = self.validates();
        let mut prepared: Option<Page> = None;
        let (mut failed, mut steps, mut slept) = (0, 0, false);
        while failed < MAX_TRIES && steps < MAX_STEPS {
            steps += 1;
            // Acquire: a publish whose bump we see is visible to our lookup.
            let seen = self.seq.load(Acquire);
            let need = {
                let guard = rcu::read_lock();
                let Some(slot) = self.map.load(f.pgoff(), &guard) else {
                    return FaultOutcome::SigBus;
                };
                test_spin(&self.install_delay_us);
                let valid = || !validate || self.still_valid(slot, seen);
                match slot
                    .region
                    .fault_speculative(slot.start, f, stats, &mut prepared, valid)
                {
                    Speculative::Done(FaultOutcome::Retry) => {
                        stats.inc(uapi::VMALAB_CTR_FAULT_RETRY);
                        failed += 1;
                        continue;
                    }
                    Speculative::Done(FaultOutcome::Mapped) if slept => {
                        return FaultOutcome::MappedSlow;
                    }
                    Speculative::Done(out) => return out,
                    need => need,
                }
                // The read section ends here: what follows may sleep.
            };
            match need {
                Speculative::NeedPage(backing) => match backing.prepare(stats) {
                    Ok(page) => prepared = Some(page),
                    Err(_) => return FaultOutcome::Oom,
                },
                Speculative::NeedTable => {
                    if f.with_ptes_alloc(|_| ()).is_err() {
                        return FaultOutcome::Oom;
                    }
                }
                Speculative::Done(_) => {}
            }
            slept = true;
        }
        self.fault_locked(f, stats)
    }

    fn prot_at(&self, pgoff: usize, _stats: &Stats) -> Option<Prot> {
        let guard = rcu::read_lock();
        self.map.load(pgoff, &guard).map(|slot| slot.region.prot())
    }

    fn publish(&self, change: Change, budget: &dyn Budget, _stats: &Stats) -> Result<Unpublished> {
        let mut writer = self.writer.lock();
        let plan = writer.plan(change)?;
        let out = publish_mapped(&mut writer, &self.map, plan, budget)?;
        if !out.regions.is_empty() {
            // Fully ordered: after the map's stores (a fault that sees the new count
            // finds the new set), before the zap's page-table walk.
            self.seq.fetch_add(1, Full);
        }
        Ok(out)
    }

    fn deferred(&self) -> bool {
        true
    }

    fn reclaim_deferred(&self, unpublished: &mut Unpublished, _stats: &Stats) {
        // No holds: a fault keeps nothing past its read section, and the worker
        // waited for the grace period.
        let entries = core::mem::take(&mut unpublished.entries);
        self.map.reclaim(entries, Wait::Elapsed, drop);
    }

    fn set_test_hooks(&self, hooks: &uapi::VmalabTestHooks) -> Result {
        let ours = uapi::VMALAB_MUTANT_SKIP_ZAP
            | uapi::VMALAB_MUTANT_SKIP_RETIRE_WAIT
            | uapi::VMALAB_MUTANT_SKIP_VALIDATE;
        if hooks.mutants & !ours != 0 || hooks.release_delay_us != 0 {
            return Err(EINVAL);
        }
        self.mutants.store(hooks.mutants, Relaxed);
        self.install_delay_us.store(hooks.install_delay_us, Relaxed);
        Ok(())
    }

    fn drain(&self, removed: &mut KVec<(usize, Arc<crate::region::Region>)>) -> Result {
        // Release: no VMA is left, so no reader; the map frees its slots on drop.
        self.writer.lock().drain(removed)
    }

    fn usage(&self) -> (usize, usize) {
        mapped_usage(&self.writer.lock())
    }
}
