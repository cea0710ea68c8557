// SPDX-License-Identifier: GPL-2.0

//! Engine `ptshard`: Piggin's page-table-sharded region trees (seed 000) — "why not put
//! vma extents in the bottom level page tables, like we do with the page table lock?
//! We can use the page table locks to protect each tree".
//!
//! The arena is cut into *spans* of [`SPAN_PAGES`] pages, the 2 MiB one PTE table
//! maps. Each span that ever held a region has a [`Span`]: the regions overlapping it
//! (whole, with their starts: a region crossing spans is in each) in a small sorted
//! vector, under the span's own spinlock. The page-table lock itself is not reachable
//! from a module (a PTE table's `struct ptdesc` has no room for our tree, and the
//! kernel may free the table), so the span lock stands in for it with its cache
//! profile: one lock per 2 MiB, on its own cache line, written only by faults in that
//! 2 MiB and by writers changing regions there.
//!
//! Spans are found by their index in an RCU-mode maple tree ([`RcuRangeMap`]), not an
//! array: an arena reaches 2^26 spans. Writers create a span before its first region
//! goes in; spans are never removed while the file is open (an empty one costs its
//! record, about 200 bytes, until close).
//!
//! Readers:
//! - `map_pages` and `->fault` find their span under `rcu_read_lock()` (no shared
//!   write), take its lock — the one write, to a line shared only with faults in the
//!   same 2 MiB (counted in `span_locks`, not `shared_writes`) — find the region,
//!   and install the PTE under it. A writer changes the span's regions under the same
//!   lock, so a fault that found a region installs before that region leaves.
//! - A fault that must sleep (the slow backing, a reclaiming allocation, no PTE
//!   table) takes a reference on the region (2 writes to the region's refcount,
//!   counted in `shared_writes`), drops the span lock, prepares the page (or the
//!   table), then walks again: span, lock, region — and installs only if the region
//!   is still the one it held (`Arc::ptr_eq`; the reference rules out a new region at
//!   the same address). Otherwise it counts a failed check (`fault_retry`) and goes on
//!   with what it found. The prepared page enters the region's slots only under the
//!   lock, confirmed: a fault whose region left never stores into it, so a writer's
//!   punch frees everything and nothing is left for a deferred reclaim.
//!
//! Writers:
//! - Placement is a separate structure ([`FreeSpace`], one global extent tree under
//!   `free`), decoupled from the regions: a MAP placed anywhere is placed by
//!   [`Engine::place`] before its publish, under `Space`'s retiring-list lock, where
//!   no writer is still retiring regions, and its range is claimed there at once
//!   (`protocol/retire.rs`, `publish_placed`) — so it publishes like a MAP at a fixed
//!   address, beside writers elsewhere, instead of with the list locked across its
//!   publish. A MAP at a fixed address reserves its range in the tree (`EEXIST` if any
//!   of it is taken), a REPLACE marks its range taken and an UNMAP frees its range,
//!   both after their publish; writers whose ranges overlap do not publish at once
//!   (the retiring list), so the tree never sees two of them in one range.
//! - `ptshard+pcpu` (`VMALAB_CONFIG_CPU_CACHE`), Piggin's "per-cpu or per-thread
//!   caches": each CPU keeps a chunk of [`CHUNK_PAGES`] free pages reserved in the
//!   tree and places MAPs of up to a quarter of it there, under the chunk's own mutex
//!   — not the tree's, and in spans of its own, so that writers on different CPUs
//!   neither share the tree's lock nor wait for each other's spans. A MAP at a fixed
//!   address, a REPLACE or an UNMAP first takes back the chunks it overlaps (`steal`:
//!   every CPU's chunk mutex, O(CPUs) per such writer); when the tree has no room
//!   left, placement takes back every chunk and looks again.
//! - A writer then locks, for write, the spans its change touches in `writers` (a
//!   [`RangeLock`] over span indices): the spans of its range and its neighbours,
//!   widened to the regions it cuts — which may reach into spans beyond its range —
//!   and retried with the wider set if a plan reaches further. Writers on disjoint
//!   spans go on in parallel.
//! - Under those, it gathers the regions of its spans into a private [`RegionTree`],
//!   plans the change there (the same splits and merges as every engine), creates the
//!   spans its new regions need and builds each touched span's new vector (all the
//!   allocation), charges the budget, and then swaps the vectors in, span by span in
//!   address order, each under its span lock. No fault sees a gap: at each page it
//!   finds the old region or the new one.
//! - Why not one lock per span held across the whole change, as Piggin would take page
//!   table locks: a change may touch 2^26 spans, and a task can hold neither that many
//!   spinlocks (the preemption count has 8 bits) nor that many locks lockdep tracks
//!   (48); the range lock holds any number of spans as one lock.
//! - No quiesce: every install happens under the span lock of its page, before the
//!   writer's swap there or after it (then with the new region). `Space` zaps and
//!   frees after the publish, as for `rwsem`.
//!
//! Lock order: `mmap_lock` / per-VMA lock → RCU read section → span lock → PTE lock
//! (faults); `Space`'s retiring list → a CPU's chunk → `free` (placement); a chunk →
//! `free` (`steal`, before a writer takes its spans); `writers` (a span range, held
//! for write) → `free` / the maple tree's internal lock / one span lock at a time
//! (writers). Nothing waits for `writers` while holding `free` or a chunk.

#![deny(unsafe_code)]

use crate::{
    backing::Backing,
    engine::{Budget, Engine, Unpublished},
    free_space::{FreeSpace, Spare},
    range_lock::RangeLock,
    rcu_tree::{RcuRangeMap, Wait},
    region::{Change, Placement, Plan, Prot, Region, RegionTree, Speculative},
    stats::Stats,
    uapi,
    vm_ops::{Fault, FaultAround, FaultOutcome},
};
use kernel::{
    new_mutex, new_spinlock,
    page::Page,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        rcu, Arc, Mutex, SpinLock,
    },
    time::{delay::fsleep, Delta},
};

/// Pages in a span: those one PTE table maps (x86-64's `PTRS_PER_PTE`, 2 MiB).
pub(crate) const SPAN_PAGES: usize = 512;

/// Shared-line writes of a slow fault's region reference (increment, decrement).
const REF_WRITES: u64 = 2;

/// How often a fault walks again after preparing what it needed before it gives up
/// and lets the access fault again (each walk after the first follows a sleep).
const MAX_WALKS: usize = 4;

/// The span holding page `pgoff`.
#[inline]
fn span_of(pgoff: usize) -> usize {
    pgoff / SPAN_PAGES
}

/// One region in a span's vector.
struct Extent {
    /// The region's first page (in the arena).
    start: usize,
    /// One past its last page.
    end: usize,
    region: Arc<Region>,
}

/// The regions overlapping one span.
///
/// # Invariants
///
/// Sorted by `start`, not overlapping; each overlaps the span.
type Extents = KVec<Extent>;

/// The extent covering `pgoff`, if any.
#[inline]
fn find(extents: &Extents, pgoff: usize) -> Option<&Extent> {
    let i = extents.partition_point(|e| e.end <= pgoff);
    extents.get(i).filter(|e| e.start <= pgoff)
}

/// One span: its index and its regions under its lock, alone on its cache line(s).
#[pin_data]
#[repr(align(64))]
struct Span {
    index: usize,
    #[pin]
    extents: SpinLock<Extents>,
}

impl Span {
    fn new(index: usize) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                index,
                extents <- new_spinlock!(KVec::new(), "vmalab_ptshard_span"),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// Copies the span's extents (the caller holds the span for write in `writers`,
    /// so they cannot change meanwhile): `(start, region)` of those `keep` accepts.
    fn snapshot(&self, keep: impl Fn(&Extent) -> bool) -> Result<KVec<(usize, Arc<Region>)>> {
        let n = self.extents.lock().len();
        let mut out = KVec::with_capacity(n, GFP_KERNEL)?;
        for e in self.extents.lock().iter().filter(|e| keep(e)) {
            if out
                .push_within_capacity((e.start, e.region.clone()))
                .is_err()
            {
                return Err(EINVAL); // Changed under a writer's lock: a bug.
            }
        }
        Ok(out)
    }
}

/// The page-table-sharded engine.
#[pin_data]
pub(crate) struct PtShardEngine {
    /// Span index → span, read by faults under RCU.
    #[pin]
    spans: RcuRangeMap<Arc<Span>>,
    /// Writers' spans (indices), held for write while they change them.
    #[pin]
    writers: RangeLock,
    /// Placement: the arena's free space.
    #[pin]
    free: Mutex<FreeSpace>,
    arena_pages: usize,
    /// Regions, extents (region-span pairs) and spans, and the regions' bookkeeping
    /// bytes: kept by writers for `usage`.
    regions: Atomic<isize>,
    extents: Atomic<isize>,
    nspans: Atomic<isize>,
    region_bytes: Atomic<isize>,
    /// Per-CPU chunks of free space (`VMALAB_CONFIG_CPU_CACHE`; empty without it),
    /// indexed by CPU id, each reserved in `free` as a whole.
    caches: KVec<Pin<KBox<Mutex<Chunk>>>>,
    /// `VMALAB_MUTANT_*` bits armed by the test hook (0 in normal use).
    mutants: Atomic<u32>,
}

/// Pages in a per-CPU chunk of free space (`ptshard+pcpu`): four spans. MAPs of up to
/// a quarter of it are placed there.
const CHUNK_PAGES: usize = 4 * SPAN_PAGES;

/// A CPU's chunk: `[start, end)` still free, reserved in the global tree.
type Chunk = Option<(usize, usize)>;

/// What a fault's walk came to.
enum Walk {
    Done(FaultOutcome),
    /// Sleep for this (holding the region), then walk again.
    Page(Backing, Arc<Region>, usize),
    Table(Arc<Region>),
}

impl PtShardEngine {
    /// An engine with no regions for an arena of `arena_pages` pages; `cpu_cache`:
    /// with per-CPU chunks of free space.
    pub(crate) fn new(arena_pages: usize, cpu_cache: bool) -> Result<impl PinInit<Self>> {
        let free = FreeSpace::new(arena_pages)?;
        let mut caches = KVec::new();
        if cpu_cache {
            for _ in 0..kernel::cpu::nr_cpu_ids() {
                let chunk = KBox::pin_init(new_mutex!(None, "vmalab_ptshard_chunk"), GFP_KERNEL)?;
                caches.push(chunk, GFP_KERNEL)?;
            }
        }
        Ok(pin_init!(Self {
            spans <- RcuRangeMap::new(),
            writers <- RangeLock::new(),
            free <- new_mutex!(free, "vmalab_ptshard_free"),
            arena_pages,
            regions: Atomic::new(0),
            extents: Atomic::new(0),
            nspans: Atomic::new(0),
            region_bytes: Atomic::new(0),
            caches,
            mutants: Atomic::new(0),
        }))
    }

    /// Places `npages` in this CPU's chunk, refilling it from the global tree when it
    /// runs short; `None` if the global tree has no chunk left.
    fn place_cached(
        &self,
        npages: usize,
        busy: &dyn Fn(usize, usize) -> Option<usize>,
    ) -> Result<Option<usize>> {
        // The CPU may change under us: then we use another CPU's chunk, under its lock.
        let cpu = kernel::cpu::CpuId::current().as_u32() as usize;
        let Some(slot) = self.caches.get(cpu) else {
            return Ok(None); // Not a possible CPU's id: a bug; the global tree places.
        };
        let mut chunk = slot.lock();
        for _ in 0..2 {
            if let Some((a, b)) = *chunk {
                if b - a >= npages && busy(a, a + npages).is_none() {
                    *chunk = (a + npages < b).then_some((a + npages, b));
                    return Ok(Some(a));
                }
            }
            // Too small, or a writer retires regions at its start: the rest goes back,
            // a fresh chunk comes (one release, one reservation: three nodes).
            let mut spare = Spare::new(3)?;
            let mut free = self.free.lock();
            if let Some((a, b)) = chunk.take() {
                let _ = free.release(a, b, &mut spare);
            }
            match free.reserve_any(CHUNK_PAGES, busy, &mut spare) {
                Ok(s) => *chunk = Some((s, s + CHUNK_PAGES)),
                Err(_) => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Hands the per-CPU chunks that overlap `[start, end)` back to the global tree (a
    /// MAP at a fixed address, a REPLACE or an UNMAP there; every chunk when the tree
    /// ran out).
    fn steal(&self, start: usize, end: usize) -> Result {
        for slot in self.caches.iter() {
            let mut chunk = slot.lock();
            if let Some((a, b)) = *chunk {
                if a < end && start < b {
                    let mut spare = Spare::new(1)?;
                    let _ = self.free.lock().release(a, b, &mut spare);
                    *chunk = None;
                }
            }
        }
        Ok(())
    }

    /// Gives back what `publish` reserved for a MAP that failed before its publish.
    fn unreserve(&self, reserved: Option<(usize, usize)>) {
        if let Some((s, e)) = reserved {
            // Out of memory for even one node: the release still reuses the nodes of
            // the free extents it merges with; if there are none, the range's space
            // stays reserved (lost to placement until close), never memory.
            let mut spare = Spare::new(1).unwrap_or_default();
            let _ = self.free.lock().release(s, e, &mut spare);
        }
    }

    /// The span `index` (a writer's; it holds `index` for write).
    fn span(&self, index: usize) -> Option<Arc<Span>> {
        let guard = rcu::read_lock();
        self.spans.load(index, &guard).map(|n| (**n).clone())
    }

    /// The existing spans in `[lo, hi)`, in order (a writer's).
    fn spans_in(&self, lo: usize, hi: usize) -> Result<KVec<Arc<Span>>> {
        let mut out = KVec::new();
        let mut index = lo;
        loop {
            let span = {
                let guard = rcu::read_lock();
                match self.spans.find(&mut index, &guard) {
                    Some(n) if n.index < hi => (**n).clone(),
                    _ => return Ok(out),
                }
            };
            out.push(span, GFP_KERNEL)?;
            if index == 0 {
                return Ok(out); // Past the last index.
            }
        }
    }

    /// Creates span `index` unless it exists (the caller holds it for write).
    fn ensure_span(&self, index: usize) -> Result {
        if self.span(index).is_some() {
            return Ok(());
        }
        let span = Span::new(index)?;
        let mut entry = KVec::with_capacity(1, GFP_KERNEL)?;
        entry.push((index, index, span), GFP_KERNEL)?;
        let mut retired = KVec::new();
        self.spans.replace(index, index + 1, entry, &mut retired)?;
        // Nothing was there (checked above, under our hold of `index`); if something
        // was (a bug), free it only after the readers.
        if !retired.is_empty() {
            kernel::warn_on!(true);
            self.spans.reclaim(retired, Wait::Normal, drop);
        }
        self.nspans.add(1, Relaxed);
        Ok(())
    }

    /// The regions of the spans in `[lo, hi)`, gathered into a tree to plan on.
    fn gather(&self, lo: usize, hi: usize) -> Result<RegionTree> {
        let mut tree = RegionTree::new(self.arena_pages);
        for span in self.spans_in(lo, hi)? {
            // Each region once: from the first of these spans it overlaps.
            let first = |e: &Extent| span_of(e.start.max(lo * SPAN_PAGES)) == span.index;
            for (start, region) in span.snapshot(first)? {
                tree.adopt(start, region)?;
            }
        }
        Ok(tree)
    }

    /// The slow fault's step when it cannot finish under the span lock.
    fn walk(
        &self,
        f: &Fault<'_>,
        stats: &Stats,
        held: Option<&Arc<Region>>,
        prepared: &mut Option<Page>,
    ) -> Walk {
        let pgoff = f.pgoff();
        let guard = rcu::read_lock();
        let Some(span) = self.spans.load(span_of(pgoff), &guard) else {
            if held.is_some() {
                stats.inc(uapi::VMALAB_CTR_FAULT_RETRY);
            }
            return Walk::Done(FaultOutcome::SigBus);
        };
        let extents = span.extents.lock();
        stats.inc(uapi::VMALAB_CTR_SPAN_LOCKS);
        let found = find(&extents, pgoff);
        if let Some(held) = held {
            // Piggin's confirmation: the region we slept for is still the one here.
            if !found.is_some_and(|e| Arc::ptr_eq(&e.region, held)) {
                stats.inc(uapi::VMALAB_CTR_FAULT_RETRY);
            }
        }
        let Some(e) = found else {
            return Walk::Done(FaultOutcome::SigBus);
        };
        // The span lock excludes every writer that could take the region out: no
        // check needed before the install.
        match e
            .region
            .fault_speculative(e.start, f, stats, prepared, || true)
        {
            Speculative::Done(out) => Walk::Done(out),
            Speculative::NeedPage(backing) => Walk::Page(backing, e.region.clone(), e.start),
            Speculative::NeedTable => Walk::Table(e.region.clone()),
        }
    }

    /// Writer: plans `change` on the regions of the spans it holds, widening them until
    /// the plan fits, and publishes it.
    fn publish_spans(
        &self,
        change: Change,
        budget: &dyn Budget,
        stats: &Stats,
    ) -> Result<Unpublished> {
        let (start, end) = match change {
            Change::Map(
                ref r,
                Placement::Fixed(s) | Placement::Replace(s) | Placement::Placed(s),
            ) => (s, s.checked_add(r.npages()).ok_or(EINVAL)?),
            Change::Unmap(s, e) | Change::Protect(s, e, _) => (s, e),
            Change::Map(_, Placement::Any) => return Err(EINVAL), // Placed by the caller.
        };
        if start >= end || end > self.arena_pages {
            return Err(EINVAL);
        }
        // Pages whose spans we hold: the range and its neighbours (a PROTECT may
        // merge with them).
        let (mut lo, mut hi) = (start.saturating_sub(1), (end + 1).min(self.arena_pages));
        loop {
            let (slo, shi) = (span_of(lo), span_of(hi - 1) + 1);
            let spans = self.writers.write(slo, shi)?;
            if spans.waited() {
                stats.inc(uapi::VMALAB_CTR_WRITER_WAITS);
            }
            let mut tree = self.gather(slo, shi)?;
            let plan = tree.plan(change.clone())?;
            let (need_lo, need_hi) = (
                plan.lo.saturating_sub(1),
                (plan.hi + 1).min(self.arena_pages),
            );
            if !plan.is_empty() && (need_lo < slo * SPAN_PAGES || need_hi > shi * SPAN_PAGES) {
                // It cuts a region reaching beyond the spans held: hold those too.
                (lo, hi) = (lo.min(need_lo), hi.max(need_hi));
                continue;
            }
            return self.publish_plan(&mut tree, plan, budget);
        }
    }

    /// Writer, holding the spans of `plan` for write: carries it out on them.
    fn publish_plan(
        &self,
        tree: &mut RegionTree,
        plan: Plan,
        budget: &dyn Budget,
    ) -> Result<Unpublished> {
        let mut out = Unpublished::of(&plan)?;
        if plan.is_empty() {
            return Ok(out);
        }
        for (s, r) in plan.new.iter() {
            for index in span_of(*s)..=span_of(s + r.npages() - 1) {
                self.ensure_span(index)?;
            }
        }
        // Each touched span's new vector: its regions outside [lo, hi) and the new
        // ones overlapping it, in order.
        let spans = self.spans_in(span_of(plan.lo), span_of(plan.hi - 1) + 1)?;
        let mut updates = KVec::with_capacity(spans.len(), GFP_KERNEL)?;
        let mut extents_delta: isize = 0;
        for span in spans {
            let (a, b) = (span.index * SPAN_PAGES, (span.index + 1) * SPAN_PAGES);
            let kept = span.snapshot(|e| e.end <= plan.lo || e.start >= plan.hi)?;
            let old_len = span.extents.lock().len();
            let new = plan
                .new
                .iter()
                .filter(|(s, r)| *s < b && s + r.npages() > a);
            let mut v = KVec::with_capacity(kept.len() + new.clone().count(), GFP_KERNEL)?;
            let before = kept.iter().take_while(|(s, _)| *s < plan.lo).count();
            let mut kept = kept.into_iter();
            let mut push = |start: usize, region: Arc<Region>| {
                let end = start + region.npages();
                // Room was made for all of them just above.
                let _ = v.push_within_capacity(Extent { start, end, region });
            };
            for (s, r) in kept.by_ref().take(before) {
                push(s, r);
            }
            for (s, r) in new {
                push(*s, r.clone());
            }
            for (s, r) in kept {
                push(s, r);
            }
            extents_delta += v.len() as isize - old_len as isize;
            updates.push((span, v), GFP_KERNEL)?;
        }
        let (regions, _) = plan.growth();
        let bytes = plan
            .new
            .iter()
            .map(|(_, r)| r.meta_bytes() as isize)
            .sum::<isize>()
            - tree
                .iter()
                .filter(|(s, r)| *s >= plan.lo && s + r.npages() <= plan.hi)
                .map(|(_, r)| r.meta_bytes() as isize)
                .sum::<isize>();
        budget.charge(&plan)?;
        // Nothing after this point can fail. The swaps, in address order, one span
        // lock at a time.
        for (span, v) in updates {
            let old = core::mem::replace(&mut *span.extents.lock(), v);
            // The regions that left are still referenced by `tree` (then `out`): this
            // drops only the vector and its clones.
            drop(old);
        }
        tree.commit(plan, &mut out.regions);
        self.regions.add(regions, Relaxed);
        self.extents.add(extents_delta, Relaxed);
        self.region_bytes.add(bytes, Relaxed);
        Ok(out)
    }
}

impl Engine for PtShardEngine {
    fn id(&self) -> u32 {
        uapi::VMALAB_ENGINE_PTSHARD
    }

    fn map_pages(&self, f: &FaultAround<'_>, stats: &Stats) -> bool {
        // `do_fault_around` already holds rcu_read_lock; nesting costs a per-task count.
        let guard = rcu::read_lock();
        let Some(span) = self.spans.load(span_of(f.pgoff()), &guard) else {
            return false;
        };
        let extents = span.extents.lock();
        stats.inc(uapi::VMALAB_CTR_SPAN_LOCKS);
        // The fault-around window lies in one PTE table, hence in this span.
        match find(&extents, f.pgoff()) {
            Some(e) => e.region.map_present(e.start, f, stats, || true),
            None => false,
        }
    }

    fn fault(&self, f: &Fault<'_>, stats: &Stats) -> FaultOutcome {
        let mut prepared = None;
        let mut held: Option<Arc<Region>> = None;
        for walk in 0..MAX_WALKS {
            let step = self.walk(f, stats, held.as_ref(), &mut prepared);
            // Dropped outside the span lock and the read section: it may be the last
            // reference (the region left meanwhile), and freeing it may sleep.
            drop(held.take());
            match step {
                Walk::Done(FaultOutcome::Mapped) if walk > 0 => return FaultOutcome::MappedSlow,
                Walk::Done(out) => return out,
                Walk::Page(backing, region, start) => {
                    stats.add(uapi::VMALAB_CTR_SHARED_WRITES, REF_WRITES);
                    if self.mutants.load(Relaxed) & uapi::VMALAB_MUTANT_UNLOCKED_INSTALL != 0 {
                        // Mutant: install through the held region, unconfirmed.
                        return region.fault(start, f, stats, || true);
                    }
                    match backing.prepare(stats) {
                        Ok(page) => prepared = Some(page),
                        Err(_) => return FaultOutcome::Oom,
                    }
                    held = Some(region);
                }
                Walk::Table(region) => {
                    stats.add(uapi::VMALAB_CTR_SHARED_WRITES, REF_WRITES);
                    if f.with_ptes_alloc(|_| ()).is_err() {
                        return FaultOutcome::Oom;
                    }
                    held = Some(region);
                }
            }
        }
        FaultOutcome::Retry
    }

    fn prot_at(&self, pgoff: usize, stats: &Stats) -> Option<Prot> {
        let guard = rcu::read_lock();
        let span = self.spans.load(span_of(pgoff), &guard)?;
        let extents = span.extents.lock();
        stats.inc(uapi::VMALAB_CTR_SPAN_LOCKS);
        find(&extents, pgoff).map(|e| e.region.prot())
    }

    fn publish(&self, change: Change, budget: &dyn Budget, stats: &Stats) -> Result<Unpublished> {
        // Free space first (its own lock, short). A MAP placed anywhere was reserved
        // by `place`; one at a fixed address reserves its range now (`EEXIST` if any
        // of it is taken). Per-CPU chunks give up what a fixed range, a REPLACE or an
        // UNMAP covers first.
        let reserved = match change {
            Change::Map(ref r, Placement::Placed(s)) => Some((s, s + r.npages())),
            Change::Map(ref r, Placement::Fixed(s)) => {
                let e = s.checked_add(r.npages()).ok_or(EINVAL)?;
                self.steal(s, e)?;
                let mut spare = Spare::new(2)?;
                self.free.lock().reserve(s, e, &mut spare)?;
                Some((s, e))
            }
            Change::Map(ref r, Placement::Replace(s)) => {
                self.steal(s, s.saturating_add(r.npages()))?;
                None
            }
            // Its release must not free what a chunk holds (an UNMAP may cover free
            // pages, and a chunk's are free to the user).
            Change::Unmap(s, e) => {
                self.steal(s, e)?;
                None
            }
            Change::Map(_, Placement::Any) => return Err(EINVAL), // `places()`: placed first.
            _ => None,
        };
        // What follows the publish cannot fail: its nodes first. A failed MAP frees its
        // range (one node); an UNMAP frees its range, a REPLACE takes it (two).
        let mut spare = match Spare::new(2) {
            Ok(spare) => spare,
            Err(e) => {
                self.unreserve(reserved);
                return Err(e);
            }
        };
        // From here on, a failure only gives the reservation back.
        match self.publish_spans(change.clone(), budget, stats) {
            Ok(out) => {
                // Checked by the publish: ranges inside the arena.
                let _ = match change {
                    Change::Unmap(s, e) => self.free.lock().release(s, e, &mut spare),
                    Change::Map(_, Placement::Replace(_)) => {
                        self.free.lock().take(out.start, out.end, &mut spare)
                    }
                    _ => Ok(()),
                };
                if matches!(change, Change::Unmap(..))
                    && self.mutants.load(Relaxed) & uapi::VMALAB_MUTANT_SKIP_RETIRE_WAIT != 0
                {
                    // Test only: the mutant lets placement ignore retiring ranges; hold
                    // the window between this release and the zap open for 1 ms so
                    // that its negative control hits it on every kernel (without: 0
                    // hits in 1465 cycles on the debug kernel, 1 in 170-571 on the
                    // default one).
                    fsleep(Delta::from_millis(1));
                }
                Ok(out)
            }
            Err(e) => {
                // Nothing else reserved or freed inside the range meanwhile: writers
                // whose ranges overlap do not publish at once (`Space`), and placement
                // avoids every claimed range.
                if let Some((s, end)) = reserved {
                    let _ = self.free.lock().release(s, end, &mut spare);
                }
                Err(e)
            }
        }
    }

    fn places(&self) -> bool {
        true
    }

    fn place(&self, npages: usize, busy: &dyn Fn(usize, usize) -> Option<usize>) -> Result<usize> {
        if !self.caches.is_empty() && npages <= CHUNK_PAGES / 4 {
            if let Some(start) = self.place_cached(npages, busy)? {
                return Ok(start);
            }
        }
        let mut spare = Spare::new(2)?;
        let placed = self.free.lock().reserve_any(npages, busy, &mut spare);
        match placed {
            // Free space may sit in other CPUs' chunks: hand them back and look again.
            Err(e) if e == ENOMEM && !self.caches.is_empty() => {
                self.steal(0, self.arena_pages)?;
                self.free.lock().reserve_any(npages, busy, &mut spare)
            }
            placed => placed,
        }
    }

    fn set_test_hooks(&self, hooks: &uapi::VmalabTestHooks) -> Result {
        let ours = uapi::VMALAB_MUTANT_SKIP_ZAP
            | uapi::VMALAB_MUTANT_SKIP_RETIRE_WAIT
            | uapi::VMALAB_MUTANT_UNLOCKED_INSTALL;
        crate::engine::arm_mutants(hooks, ours, &self.mutants)
    }

    fn drain(&self, removed: &mut KVec<(usize, Arc<Region>)>) -> Result {
        // Release: no VMA is left, so no fault; no writer either.
        for span in self.spans_in(0, usize::MAX)? {
            let extents = core::mem::take(&mut *span.extents.lock());
            removed.reserve(extents.len(), GFP_KERNEL)?;
            for e in extents {
                if span_of(e.start) == span.index {
                    crate::region::push_reserved(removed, (e.start, e.region));
                }
            }
        }
        Ok(())
    }

    fn usage(&self) -> (usize, usize) {
        let extent = core::mem::size_of::<Extent>();
        // A span: its record with the Arc's count, its map entry (the `Node` box and
        // about two words of maple node).
        let span = core::mem::size_of::<Span>() + 64 + 16 + 2 * core::mem::size_of::<usize>();
        let bytes = self.region_bytes.load(Relaxed)
            + self.extents.load(Relaxed) * extent as isize
            + self.nspans.load(Relaxed) * span as isize
            + self.free.lock().meta_bytes() as isize;
        (
            self.regions.load(Relaxed).max(0) as usize,
            bytes.max(0) as usize,
        )
    }
}
