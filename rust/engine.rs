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
//! Writers (process context, may sleep, serialised among themselves by the engine)
//! follow the order of `protocol/writer.rs`, which `Space` runs:
//! - [`Engine::publish_map`] / [`Engine::publish_unmap`]: the new region set becomes
//!   visible atomically to faults that start after the change is published; faults in
//!   flight may still see the old set. The regions taken out are handed back as
//!   [`Unpublished`].
//! - [`Engine::quiesce`]: on return, no fault — in flight or future — can still install
//!   a PTE that maps a page of an unpublished region.
//! - `Space` then zaps the range and drops the regions, which frees their pages. Hence,
//!   once the ioctl returns, no thread can reach an old page.
//!
//! Lock order (all engines): the kernel's `mmap_lock` / per-VMA lock → engine locks.
//! Writers never take `mmap_lock` while holding an engine lock.

#![deny(unsafe_code)]

pub(crate) mod none;
pub(crate) mod rcu;
pub(crate) mod rwsem;

use crate::{
    rcu_tree::Retired,
    region::{Placement, Region},
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

/// What a writer's publish took out of the region set, until it is freed
/// (`protocol/writer.rs`).
pub(crate) struct Unpublished {
    /// Where the operation placed its region (MAP) or began (UNMAP), in pages.
    pub(crate) start: usize,
    /// End of the operation's range: `[start, end)` is zapped if `regions` is not empty.
    pub(crate) end: usize,
    /// The regions taken out; freed (with their pages) after the zap.
    pub(crate) regions: KVec<Arc<Region>>,
    /// Their entries in an RCU-readable map, which faults may still be using; the
    /// engine's [`Engine::quiesce`] reclaims them (and must: a [`Retired`] left here
    /// leaks its entry rather than free what a reader may hold).
    pub(crate) entries: KVec<Retired<Slot>>,
}

impl Unpublished {
    /// Nothing taken out yet, for an operation on `[start, end)`.
    pub(crate) fn new(start: usize, end: usize) -> Self {
        Self {
            start,
            end,
            regions: KVec::new(),
            entries: KVec::new(),
        }
    }
}

/// A synchronisation design for one address space's region set.
pub(crate) trait Engine: Send + Sync {
    /// The UAPI id (`VMALAB_ENGINE_*`) of this engine.
    fn id(&self) -> u32;

    /// Fast path, atomic context: maps present pages around the fault.
    fn map_pages(&self, f: &FaultAround<'_>, stats: &Stats) -> bool;

    /// Slow path, may sleep: resolves the fault.
    fn fault(&self, f: &Fault<'_>, stats: &Stats) -> FaultOutcome;

    /// Writer step 1 of a MAP (`protocol/writer.rs`): inserts `region` at
    /// `placement`, taking out the regions a `Replace` displaces. On error nothing
    /// changed.
    fn publish_map(
        &self,
        region: Arc<Region>,
        placement: Placement,
        stats: &Stats,
    ) -> Result<Unpublished>;

    /// Writer step 1 of an UNMAP: takes out the regions inside `[start, end)` (pages).
    /// On error nothing changed.
    fn publish_unmap(&self, start: usize, end: usize, stats: &Stats) -> Result<Unpublished>;

    /// Writer step 2: returns once no fault, in flight or future, can install a PTE for
    /// a region of `unpublished` (see the contract). The default is for engines whose
    /// publish already excluded every fault (a lock every fault holds).
    fn quiesce(&self, _unpublished: &mut Unpublished, _stats: &Stats) {}

    /// Test hook (`VMALAB_IOC_TEST_HOOKS`): arms mutants and delays. `EINVAL` for any
    /// the engine does not have. Mutants must stay memory-safe (see `uapi.rs`).
    fn set_test_hooks(&self, hooks: &uapi::VmalabTestHooks) -> Result {
        if *hooks == uapi::VmalabTestHooks::default() {
            Ok(())
        } else {
            Err(EINVAL)
        }
    }

    /// The arena is about to be mapped; faults may start after this returns.
    fn freeze(&self) -> Result {
        Ok(())
    }

    /// Removes every region (the file is being released: no VMA is left).
    fn drain(&self, removed: &mut KVec<Arc<Region>>) -> Result;

    /// Number of regions and their bookkeeping bytes.
    fn usage(&self) -> (usize, usize);
}

/// Creates the engine with UAPI id `id` and `VMALAB_CONFIG_*` `flags` for an arena of
/// `arena_pages` pages.
pub(crate) fn new(id: u32, flags: u32, arena_pages: usize) -> Result<Arc<dyn Engine>> {
    let expedited = flags & uapi::VMALAB_CONFIG_EXPEDITED != 0;
    Ok(match id {
        uapi::VMALAB_ENGINE_RWSEM => {
            Arc::pin_init(rwsem::RwsemEngine::new(arena_pages), GFP_KERNEL_ACCOUNT)?
        }
        uapi::VMALAB_ENGINE_RCU => Arc::pin_init(
            rcu::RcuEngine::new(arena_pages, expedited),
            GFP_KERNEL_ACCOUNT,
        )?,
        uapi::VMALAB_ENGINE_NONE => {
            Arc::pin_init(none::NoneEngine::new(arena_pages), GFP_KERNEL_ACCOUNT)?
        }
        _ => return Err(EINVAL),
    })
}
