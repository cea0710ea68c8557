// SPDX-License-Identifier: GPL-2.0

//! One address space: what an open file of `/dev/vmalab` is.
//!
//! A space has a configuration (engine, arena size), at most one arena mapping, an
//! engine holding its regions, and per-CPU counters. It validates every ioctl argument
//! (alignment, overflow, arena bounds) before any engine sees it, and runs every writer
//! operation in the order of `protocol/writer.rs`: allocate the region before any
//! engine lock, let the engine publish and quiesce, then zap the range and free old
//! pages.
//!
//! Limits (per file, see `uapi.rs`): at most `VMALAB_MAX_REGIONS` regions spanning at
//! most `VMALAB_MAX_REGION_PAGES` pages (`ENOMEM` beyond, as `mmap` answers), in an
//! arena of at most `VMALAB_MAX_ARENA_SIZE` (`EINVAL`). Everything a user makes the
//! module allocate is charged to the user's memory cgroup (`GFP_KERNEL_ACCOUNT`).
//!
//! Every writer also follows `protocol/retire.rs`: from its publish until its free
//! (deferred engines: its zap), the range it took regions out of is on the `retiring`
//! list, and a writer whose range conflicts with one there waits before it publishes
//! (test `map_reuses_unmapped_range`).
//!
//! Engines that reclaim late (`Engine::deferred`) get their step 4 from a worker after
//! a grace period (`deferred.rs`); the writer returns after its zap.
//!
//! Lock order (see also `engine.rs`): `mmap_lock` → `setup` (taken by `mmap`, which
//! runs under `mmap_lock`) → engine creation; `setup` is never held while taking
//! `mmap_lock` or an engine lock of a running engine. `retiring` → engine locks (it
//! is held across a placement MAP's publish, or across its placement alone for an
//! engine that places first — `ptshard`: a CPU's chunk, then its free-space tree —
//! and never while taking `mmap_lock`: the zap runs after it is dropped). `graveyard`
//! and `pending` are innermost.

// One kind of `unsafe` here: punching the pages of a departed part of a region
// (`Region::punch`), in writer step 4 and at release.

use crate::{
    backing::Backing,
    deferred::{self, Batch, GraceCookie, Pending},
    engine::{self, Budget, Engine, Unpublished},
    protocol::{
        retire::{self, Refused, RetireList, Retiring, Span},
        writer::{self, Writer, Zap},
    },
    region::{push_reserved, Change, Placement, Plan, Prot, Region},
    stats::Stats,
    uapi,
    vm_ops::{self, Fault, FaultAround, FaultOutcome},
};
use kernel::{
    mm::{virt::VmaNew, Mm},
    new_condvar, new_mutex,
    page::{PAGE_SHIFT, PAGE_SIZE},
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Acquire, Atomic, Full, Relaxed},
        Arc, ArcBorrow, CondVar, Mutex, MutexGuard, SetOnce,
    },
    time::{delay::fsleep, Delta, Instant, Monotonic},
    workqueue::{impl_has_work, new_work, Work, WorkItem},
};

/// Where the arena is mapped.
struct ArenaMap {
    mm: ARef<Mm>,
    start: usize,
}

/// Configuration, fixed by the first region or mmap.
struct Setup {
    /// Engine id to create.
    engine: u32,
    /// `VMALAB_CONFIG_*` flags for the engine.
    flags: u32,
    /// Arena size in pages; 0 until configured or mapped.
    arena_pages: usize,
    /// Set once the arena has been mapped (it can be mapped only once).
    arena: Option<ArenaMap>,
}

/// One address space.
#[pin_data]
pub(crate) struct Space {
    /// Created on first use with the configured id; never replaced.
    engine: SetOnce<Arc<dyn Engine>>,
    #[pin]
    setup: Mutex<Setup>,
    stats: Stats,
    /// Regions charged against `VMALAB_MAX_REGIONS` (created and not yet freed).
    regions: Atomic<usize>,
    /// Pages those regions span, charged against `VMALAB_MAX_REGION_PAGES`.
    region_pages: Atomic<usize>,
    /// `VMALAB_MUTANT_*` bits armed by the test hook, plus [`TAINTED`] once any was
    /// (0 in normal use).
    mutants: Atomic<u32>,
    /// Publishes that took regions out (each is followed by a zap): bumped after the
    /// publish, before the zap. `mkwrite` upgrades a PTE only if it has not moved
    /// since the protection was looked up (see there).
    publishes: Atomic<u64>,
    /// Test hook: microseconds `mkwrite` sleeps after the lookup (0 in normal use).
    mkwrite_delay_us: Atomic<u32>,
    /// Regions removed while a mutant was armed: their pages may still be mapped (the
    /// mutant skipped part of the protocol), so they are freed only with the space,
    /// once no arena VMA is left.
    #[pin]
    graveyard: Mutex<KVec<(usize, Arc<Region>)>>,
    /// Page ranges of writer operations between their publish and their free
    /// (`protocol/retire.rs`).
    #[pin]
    retiring: Mutex<KVec<(usize, usize)>>,
    /// Signalled when a range leaves `retiring`.
    #[pin]
    retired: CondVar,
    /// Writer leftovers waiting for deferred reclaim (`deferred.rs`).
    #[pin]
    pending: Mutex<Pending>,
    /// Signalled when the worker finished batches of `pending`.
    #[pin]
    reclaimed: CondVar,
    /// The deferred-reclaim work item, queued on the module's workqueue.
    #[pin]
    reclaim_work: Work<Space>,
}

impl_has_work! {
    impl HasWork<Self> for Space { self.reclaim_work }
}

/// The deferred-reclaim worker (`deferred.rs`, step 2).
impl WorkItem for Space {
    type Pointer = Arc<Space>;

    fn run(this: Arc<Space>) {
        // Let a burst of writers queue more first: one wake-up and one grace-period
        // wait for all of them, as RCU batches its callbacks.
        fsleep(deferred::BATCH_WINDOW);
        loop {
            let batches = core::mem::take(&mut this.pending.lock().batches);
            let Some(newest) = batches.last() else {
                return;
            };
            // Cookies only grow: the newest one's grace period covers every batch.
            newest.cookie.wait();
            let n = batches.len() as u64;
            for batch in batches {
                this.reclaim(batch);
            }
            this.stats.add(uapi::VMALAB_CTR_DEFERRED_FREES, n);
            this.pending.lock().done += n;
            this.reclaimed.notify_all();
        }
    }
}

/// Set in [`Space::mutants`] for good once a test mutant was armed: a fault that a
/// mutant writer did not wait for may still use a region it parked, so from then on
/// writers park what they take out instead of freeing (or punching) it.
const TAINTED: u32 = 1 << 31;

/// One writer operation: the space's and the engine's sides of `protocol/writer.rs`.
struct WriterOp<'a> {
    space: ArcBorrow<'a, Space>,
    engine: &'a dyn Engine,
    /// Taken by the publish.
    change: Option<Change>,
    /// `VMALAB_MUTANT_*` bits armed when the operation began.
    mutants: u32,
    /// Where the publish placed or began the operation (pages).
    start: usize,
    /// The range this operation put on the space's `retiring` list.
    retiring: Option<(usize, usize)>,
}

/// The pages `change` works on, as far as they are known before the publish.
fn span_of(change: &Change) -> Span {
    match *change {
        Change::Map(_, Placement::Any) => Span::Anywhere,
        Change::Map(ref r, Placement::Fixed(s) | Placement::Replace(s) | Placement::Placed(s)) => {
            Span::At(s, s.saturating_add(r.npages()))
        }
        Change::Unmap(s, e) | Change::Protect(s, e, _) => Span::At(s, e),
    }
}

/// The space's retiring list (`protocol/retire.rs`).
impl RetireList for Space {
    type Locked<'a> = MutexGuard<'a, KVec<(usize, usize)>>;

    fn lock(&self) -> Self::Locked<'_> {
        self.retiring.lock()
    }

    fn wait(&self, locked: &mut Self::Locked<'_>) -> bool {
        self.retired.wait_interruptible(locked)
    }

    fn notify_all(&self) {
        self.retired.notify_all();
    }
}

impl Retiring for MutexGuard<'_, KVec<(usize, usize)>> {
    fn any(&self, f: &dyn Fn((usize, usize)) -> bool) -> bool {
        self.iter().any(|&r| f(r))
    }

    fn reserve_one(&mut self) -> bool {
        self.reserve(1, GFP_KERNEL).is_ok()
    }

    fn push(&mut self, range: (usize, usize)) {
        // Cannot fail: `reserve_one` made room, under the same lock.
        let _ = self.push_within_capacity(range);
    }

    fn remove(&mut self, range: (usize, usize)) {
        if let Some(i) = self.iter().position(|&r| r == range) {
            let _ = KVec::remove(self, i);
        }
    }
}

impl<'a> WriterOp<'a> {
    fn new(space: ArcBorrow<'a, Space>, engine: &'a dyn Engine, change: Change) -> Self {
        Self {
            space,
            engine,
            change: Some(change),
            mutants: space.mutants.load(Relaxed),
            start: 0,
            retiring: None,
        }
    }

    /// Runs the operation (`protocol/writer.rs`), without the zap if that mutant is
    /// armed. On error nothing changed.
    fn run(&mut self) -> Result {
        let zap = if self.mutants & uapi::VMALAB_MUTANT_SKIP_ZAP != 0 {
            Zap::MutantSkip
        } else {
            Zap::Normal
        };
        writer::write(self, zap)
    }
}

/// The file's limits, as the engines charge a plan to them.
impl Budget for Space {
    fn charge(&self, plan: &Plan) -> Result {
        let (regions, pages) = plan.growth();
        self.charge(regions, pages)
    }

    fn refund(&self, plan: &Plan) {
        let (regions, pages) = plan.growth();
        self.uncharge(regions, pages);
    }
}

impl Writer for WriterOp<'_> {
    type Unpublished = Unpublished;
    type Error = Error;

    fn publish(&mut self) -> Result<Unpublished> {
        let change = self.change.take().ok_or(EINVAL)?;
        let is_map = matches!(change, Change::Map(..));
        let skip_wait = self.mutants & uapi::VMALAB_MUTANT_SKIP_RETIRE_WAIT != 0;
        let refused = |r| match r {
            Refused::OutOfMemory => ENOMEM,
            // The ioctl restarts after the handler (or the task dies): nothing changed.
            Refused::Interrupted => ERESTARTSYS,
        };
        let space = &*self.space;
        let engine = self.engine;
        let publish = |change| {
            let out = engine.publish(change, space, &space.stats)?;
            let range = (!out.regions.is_empty()).then_some((out.start, out.end));
            if range.is_some() {
                for (_, r) in out.regions.iter() {
                    r.retire();
                }
                // Fully ordered: a `mkwrite` that sees the new count sees the new set,
                // and the retire marks above are visible before the zap's page-table
                // walk (`Region::still_published`).
                space.publishes.fetch_add(1, Full);
            }
            Ok((out, range))
        };
        let (out, retiring) = match change {
            // The engine's own allocator places it, under the list's lock, where no
            // writer retires regions; then it publishes as a MAP at a known range.
            Change::Map(region, Placement::Any) if engine.places() => {
                let n = region.npages();
                retire::publish_placed(
                    space,
                    skip_wait,
                    refused,
                    |busy| engine.place(n, busy).map(|s| (s, s + n)),
                    |(s, _)| publish(Change::Map(region, Placement::Placed(s))),
                )?
            }
            change => retire::publish(space, span_of(&change), skip_wait, refused, || {
                publish(change)
            })?,
        };
        self.retiring = retiring;
        if is_map && !out.regions.is_empty() {
            let n = out.regions.len() as u64;
            self.space.stats.add(uapi::VMALAB_CTR_REPLACED, n);
        }
        self.start = out.start;
        Ok(out)
    }

    fn quiesce(&mut self, unpublished: &mut Unpublished) {
        self.engine.quiesce(unpublished, &self.space.stats);
    }

    fn zap(&mut self, unpublished: &Unpublished) {
        if !unpublished.regions.is_empty() {
            self.space.zap(unpublished.start, unpublished.end);
        }
    }

    fn free(&mut self, unpublished: Unpublished) {
        if self.engine.deferred() && !unpublished.regions.is_empty() {
            // Zapped, and every install of the engine is checked against the retire:
            // nothing can map what left any more, so other writers need not wait for
            // the grace period either.
            retire::finish(&*self.space, self.retiring.take());
            Space::defer(self.space, unpublished, self.mutants);
            return;
        }
        self.space.free_unpublished(unpublished, self.mutants);
        retire::finish(&*self.space, self.retiring.take());
    }
}

/// Converts a byte count to pages, requiring page alignment.
fn pages_of(bytes: u64) -> Result<usize> {
    let bytes = usize::try_from(bytes).map_err(|_| EINVAL)?;
    if bytes % PAGE_SIZE != 0 {
        return Err(EINVAL);
    }
    Ok(bytes >> PAGE_SHIFT)
}

/// Validates a byte range `[offset, offset + length)`: aligned, non-empty, no overflow,
/// inside an arena of `arena_pages`. Returns it in pages.
fn range_of(offset: u64, length: u64, arena_pages: usize) -> Result<(usize, usize)> {
    let start = pages_of(offset)?;
    let n = pages_of(length)?;
    let end = start.checked_add(n).ok_or(EINVAL)?;
    if n == 0 || end > arena_pages {
        return Err(EINVAL);
    }
    Ok((start, end))
}

impl Space {
    /// A new, unconfigured address space using engine `default_engine`.
    pub(crate) fn new(default_engine: u32) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Self {
                engine: SetOnce::new(),
                setup <- new_mutex!(Setup {
                    engine: default_engine,
                    flags: 0,
                    arena_pages: 0,
                    arena: None,
                }),
                stats: Stats::new()?,
                regions: Atomic::new(0),
                region_pages: Atomic::new(0),
                mutants: Atomic::new(0),
                publishes: Atomic::new(0),
                mkwrite_delay_us: Atomic::new(0),
                graveyard <- new_mutex!(KVec::new(), "vmalab_space_graveyard"),
                retiring <- new_mutex!(KVec::new(), "vmalab_space_retiring"),
                retired <- new_condvar!("vmalab_space_retired"),
                pending <- new_mutex!(Pending::new(), "vmalab_space_pending"),
                reclaimed <- new_condvar!("vmalab_space_reclaimed"),
                reclaim_work <- new_work!("vmalab_space_reclaim"),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// The engine, creating it from the configuration on first use.
    fn engine(&self) -> Result<&dyn Engine> {
        if let Some(e) = self.engine.as_ref() {
            return Ok(&**e);
        }
        let setup = self.setup.lock();
        if self.engine.as_ref().is_none() {
            if setup.arena_pages == 0 {
                return Err(EINVAL); // No arena size yet: configure or mmap first.
            }
            let e = engine::new(setup.engine, setup.flags, setup.arena_pages)?;
            self.engine.populate(e);
        }
        drop(setup);
        self.engine.as_ref().map(|e| &**e).ok_or(EINVAL)
    }

    /// Charges `regions` more regions spanning `pages` more pages against the file's
    /// limits (`ENOMEM` beyond, and nothing charged); negative amounts uncharge and
    /// always succeed.
    fn charge(&self, regions: isize, pages: isize) -> Result {
        let max_regions = uapi::VMALAB_MAX_REGIONS as usize;
        let max_pages = uapi::VMALAB_MAX_REGION_PAGES as usize;
        // Two's complement: adding a negative amount as `usize` subtracts it.
        let was = self.regions.fetch_add(regions as usize, Relaxed);
        if regions > 0 && was.wrapping_add(regions as usize) > max_regions {
            self.regions.fetch_sub(regions as usize, Relaxed);
            return Err(ENOMEM);
        }
        let was = self.region_pages.fetch_add(pages as usize, Relaxed);
        if pages > 0 && was.wrapping_add(pages as usize) > max_pages {
            self.uncharge(regions, pages);
            return Err(ENOMEM);
        }
        Ok(())
    }

    /// Undoes [`Self::charge`] of the same amounts.
    fn uncharge(&self, regions: isize, pages: isize) {
        self.regions.fetch_sub(regions as usize, Relaxed);
        self.region_pages.fetch_sub(pages as usize, Relaxed);
    }

    /// Whether `pages` more would still fit the file's page budget now (an early,
    /// racy refusal before allocating a huge region; the plan's charge decides).
    fn pages_fit(&self, pages: usize) -> bool {
        let max_pages = uapi::VMALAB_MAX_REGION_PAGES as usize;
        pages <= max_pages && self.region_pages.load(Relaxed) <= max_pages - pages
    }

    /// `VMALAB_IOC_CONFIG`.
    pub(crate) fn config(&self, c: &uapi::VmalabConfig) -> Result {
        // Validate everything before changing anything: a failed CONFIG changes nothing.
        if c.flags & !uapi::VMALAB_CONFIG_FLAGS_ALL != 0
            || c.arena_size > uapi::VMALAB_MAX_ARENA_SIZE
            || (c.engine != 0 && uapi::engine_name(c.engine).is_none())
        {
            return Err(EINVAL);
        }
        let arena_pages = pages_of(c.arena_size)?;
        let mut setup = self.setup.lock();
        if self.engine.as_ref().is_some() || setup.arena.is_some() {
            return Err(EBUSY);
        }
        if c.engine != 0 {
            setup.engine = c.engine;
        }
        setup.flags = c.flags;
        if arena_pages != 0 {
            setup.arena_pages = arena_pages;
        }
        Ok(())
    }

    /// `f_op->mmap`: the arena. Runs with `mmap_lock` held for write.
    ///
    /// Every step that can fail comes before the first change to the space, so a
    /// failed `mmap` leaves the file as it was (a retry with another length works).
    pub(crate) fn mmap(this: ArcBorrow<'_, Self>, vma: &VmaNew) -> Result {
        if !vm_ops::flags_ok(vma) || vm_ops::pgoff(vma) != 0 {
            return Err(EINVAL);
        }
        let pages = (vma.end() - vma.start()) >> PAGE_SHIFT;
        let mut setup = this.setup.lock();
        if setup.arena.is_some() {
            return Err(EBUSY);
        }
        if setup.arena_pages != 0 && setup.arena_pages != pages {
            return Err(EINVAL);
        }
        let configured = setup.arena_pages;
        setup.arena_pages = pages;
        // The engine exists already if regions were created before the mmap (with
        // this size); otherwise it is created now, and kept only if the mmap succeeds.
        let fresh = this.engine.as_ref().is_none();
        let engine = match this.engine.as_ref() {
            Some(e) => e.clone(),
            None => match engine::new(setup.engine, setup.flags, pages) {
                Ok(e) => e,
                Err(e) => {
                    setup.arena_pages = configured;
                    return Err(e);
                }
            },
        };
        if let Err(e) = engine.freeze() {
            setup.arena_pages = configured;
            return Err(e);
        }
        if fresh {
            this.engine.populate(engine);
        }
        setup.arena = Some(ArenaMap {
            mm: ARef::from(&**vma.mm()),
            start: vma.start(),
        });
        drop(setup);
        vm_ops::install(vma, this.into());
        Ok(())
    }

    /// `->fault`, may sleep.
    pub(crate) fn fault(&self, f: &Fault<'_>) -> FaultOutcome {
        let Some(engine) = self.engine.as_ref() else {
            return FaultOutcome::SigBus;
        };
        let out = engine.fault(f, &self.stats);
        self.stats.inc(match out {
            FaultOutcome::Mapped => uapi::VMALAB_CTR_FAULT_FAST,
            FaultOutcome::MappedSlow => uapi::VMALAB_CTR_FAULT_SLOW,
            FaultOutcome::SigBus => uapi::VMALAB_CTR_FAULT_SIGBUS,
            FaultOutcome::SigSegv => uapi::VMALAB_CTR_FAULT_SIGSEGV,
            FaultOutcome::Oom => uapi::VMALAB_CTR_FAULT_OOM,
            FaultOutcome::Retry => uapi::VMALAB_CTR_FAULT_RETRY,
        });
        out
    }

    /// `->pfn_mkwrite`: a write to a present read-only PTE. For a read-write region
    /// (the PTE was write-protected by an `mprotect` of the arena, or by a read-only
    /// region since made read-write) the PTE is made writable here, `Mapped`;
    /// `SigSegv` for a read-only region.
    ///
    /// The upgrade is ours, not the kernel's `finish_mkwrite_fault`: that one checks
    /// only that the PTE is the same value under its lock, and between our lookup and
    /// its check the region can turn read-only, be zapped, and the same page be mapped
    /// read-only again by another fault — an identical PTE, made writable in a
    /// read-only region (seen: `protect_races_writers` on `percpu+sem`, "store ...
    /// succeeded after PROTECT RO"). Here the upgrade happens under the PTE lock only
    /// if no publish that took regions out came after the lookup: a later one is
    /// followed by a zap that takes the same PTE lock after us, and removes the PTE.
    pub(crate) fn mkwrite(&self, f: &Fault<'_>) -> FaultOutcome {
        let Some(engine) = self.engine.as_ref() else {
            return FaultOutcome::SigBus;
        };
        let seen = self.publishes.load(Acquire);
        let out = match engine.prot_at(f.pgoff(), &self.stats) {
            Some(Prot::ReadWrite) => {
                let delay = self.mkwrite_delay_us.load(Relaxed);
                if delay != 0 {
                    fsleep(Delta::from_micros(i64::from(delay)));
                }
                // Upgraded, or the PTE changed (or a publish came between): either way
                // the access is retried and looked at afresh.
                f.make_writable_if(|| self.publishes.load(Relaxed) == seen);
                return FaultOutcome::Mapped;
            }
            Some(Prot::ReadOnly) => FaultOutcome::SigSegv,
            None => FaultOutcome::SigBus,
        };
        self.stats.inc(match out {
            FaultOutcome::SigSegv => uapi::VMALAB_CTR_FAULT_SIGSEGV,
            _ => uapi::VMALAB_CTR_FAULT_SIGBUS,
        });
        out
    }

    /// `->map_pages`, atomic context.
    pub(crate) fn map_pages(&self, f: &FaultAround<'_>) -> bool {
        let Some(engine) = self.engine.as_ref() else {
            return false;
        };
        let hit = engine.map_pages(f, &self.stats);
        if hit {
            self.stats.inc(uapi::VMALAB_CTR_FAULT_FAST);
        }
        hit
    }

    /// `VMALAB_IOC_MAP`: creates a region; writes its offset back into `m`.
    pub(crate) fn map(this: ArcBorrow<'_, Self>, m: &mut uapi::VmalabMap) -> Result {
        let t0 = Instant::<Monotonic>::now();
        if m.reserved != 0 || m.flags & !uapi::VMALAB_MAP_FLAGS_ALL != 0 {
            return Err(EINVAL);
        }
        let backing = Backing::from_uapi(m.backing, m.delay_us)?;
        let engine = this.engine()?;
        let arena_pages = this.setup.lock().arena_pages;
        let npages = pages_of(m.length)?;
        if npages == 0 || npages > arena_pages {
            return Err(EINVAL);
        }
        let placement = match m.flags {
            0 => Placement::Any,
            uapi::VMALAB_MAP_FIXED => {
                Placement::Fixed(range_of(m.offset, m.length, arena_pages)?.0)
            }
            uapi::VMALAB_MAP_REPLACE => {
                Placement::Replace(range_of(m.offset, m.length, arena_pages)?.0)
            }
            _ => return Err(EINVAL),
        };
        if !this.pages_fit(npages) {
            return Err(ENOMEM);
        }
        let region = Region::new(npages, backing)?;
        let mut op = WriterOp::new(this, engine, Change::Map(region, placement));
        op.run()?;
        this.stats.inc(uapi::VMALAB_CTR_MAP);
        this.account_writer(t0);
        m.offset = (op.start as u64) << PAGE_SHIFT;
        Ok(())
    }

    /// `VMALAB_IOC_UNMAP`.
    pub(crate) fn unmap(this: ArcBorrow<'_, Self>, u: &uapi::VmalabUnmap) -> Result {
        let t0 = Instant::<Monotonic>::now();
        let engine = this.engine()?;
        let arena_pages = this.setup.lock().arena_pages;
        let (start, end) = range_of(u.offset, u.length, arena_pages)?;
        WriterOp::new(this, engine, Change::Unmap(start, end)).run()?;
        this.stats.inc(uapi::VMALAB_CTR_UNMAP);
        this.account_writer(t0);
        Ok(())
    }

    /// `VMALAB_IOC_PROTECT`.
    pub(crate) fn protect(this: ArcBorrow<'_, Self>, p: &uapi::VmalabProtect) -> Result {
        let t0 = Instant::<Monotonic>::now();
        let prot = match p.prot {
            _ if p.reserved != 0 => return Err(EINVAL),
            uapi::VMALAB_PROT_READ => Prot::ReadOnly,
            uapi::VMALAB_PROT_READ_WRITE => Prot::ReadWrite,
            _ => return Err(EINVAL),
        };
        let engine = this.engine()?;
        let arena_pages = this.setup.lock().arena_pages;
        let (start, end) = range_of(p.offset, p.length, arena_pages)?;
        WriterOp::new(this, engine, Change::Protect(start, end, prot)).run()?;
        this.stats.inc(uapi::VMALAB_CTR_PROTECT);
        this.account_writer(t0);
        Ok(())
    }

    /// Writer step 3 (`protocol/writer.rs`): zaps the arena's PTEs in `[start, end)`.
    fn zap(&self, start: usize, end: usize) {
        let arena = self
            .setup
            .lock()
            .arena
            .as_ref()
            .map(|a| (a.mm.clone(), a.start));
        if let Some((mm, arena_start)) = arena {
            if vm_ops::zap(
                &mm,
                arena_start,
                self,
                start << PAGE_SHIFT,
                (end - start) << PAGE_SHIFT,
            ) {
                self.stats.inc(uapi::VMALAB_CTR_ZAP);
            }
        }
    }

    /// Writer step 4: frees the regions a writer took out, and the pages of theirs
    /// that died (the part inside the range of an UNMAP or REPLACE; parts outside it
    /// live on in the regions that replaced them). Once a test mutant was armed
    /// ([`TAINTED`]) the regions are kept, pages and all, until the space goes: their
    /// pages may still be mapped.
    fn free_unpublished(&self, u: Unpublished, mutants: u32) {
        let mut freed = 0;
        for (start, r) in u.regions.iter() {
            let end = start + r.npages();
            if !u.dead || end <= u.start || *start >= u.end {
                continue;
            }
            let offset = u.start.saturating_sub(*start);
            let n = end.min(u.end) - start - offset;
            freed += if mutants != 0 {
                r.present_in(offset, n)
            } else {
                // Deferred engines: their installs are checked, and this runs in the
                // worker after a grace period begun after the zap and after the holds
                // drained, so no fault still touches the slots either.
                // SAFETY: `r` left at publish, quiesce and zap ran: no fault reaches
                // this part, no PTE maps it, no region in the set has these slots.
                unsafe { r.punch(offset, n) }
            };
            vm_ops::cond_resched();
        }
        self.stats.add(uapi::VMALAB_CTR_PAGE_FREE, freed as u64);
        self.stats
            .add(uapi::VMALAB_CTR_REGION_FREE, u.regions.len() as u64);
        if mutants != 0 {
            self.park(u.regions);
        }
    }

    /// Deferred reclaim, step 1 (`deferred.rs`): after the zap, queues what a writer
    /// took out for the worker. If the list cannot grow (or there is no workqueue), the
    /// writer reclaims it itself, waiting for the grace period.
    fn defer(this: ArcBorrow<'_, Self>, unpublished: Unpublished, mutants: u32) {
        let batch = Batch {
            cookie: GraceCookie::now(),
            unpublished,
            mutants,
        };
        let queue = deferred::queue();
        let mut pending = this.pending.lock();
        if queue.is_none() || pending.batches.reserve(1, GFP_KERNEL).is_err() {
            drop(pending);
            batch.cookie.wait();
            this.reclaim(batch);
            return;
        }
        // Cannot fail: room was made just above, under the same lock.
        let _ = pending.batches.push_within_capacity(batch);
        pending.queued += 1;
        drop(pending);
        if let Some(queue) = queue {
            // `Err` means the work item is queued already and has not started: it
            // will take this batch too.
            let _ = queue.enqueue(Arc::from(this));
        }
    }

    /// Deferred reclaim, step 2 for one batch whose grace period has elapsed: the
    /// engine drains holds and frees its entries, then the regions go as in step 4.
    fn reclaim(&self, mut batch: Batch) {
        if let Some(engine) = self.engine.as_ref() {
            engine.reclaim_deferred(&mut batch.unpublished, &self.stats);
        }
        self.free_unpublished(batch.unpublished, batch.mutants);
    }

    /// Waits until every batch queued for deferred reclaim so far is freed;
    /// `ERESTARTSYS` if `interruptible` and a signal came.
    fn wait_reclaimed(&self, interruptible: bool) -> Result {
        let mut pending = self.pending.lock();
        let target = pending.queued;
        while pending.done < target {
            if !interruptible {
                self.reclaimed.wait(&mut pending);
            } else if self.reclaimed.wait_interruptible(&mut pending) {
                return Err(ERESTARTSYS);
            }
        }
        Ok(())
    }

    /// `VMALAB_IOC_SYNC`.
    pub(crate) fn sync(&self) -> Result {
        self.wait_reclaimed(true)
    }

    /// Keeps regions until the space goes (test mutants).
    fn park(&self, regions: KVec<(usize, Arc<Region>)>) {
        let mut graveyard = self.graveyard.lock();
        if graveyard.reserve(regions.len(), GFP_KERNEL).is_err() {
            core::mem::forget(regions); // Test mutant out of memory: leak, never free.
            return;
        }
        for r in regions {
            push_reserved(&mut graveyard, r);
        }
    }

    fn account_writer(&self, t0: Instant<Monotonic>) {
        let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(0);
        self.stats.add(uapi::VMALAB_CTR_WRITER_NS, ns);
    }

    /// `VMALAB_IOC_INFO`.
    pub(crate) fn info(&self) -> uapi::VmalabInfo {
        let (arena_pages, flags) = {
            let setup = self.setup.lock();
            (setup.arena_pages, setup.flags)
        };
        let mut info = uapi::VmalabInfo {
            arena_size: (arena_pages as u64) << PAGE_SHIFT,
            flags,
            counters: self.stats.snapshot(),
            ..Default::default()
        };
        if let Some(e) = self.engine.as_ref() {
            let (regions, bytes) = e.usage();
            info.engine = e.id();
            info.regions = regions as u64;
            info.meta_bytes = bytes as u64;
        }
        info.pages = info.counters[uapi::VMALAB_CTR_PAGE_ALLOC]
            .saturating_sub(info.counters[uapi::VMALAB_CTR_PAGE_FREE]);
        info
    }

    /// `VMALAB_IOC_TEST_HOOKS` (the caller checked that test hooks are enabled).
    pub(crate) fn test_hooks(&self, h: &uapi::VmalabTestHooks) -> Result {
        if h.mutants & !uapi::VMALAB_MUTANTS_ALL != 0
            || h.release_delay_us > uapi::VMALAB_MAX_DELAY_US
            || h.mkwrite_delay_us > uapi::VMALAB_MAX_DELAY_US
            || h.install_delay_us > uapi::VMALAB_MAX_SPIN_US
        {
            return Err(EINVAL);
        }
        // The engine sees only what is its own.
        self.engine()?.set_test_hooks(&uapi::VmalabTestHooks {
            mkwrite_delay_us: 0,
            ..*h
        })?;
        self.mkwrite_delay_us.store(h.mkwrite_delay_us, Relaxed);
        let tainted = self.mutants.load(Relaxed) & TAINTED != 0 || h.mutants != 0;
        let taint = if tainted { TAINTED } else { 0 };
        self.mutants.store(h.mutants | taint, Relaxed);
        Ok(())
    }

    /// The file is being released: no VMA references the space any more (each held a
    /// reference), so drop every region and free its pages.
    pub(crate) fn release(&self) {
        // What writers handed to the worker is freed first (its regions are no longer
        // in the engine, which `drain` below empties).
        let _ = self.wait_reclaimed(false);
        if let Some(e) = self.engine.as_ref() {
            let mut removed = KVec::new();
            // Cannot fail for lack of memory in a way we could report; regions left in
            // the engine are freed when it drops with the space.
            let _ = e.drain(&mut removed);
            let mut freed = 0;
            for (_, r) in removed.iter() {
                // SAFETY: No arena VMA is left, so no fault runs and no PTE exists.
                freed += unsafe { r.punch(0, r.npages()) };
                vm_ops::cond_resched();
            }
            self.stats.add(uapi::VMALAB_CTR_PAGE_FREE, freed as u64);
            self.stats
                .add(uapi::VMALAB_CTR_REGION_FREE, removed.len() as u64);
        }
    }
}
