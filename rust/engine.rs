// SPDX-License-Identifier: GPL-2.0

//! The `Engine` trait: one implementation per design from the `mmap_sem` debates.
//!
//! An engine owns the region set of one address space and is the only code that knows
//! how readers (faults) and writers (map/unmap/replace) are synchronised. The rest of
//! the module is engine-agnostic: `vm_ops` and `Space` call only this trait.
//!
//! # Contract
//!
//! Readers:
//! - [`Engine::map_pages`] runs in atomic context (under `rcu_read_lock()`, from
//!   `do_fault_around`). It must not sleep or allocate with `GFP_KERNEL`. It maps pages
//!   that are already present and returns whether the faulting page is now mapped;
//!   `false` sends the fault on to [`Engine::fault`].
//! - [`Engine::fault`] runs in process context under the kernel's per-VMA lock (or
//!   `mmap_lock` for read) of the arena VMA. It may sleep. It must find the region
//!   covering the faulting page as of some instant during the call and either install
//!   that region's page (`Mapped`), answer `SigBus` if there is none, or `Retry`.
//! - A fault may only install a PTE for a region that was in the set at some instant
//!   during the fault (no resurrection of a removed region's page).
//!
//! Writers (process context, may sleep) follow the order of `protocol/writer.rs`,
//! which `Space` runs. `Space`'s retiring list (`protocol/retire.rs`) already keeps
//! writers whose ranges overlap, and a MAP the engine places, from publishing at once;
//! an engine serialises whatever else conflicts (all writers: `rwsem`, `rcu`, `spf`;
//! overlapping ranges of pages: `range`; of 2 MiB spans: `ptshard`).
//! - [`Engine::publish`]: the new region set is what faults that start after the
//!   publish returned find; while it runs, a fault finds at each page the old region
//!   or the new one (never a gap where both sets have one), and faults in flight may
//!   still use the old set. The regions taken out are handed back as [`Unpublished`].
//! - [`Engine::quiesce`]: on return, no fault — in flight or future — can still install
//!   a PTE through an unpublished region (neither for a part that is gone nor with a
//!   protection that is no longer true).
//! - `Space` then zaps the range, frees the pages of what was cut out and drops the
//!   regions. Hence, once the ioctl returns, no thread can reach an old page or write
//!   through an old protection.
//! - An engine whose quiesce does not wait ([`Engine::deferred`]: `spf`, `rcu` with
//!   `VMALAB_CONFIG_DEFERRED`) meets the quiesce contract differently: its faults
//!   install only under the PTE lock and only if their region is still published
//!   (`Region::still_published`, which `Space` clears before the zap), so none can
//!   install for an unpublished region after the zap; the free waits for a grace
//!   period in a worker instead (`deferred.rs`, [`Engine::reclaim_deferred`]).
//!
//! Lock order (all engines): the kernel's `mmap_lock` / per-VMA lock → engine locks.
//! Writers never take `mmap_lock` while holding an engine lock.

#![deny(unsafe_code)]

pub(crate) mod locked;
pub(crate) mod none;
pub(crate) mod percpu;
pub(crate) mod pi;
pub(crate) mod ptshard;
pub(crate) mod range;
pub(crate) mod rcu;
pub(crate) mod rwsem;
pub(crate) mod spf;

use crate::{
    rcu_tree::{RcuRangeMap, Retired},
    region::{Change, Plan, Prot, Region, RegionTree},
    stats::Stats,
    uapi,
    vm_ops::{Fault, FaultAround, FaultOutcome},
};
use kernel::{prelude::*, sync::Arc};

/// What an RCU-readable map of regions holds for each region (engines whose faults
/// look regions up under RCU).
pub(crate) struct Slot {
    /// The region's first page.
    pub(crate) start: usize,
    pub(crate) region: Arc<Region>,
}

/// What a writer's publish changed in the region set, until the regions it took out
/// are freed (`protocol/writer.rs`).
pub(crate) struct Unpublished {
    /// The range the operation is about, in pages (a MAP's: where it placed its
    /// region): zapped if anything left the set.
    pub(crate) start: usize,
    /// See `start`.
    pub(crate) end: usize,
    /// Whether the pages of the departed regions inside `[start, end)` die (UNMAP,
    /// REPLACE) or live on in the regions that replaced them (PROTECT, and the parts of
    /// a cut region outside the range).
    pub(crate) dead: bool,
    /// The regions taken out, with their starts; freed after the zap.
    pub(crate) regions: KVec<(usize, Arc<Region>)>,
    /// Their entries in an RCU-readable map, which faults may still be using; the
    /// engine reclaims them — in [`Engine::quiesce`], in [`Engine::reclaim_deferred`]
    /// (deferred engines), or in its publish (`range`, whose range lock excluded every
    /// reader) — and must: a [`Retired`] left here leaks its entry rather than free
    /// what a reader may hold.
    pub(crate) entries: KVec<Retired<Slot>>,
}

impl Unpublished {
    /// For `plan`, before it is committed: room for the regions it takes out.
    pub(crate) fn of(plan: &Plan) -> Result<Self> {
        Ok(Self {
            start: plan.start,
            end: plan.end,
            dead: plan.dead,
            regions: KVec::with_capacity(plan.leaving, GFP_KERNEL)?,
            entries: KVec::new(),
        })
    }
}

/// The per-file limits a writer's plan is charged against (`Space`).
pub(crate) trait Budget {
    /// Charges what `plan` adds (`ENOMEM` beyond the limits; a plan that shrinks the
    /// set always succeeds).
    fn charge(&self, plan: &Plan) -> Result;
    /// Undoes [`Budget::charge`] for a plan that could not be carried out.
    fn refund(&self, plan: &Plan);
}

/// A synchronisation design for one address space's region set.
pub(crate) trait Engine: Send + Sync {
    /// The UAPI id (`VMALAB_ENGINE_*`) of this engine.
    fn id(&self) -> u32;

    /// Fast path, atomic context: maps present pages around the fault.
    fn map_pages(&self, f: &FaultAround<'_>, stats: &Stats) -> bool;

    /// Slow path, may sleep: resolves the fault.
    fn fault(&self, f: &Fault<'_>, stats: &Stats) -> FaultOutcome;

    /// `pfn_mkwrite` (a write to a present read-only PTE): the protection of the region
    /// covering `pgoff` (`None`: no region), looked up as a fault would. May sleep.
    fn prot_at(&self, pgoff: usize, stats: &Stats) -> Option<Prot>;

    /// Writer step 1 (`protocol/writer.rs`): plans `change`, charges its growth to
    /// `budget` (after every other fallible step of the plan, refunding it if a later
    /// step fails), carries it out and makes the new region set visible to faults. On
    /// error nothing changed and nothing stays charged.
    fn publish(&self, change: Change, budget: &dyn Budget, stats: &Stats) -> Result<Unpublished>;

    /// Writer step 2: returns once no fault, in flight or future, can install a PTE for
    /// a region of `unpublished` (see the contract). The default is for engines whose
    /// publish already excluded every fault (a lock every fault holds).
    fn quiesce(&self, _unpublished: &mut Unpublished, _stats: &Stats) {}

    /// Whether the writer's step 4 waits for a grace period in a worker instead of
    /// the writer (`deferred.rs`): the engine's faults validate every install under the
    /// PTE lock, and [`Engine::quiesce`] returns at once.
    fn deferred(&self) -> bool {
        false
    }

    /// Deferred reclaim (only if [`Engine::deferred`]), in the worker, after a grace
    /// period that began after the writer's zap: waits for holds on the entries of
    /// `unpublished` to drain and frees them.
    fn reclaim_deferred(&self, _unpublished: &mut Unpublished, _stats: &Stats) {}

    /// Test hook (`VMALAB_IOC_TEST_HOOKS`): arms mutants and delays. `EINVAL` for any
    /// the engine does not have. Mutants must stay memory-safe (see `uapi.rs`).
    fn set_test_hooks(&self, hooks: &uapi::VmalabTestHooks) -> Result {
        if *hooks == uapi::VmalabTestHooks::default() {
            Ok(())
        } else {
            Err(EINVAL)
        }
    }

    /// Whether MAPs placed anywhere are placed by [`Engine::place`], under the retiring
    /// list's lock, before the publish (`protocol/retire.rs`, `publish_placed`) —
    /// rather than inside [`Engine::publish`], with the list locked across it.
    fn places(&self) -> bool {
        false
    }

    /// Only if [`Engine::places`]: reserves `npages` pages in the engine's free space
    /// where `busy(start, end)` (the end of the last range a writer still retires
    /// inside `[start, end)`, if any) finds nothing, and returns the first page; the
    /// MAP then comes to [`Engine::publish`] as `Placement::Placed`, whose publish
    /// releases the reservation if it fails. `ENOMEM` if there is no such room.
    fn place(
        &self,
        _npages: usize,
        _busy: &dyn Fn(usize, usize) -> Option<usize>,
    ) -> Result<usize> {
        Err(EINVAL)
    }

    /// The arena is about to be mapped; faults may start after this returns.
    fn freeze(&self) -> Result {
        Ok(())
    }

    /// Removes every region (the file is being released: no VMA is left).
    fn drain(&self, removed: &mut KVec<(usize, Arc<Region>)>) -> Result;

    /// Number of regions and their bookkeeping bytes.
    fn usage(&self) -> (usize, usize);
}

/// Writer step 1 for an engine whose region tree sits under its writer's lock, held by
/// the caller: plans `change` (allocating the new regions), charges its growth to
/// `budget` after every other fallible step, and commits it.
pub(crate) fn publish_locked(
    tree: &mut RegionTree,
    change: Change,
    budget: &dyn Budget,
) -> Result<Unpublished> {
    let plan = tree.plan(change)?;
    let mut out = Unpublished::of(&plan)?;
    budget.charge(&plan)?;
    tree.commit(plan, &mut out.regions);
    Ok(out)
}

/// Writer step 1 for an engine whose faults look regions up in an RCU map of
/// [`Slot`]s beside the writers' `tree` (held by the caller, `plan` made on it): the
/// map's stores (readers see old or new, never a gap where the new set has a region),
/// then the tree's commit. Charges the growth to `budget` after every other fallible
/// step; on error nothing changed and nothing stays charged.
pub(crate) fn publish_mapped(
    tree: &mut RegionTree,
    map: &RcuRangeMap<Slot>,
    plan: Plan,
    budget: &dyn Budget,
) -> Result<Unpublished> {
    let mut out = Unpublished::of(&plan)?;
    if plan.is_empty() {
        return Ok(out);
    }
    let mut slots = KVec::with_capacity(plan.new.len(), GFP_KERNEL)?;
    for (start, region) in plan.new.iter() {
        let slot = Slot {
            start: *start,
            region: region.clone(),
        };
        slots.push((*start, start + region.npages() - 1, slot), GFP_KERNEL)?;
    }
    budget.charge(&plan)?;
    // Nothing after this point can fail.
    if let Err(e) = map.replace(plan.lo, plan.hi, slots, &mut out.entries) {
        budget.refund(&plan);
        return Err(e);
    }
    tree.commit(plan, &mut out.regions);
    Ok(out)
}

/// `Engine::usage` of an engine with an RCU map of slots beside its `tree`: each
/// region also costs a map entry (the slot box and about two words of maple node).
pub(crate) fn mapped_usage(tree: &RegionTree) -> (usize, usize) {
    let per_entry = core::mem::size_of::<Slot>() + 16 + 2 * core::mem::size_of::<usize>();
    (tree.len(), tree.meta_bytes() + tree.len() * per_entry)
}

/// Arms the test hooks of an engine that has only mutants (`ours`), no delays.
pub(crate) fn arm_mutants(
    hooks: &uapi::VmalabTestHooks,
    ours: u32,
    mutants: &kernel::sync::atomic::Atomic<u32>,
) -> Result {
    if hooks.mutants & !ours != 0 || hooks.release_delay_us != 0 || hooks.install_delay_us != 0 {
        return Err(EINVAL);
    }
    mutants.store(hooks.mutants, kernel::sync::atomic::Relaxed);
    Ok(())
}

/// Creates the engine with UAPI id `id` and `VMALAB_CONFIG_*` `flags` for an arena of
/// `arena_pages` pages.
pub(crate) fn new(id: u32, flags: u32, arena_pages: usize) -> Result<Arc<dyn Engine>> {
    let expedited = flags & uapi::VMALAB_CONFIG_EXPEDITED != 0;
    let deferred = flags & uapi::VMALAB_CONFIG_DEFERRED != 0;
    Ok(match id {
        uapi::VMALAB_ENGINE_RWSEM => Arc::pin_init(rwsem::new(arena_pages), GFP_KERNEL_ACCOUNT)?,
        uapi::VMALAB_ENGINE_RCU => Arc::pin_init(
            rcu::RcuEngine::new(arena_pages, expedited, deferred),
            GFP_KERNEL_ACCOUNT,
        )?,
        uapi::VMALAB_ENGINE_NONE => {
            Arc::pin_init(none::NoneEngine::new(arena_pages), GFP_KERNEL_ACCOUNT)?
        }
        uapi::VMALAB_ENGINE_PERCPU if flags & uapi::VMALAB_CONFIG_KERNEL_LOCK != 0 => {
            Arc::pin_init(percpu::new_kernel_lock(arena_pages), GFP_KERNEL_ACCOUNT)?
        }
        uapi::VMALAB_ENGINE_PERCPU => Arc::pin_init(percpu::new(arena_pages), GFP_KERNEL_ACCOUNT)?,
        uapi::VMALAB_ENGINE_PI => Arc::pin_init(pi::new(arena_pages), GFP_KERNEL_ACCOUNT)?,
        uapi::VMALAB_ENGINE_RANGE => {
            Arc::pin_init(range::RangeEngine::new(arena_pages), GFP_KERNEL_ACCOUNT)?
        }
        uapi::VMALAB_ENGINE_SPF => Arc::pin_init(
            spf::SpfEngine::new(arena_pages, flags & uapi::VMALAB_CONFIG_REGION_SEQ != 0),
            GFP_KERNEL_ACCOUNT,
        )?,
        uapi::VMALAB_ENGINE_PTSHARD => Arc::pin_init(
            ptshard::PtShardEngine::new(arena_pages, flags & uapi::VMALAB_CONFIG_CPU_CACHE != 0)?,
            GFP_KERNEL_ACCOUNT,
        )?,
        _ => return Err(EINVAL),
    })
}
