// SPDX-License-Identifier: GPL-2.0

//! Engine `none`: the measurement floor.
//!
//! Regions are created while the address space is being set up (before `mmap`) under a
//! mutex; `mmap` freezes them into a sorted array that faults binary-search with no
//! synchronisation at all — correct only because it never changes again. Map and unmap
//! after that fail with `EPERM`. What remains on its fault path is what every engine
//! pays: the kernel's own per-VMA lock on the arena, the page lookup and the PTE
//! install.
//!
//! Lock order: `setup` is only taken by ioctls and by `mmap` (under `mmap_lock`), never
//! by a fault; `mmap_lock` → `setup`.

#![deny(unsafe_code)]

use crate::{
    engine::{Budget, Engine, Unpublished},
    region::{Change, Prot, Region, RegionTree},
    stats::Stats,
    uapi,
    vm_ops::{Fault, FaultAround, FaultOutcome},
};
use kernel::{
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex, SetOnce},
};

/// The floor engine.
#[pin_data]
pub(crate) struct NoneEngine {
    /// Regions while setting up.
    #[pin]
    setup: Mutex<RegionTree>,
    /// `(start, region)` sorted by start, fixed at `mmap`.
    frozen: SetOnce<KVec<(usize, Arc<Region>)>>,
}

impl NoneEngine {
    /// An engine with no regions for an arena of `arena_pages` pages.
    pub(crate) fn new(arena_pages: usize) -> impl PinInit<Self> {
        pin_init!(Self {
            setup <- new_mutex!(RegionTree::new(arena_pages), "vmalab_none_setup"),
            frozen: SetOnce::new(),
        })
    }

    /// The frozen region containing `pgoff`.
    #[inline]
    fn lookup(&self, pgoff: usize) -> Option<(usize, &Region)> {
        let regions = self.frozen.as_ref()?;
        let i = regions
            .partition_point(|(s, _)| *s <= pgoff)
            .checked_sub(1)?;
        let (start, region) = regions.get(i)?;
        (pgoff < start + region.npages()).then_some((*start, &**region))
    }
}

impl Engine for NoneEngine {
    fn id(&self) -> u32 {
        uapi::VMALAB_ENGINE_NONE
    }

    fn map_pages(&self, f: &FaultAround<'_>, stats: &Stats) -> bool {
        match self.lookup(f.pgoff()) {
            Some((start, region)) => region.map_present(start, f, stats, || true),
            None => false,
        }
    }

    fn fault(&self, f: &Fault<'_>, stats: &Stats) -> FaultOutcome {
        match self.lookup(f.pgoff()) {
            Some((start, region)) => region
                .fault_atomic(start, f, stats, || true)
                .unwrap_or_else(|| region.fault(start, f, stats, || true)),
            None => FaultOutcome::SigBus,
        }
    }

    fn prot_at(&self, pgoff: usize, _stats: &Stats) -> Option<Prot> {
        self.lookup(pgoff).map(|(_, region)| region.prot())
    }

    fn publish(&self, change: Change, budget: &dyn Budget, _stats: &Stats) -> Result<Unpublished> {
        let mut setup = self.setup.lock();
        if self.frozen.as_ref().is_some() {
            return Err(EPERM);
        }
        let plan = setup.plan(change)?;
        let mut out = Unpublished::of(&plan)?;
        budget.charge(&plan)?;
        setup.commit(plan, &mut out.regions);
        Ok(out)
    }

    fn freeze(&self) -> Result {
        let setup = self.setup.lock();
        let mut regions = KVec::with_capacity(setup.len(), GFP_KERNEL)?;
        for (start, region) in setup.iter() {
            regions.push((start, region.clone()), GFP_KERNEL)?;
        }
        if !self.frozen.populate(regions) {
            return Err(EBUSY);
        }
        Ok(())
    }

    fn drain(&self, removed: &mut KVec<(usize, Arc<Region>)>) -> Result {
        // The frozen array keeps its own references; they go when the engine drops.
        self.setup.lock().drain(removed)
    }

    fn usage(&self) -> (usize, usize) {
        let setup = self.setup.lock();
        let frozen = self.frozen.as_ref().map_or(0, |v| {
            v.len() * core::mem::size_of::<(usize, Arc<Region>)>()
        });
        (setup.len(), setup.meta_bytes() + frozen)
    }
}
