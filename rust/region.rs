// SPDX-License-Identifier: GPL-2.0

//! Regions (vmalab's own VMAs) and the ordered region tree with free-space placement.
//!
//! Positions are arena page indices ("pgoff"). A region does not store where it is: the
//! tree does (keyed by the region's exclusive end), so a region can be allocated, with
//! all its page slots, before the writer knows where it will go and before it takes
//! any engine lock.

// One kind of `unsafe` here: installing a region's page (`PteTable::install`), whose
// safety rests on the ownership rule stated at `Region`.

use crate::{
    backing::Backing,
    pages::PageSlots,
    stats::Stats,
    uapi,
    vm_ops::{Fault, FaultAround, FaultOutcome, Install},
};
use kernel::{
    prelude::*,
    rbtree::{RBTree, RBTreeNodeReservation},
    sync::Arc,
};

/// One region: a length, a backing and its lazily allocated pages.
///
/// Ownership rule (what makes installing its pages sound): a region that was ever
/// reachable by faults is dropped only after its range was zapped (the writer order
/// of `protocol/writer.rs`: engine quiesce, zap, then free) or once no arena VMA is left
/// (`Space::release` runs after the last VMA is closed); regions removed while a
/// test mutant is armed are parked until then instead. Its pages (owned by its page
/// slots) therefore outlive every special PTE that maps them.
pub(crate) struct Region {
    pages: PageSlots,
    backing: Backing,
}

impl Region {
    /// Allocates a region of `npages` pages (its page slots, not the pages), charged
    /// to the caller's memory cgroup.
    pub(crate) fn new(npages: usize, backing: Backing) -> Result<Arc<Self>> {
        Ok(Arc::new(
            Self {
                pages: PageSlots::new(npages)?,
                backing,
            },
            GFP_KERNEL_ACCOUNT,
        )?)
    }

    /// Length in pages.
    pub(crate) fn npages(&self) -> usize {
        self.pages.len()
    }

    /// Bytes of kernel memory for this region's bookkeeping (not its pages).
    pub(crate) fn meta_bytes(&self) -> usize {
        // The Arc allocation (refcount + Region) plus the slot array.
        core::mem::size_of::<Self>() + core::mem::size_of::<usize>() + self.pages.meta_bytes()
    }

    /// Pages currently allocated. O(npages): for accounting at free time.
    pub(crate) fn present(&self) -> usize {
        self.pages.present()
    }

    /// Fast path: maps the already-present pages of this region (starting at arena page
    /// `start`) that fall in the fault-around window, under the window's PTE lock.
    /// Never sleeps, never allocates. Returns whether the faulting page is mapped.
    pub(crate) fn map_present(&self, start: usize, f: &FaultAround<'_>, stats: &Stats) -> bool {
        let (lo, hi) = f.range();
        let lo = lo.max(start);
        let hi = hi.min(start + self.npages() - 1);
        // No PTE table (first fault in this 2 MiB, or reclaimed): `->fault` makes one.
        let Some(ptes) = f.lock_ptes() else {
            return false;
        };
        let mut hit = false;
        for pgoff in lo..=hi {
            let Some(page) = self.pages.get(pgoff - start) else {
                continue;
            };
            // SAFETY: `page` belongs to this region, which outlives its PTEs (ownership
            // rule at `Region`).
            match unsafe { ptes.install(pgoff, &page) } {
                Ok(_) if pgoff == f.pgoff() => hit = true,
                Ok(Install::Mapped) => stats.inc(uapi::VMALAB_CTR_FAULT_AROUND),
                Ok(Install::Present) | Err(_) => {}
            }
        }
        hit
    }

    /// Fast step of `->fault`, under `rcu_read_lock()`: maps the faulting page if that
    /// needs no sleep (page present or allocatable with `GFP_NOWAIT`, PTE table
    /// present). `None` means: take the slow path.
    pub(crate) fn fault_atomic(
        &self,
        start: usize,
        f: &Fault<'_>,
        stats: &Stats,
    ) -> Option<FaultOutcome> {
        let page = self
            .backing
            .populate_atomic(&self.pages, f.pgoff() - start, stats)?;
        let ptes = f.lock_ptes()?;
        // SAFETY: `page` belongs to this region, which outlives its PTEs (ownership
        // rule at `Region`).
        unsafe { ptes.install(f.pgoff(), &page) }.ok()?;
        Some(FaultOutcome::Mapped)
    }

    /// Slow path: produces the faulting page if needed (may sleep) and maps it,
    /// allocating a PTE table if there is none.
    pub(crate) fn fault(&self, start: usize, f: &Fault<'_>, stats: &Stats) -> FaultOutcome {
        let page = match self.backing.populate(&self.pages, f.pgoff() - start, stats) {
            Ok(page) => page,
            Err(_) => return FaultOutcome::Oom,
        };
        // SAFETY: `page` belongs to this region, which outlives its PTEs (ownership
        // rule at `Region`).
        match f.with_ptes_alloc(|ptes| unsafe { ptes.install(f.pgoff(), &page) }) {
            Ok(Ok(_)) => FaultOutcome::MappedSlow,
            Ok(Err(_)) | Err(_) => FaultOutcome::Oom,
        }
    }
}

/// Appends `r` to `out`, which the caller made room in. A region that was unlinked
/// from an engine must reach the writer's tail (zap, then free): it is never dropped
/// here, even if the reservation was wrong (a bug: warn and leak it).
pub(crate) fn push_reserved(out: &mut KVec<Arc<Region>>, r: Arc<Region>) {
    if let Err(e) = out.push_within_capacity(r) {
        kernel::warn_on!(true);
        core::mem::forget(e);
    }
}

/// Where a new region goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Anywhere free (first fit from the bottom of the arena).
    Any,
    /// Exactly here; fail with `EEXIST` if anything overlaps.
    Fixed(usize),
    /// Exactly here, replacing the regions inside the range.
    Replace(usize),
}

/// An ordered, non-overlapping set of regions inside an arena of `limit` pages.
///
/// # Invariants
///
/// Keys are exclusive end pgoffs; for each entry, `end - region.npages() < end <= limit`
/// and entries do not overlap.
pub(crate) struct RegionTree {
    tree: RBTree<usize, Arc<Region>>,
    limit: usize,
}

impl RegionTree {
    /// An empty tree for an arena of `limit` pages.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            tree: RBTree::new(),
            limit,
        }
    }

    /// Number of regions.
    pub(crate) fn len(&self) -> usize {
        self.tree.iter().count()
    }

    /// Bookkeeping bytes of all regions, plus one tree node each.
    pub(crate) fn meta_bytes(&self) -> usize {
        let node = core::mem::size_of::<kernel::bindings::rb_node>()
            + core::mem::size_of::<usize>()
            + core::mem::size_of::<Arc<Region>>();
        self.tree.values().map(|r| r.meta_bytes() + node).sum()
    }

    /// The regions in order, as `(start, region)`.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &Arc<Region>)> + '_ {
        self.tree.iter().map(|(&e, r)| (e - r.npages(), r))
    }

    /// Finds the region containing `pgoff` and calls `f(start, region)` on it.
    ///
    /// (A closure because `rbtree::Cursor::current` borrows from the cursor, and
    /// cloning the `Arc` instead would add a shared atomic to every fault.)
    #[inline]
    pub(crate) fn with_region<R>(
        &self,
        pgoff: usize,
        f: impl FnOnce(usize, &Arc<Region>) -> R,
    ) -> Option<R> {
        let cursor = self.tree.cursor_lower_bound(&(pgoff.checked_add(1)?))?;
        let (&end, region) = cursor.current();
        let start = end - region.npages();
        (start <= pgoff).then(|| f(start, region))
    }

    /// The regions overlapping `[start, end)`, as `(start, end)` pairs, in order.
    fn overlapping(&self, start: usize, end: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.tree
            .iter()
            .map(|(&e, r)| (e - r.npages(), e))
            .skip_while(move |&(_, e)| e <= start)
            .take_while(move |&(s, _)| s < end)
    }

    /// First-fit search for `npages` free pages.
    fn find_free(&self, npages: usize) -> Option<usize> {
        let mut prev_end = 0;
        for (&end, region) in self.tree.iter() {
            let start = end - region.npages();
            if start - prev_end >= npages {
                return Some(prev_end);
            }
            prev_end = end;
        }
        (self.limit - prev_end >= npages).then_some(prev_end)
    }

    /// Checks that every region touching `[start, end)` lies inside it (vmalab never
    /// splits a region) and returns how many there are.
    fn covered(&self, start: usize, end: usize) -> Result<usize> {
        let mut n = 0;
        for (s, e) in self.overlapping(start, end) {
            if s < start || e > end {
                return Err(EINVAL);
            }
            n += 1;
        }
        Ok(n)
    }

    /// Validates an unmap of `[start, end)`: every region it touches must lie inside
    /// it, and there must be at least one (`ENOENT`). Returns how many there are.
    pub(crate) fn plan_remove(&self, start: usize, end: usize) -> Result<usize> {
        match self.covered(start, end)? {
            0 => Err(ENOENT),
            n => Ok(n),
        }
    }

    /// The starts of the regions in `[start, end)`, in order.
    pub(crate) fn starts_in(&self, start: usize, end: usize) -> impl Iterator<Item = usize> + '_ {
        self.overlapping(start, end).map(|(s, _)| s)
    }

    /// Removes the regions overlapping `[start, end)` (a plan checked they lie inside
    /// it), appending them to `out`, which must have room for them. Cannot fail.
    pub(crate) fn commit_remove(&mut self, start: usize, end: usize, out: &mut KVec<Arc<Region>>) {
        while let Some(cursor) = self.tree.cursor_lower_bound_mut(&(start + 1)) {
            let (&e, r) = cursor.current();
            if e - r.npages() >= end {
                break;
            }
            let (_, node) = cursor.remove_current();
            push_reserved(out, node.to_key_value().1);
        }
    }

    /// Removes the regions inside `[start, end)` (see [`Self::plan_remove`]), appending
    /// them to `out`. On error the tree is unchanged.
    pub(crate) fn remove_range(
        &mut self,
        start: usize,
        end: usize,
        out: &mut KVec<Arc<Region>>,
    ) -> Result {
        let n = self.plan_remove(start, end)?;
        out.reserve(n, GFP_KERNEL)?;
        self.commit_remove(start, end, out);
        Ok(())
    }

    /// Validates placing `npages` pages at `placement`: returns the start and how many
    /// regions a `Replace` would displace. Changes nothing.
    pub(crate) fn plan_insert(
        &self,
        npages: usize,
        placement: Placement,
    ) -> Result<(usize, usize)> {
        let start = match placement {
            Placement::Any => self.find_free(npages).ok_or(ENOMEM)?,
            Placement::Fixed(s) | Placement::Replace(s) => s,
        };
        let end = start.checked_add(npages).ok_or(EINVAL)?;
        if npages == 0 || end > self.limit {
            return Err(EINVAL);
        }
        let displaced = match placement {
            Placement::Replace(_) => self.covered(start, end)?,
            _ if self.overlapping(start, end).next().is_some() => return Err(EEXIST),
            _ => 0,
        };
        Ok((start, displaced))
    }

    /// Inserts `region` at `start` as [`Self::plan_insert`] planned it, displacing the
    /// regions the plan counted into `removed` (which must have room for them), using a
    /// node reserved beforehand: nothing allocates, nothing can fail.
    pub(crate) fn commit_insert(
        &mut self,
        start: usize,
        region: Arc<Region>,
        node: RBTreeNodeReservation<usize, Arc<Region>>,
        removed: &mut KVec<Arc<Region>>,
    ) {
        let end = start + region.npages();
        self.commit_remove(start, end, removed);
        // INVARIANT: `[start, end)` is inside the arena (planned) and now free.
        self.tree.insert(node.into_node(end, region));
    }

    /// Plans and commits an insert (see [`Self::plan_insert`], [`Self::commit_insert`]).
    /// Returns the region's start; on error the tree is unchanged.
    pub(crate) fn insert(
        &mut self,
        region: Arc<Region>,
        placement: Placement,
        node: RBTreeNodeReservation<usize, Arc<Region>>,
        removed: &mut KVec<Arc<Region>>,
    ) -> Result<usize> {
        let (start, displaced) = self.plan_insert(region.npages(), placement)?;
        removed.reserve(displaced, GFP_KERNEL)?;
        self.commit_insert(start, region, node, removed);
        Ok(start)
    }

    /// Removes every region (on close), appending them to `out`.
    pub(crate) fn drain(&mut self, out: &mut KVec<Arc<Region>>) -> Result {
        out.reserve(self.len(), GFP_KERNEL)?;
        while let Some(cursor) = self.tree.cursor_front_mut() {
            let (_, node) = cursor.remove_current();
            push_reserved(out, node.to_key_value().1);
        }
        Ok(())
    }
}

#[kunit_tests(vmalab_region_tree)]
mod tests {
    use super::*;

    fn tree_with(
        limit: usize,
        regions: &[(Placement, usize)],
    ) -> Result<(RegionTree, KVec<usize>)> {
        let mut t = RegionTree::new(limit);
        let mut starts = KVec::new();
        for &(p, n) in regions {
            let mut removed = KVec::new();
            let s = t.insert(
                Region::new(n, Backing::Zero)?,
                p,
                RBTreeNodeReservation::new(GFP_KERNEL)?,
                &mut removed,
            )?;
            starts.push(s, GFP_KERNEL)?;
        }
        Ok((t, starts))
    }

    #[test]
    fn first_fit_fills_gaps() -> Result {
        let (mut t, s) = tree_with(
            16,
            &[
                (Placement::Any, 4),
                (Placement::Any, 4),
                (Placement::Any, 4),
            ],
        )?;
        assert_eq!(&s[..], &[0, 4, 8]);
        let mut out = KVec::new();
        t.remove_range(4, 8, &mut out)?;
        assert_eq!(out.len(), 1);
        let mut removed = KVec::new();
        let r = Region::new(2, Backing::Zero)?;
        let at = t.insert(
            r,
            Placement::Any,
            RBTreeNodeReservation::new(GFP_KERNEL)?,
            &mut removed,
        )?;
        assert_eq!(at, 4);
        assert_eq!(t.len(), 3);
        Ok(())
    }

    #[test]
    fn lookup_finds_containing_region() -> Result {
        let (t, _) = tree_with(64, &[(Placement::Fixed(8), 4), (Placement::Fixed(20), 1)])?;
        let start = |pgoff| t.with_region(pgoff, |s, _| s);
        assert_eq!(start(7), None);
        assert_eq!(start(8), Some(8));
        assert_eq!(start(11), Some(8));
        assert_eq!(start(12), None);
        assert_eq!(start(20), Some(20));
        assert_eq!(start(21), None);
        assert_eq!(start(usize::MAX), None);
        Ok(())
    }

    #[test]
    fn fixed_overlap_and_bounds_are_refused() -> Result {
        let (mut t, _) = tree_with(16, &[(Placement::Fixed(4), 4)])?;
        let mut removed = KVec::new();
        for (p, n, want) in [
            (Placement::Fixed(6), 4, EEXIST),
            (Placement::Fixed(0), 5, EEXIST),
            (Placement::Fixed(14), 4, EINVAL),
            (Placement::Fixed(usize::MAX), 2, EINVAL),
            (Placement::Any, 17, ENOMEM),
            (Placement::Replace(6), 4, EINVAL),
        ] {
            let r = Region::new(n, Backing::Zero)?;
            let got = t.insert(r, p, RBTreeNodeReservation::new(GFP_KERNEL)?, &mut removed);
            assert_eq!(got.err(), Some(want));
        }
        assert_eq!(t.len(), 1);
        assert_eq!(removed.len(), 0);
        Ok(())
    }

    #[test]
    fn replace_and_unmap_take_whole_regions_only() -> Result {
        let (mut t, _) = tree_with(
            32,
            &[
                (Placement::Fixed(0), 2),
                (Placement::Fixed(4), 2),
                (Placement::Fixed(8), 8),
            ],
        )?;
        let mut out = KVec::new();
        assert_eq!(t.remove_range(2, 4, &mut out).err(), Some(ENOENT));
        assert_eq!(t.remove_range(9, 10, &mut out).err(), Some(EINVAL));
        let mut removed = KVec::new();
        let r = Region::new(8, Backing::Zero)?;
        let at = t.insert(
            r,
            Placement::Replace(0),
            RBTreeNodeReservation::new(GFP_KERNEL)?,
            &mut removed,
        )?;
        assert_eq!(at, 0);
        assert_eq!(removed.len(), 2);
        assert_eq!(t.len(), 2);
        t.remove_range(0, 32, &mut out)?;
        assert_eq!(out.len(), 2);
        assert_eq!(t.len(), 0);
        Ok(())
    }
}
