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
//! - is `VM_MIXEDMAP` (so `vm_insert_page` may be called from a fault without
//!   `mmap_lock` held for write; `mm/memory.c: vm_insert_page`), `VM_DONTCOPY` (a child
//!   does not inherit it: fork copies `VM_MIXEDMAP` PTEs, which an unmap in the parent
//!   could not reach), `VM_DONTEXPAND` and `VM_DONTDUMP`;
//! - refuses to be split (`may_split`) or moved (`mremap`), so it stays one VMA at one
//!   address for its whole life and an unmap zaps exactly one range;
//! - holds one reference to its [`Space`] in `vm_private_data` (taken at mmap and by
//!   `open`, dropped by `close`), so the space outlives every VMA that can fault on it;
//! - provides `map_pages`, without which every fault under the per-VMA lock is
//!   retried under `mmap_lock` (`mm/memory.c: vmf_can_call_fault`).

use crate::space::Space;
use kernel::{
    bindings,
    ffi::{c_char, c_int, c_void},
    mm::{
        virt::{flags, VmaMixedMap, VmaNew},
        Mm,
    },
    page::Page,
    prelude::*,
    sync::{Arc, ArcBorrow},
    types::ForeignOwnable,
};

/// The C shim (`shim.c`): static inlines that Rust cannot reach otherwise.
mod shim {
    extern "C" {
        /// `pmd_none(pmdp_get_lockless(vmf->pmd))` for a `struct vm_fault *vmf` (passed
        /// untyped: bindgen's `vm_fault` reaches structs rustc deems not FFI-safe).
        pub(super) fn vmalab_pmd_none(vmf: *const kernel::ffi::c_void) -> bool;
    }
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
    /// Out of memory.
    Oom,
}

impl FaultOutcome {
    fn to_raw(self) -> bindings::vm_fault_t {
        (match self {
            FaultOutcome::Mapped | FaultOutcome::MappedSlow => {
                bindings::vm_fault_reason_VM_FAULT_NOPAGE
            }
            FaultOutcome::SigBus => bindings::vm_fault_reason_VM_FAULT_SIGBUS,
            FaultOutcome::Oom => bindings::vm_fault_reason_VM_FAULT_OOM,
        }) as bindings::vm_fault_t
    }
}

/// A page fault being handled by `->fault` (process context, may sleep).
///
/// # Invariants
///
/// `vmf` is the `struct vm_fault` the core mm passed to `->fault`, valid for `'a`, and
/// its VMA is an arena VMA (`vm_ops == &VM_OPS`) held for read (mmap or per-VMA lock)
/// for `'a`.
pub(crate) struct Fault<'a> {
    vmf: &'a bindings::vm_fault,
}

impl<'a> Fault<'a> {
    /// The faulting page's index in the arena (the arena is mapped at `vm_pgoff == 0`).
    #[inline]
    pub(crate) fn pgoff(&self) -> usize {
        self.vmf.__bindgen_anon_1.pgoff
    }

    /// The arena VMA, with the `VM_MIXEDMAP` view that can insert pages.
    #[inline]
    fn vma(&self) -> &'a VmaMixedMap {
        // SAFETY: The VMA is read-locked for 'a (type invariant) and has VM_MIXEDMAP, set
        // in `install` and never cleared (mprotect/madvise cannot clear it).
        unsafe { VmaMixedMap::from_raw(self.vmf.__bindgen_anon_1.vma) }
    }

    /// The address space the arena belongs to.
    #[inline]
    fn space(&self) -> ArcBorrow<'a, Space> {
        // SAFETY: The VMA is an arena VMA, read-locked for 'a (type invariant).
        unsafe { space_of(self.vmf.__bindgen_anon_1.vma) }
    }

    /// Whether the faulting address already has a PTE table. While it does,
    /// [`Self::insert`] allocates nothing and may be called under `rcu_read_lock()`.
    ///
    /// (Only `MADV_DONTNEED` page-table reclaim or khugepaged could free the table
    /// meanwhile; neither applies to an arena, which has no anon_vma and no THP.)
    #[inline]
    pub(crate) fn pte_table_present(&self) -> bool {
        // SAFETY: `vmf` is valid for 'a (type invariant); its `pmd` points at the PMD
        // entry for the faulting address.
        !unsafe { shim::vmalab_pmd_none(core::ptr::from_ref(self.vmf).cast()) }
    }

    /// Maps `page` at the faulting address. `EBUSY` means a racing fault mapped it first.
    #[inline]
    pub(crate) fn insert(&self, page: &Page) -> Result {
        self.vma()
            .vm_insert_page(self.vmf.__bindgen_anon_1.address, page)
    }
}

/// A `map_pages` call: map what is ready in `[start, end]` without sleeping.
///
/// # Invariants
///
/// As for [`Fault`], plus: we are inside `rcu_read_lock()` (`do_fault_around`), so
/// nothing reached from here may sleep, and the PMD covering the range has a PTE table
/// (checked at construction), so `vm_insert_page` allocates nothing.
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

    /// Maps `page` at arena page `pgoff` (inside [`Self::range`]). Never sleeps.
    #[inline]
    pub(crate) fn insert(&self, pgoff: usize, page: &Page) -> Result {
        if pgoff < self.start || pgoff > self.end {
            return Err(EINVAL);
        }
        let vmf = &self.fault.vmf.__bindgen_anon_1;
        let addr = vmf
            .address
            .wrapping_add(pgoff.wrapping_sub(vmf.pgoff) << kernel::page::PAGE_SHIFT);
        // No allocation: the PTE table exists (type invariant) and the upper levels
        // were allocated by `__handle_mm_fault` before `do_fault_around` ran.
        self.fault.vma().vm_insert_page(addr, page)
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
    if !fault.pte_table_present() {
        // Inserting would allocate a PTE table (and sleep under RCU). Let `->fault` do
        // it; later faults in this 2 MiB find the table present.
        return 0;
    }
    // INVARIANT: under `rcu_read_lock()` (function contract), PTE table present.
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
    name: Some(vma_name),
    ..pin_init::zeroed()
});

/// Turns a VMA being created by `mmap` into an arena of `space`.
pub(crate) fn install(vma: &VmaNew, space: Arc<Space>) {
    vma.set_mixedmap();
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
