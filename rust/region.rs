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
    vm_ops::{Fault, FaultAround, FaultOutcome, Install, PteTable},
};
use kernel::{
    page::Page,
    prelude::*,
    rbtree::{RBTree, RBTreeNodeReservation},
    sync::{
        atomic::{Atomic, Relaxed},
        barrier::{smp_mb, Full},
        Arc,
    },
};

/// A region's protection (`VMALAB_PROT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prot {
    /// Reads and writes.
    ReadWrite,
    /// Reads only: a write gets `SIGSEGV`.
    ReadOnly,
}

/// One region: a protection, a backing, and a window of page slots.
///
/// A new region owns fresh slots; the parts of a region that a writer splits
/// ([`Change`]) are regions over windows of the same slots, so they keep its pages
/// and data. The slots (and the pages in them) go when the last region over them
/// does, or earlier by a writer's punch of a part it removed.
///
/// Ownership rule (what makes installing its pages sound): a region that was ever
/// reachable by faults is dropped, and the pages of a part cut away are punched, only
/// after its range was zapped (the writer order of `protocol/writer.rs`: engine
/// quiesce, zap, then free) or once no arena VMA is left (`Space::release` runs after
/// the last VMA is closed); regions removed while a test mutant is armed are parked
/// until then instead. Its pages therefore outlive every special PTE that maps them.
///
/// Engines whose writers do not wait for faults before the zap (`spf`, `rcu` with
/// deferred reclaim) keep the rule with two more steps: a writer *retires* every
/// region it took out ([`Region::retire`], or the engine's sequence count) before its
/// zap, and their faults install only under the PTE lock and only if their region is
/// still published ([`Region::still_published`]); and the writer's free runs after a
/// grace period (and, for `rcu`, after the holds drained) that began after the zap
/// (`deferred.rs`), so faults still touching the region's slots have finished.
///
/// # Invariants
///
/// `first + npages <= pages.len()`, and `npages > 0`.
pub(crate) struct Region {
    pages: Arc<PageSlots>,
    first: usize,
    npages: usize,
    backing: Backing,
    prot: Prot,
    /// 1 once a writer took the region out of the set (before its zap); never reset.
    retired: Atomic<u32>,
}

impl Region {
    /// Allocates a read-write region of `npages` pages (its page slots, not the
    /// pages), charged to the caller's memory cgroup.
    pub(crate) fn new(npages: usize, backing: Backing) -> Result<Arc<Self>> {
        if npages == 0 {
            return Err(EINVAL);
        }
        let pages = Arc::new(PageSlots::new(npages)?, GFP_KERNEL_ACCOUNT)?;
        // INVARIANT: the window is all of the `npages` slots.
        Ok(Arc::new(
            Self {
                pages,
                first: 0,
                npages,
                backing,
                prot: Prot::ReadWrite,
                retired: Atomic::new(0),
            },
            GFP_KERNEL_ACCOUNT,
        )?)
    }

    /// A region over `piece`'s window of slots.
    fn of_piece(piece: &Piece<'_>) -> Result<Arc<Self>> {
        let pages = piece.src.pages.clone();
        if piece.npages == 0 || piece.first + piece.npages > pages.len() {
            return Err(EINVAL); // A planning bug; never mapped.
        }
        // INVARIANT: checked just above.
        Ok(Arc::new(
            Self {
                pages,
                first: piece.first,
                npages: piece.npages,
                backing: piece.src.backing,
                prot: piece.prot,
                retired: Atomic::new(0),
            },
            GFP_KERNEL_ACCOUNT,
        )?)
    }

    /// Length in pages.
    pub(crate) fn npages(&self) -> usize {
        self.npages
    }

    /// The protection.
    pub(crate) fn prot(&self) -> Prot {
        self.prot
    }

    /// A writer took this region out of the set: called after its publish and before
    /// its zap, followed (before the zap) by a full barrier (`Space` bumps its publish
    /// count with a fully ordered RMW).
    pub(crate) fn retire(&self) {
        self.retired.store(1, Relaxed);
    }

    /// Whether no writer has retired this region. Called under the PTE lock of the
    /// page a fault is about to install, right before the install.
    ///
    /// Why under the PTE lock: a writer retires the region, then zaps, and the zap
    /// takes the PTE lock of every table in the range that exists. If our lock came
    /// after the zap's, the lock orders the retire before this load; if before, the
    /// zap removes what we install. If the zap found no table there (the fault then
    /// allocated it), the full barrier here and the writer's (between retire and the
    /// zap's page-table walk) order the two sides as store-buffering: either the
    /// writer's walk saw our table (and takes our lock after us), or we see the mark.
    #[inline]
    pub(crate) fn still_published(&self) -> bool {
        smp_mb(Full);
        self.retired.load(Relaxed) == 0
    }

    /// Bytes of kernel memory for this region's bookkeeping (not its pages): its Arc
    /// allocation, the slot array's header (counted in full by each part of a split
    /// region: an over-count of 32 B per extra part), and its window's share of the
    /// slots.
    pub(crate) fn meta_bytes(&self) -> usize {
        let refcount = core::mem::size_of::<usize>();
        core::mem::size_of::<Self>()
            + refcount
            + core::mem::size_of::<PageSlots>()
            + refcount
            + self.npages * core::mem::size_of::<usize>()
    }

    /// Pages allocated in `[offset, offset + n)` of this region. O(n).
    pub(crate) fn present_in(&self, offset: usize, n: usize) -> usize {
        self.pages.present_in(
            self.first + offset,
            n.min(self.npages - offset.min(self.npages)),
        )
    }

    /// Frees the pages of `[offset, offset + n)` of this region; returns how many.
    ///
    /// # Safety
    ///
    /// As [`PageSlots::punch`]: no region a fault can still find covers these pages,
    /// no fault that found one is still running, and no PTE maps them.
    pub(crate) unsafe fn punch(&self, offset: usize, n: usize) -> usize {
        let n = n.min(self.npages - offset.min(self.npages));
        // SAFETY: The caller's contract is the one `punch` needs.
        unsafe { self.pages.punch(self.first + offset, n) }
    }

    /// Whether a write fault may map this region's pages writable; `Err` if the
    /// access is not allowed.
    fn check_access(&self, write: bool) -> core::result::Result<bool, FaultOutcome> {
        match (self.prot, write) {
            (Prot::ReadOnly, true) => Err(FaultOutcome::SigSegv),
            (prot, _) => Ok(prot == Prot::ReadWrite),
        }
    }

    /// Fast path: maps the already-present pages of this region (starting at arena page
    /// `start`) that fall in the fault-around window, under the window's PTE lock.
    /// Never sleeps, never allocates. Returns whether the faulting page is mapped.
    /// (Fault-around serves read faults only.)
    ///
    /// `valid` is checked under the PTE lock before anything is installed (see
    /// [`Region::still_published`]); `|| true` for engines whose writers exclude faults.
    pub(crate) fn map_present(
        &self,
        start: usize,
        f: &FaultAround<'_>,
        stats: &Stats,
        valid: impl Fn() -> bool,
    ) -> bool {
        let (lo, hi) = f.range();
        let lo = lo.max(start);
        let hi = hi.min(start + self.npages - 1);
        let writable = self.prot == Prot::ReadWrite;
        // No PTE table (first fault in this 2 MiB, or reclaimed): `->fault` makes one.
        let Some(ptes) = f.lock_ptes() else {
            return false;
        };
        if !valid() {
            // Retired under us: `->fault` looks again.
            stats.inc(uapi::VMALAB_CTR_FAULT_RETRY);
            return false;
        }
        let mut hit = false;
        for pgoff in lo..=hi {
            let Some(page) = self.pages.get(self.first + pgoff - start) else {
                continue;
            };
            // SAFETY: `page` belongs to this region, which outlives its PTEs (ownership
            // rule at `Region`).
            match unsafe { ptes.install(pgoff, &page, writable) } {
                Ok(_) if pgoff == f.pgoff() => hit = true,
                Ok(Install::Mapped) => stats.inc(uapi::VMALAB_CTR_FAULT_AROUND),
                Ok(Install::Present) | Err(_) => {}
            }
        }
        hit
    }

    /// Fast step of `->fault`, under `rcu_read_lock()`: maps the faulting page if that
    /// needs no sleep (page present or allocatable with `GFP_NOWAIT`, PTE table
    /// present). `None` means: take the slow path. `valid` as for
    /// [`Self::map_present`]; `Retry` if it failed (nothing installed).
    pub(crate) fn fault_atomic(
        &self,
        start: usize,
        f: &Fault<'_>,
        stats: &Stats,
        valid: impl Fn() -> bool,
    ) -> Option<FaultOutcome> {
        let writable = match self.check_access(f.is_write()) {
            Ok(w) => w,
            Err(out) => return Some(out),
        };
        let page =
            self.backing
                .populate_atomic(&self.pages, self.first + f.pgoff() - start, stats)?;
        let ptes = f.lock_ptes()?;
        if !valid() {
            return Some(FaultOutcome::Retry);
        }
        // SAFETY: `page` belongs to this region, which outlives its PTEs (ownership
        // rule at `Region`).
        unsafe { ptes.install(f.pgoff(), &page, writable) }.ok()?;
        Some(FaultOutcome::Mapped)
    }

    /// One try of a speculative fault (`spf`), inside an RCU read section, with no
    /// reference on the region: maps the faulting page if that needs no sleep, using
    /// the page in `prepared` (zeroed, allocated by an earlier try) for an empty slot.
    /// What would sleep is left to the caller, outside the read section, before it
    /// tries again: [`Speculative::NeedPage`] (a page to prepare, after the slow
    /// backing's delay) or [`Speculative::NeedTable`] (a PTE table to allocate).
    /// `valid` as for [`Self::map_present`].
    pub(crate) fn fault_speculative(
        &self,
        start: usize,
        f: &Fault<'_>,
        stats: &Stats,
        prepared: &mut Option<Page>,
        valid: impl Fn() -> bool,
    ) -> Speculative {
        let writable = match self.check_access(f.is_write()) {
            Ok(w) => w,
            Err(out) => return Speculative::Done(out),
        };
        let i = self.first + f.pgoff() - start;
        let page = match (self.pages.get(i), prepared.take()) {
            (Some(page), prepared_page) => {
                *prepared = prepared_page; // Not needed here; maybe on the next try.
                page
            }
            (None, Some(new)) => match self.backing.adopt(&self.pages, i, new, stats) {
                Some(page) => page,
                None => return Speculative::Done(FaultOutcome::SigBus), // Out of range: a bug.
            },
            (None, None) => match self.backing.populate_atomic(&self.pages, i, stats) {
                Some(page) => page,
                None => return Speculative::NeedPage(self.backing),
            },
        };
        let Some(ptes) = f.lock_ptes() else {
            return Speculative::NeedTable;
        };
        if !valid() {
            return Speculative::Done(FaultOutcome::Retry);
        }
        // Checked under the PTE lock just above; the region is freed after a grace
        // period that began after the writer's zap and cannot end inside our section.
        // SAFETY: `page` belongs to this region, which outlives its PTEs (ownership
        // rule at `Region`).
        match unsafe { ptes.install(f.pgoff(), &page, writable) } {
            Ok(_) => Speculative::Done(FaultOutcome::Mapped),
            Err(_) => Speculative::Done(FaultOutcome::SigBus), // Outside the VMA: a bug.
        }
    }

    /// Slow path: produces the faulting page if needed (may sleep) and maps it,
    /// allocating a PTE table if there is none. `valid` as for [`Self::fault_atomic`].
    pub(crate) fn fault(
        &self,
        start: usize,
        f: &Fault<'_>,
        stats: &Stats,
        valid: impl Fn() -> bool,
    ) -> FaultOutcome {
        let writable = match self.check_access(f.is_write()) {
            Ok(w) => w,
            Err(out) => return out,
        };
        let page = match self
            .backing
            .populate(&self.pages, self.first + f.pgoff() - start, stats)
        {
            Ok(page) => page,
            Err(_) => return FaultOutcome::Oom,
        };
        let install = |ptes: &PteTable<'_>| {
            if !valid() {
                return Ok(None);
            }
            // SAFETY: `page` belongs to this region, which outlives its PTEs (ownership
            // rule at `Region`).
            unsafe { ptes.install(f.pgoff(), &page, writable) }.map(Some)
        };
        match f.with_ptes_alloc(install) {
            Ok(Ok(Some(_))) => FaultOutcome::MappedSlow,
            Ok(Ok(None)) => FaultOutcome::Retry,
            Ok(Err(_)) | Err(_) => FaultOutcome::Oom,
        }
    }
}

/// What one try of a speculative fault ([`Region::fault_speculative`]) came to.
pub(crate) enum Speculative {
    /// The fault is resolved (`Retry`: the check under the PTE lock failed).
    Done(FaultOutcome),
    /// The page must be produced first, which may sleep: see [`Backing::prepare`].
    NeedPage(Backing),
    /// There is no PTE table: allocate one ([`Fault::with_ptes_alloc`]) and try again.
    NeedTable,
}

/// Appends `r` to `out`, which the caller made room in. A region that was unlinked
/// from an engine must reach the writer's tail (zap, then free): it is never dropped
/// here, even if the reservation was wrong (a bug: warn and leak it).
pub(crate) fn push_reserved(out: &mut KVec<(usize, Arc<Region>)>, r: (usize, Arc<Region>)) {
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
    /// Here, where the engine's own allocator reserved the range ([`Engine::place`]):
    /// as `Fixed`.
    ///
    /// [`Engine::place`]: crate::engine::Engine::place
    Placed(usize),
}

/// A writer operation on a region set.
#[derive(Clone)]
pub(crate) enum Change {
    /// MAP: insert a region at a placement; a `Replace` cuts the regions it overlaps
    /// (their parts outside its range stay, with their pages).
    Map(Arc<Region>, Placement),
    /// UNMAP `[start, end)`: cuts the regions it overlaps (like `munmap`); a range
    /// with no region in it changes nothing.
    Unmap(usize, usize),
    /// PROTECT `[start, end)`: every page must be in a region (`ENOMEM`, like
    /// `mprotect`); the regions it overlaps are split at its ends, and parts left with
    /// the same pages (contiguous), backing and protection are merged again.
    Protect(usize, usize, Prot),
}

/// A part of a new region set: a window of some region's slots at an arena start.
struct Piece<'a> {
    start: usize,
    npages: usize,
    /// The region whose slots (and backing) the piece uses.
    src: &'a Region,
    /// Index of the piece's first page in `src`'s slots.
    first: usize,
    prot: Prot,
}

impl Piece<'_> {
    /// `[start, start + npages)` of region `src` at arena page `src_start`, with `prot`.
    fn of<'a>(
        src: &'a Region,
        src_start: usize,
        start: usize,
        end: usize,
        prot: Prot,
    ) -> Piece<'a> {
        Piece {
            start,
            npages: end - start,
            src,
            first: src.first + (start - src_start),
            prot,
        }
    }

    /// Whether `next`, starting where `self` ends, continues it: same slots, next
    /// slot, same backing and protection.
    fn continued_by(&self, next: &Piece<'_>) -> bool {
        self.start + self.npages == next.start
            && Arc::ptr_eq(&self.src.pages, &next.src.pages)
            && self.first + self.npages == next.first
            && self.src.backing == next.src.backing
            && self.prot == next.prot
    }
}

/// What a [`Change`] does to a [`RegionTree`], decided and allocated before any of it
/// is done: the old regions inside `[lo, hi)` all leave the tree (each whole), and the
/// regions of `new` enter it.
pub(crate) struct Plan {
    /// The old regions inside `[lo, hi)` leave.
    pub(crate) lo: usize,
    /// See `lo`.
    pub(crate) hi: usize,
    /// How many old regions leave, and the pages they span.
    pub(crate) leaving: usize,
    /// See `leaving`.
    pub(crate) leaving_pages: usize,
    /// The regions that enter, in order, with their starts.
    pub(crate) new: KVec<(usize, Arc<Region>)>,
    /// One tree node for each of `new`.
    nodes: KVec<RBTreeNodeReservation<usize, Arc<Region>>>,
    /// The range the change is about (zapped by the writer).
    pub(crate) start: usize,
    /// See `start`.
    pub(crate) end: usize,
    /// Whether the pages of the old regions inside `[start, end)` die (UNMAP and a
    /// REPLACE: yes; PROTECT: no, the new regions keep them).
    pub(crate) dead: bool,
}

impl Plan {
    /// Pages the new regions span.
    pub(crate) fn new_pages(&self) -> usize {
        self.new.iter().map(|(_, r)| r.npages()).sum()
    }

    /// What the change adds to the set: regions and pages (negative: removes).
    pub(crate) fn growth(&self) -> (isize, isize) {
        (
            self.new.len() as isize - self.leaving as isize,
            self.new_pages() as isize - self.leaving_pages as isize,
        )
    }

    /// Whether the change changes nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.leaving == 0 && self.new.is_empty()
    }
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

    /// The regions overlapping `[start, end)`, as `(start, end, region)`, in order.
    fn overlapping(
        &self,
        start: usize,
        end: usize,
    ) -> impl Iterator<Item = (usize, usize, &Region)> + '_ {
        self.tree
            .iter()
            .map(|(&e, r)| (e - r.npages(), e, &**r))
            .skip_while(move |&(_, e, _)| e <= start)
            .take_while(move |&(s, _, _)| s < end)
    }

    /// First-fit search for `npages` free pages.
    /// A guess, made without planning, of the pages a plan of `change` would take
    /// out or put in (`Plan::lo`/`hi`): a MAP placed anywhere, the first free spot; a
    /// change at a known place, its range widened to the regions it overlaps and then
    /// to their neighbours (a PROTECT may merge with them). A plan made later may
    /// reach further if the tree changed meanwhile: the caller checks.
    pub(crate) fn reach(&self, change: &Change) -> Result<(usize, usize)> {
        let (start, end) = match *change {
            Change::Map(ref r, Placement::Any) => {
                let s = self.find_free(r.npages()).ok_or(ENOMEM)?;
                return Ok((s, s + r.npages()));
            }
            Change::Map(
                ref r,
                Placement::Fixed(s) | Placement::Replace(s) | Placement::Placed(s),
            ) => (s, s.checked_add(r.npages()).ok_or(EINVAL)?),
            Change::Unmap(s, e) | Change::Protect(s, e, _) => (s, e),
        };
        let (mut lo, mut hi) = (start, end);
        for (rs, re, _) in self.overlapping(start, end) {
            (lo, hi) = (lo.min(rs), hi.max(re));
        }
        for (rs, re, _) in self.overlapping(lo.saturating_sub(1), hi.saturating_add(1)) {
            (lo, hi) = (lo.min(rs), hi.max(re));
        }
        Ok((lo, hi))
    }

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

    /// Checks `[start, end)` lies in the arena and is not empty.
    fn check_range(&self, start: usize, end: usize) -> Result {
        if start >= end || end > self.limit {
            return Err(EINVAL);
        }
        Ok(())
    }

    /// Plans `change`: validates it against the tree, and allocates the regions that
    /// will enter it and their tree nodes. Changes nothing; on error nothing is left.
    pub(crate) fn plan(&self, change: Change) -> Result<Plan> {
        let (start, end, dead) = match &change {
            Change::Map(region, placement) => {
                let npages = region.npages();
                let start = match *placement {
                    Placement::Any => self.find_free(npages).ok_or(ENOMEM)?,
                    Placement::Fixed(s) | Placement::Replace(s) | Placement::Placed(s) => s,
                };
                let end = start.checked_add(npages).ok_or(EINVAL)?;
                self.check_range(start, end)?;
                let replace = matches!(placement, Placement::Replace(_));
                if !replace && self.overlapping(start, end).next().is_some() {
                    return Err(EEXIST);
                }
                (start, end, replace)
            }
            Change::Unmap(start, end) | Change::Protect(start, end, _) => {
                self.check_range(*start, *end)?;
                (*start, *end, matches!(change, Change::Unmap(..)))
            }
        };
        let (mut lo, mut hi, mut leaving) = (start, end, 0);
        let (mut covered, mut holes) = (start, false);
        for (rs, re, _) in self.overlapping(start, end) {
            leaving += 1;
            lo = lo.min(rs);
            hi = hi.max(re);
            holes |= rs > covered;
            covered = re;
        }
        holes |= covered < end;
        let new_prot = match change {
            Change::Protect(_, _, _) if holes => return Err(ENOMEM), // As `mprotect`.
            Change::Protect(_, _, prot) => Some(prot),
            _ => None,
        };
        // The pieces of the new set inside [lo, hi), in order (the new region of a MAP
        // aside): the parts of the old regions outside [start, end), and for PROTECT
        // the parts inside it with the new protection.
        // At most one piece per old region plus the two cut-off ends, plus the two
        // neighbours a PROTECT may merge with.
        let mut pieces = KVec::with_capacity(leaving + 4, GFP_KERNEL)?;
        for (rs, re, r) in self.overlapping(start, end) {
            if rs < start {
                pieces.push(Piece::of(r, rs, rs, start, r.prot), GFP_KERNEL)?;
            }
            if let Some(prot) = new_prot {
                let piece = Piece::of(r, rs, rs.max(start), re.min(end), prot);
                pieces.push(piece, GFP_KERNEL)?;
            }
            if re > end {
                pieces.push(Piece::of(r, rs, end, re, r.prot), GFP_KERNEL)?;
            }
        }
        if new_prot.is_some() {
            // Merge with the neighbours the protection now matches, as `mprotect`
            // merges VMAs: they leave too, and come back as part of a merged region.
            let left = lo
                .checked_sub(1)
                .and_then(|p| self.overlapping(p, lo).next());
            if let Some((ls, le, left)) = left {
                let piece = Piece::of(left, ls, ls, le, left.prot);
                if pieces.first().is_some_and(|p| piece.continued_by(p)) {
                    pieces
                        .insert_within_capacity(0, piece)
                        .map_err(|_| ENOMEM)?;
                    lo = ls;
                    leaving += 1;
                }
            }
            if let Some((rs, re, right)) = self.overlapping(hi, hi.saturating_add(1)).next() {
                let piece = Piece::of(right, rs, rs, re, right.prot);
                if pieces.last().is_some_and(|p| p.continued_by(&piece)) {
                    pieces.push(piece, GFP_KERNEL)?;
                    hi = re;
                    leaving += 1;
                }
            }
        }
        let mut new = KVec::with_capacity(pieces.len() + 1, GFP_KERNEL)?;
        let mut merged: Option<Piece<'_>> = None;
        for p in pieces.drain_all() {
            merged = match merged {
                Some(mut m) if m.continued_by(&p) => {
                    m.npages += p.npages;
                    Some(m)
                }
                Some(m) => {
                    new.push((m.start, Region::of_piece(&m)?), GFP_KERNEL)?;
                    Some(p)
                }
                None => Some(p),
            };
        }
        if let Some(m) = merged {
            new.push((m.start, Region::of_piece(&m)?), GFP_KERNEL)?;
        }
        if let Change::Map(region, _) = change {
            // Between the part cut off on its left and the one on its right, if any.
            let at = new
                .iter()
                .position(|(s, _)| *s > start)
                .unwrap_or(new.len());
            new.insert_within_capacity(at, (start, region))
                .map_err(|_| ENOMEM)?;
        }
        let leaving_pages = self.overlapping(lo, hi).map(|(_, _, r)| r.npages()).sum();
        let mut nodes = KVec::with_capacity(new.len(), GFP_KERNEL)?;
        for _ in 0..new.len() {
            nodes.push(RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?, GFP_KERNEL)?;
        }
        Ok(Plan {
            lo,
            hi,
            leaving,
            leaving_pages,
            new,
            nodes,
            start,
            end,
            dead,
        })
    }

    /// Carries `plan` out (planned on this tree, unchanged since): the old regions
    /// inside `[lo, hi)` go to `out` (which must have room for `plan.leaving` of them),
    /// the new ones come in. Nothing allocates, nothing can fail.
    pub(crate) fn commit(&mut self, plan: Plan, out: &mut KVec<(usize, Arc<Region>)>) {
        while let Some(cursor) = self.tree.cursor_lower_bound_mut(&(plan.lo + 1)) {
            let (&e, r) = cursor.current();
            if e - r.npages() >= plan.hi {
                break;
            }
            let (_, node) = cursor.remove_current();
            let (end, region) = node.to_key_value();
            push_reserved(out, (end - region.npages(), region));
        }
        for ((start, region), node) in plan.new.into_iter().zip(plan.nodes) {
            // INVARIANT: the plan's regions lie in `[lo, hi)` inside the arena, do not
            // overlap, and the old regions there just left.
            self.tree
                .insert(node.into_node(start + region.npages(), region));
        }
    }

    /// Adds `region`, already in some other index, at `start` (`ptshard` gathers the
    /// regions of the spans it locked into a tree to plan on). `EINVAL` if it would
    /// not lie inside the arena or would overlap a region here.
    pub(crate) fn adopt(&mut self, start: usize, region: Arc<Region>) -> Result {
        let end = start.checked_add(region.npages()).ok_or(EINVAL)?;
        self.check_range(start, end)?;
        if self.overlapping(start, end).next().is_some() {
            return Err(EINVAL);
        }
        // INVARIANT: inside the arena and overlapping nothing, checked just above.
        self.tree.try_create_and_insert(end, region, GFP_KERNEL)?;
        Ok(())
    }

    /// Removes every region (on close), appending them to `out`.
    pub(crate) fn drain(&mut self, out: &mut KVec<(usize, Arc<Region>)>) -> Result {
        out.reserve(self.len(), GFP_KERNEL)?;
        while let Some(cursor) = self.tree.cursor_front_mut() {
            let (_, node) = cursor.remove_current();
            let (end, region) = node.to_key_value();
            push_reserved(out, (end - region.npages(), region));
        }
        Ok(())
    }
}

#[kunit_tests(vmalab_region_tree)]
mod tests {
    use super::*;

    type Removed = KVec<(usize, Arc<Region>)>;

    /// Commits `plan`; returns the regions that left.
    fn commit(t: &mut RegionTree, plan: Plan) -> Result<Removed> {
        let mut out = KVec::with_capacity(plan.leaving, GFP_KERNEL)?;
        t.commit(plan, &mut out);
        Ok(out)
    }

    /// Plans and commits `change`; returns the regions that left.
    fn apply(t: &mut RegionTree, change: Change) -> Result<Removed> {
        let plan = t.plan(change)?;
        commit(t, plan)
    }

    /// MAPs a fresh region of `n` pages at `placement`; returns where it went.
    fn map(t: &mut RegionTree, placement: Placement, n: usize) -> Result<usize> {
        let r = Region::new(n, Backing::Zero)?;
        apply(t, Change::Map(r.clone(), placement))?;
        t.iter()
            .find(|(_, x)| Arc::ptr_eq(x, &r))
            .map(|(s, _)| s)
            .ok_or(EINVAL)
    }

    /// The tree as `(start, npages, first slot, prot)`.
    fn layout(t: &RegionTree) -> Result<KVec<(usize, usize, usize, Prot)>> {
        let mut v = KVec::new();
        for (s, r) in t.iter() {
            v.push((s, r.npages(), r.first, r.prot), GFP_KERNEL)?;
        }
        Ok(v)
    }

    fn same_pages(t: &RegionTree, a: usize, b: usize) -> bool {
        let get = |p| t.with_region(p, |_, r| r.pages.clone());
        match (get(a), get(b)) {
            (Some(x), Some(y)) => Arc::ptr_eq(&x, &y),
            _ => false,
        }
    }

    const RW: Prot = Prot::ReadWrite;
    const RO: Prot = Prot::ReadOnly;

    #[test]
    fn first_fit_fills_gaps() -> Result {
        let mut t = RegionTree::new(16);
        for want in [0, 4, 8] {
            assert_eq!(map(&mut t, Placement::Any, 4)?, want);
        }
        assert_eq!(apply(&mut t, Change::Unmap(4, 8))?.len(), 1);
        assert_eq!(map(&mut t, Placement::Any, 2)?, 4);
        assert_eq!(t.len(), 3);
        Ok(())
    }

    #[test]
    fn lookup_finds_containing_region() -> Result {
        let mut t = RegionTree::new(64);
        map(&mut t, Placement::Fixed(8), 4)?;
        map(&mut t, Placement::Fixed(20), 1)?;
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
    fn bad_changes_are_refused_and_change_nothing() -> Result {
        let mut t = RegionTree::new(16);
        map(&mut t, Placement::Fixed(4), 4)?;
        for (p, n, want) in [
            (Placement::Fixed(6), 4, EEXIST),
            (Placement::Fixed(0), 5, EEXIST),
            (Placement::Fixed(14), 4, EINVAL),
            (Placement::Fixed(usize::MAX), 2, EINVAL),
            (Placement::Replace(14), 4, EINVAL),
            (Placement::Any, 17, ENOMEM),
        ] {
            assert_eq!(map(&mut t, p, n).err(), Some(want));
        }
        for (change, want) in [
            (Change::Unmap(3, 3), EINVAL),
            (Change::Unmap(8, 17), EINVAL),
            (Change::Protect(4, 9, RO), ENOMEM), // page 8 is in no region
            (Change::Protect(2, 5, RO), ENOMEM),
            (Change::Protect(0, 0, RO), EINVAL),
        ] {
            assert_eq!(apply(&mut t, change).err(), Some(want));
        }
        assert_eq!(&layout(&t)?[..], &[(4, 4, 0, RW)]);
        Ok(())
    }

    #[test]
    fn unmap_cuts_and_keeps_the_outside_parts() -> Result {
        let mut t = RegionTree::new(64);
        map(&mut t, Placement::Fixed(0), 16)?;
        map(&mut t, Placement::Fixed(20), 4)?;
        // A hole in the middle: the parts keep their slots (same pages).
        let gone = apply(&mut t, Change::Unmap(4, 6))?;
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, 0);
        assert_eq!(
            &layout(&t)?[..],
            &[(0, 4, 0, RW), (6, 10, 6, RW), (20, 4, 0, RW)]
        );
        assert!(same_pages(&t, 0, 6));
        // Across a region's end, a gap and a whole region.
        assert_eq!(apply(&mut t, Change::Unmap(14, 30))?.len(), 2);
        assert_eq!(&layout(&t)?[..], &[(0, 4, 0, RW), (6, 8, 6, RW)]);
        // A range with no region: nothing changes, nothing leaves (like munmap).
        let plan = t.plan(Change::Unmap(30, 40))?;
        assert!(plan.is_empty());
        assert_eq!(apply(&mut t, Change::Unmap(30, 40))?.len(), 0);
        // The front page of a region.
        apply(&mut t, Change::Unmap(6, 7))?;
        assert_eq!(&layout(&t)?[..], &[(0, 4, 0, RW), (7, 7, 7, RW)]);
        Ok(())
    }

    #[test]
    fn replace_cuts_what_it_covers() -> Result {
        let mut t = RegionTree::new(64);
        map(&mut t, Placement::Fixed(0), 8)?;
        map(&mut t, Placement::Fixed(8), 8)?;
        let r = Region::new(4, Backing::Zero)?;
        let plan = t.plan(Change::Map(r, Placement::Replace(6)))?;
        assert_eq!((plan.lo, plan.hi, plan.leaving), (0, 16, 2));
        assert_eq!((plan.start, plan.end, plan.dead), (6, 10, true));
        commit(&mut t, plan)?;
        assert_eq!(
            &layout(&t)?[..],
            &[(0, 6, 0, RW), (6, 4, 0, RW), (10, 6, 2, RW)]
        );
        assert!(!same_pages(&t, 0, 6));
        assert!(!same_pages(&t, 6, 10));
        // Inside one region: three parts, the outer two share the old pages.
        let r = Region::new(2, Backing::Zero)?;
        apply(&mut t, Change::Map(r, Placement::Replace(12)))?;
        assert_eq!(
            &layout(&t)?[..],
            &[
                (0, 6, 0, RW),
                (6, 4, 0, RW),
                (10, 2, 2, RW),
                (12, 2, 0, RW),
                (14, 2, 6, RW)
            ]
        );
        assert!(same_pages(&t, 10, 14));
        Ok(())
    }

    #[test]
    fn protect_splits_and_merges_back() -> Result {
        let mut t = RegionTree::new(64);
        map(&mut t, Placement::Fixed(0), 16)?;
        map(&mut t, Placement::Fixed(16), 4)?;
        // The middle of a region: three parts over the same pages.
        let plan = t.plan(Change::Protect(4, 8, RO))?;
        assert!(!plan.dead);
        commit(&mut t, plan)?;
        assert_eq!(
            &layout(&t)?[..],
            &[(0, 4, 0, RW), (4, 4, 4, RO), (8, 8, 8, RW), (16, 4, 0, RW)]
        );
        assert!(same_pages(&t, 0, 4) && same_pages(&t, 4, 8));
        // Overlapping the RO part and its right neighbour: merges with the RO part.
        apply(&mut t, Change::Protect(6, 10, RO))?;
        assert_eq!(
            &layout(&t)?[..],
            &[
                (0, 4, 0, RW),
                (4, 6, 4, RO),
                (10, 6, 10, RW),
                (16, 4, 0, RW)
            ]
        );
        // Back to RW over the RO part: everything over the first pages merges into
        // one region again; the region at 16 has other pages and stays apart.
        let plan = t.plan(Change::Protect(4, 10, RW))?;
        assert_eq!((plan.lo, plan.hi, plan.leaving), (0, 16, 3));
        commit(&mut t, plan)?;
        assert_eq!(&layout(&t)?[..], &[(0, 16, 0, RW), (16, 4, 0, RW)]);
        // Across two regions with different pages: split, not merged.
        apply(&mut t, Change::Protect(12, 18, RO))?;
        assert_eq!(
            &layout(&t)?[..],
            &[
                (0, 12, 0, RW),
                (12, 4, 12, RO),
                (16, 2, 0, RO),
                (18, 2, 2, RW)
            ]
        );
        // The same protection again changes nothing visible.
        apply(&mut t, Change::Protect(12, 18, RO))?;
        assert_eq!(
            &layout(&t)?[..],
            &[
                (0, 12, 0, RW),
                (12, 4, 12, RO),
                (16, 2, 0, RO),
                (18, 2, 2, RW)
            ]
        );
        Ok(())
    }

    /// `reach` (the `range` engine's guess of what a plan will touch) covers what the
    /// plan then takes out and puts in, merges with neighbours included.
    #[test]
    fn reach_covers_the_plan() -> Result {
        // [0, 8) RW and [8, 16) RO over the same slots, and [20, 24).
        let mut t = RegionTree::new(64);
        map(&mut t, Placement::Fixed(0), 16)?;
        map(&mut t, Placement::Fixed(20), 4)?;
        apply(&mut t, Change::Protect(8, 16, RO))?;
        let covers = |t: &RegionTree, change: Change| -> Result<bool> {
            let (lo, hi) = t.reach(&change)?;
            let plan = t.plan(change)?;
            Ok(plan.is_empty() || (lo <= plan.lo && plan.hi <= hi))
        };
        // Inside one region: the whole region, and its neighbours.
        assert_eq!(t.reach(&Change::Unmap(2, 3))?, (0, 16));
        assert!(covers(&t, Change::Unmap(2, 3))?);
        // PROTECT RO next to the RO region merges with it: its neighbour counts.
        assert!(covers(&t, Change::Protect(6, 8, RO))?);
        let plan = t.plan(Change::Protect(6, 8, RO))?;
        assert_eq!((plan.lo, plan.hi), (0, 16));
        // A MAP placed anywhere: the first free spot, which the plan picks.
        let r = Region::new(4, Backing::Zero)?;
        assert_eq!(t.reach(&Change::Map(r.clone(), Placement::Any))?, (16, 20));
        assert!(covers(&t, Change::Map(r, Placement::Any))?);
        // A REPLACE across two regions and a gap.
        let r = Region::new(10, Backing::Zero)?;
        assert!(covers(&t, Change::Map(r, Placement::Replace(12)))?);
        // Nothing there: the range itself.
        assert_eq!(t.reach(&Change::Unmap(40, 44))?, (40, 44));
        Ok(())
    }

    #[test]
    fn unmap_after_protect_keeps_protections() -> Result {
        let mut t = RegionTree::new(32);
        map(&mut t, Placement::Fixed(0), 12)?;
        apply(&mut t, Change::Protect(4, 8, RO))?;
        apply(&mut t, Change::Unmap(2, 6))?;
        assert_eq!(
            &layout(&t)?[..],
            &[(0, 2, 0, RW), (6, 2, 6, RO), (8, 4, 8, RW)]
        );
        Ok(())
    }
}
