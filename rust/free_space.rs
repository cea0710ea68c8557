// SPDX-License-Identifier: GPL-2.0

//! The arena's free space, apart from its regions (Piggin, seed 000: "Another issue is
//! free space allocation. At the moment I am doing just another global extent tree for
//! this. It is not as bad as it sounds because the lock hold times are much shorter,
//! and we get the benefit that mappings are decoupled from allocations").
//!
//! An ordered set of free extents. `ptshard` keeps it under its own mutex: placement
//! (a MAP without a fixed address) picks the lowest fit here, so it never reads the
//! per-span region trees, and a writer at a fixed address only marks its range.
//!
//! Every operation inserts nodes only from a [`Spare`] the caller allocated before it
//! took the lock (two for a reservation, one for a release) and the nodes it removed,
//! so the lock is held for the tree walk alone and nothing fails halfway.

#![deny(unsafe_code)]

use kernel::{
    prelude::*,
    rbtree::{RBTree, RBTreeNodeReservation},
};

/// The free extents of an arena of `limit` pages.
///
/// # Invariants
///
/// Each entry is `end -> start` of a free extent `[start, end)` with
/// `start < end <= limit`; extents neither overlap nor touch (touching ones are merged).
pub(crate) struct FreeSpace {
    free: RBTree<usize, usize>,
    limit: usize,
}

/// Tree nodes allocated before the tree's lock is taken: a reservation
/// ([`FreeSpace::reserve`], [`FreeSpace::take`]) inserts at most two, a release one.
/// Nodes an operation removes join it, for its own inserts.
#[derive(Default)]
pub(crate) struct Spare([Option<RBTreeNodeReservation<usize, usize>>; 3]);

impl Spare {
    /// `n` (at most 3) nodes.
    pub(crate) fn new(n: usize) -> Result<Self> {
        let mut nodes = [None, None, None];
        for slot in nodes.iter_mut().take(n) {
            *slot = Some(RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?);
        }
        Ok(Self(nodes))
    }
}

impl FreeSpace {
    /// An arena of `limit` pages, all free.
    pub(crate) fn new(limit: usize) -> Result<Self> {
        let mut free = RBTree::new();
        if limit > 0 {
            // INVARIANT: one extent, the whole arena.
            free.try_create_and_insert(limit, 0, GFP_KERNEL_ACCOUNT)?;
        }
        Ok(Self { free, limit })
    }

    /// Number of free extents.
    pub(crate) fn extents(&self) -> usize {
        self.free.iter().count()
    }

    /// Bytes of kernel memory the tree takes.
    pub(crate) fn meta_bytes(&self) -> usize {
        let node =
            core::mem::size_of::<kernel::bindings::rb_node>() + 2 * core::mem::size_of::<usize>();
        self.extents() * node
    }

    fn check(&self, start: usize, end: usize) -> Result {
        if start >= end || end > self.limit {
            return Err(EINVAL);
        }
        Ok(())
    }

    /// Removes the free extents overlapping `[start, end)` (with `touching`, also the
    /// ones that end at `start` or begin at `end`); returns the lowest start and the
    /// highest end among them.
    fn remove(
        &mut self,
        start: usize,
        end: usize,
        touching: bool,
        spare: &mut Spare,
    ) -> Option<(usize, usize)> {
        let key = if touching { start } else { start + 1 };
        let mut hull: Option<(usize, usize)> = None;
        while let Some(cursor) = self.free.cursor_lower_bound_mut(&key) {
            let (&e, &s) = cursor.current();
            if s > end || (!touching && s == end) {
                break;
            }
            let (_, node) = cursor.remove_current();
            // Kept for this operation's inserts, if there is room; else freed.
            if let Some(slot) = spare.0.iter_mut().find(|s| s.is_none()) {
                *slot = Some(node.into_reservation());
            }
            hull = Some(hull.map_or((s, e), |(a, b)| (a.min(s), b.max(e))));
        }
        hull
    }

    /// `ENOMEM` if `spare` has no node left: the extent stays out of the tree (its
    /// space is lost to placement, nothing else).
    fn insert(&mut self, spare: &mut Spare, start: usize, end: usize) -> Result {
        let r = spare.0.iter_mut().find_map(Option::take).ok_or(ENOMEM)?;
        // INVARIANT: callers insert what they removed minus a range, or the merge of
        // a range with the extents touching it: disjoint and not touching the rest.
        self.free.insert(r.into_node(end, start));
        Ok(())
    }

    /// Marks `[start, end)` allocated, whatever part of it was free (REPLACE).
    pub(crate) fn take(&mut self, start: usize, end: usize, spare: &mut Spare) -> Result {
        self.check(start, end)?;
        if let Some((a, b)) = self.remove(start, end, false, spare) {
            if a < start {
                self.insert(spare, a, start)?;
            }
            if b > end {
                self.insert(spare, end, b)?;
            }
        }
        Ok(())
    }

    /// Marks `[start, end)` allocated if all of it is free; `EEXIST` if not (a MAP at
    /// a fixed address).
    pub(crate) fn reserve(&mut self, start: usize, end: usize, spare: &mut Spare) -> Result {
        self.check(start, end)?;
        let cursor = self.free.cursor_lower_bound(&(start + 1)).ok_or(EEXIST)?;
        let (&e, &s) = cursor.current();
        if s > start || e < end {
            return Err(EEXIST);
        }
        self.take(start, end, spare)
    }

    /// Marks the lowest free run of `npages` pages that `busy` accepts allocated and
    /// returns its start; `ENOMEM` if there is none. `busy(start, end)` is `None` if
    /// `[start, end)` may be taken, else an end to resume the search at (a writer is
    /// still retiring regions there: `protocol/retire.rs`, `publish_placed`).
    pub(crate) fn reserve_any(
        &mut self,
        npages: usize,
        busy: &dyn Fn(usize, usize) -> Option<usize>,
        spare: &mut Spare,
    ) -> Result<usize> {
        if npages == 0 {
            return Err(EINVAL);
        }
        let mut found = None;
        'extents: for (&e, &s) in self.free.iter() {
            let mut pos = s;
            while pos <= e && e - pos >= npages {
                match busy(pos, pos + npages) {
                    None => {
                        found = Some(pos);
                        break 'extents;
                    }
                    Some(past) => pos = past.max(pos + 1),
                }
            }
        }
        let start = found.ok_or(ENOMEM)?;
        self.take(start, start + npages, spare)?;
        Ok(start)
    }

    /// Marks `[start, end)` free, whatever part of it was allocated (UNMAP).
    pub(crate) fn release(&mut self, start: usize, end: usize, spare: &mut Spare) -> Result {
        self.check(start, end)?;
        let (a, b) = self
            .remove(start, end, true, spare)
            .map_or((start, end), |(a, b)| (a.min(start), b.max(end)));
        self.insert(spare, a, b)
    }
}

#[kunit_tests(vmalab_free_space)]
mod tests {
    use super::*;

    /// The free extents as `(start, end)`.
    fn extents(f: &FreeSpace) -> Result<KVec<(usize, usize)>> {
        let mut v = KVec::new();
        for (&e, &s) in f.free.iter() {
            v.push((s, e), GFP_KERNEL)?;
        }
        Ok(v)
    }

    #[test]
    fn placement_is_lowest_fit() -> Result {
        let mut f = FreeSpace::new(100)?;
        assert_eq!(f.reserve_any(10, &|_, _| None, &mut Spare::new(3)?)?, 0);
        assert_eq!(f.reserve_any(10, &|_, _| None, &mut Spare::new(3)?)?, 10);
        f.release(0, 10, &mut Spare::new(3)?)?;
        assert_eq!(f.reserve_any(20, &|_, _| None, &mut Spare::new(3)?)?, 20); // The hole at 0 is too small.
        assert_eq!(f.reserve_any(5, &|_, _| None, &mut Spare::new(3)?)?, 0);
        assert_eq!(&extents(&f)?[..], &[(5, 10), (40, 100)]);
        assert_eq!(
            f.reserve_any(61, &|_, _| None, &mut Spare::new(3)?),
            Err(ENOMEM)
        );
        assert_eq!(
            f.reserve_any(0, &|_, _| None, &mut Spare::new(3)?),
            Err(EINVAL)
        );
        Ok(())
    }

    #[test]
    fn placement_skips_busy_ranges() -> Result {
        let mut f = FreeSpace::new(100)?;
        // A writer still retires [5, 30): the fit starts past it.
        let busy = |s: usize, e: usize| (s < 30 && 5 < e).then_some(30);
        assert_eq!(f.reserve_any(10, &busy, &mut Spare::new(3)?)?, 30);
        assert_eq!(f.reserve_any(5, &busy, &mut Spare::new(3)?)?, 0);
        assert_eq!(f.reserve_any(61, &busy, &mut Spare::new(3)?), Err(ENOMEM));
        assert_eq!(&extents(&f)?[..], &[(5, 30), (40, 100)]);
        Ok(())
    }

    #[test]
    fn fixed_reserve_needs_all_free() -> Result {
        let mut f = FreeSpace::new(100)?;
        f.reserve(10, 20, &mut Spare::new(3)?)?;
        assert_eq!(f.reserve(15, 25, &mut Spare::new(3)?), Err(EEXIST));
        assert_eq!(f.reserve(5, 11, &mut Spare::new(3)?), Err(EEXIST));
        assert_eq!(f.reserve(95, 101, &mut Spare::new(3)?), Err(EINVAL));
        f.reserve(20, 30, &mut Spare::new(3)?)?;
        f.reserve(0, 10, &mut Spare::new(3)?)?;
        assert_eq!(&extents(&f)?[..], &[(30, 100)]);
        Ok(())
    }

    #[test]
    fn release_merges_and_take_splits() -> Result {
        let mut f = FreeSpace::new(100)?;
        f.take(0, 100, &mut Spare::new(3)?)?;
        assert_eq!(f.extents(), 0);
        f.release(10, 20, &mut Spare::new(3)?)?;
        f.release(30, 40, &mut Spare::new(3)?)?;
        f.release(20, 30, &mut Spare::new(3)?)?; // Touches both: one extent.
        assert_eq!(&extents(&f)?[..], &[(10, 40)]);
        f.release(5, 50, &mut Spare::new(3)?)?; // Covers it, partly free already.
        assert_eq!(&extents(&f)?[..], &[(5, 50)]);
        f.take(15, 25, &mut Spare::new(3)?)?; // Splits it.
        assert_eq!(&extents(&f)?[..], &[(5, 15), (25, 50)]);
        f.take(0, 20, &mut Spare::new(3)?)?; // Partly allocated already.
        assert_eq!(&extents(&f)?[..], &[(25, 50)]);
        Ok(())
    }
}
