// SPDX-License-Identifier: GPL-2.0

//! The arena's `vm_operations_struct`: the only file with fault-path FFI.
//!
//! 7.3's Rust has no `vm_operations` abstraction, so this file keeps one small safe
//! wrapper: the static operations table, the C callbacks, and safe views of a fault
//! ([`Fault`], [`FaultAround`]) that the rest of the module works with. Everything
//! above this file is safe Rust; a fault reads top-down
//! `vm_ops` → [`Space`] → engine → backing → [`Fault::insert`] (PTE).
//!
//! The arena VMA:
//! - is `VM_MIXEDMAP` (special PTEs may be installed; it also makes the VMA
//!   `VM_SPECIAL`, so `madvise(MADV_DOFORK)` cannot clear `VM_DONTCOPY`), `VM_IO` (GUP
//!   refuses the VMA: `mm/gup.c: check_vma_flags`), `VM_DONTCOPY` (a child does not
//!   inherit it: an unmap in the parent could not reach a child's copy of the PTEs),
//!   `VM_DONTEXPAND` and `VM_DONTDUMP`;
//! - refuses to be split (`may_split`) or moved (`mremap`), so it stays one VMA at one
//!   address for its whole life and an unmap zaps exactly one range;
//! - holds one reference to its [`Space`] in `vm_private_data` (taken at mmap and by
//!   `open`, dropped by `close`), so the space outlives every VMA that can fault on it;
//! - provides `map_pages`, without which every fault under the per-VMA lock is
//!   retried under `mmap_lock` (`mm/memory.c: vmf_can_call_fault`).
//!
//! PTEs are installed only through [`PteTable`], under the PTE lock, as special PTEs.
//! Nothing here allocates a page table in atomic context: `map_pages` and the atomic
//! step of `->fault` lock an existing table or give up; only `->fault` allocates one
//! (`apply_to_page_range`). A table can vanish at any time outside its lock: in 7.3,
//! `MADV_DONTNEED` over a whole 2 MiB span frees it under the per-VMA *read* lock,
//! concurrently with faults (`zap_pte_range` → page-table reclaim).
//!
//! Pins: GUP (O_DIRECT, `process_vm_readv`, io_uring fixed buffers, `/proc/PID/mem`)
//! fails with `EFAULT` on the arena, so no pin can outlive an UNMAP.
//!
//! Lock order: `mmap_lock` / per-VMA lock → RCU read section → PTE lock. Engine locks
//! are taken between the VMA lock and the PTE lock and never inside a PTE lock.

use crate::space::Space;
use kernel::{
    bindings,
    ffi::{c_char, c_int, c_void},
    mm::{
        virt::{flags, VmaNew, VmaRef},
        Mm,
    },
    page::Page,
    prelude::*,
    sync::{Arc, ArcBorrow},
    types::ForeignOwnable,
};

/// The C shim (`shim.c`): static inlines that Rust cannot reach otherwise. Pointers to
/// `struct vm_fault`, `pte_t` and `spinlock_t` are passed untyped: bindgen's
/// `vm_fault` reaches structs rustc deems not FFI-safe, and Rust never looks inside.
mod shim {
    use kernel::ffi::c_void;

    extern "C" {
        /// `pte_offset_map_lock()` for `vmf`'s PMD at `addr`, without allocating and
        /// without retrying: the entry for `addr` with `*ptl` and the RCU read lock
        /// held, or null when there is no PTE table.
        pub(super) fn vmalab_pte_lock(
            vmf: *const c_void,
            addr: usize,
            ptl: *mut *mut c_void,
        ) -> *mut c_void;
        /// `pte_unmap_unlock()`.
        pub(super) fn vmalab_pte_unlock(pte: *mut c_void, ptl: *mut c_void);
        /// The entry for `to` in the PTE table whose entry for `addr` is `pte`.
        pub(super) fn vmalab_pte_at(pte: *mut c_void, addr: usize, to: usize) -> *mut c_void;
        /// Under the PTE lock: `set_pte_at()` a special PTE for `page` (writable and
        /// dirty if `writable` and the VMA allows writes, else read-only) if the entry
        /// is none; false if it was populated.
        pub(super) fn vmalab_pte_set_special(
            vmf: *const c_void,
            addr: usize,
            pte: *mut c_void,
            page: *mut c_void,
            writable: bool,
        ) -> bool;
        /// Under the PTE lock, in `->pfn_mkwrite`: makes the entry `pte` (for
        /// `vmf->address`) writable and dirty if it still equals `vmf->orig_pte` and
        /// that is a present entry (never a none one) of a `VM_WRITE` VMA; false
        /// otherwise.
        pub(super) fn vmalab_pte_mkwrite_same(vmf: *const c_void, pte: *mut c_void) -> bool;
        /// `cond_resched()`.
        pub(super) fn vmalab_cond_resched();
    }
}

/// Gives the scheduler a chance in loops over user-sized data (`cond_resched()`).
pub(crate) fn cond_resched() {
    // SAFETY: `cond_resched` may be called from any sleepable context; every caller of
    // this function is one (process context, no spinlock, no RCU read section).
    unsafe { shim::vmalab_cond_resched() }
}

/// How a fault ended, as the engine reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FaultOutcome {
    /// The PTE is installed (by us or by a racing thread) without sleeping.
    Mapped,
    /// The PTE is installed, by the slow path (it slept, or held a shared lock).
    MappedSlow,
    /// No region covers the address.
    SigBus,
    /// The access is not allowed (a write to a read-only region).
    SigSegv,
    /// Out of memory.
    Oom,
    /// Nothing installed: the check under the PTE lock found that a writer took the
    /// region out after the fault looked it up. The access faults again and finds the
    /// new region set.
    Retry,
}

impl FaultOutcome {
    fn to_raw(self) -> bindings::vm_fault_t {
        (match self {
            // `Retry`: no PTE, so the access faults again once we return.
            FaultOutcome::Mapped | FaultOutcome::MappedSlow | FaultOutcome::Retry => {
                bindings::vm_fault_reason_VM_FAULT_NOPAGE
            }
            FaultOutcome::SigBus => bindings::vm_fault_reason_VM_FAULT_SIGBUS,
            FaultOutcome::SigSegv => bindings::vm_fault_reason_VM_FAULT_SIGSEGV,
            FaultOutcome::Oom => bindings::vm_fault_reason_VM_FAULT_OOM,
        }) as bindings::vm_fault_t
    }
}

/// What [`PteTable::install`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Install {
    /// The page is now mapped there.
    Mapped,
    /// A PTE was already there (a racing fault mapped it first); nothing changed.
    Present,
}

/// A page fault being handled by `->fault` (process context, may sleep).
///
/// # Invariants
///
/// `vmf` is the `struct vm_fault` the core mm passed to `->fault` or `->map_pages`,
/// valid for `'a`, and its VMA is an arena VMA (`vm_ops == &VM_OPS`) held for read
/// (mmap or per-VMA lock) for `'a`.
pub(crate) struct Fault<'a> {
    vmf: &'a bindings::vm_fault,
}

impl<'a> Fault<'a> {
    /// The faulting page's index in the arena (the arena is mapped at `vm_pgoff == 0`).
    #[inline]
    pub(crate) fn pgoff(&self) -> usize {
        self.vmf.__bindgen_anon_1.pgoff
    }

    /// Whether the fault is a write access.
    #[inline]
    pub(crate) fn is_write(&self) -> bool {
        self.vmf.flags & bindings::fault_flag_FAULT_FLAG_WRITE != 0
    }

    /// The faulting (page-aligned) user address.
    #[inline]
    fn address(&self) -> usize {
        self.vmf.__bindgen_anon_1.address
    }

    /// The arena VMA.
    #[inline]
    fn vma(&self) -> &'a VmaRef {
        // SAFETY: The VMA is read-locked for 'a (type invariant).
        unsafe { VmaRef::from_raw(self.vmf.__bindgen_anon_1.vma) }
    }

    /// The address space the arena belongs to.
    #[inline]
    fn space(&self) -> ArcBorrow<'a, Space> {
        // SAFETY: The VMA is an arena VMA, read-locked for 'a (type invariant).
        unsafe { space_of(self.vmf.__bindgen_anon_1.vma) }
    }

    /// Locks the PTE table that maps the faulting address, if there is one. Never
    /// allocates and never sleeps: usable under `rcu_read_lock()` and in `map_pages`.
    /// `None` means there is no table (never populated, or freed by page-table reclaim
    /// after `MADV_DONTNEED`): take a path that may sleep ([`Self::with_ptes_alloc`]).
    #[inline]
    pub(crate) fn lock_ptes(&self) -> Option<PteTable<'_>> {
        let mut ptl = core::ptr::null_mut();
        // SAFETY: `vmf` is valid and its VMA read-locked (type invariant), so
        // `vmf->pmd` points at the live PMD entry for the faulting address; the shim
        // reads it locklessly and rechecks it under the PTE lock.
        let pte = unsafe {
            shim::vmalab_pte_lock(
                core::ptr::from_ref(self.vmf).cast(),
                self.address(),
                &mut ptl,
            )
        };
        if pte.is_null() {
            return None;
        }
        // INVARIANT: the shim returned the entry for the fault address with `ptl` and
        // the RCU read lock held.
        Some(PteTable {
            fault: self,
            pte,
            ptl: Some(ptl),
        })
    }

    /// For `->pfn_mkwrite` (a write hit the read-only PTE `vmf->orig_pte`): makes that
    /// PTE writable if it is still the same and `still()` — called under the PTE
    /// lock — holds. Returns whether it did. Never sleeps.
    pub(crate) fn make_writable_if(&self, still: impl FnOnce() -> bool) -> bool {
        let Some(table) = self.lock_ptes() else {
            return false; // The table went away: the PTE with it.
        };
        if !still() {
            return false;
        }
        // SAFETY: `table` holds the PTE lock of the entry for the fault address (its
        // invariant); in `->pfn_mkwrite` (this method's contract) `vmf->orig_pte` is
        // the PTE the write hit, and the shim changes the entry only if it still is.
        unsafe { shim::vmalab_pte_mkwrite_same(core::ptr::from_ref(self.vmf).cast(), table.pte) }
    }

    /// Runs `f` with the PTE table of the faulting address locked, allocating the table
    /// first if there is none. May sleep (the allocation): `->fault` only, never under
    /// `rcu_read_lock()` or a spinlock. `ENOMEM` if no table could be allocated.
    pub(crate) fn with_ptes_alloc<R, F: FnOnce(&PteTable<'_>) -> R>(&self, f: F) -> Result<R> {
        struct Call<'f, 'a, F, R> {
            fault: &'f Fault<'a>,
            f: Option<F>,
            out: Option<R>,
        }
        /// `pte_fn_t` for `apply_to_page_range`: called once, under the PTE lock.
        ///
        /// # Safety
        ///
        /// `data` is the `Call` passed below; `pte` is the entry for `addr`, locked.
        unsafe extern "C" fn one<F: FnOnce(&PteTable<'_>) -> R, R>(
            pte: *mut bindings::pte_t,
            _addr: usize,
            data: *mut c_void,
        ) -> c_int {
            // SAFETY: `data` is the `Call` that `with_ptes_alloc` passed, exclusively
            // ours for this call (function contract).
            let call = unsafe { &mut *data.cast::<Call<'_, '_, F, R>>() };
            // INVARIANT: `apply_to_pte_range` holds the PTE lock of the table `pte` is
            // in (and unlocks it itself, hence no `ptl`); it runs in the fault's task
            // with the VMA still read-locked.
            let table = PteTable {
                fault: call.fault,
                pte: pte.cast(),
                ptl: None,
            };
            if let Some(f) = call.f.take() {
                call.out = Some(f(&table));
            }
            0
        }
        let mut call = Call {
            fault: self,
            f: Some(f),
            out: None,
        };
        // We are in `->fault`'s process context (caller's contract), where allocating a
        // page table may sleep; the range is one page of the VMA.
        // SAFETY: The VMA is read-locked (type invariant), so `vm_mm` is alive; `one`
        // matches `pte_fn_t` and `call` outlives the call.
        let ret = unsafe {
            bindings::apply_to_page_range(
                (*self.vmf.__bindgen_anon_1.vma).vm_mm,
                self.address(),
                kernel::page::PAGE_SIZE,
                Some(one::<F, R>),
                core::ptr::from_mut(&mut call).cast(),
            )
        };
        if ret != 0 {
            return Err(Error::from_errno(ret));
        }
        call.out.ok_or(ENOMEM)
    }
}

/// A fault's PTE table, locked: the place where vmalab installs PTEs.
///
/// "Install this page here, under the PTE lock, if a check still holds": take the
/// table ([`Fault::lock_ptes`], [`FaultAround::lock_ptes`] or
/// [`Fault::with_ptes_alloc`]), check, then [`Self::install`] (unsafe: see there). A zap of the range
/// (`zap_vma_range`, `MADV_DONTNEED`) takes the same lock, so it either runs before the
/// check or removes what was installed.
///
/// Installed PTEs are *special* (`pte_mkspecial`, x86 has `ARCH_HAS_PTE_SPECIAL`): in a
/// `VM_MIXEDMAP` VMA `vm_normal_page()` returns no page for them, so they carry no rmap
/// and no page reference, GUP refuses them, and zap drops them without touching the
/// page. Hence a region's pages may only be freed after the range is zapped (the
/// writer order of `protocol/writer.rs`) or the arena VMA is gone (`Space::release`).
///
/// # Invariants
///
/// `pte` is the entry for `fault`'s address in a PTE table that is locked for as long
/// as `self` lives: if `ptl` is `Some`, by `vmalab_pte_lock` (this value unlocks it and
/// the RCU read lock on drop), else by `apply_to_page_range` (which unlocks it after
/// the callback that created this value returns).
pub(crate) struct PteTable<'f> {
    fault: &'f Fault<'f>,
    pte: *mut c_void,
    ptl: Option<*mut c_void>,
}

impl PteTable<'_> {
    /// Maps `page` at arena page `pgoff` unless a PTE is already there, writable if
    /// `writable` (and the VMA is), else read-only. `pgoff` must lie in the same PTE
    /// table (2 MiB span) as the faulting page (`EINVAL` otherwise). Never sleeps.
    ///
    /// # Safety
    ///
    /// `page` must stay allocated until the PTE installed here is gone: until the range
    /// is zapped or the arena VMA is destroyed. A special PTE holds no reference.
    #[inline]
    pub(crate) unsafe fn install(
        &self,
        pgoff: usize,
        page: &Page,
        writable: bool,
    ) -> Result<Install> {
        let fault = self.fault.address();
        let addr =
            fault.wrapping_add(pgoff.wrapping_sub(self.fault.pgoff()) << kernel::page::PAGE_SHIFT);
        let pmd_mask = !((1usize << bindings::PMD_SHIFT) - 1);
        let vma = self.fault.vma();
        if (addr & pmd_mask) != (fault & pmd_mask) || addr < vma.start() || addr >= vma.end() {
            return Err(EINVAL);
        }
        // SAFETY: `addr` maps into the same PTE table as the fault address (checked
        // above), whose entry is `self.pte` (type invariant).
        let pte = unsafe { shim::vmalab_pte_at(self.pte, fault, addr) };
        // SAFETY: The table is locked (type invariant); `addr` is inside the arena VMA
        // (checked above); `page` stays allocated until the PTE is zapped (caller's
        // contract).
        let set = unsafe {
            shim::vmalab_pte_set_special(
                core::ptr::from_ref(self.fault.vmf).cast(),
                addr,
                pte,
                page.as_ptr().cast(),
                writable,
            )
        };
        Ok(if set {
            Install::Mapped
        } else {
            Install::Present
        })
    }
}

impl Drop for PteTable<'_> {
    fn drop(&mut self) {
        if let Some(ptl) = self.ptl {
            // SAFETY: `pte`/`ptl` came from a successful `vmalab_pte_lock` that this
            // value owns (type invariant); this releases both locks once.
            unsafe { shim::vmalab_pte_unlock(self.pte, ptl) };
        }
    }
}

/// A `map_pages` call: map what is ready in `[start, end]` without sleeping.
///
/// # Invariants
///
/// As for [`Fault`], plus: we are inside `rcu_read_lock()` (`do_fault_around`), so
/// nothing reached from here may sleep, and `[start, end]` are arena pages inside the
/// VMA and inside the PTE table (2 MiB span) of the faulting page (`do_fault_around`
/// computes them so).
pub(crate) struct FaultAround<'a> {
    fault: Fault<'a>,
    start: usize,
    end: usize,
}

impl FaultAround<'_> {
    /// The faulting page's index in the arena.
    #[inline]
    pub(crate) fn pgoff(&self) -> usize {
        self.fault.pgoff()
    }

    /// The inclusive range of arena page indices that may be mapped (one PTE table).
    #[inline]
    pub(crate) fn range(&self) -> (usize, usize) {
        (self.start, self.end)
    }

    /// Locks the PTE table of the window, if it exists. Never allocates (there is no
    /// table after page-table reclaim, or before the first fault in a 2 MiB span):
    /// `None` sends the fault on to `->fault`.
    #[inline]
    pub(crate) fn lock_ptes(&self) -> Option<PteTable<'_>> {
        self.fault.lock_ptes()
    }
}

/// Returns the space an arena VMA references.
///
/// # Safety
///
/// `vma` must be an arena VMA (`vm_ops == &VM_OPS`) that stays alive (locked by the
/// caller, so `close` cannot run) for `'a`.
unsafe fn space_of<'a>(vma: *const bindings::vm_area_struct) -> ArcBorrow<'a, Space> {
    // SAFETY: An arena VMA's `vm_private_data` came from `Arc::into_foreign` in
    // `install`/`vma_open` and is released only in `vma_close`, which cannot run for
    // 'a (caller's guarantee).
    unsafe { <Arc<Space> as ForeignOwnable>::borrow((*vma).vm_private_data) }
}

// The callbacks below are only reachable through `VM_OPS`, i.e. the core mm calls
// them for arena VMAs with the locking `vm_operations_struct` documents
// (`Documentation/filesystems/locking.rst`); that is each one's `# Safety` contract.

/// `vm_ops->open`.
///
/// # Safety
///
/// `vma` is a new copy of an arena VMA, being set up under `mmap_lock` held for write.
unsafe extern "C" fn vma_open(vma: *mut bindings::vm_area_struct) {
    // Split and mremap are refused, fork does not copy the arena (VM_DONTCOPY); `open`
    // still runs for the temporary copy `mremap` makes before asking `->mremap`.
    // SAFETY: `vma` is a copy of an arena VMA (same ops and private data), alive for
    // this call (function contract).
    let space: Arc<Space> = unsafe { space_of(vma) }.into();
    // SAFETY: `vma` is the new VMA being set up; we own its `vm_private_data` slot,
    // which was copied from the original and now gets a reference of its own.
    unsafe { (*vma).vm_private_data = space.into_foreign() };
}

/// `vm_ops->close`.
///
/// # Safety
///
/// `vma` is an arena VMA being destroyed; no fault runs on it any more.
unsafe extern "C" fn vma_close(vma: *mut bindings::vm_area_struct) {
    // SAFETY: `vm_private_data` holds the reference taken in `install` or `vma_open`;
    // `close` runs once per VMA, after the last fault on it (function contract).
    drop(unsafe { <Arc<Space> as ForeignOwnable>::from_foreign((*vma).vm_private_data) });
}

/// `vm_ops->may_split`: an arena is never split.
extern "C" fn vma_may_split(_vma: *mut bindings::vm_area_struct, _addr: usize) -> c_int {
    EINVAL.to_errno()
}

/// `vm_ops->mremap`: an arena never moves (`mremap` undoes the move on error).
extern "C" fn vma_mremap(_vma: *mut bindings::vm_area_struct) -> c_int {
    EINVAL.to_errno()
}

/// `vm_ops->name`: how the arena shows in `/proc/PID/maps`.
extern "C" fn vma_name(_vma: *mut bindings::vm_area_struct) -> *const c_char {
    c"[vmalab]".as_char_ptr()
}

/// `vm_ops->fault`.
///
/// # Safety
///
/// `vmf` is a valid `vm_fault` for an arena VMA that the caller holds read-locked
/// (per-VMA lock or `mmap_lock`) until we return.
unsafe extern "C" fn vma_fault(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
    // SAFETY: Valid and locked for this call (function contract), as `Fault` requires.
    let vmf = unsafe { &*vmf };
    let fault = Fault { vmf };
    fault.space().fault(&fault).to_raw()
}

/// `vm_ops->map_pages`.
///
/// # Safety
///
/// As for [`vma_fault`], and the caller (`do_fault_around`) holds `rcu_read_lock()`.
unsafe extern "C" fn vma_map_pages(
    vmf: *mut bindings::vm_fault,
    start_pgoff: usize,
    end_pgoff: usize,
) -> bindings::vm_fault_t {
    // SAFETY: Valid and locked for this call (function contract), as `Fault` requires.
    let vmf = unsafe { &*vmf };
    let fault = Fault { vmf };
    // INVARIANT: under `rcu_read_lock()`, with the window `do_fault_around` computed
    // inside the VMA and one PTE table (function contract).
    let around = FaultAround {
        fault,
        start: start_pgoff,
        end: end_pgoff,
    };
    if around.fault.space().map_pages(&around) {
        FaultOutcome::Mapped.to_raw()
    } else {
        0
    }
}

/// `vm_ops->pfn_mkwrite`: a write to a present read-only PTE of the arena.
///
/// Providing it makes the kernel write-protect the arena's default protection
/// (`vma_wants_writenotify`), which is why every install chooses its protection
/// itself; read-only PTEs then come from read-only regions (a write gets `SIGSEGV`)
/// or from an `mprotect` of the arena (a write to a read-write region is allowed:
/// `Space::mkwrite` makes the PTE writable if it is still the same one and no writer
/// came between).
///
/// # Safety
///
/// As for [`vma_fault`]; the PTE lock is not held.
unsafe extern "C" fn vma_pfn_mkwrite(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
    // SAFETY: Valid and locked for this call (function contract), as `Fault` requires.
    let vmf = unsafe { &*vmf };
    let fault = Fault { vmf };
    // `Mapped` is `VM_FAULT_NOPAGE`: `mkwrite` made the PTE writable itself (or found
    // it changed), so the kernel's `finish_mkwrite_fault` must not run.
    fault.space().mkwrite(&fault).to_raw()
}

/// `struct vm_operations_struct` with raw pointers, shareable because it is immutable.
#[repr(transparent)]
struct VmOps(bindings::vm_operations_struct);

// SAFETY: The table is never written after initialisation; it only holds function
// pointers and a null-initialised rest.
unsafe impl Sync for VmOps {}

static VM_OPS: VmOps = VmOps(bindings::vm_operations_struct {
    open: Some(vma_open),
    close: Some(vma_close),
    may_split: Some(vma_may_split),
    mremap: Some(vma_mremap),
    fault: Some(vma_fault),
    map_pages: Some(vma_map_pages),
    pfn_mkwrite: Some(vma_pfn_mkwrite),
    name: Some(vma_name),
    ..pin_init::zeroed()
});

/// Turns a VMA being created by `mmap` into an arena of `space`.
pub(crate) fn install(vma: &VmaNew, space: Arc<Space>) {
    vma.set_mixedmap();
    vma.set_io();
    vma.set_dontcopy();
    vma.set_dontexpand();
    vma.set_dontdump();
    // SAFETY: We are in `f_op->mmap`, the VMA is not yet visible to any other thread
    // and we may set its operations and private data. The reference moved into
    // `vm_private_data` is released by `vma_close`.
    unsafe {
        (*vma.as_ptr()).vm_ops = &VM_OPS.0;
        (*vma.as_ptr()).vm_private_data = space.into_foreign().cast::<c_void>();
    }
}

/// The file offset (in pages) a VMA being created maps.
pub(crate) fn pgoff(vma: &VmaNew) -> usize {
    // SAFETY: `VmaNew` grants access to a VMA under construction in `f_op->mmap`;
    // `vm_pgoff` is a plain field set before the hook runs.
    unsafe { (*vma.as_ptr()).vm_pgoff }
}

/// Whether a VMA flag set allows an arena: shared mappings only (`MAP_SHARED`).
pub(crate) fn flags_ok(vma: &VmaNew) -> bool {
    vma.flags() & flags::MAYSHARE != 0
}

/// Zaps the PTEs of arena bytes `[offset, offset + len)`, if the arena is still mapped at
/// `start` in `mm` as an arena of `space`. Returns whether a zap was issued.
///
/// Takes `mmap_lock` for read; callers must hold none of the space's locks (lock order:
/// `mmap_lock` → engine locks).
pub(crate) fn zap(mm: &Mm, start: usize, space: &Space, offset: usize, len: usize) -> bool {
    let Some(mm) = mm.mmget_not_zero() else {
        return false; // The process has exited; exit_mmap already zapped everything.
    };
    let guard = mm.mmap_read_lock();
    let Some(vma) = guard.vma_lookup(start) else {
        return false;
    };
    // SAFETY: `vma` is valid while `guard` holds mmap_lock; we only read a field.
    let is_arena = unsafe { core::ptr::eq((*vma.as_ptr()).vm_ops, &VM_OPS.0) };
    // An arena VMA's private data is an `Arc<Space>`; is it this space's?
    // SAFETY: Only evaluated for an arena VMA, alive while `guard` holds mmap_lock.
    let ours = is_arena && core::ptr::eq(&*unsafe { space_of(vma.as_ptr()) }, space);
    if !ours || vma.start() != start {
        return false;
    }
    let Some(addr) = start.checked_add(offset) else {
        return false;
    };
    // `zap_vma_range` ignores (does not zap) a range outside the VMA.
    vma.zap_vma_range(addr, len);
    true
}
