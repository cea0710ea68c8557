// SPDX-License-Identifier: GPL-2.0

//! A fixed-size array of lazily allocated pages, filled concurrently without locks.
//!
//! Each slot is an atomic `struct page *`: null until the first fault on that page
//! installs a freshly allocated page with `cmpxchg` (the loser of a race frees its
//! page). A slot changes from null to a page once, and is emptied only when the whole
//! array is dropped, or by [`PageSlots::punch`] once nothing can reach the slot any
//! more (the pages of the part of a region that an UNMAP or REPLACE cut away, after
//! the writer's quiesce and zap). Readers therefore need no lock: a page they load
//! stays valid for as long as they can reach the slot.
//!
//! This is the only file that turns raw `struct page` pointers back into pages.

use crate::vm_ops::cond_resched;
use core::ptr::{null_mut, NonNull};
use kernel::{
    bindings,
    page::{BorrowedPage, Page},
    prelude::*,
    sync::atomic::{Acquire, Atomic, Relaxed, Release},
};

/// What [`PageSlots::install`] did.
pub(crate) enum Installed<'a> {
    /// The page given was stored.
    Stored(BorrowedPage<'a>),
    /// Another thread stored a page first; the page given was freed.
    Lost(BorrowedPage<'a>),
}

impl<'a> Installed<'a> {
    /// The page now in the slot, whoever stored it.
    pub(crate) fn page(self) -> BorrowedPage<'a> {
        match self {
            Installed::Stored(p) | Installed::Lost(p) => p,
        }
    }
}

/// Lazily filled page slots.
///
/// # Invariants
///
/// Every non-null slot holds a pointer to an order-0 page that this array owns (one
/// reference, from `alloc_pages`). A non-null slot is never overwritten before drop,
/// and emptied only by [`PageSlots::punch`], whose caller guarantees no reader.
pub(crate) struct PageSlots {
    slots: KVVec<Atomic<*mut bindings::page>>,
}

impl PageSlots {
    /// Allocates `n` empty slots, charged to the caller's memory cgroup. `n` comes from
    /// user space (bounded by the file's limits): no allocation warning for it.
    pub(crate) fn new(n: usize) -> Result<Self> {
        let mut slots = KVVec::with_capacity(n, GFP_KERNEL_ACCOUNT | __GFP_NOWARN)?;
        for i in 0..n {
            if slots.push_within_capacity(Atomic::new(null_mut())).is_err() {
                return Err(ENOMEM); // Unreachable: the capacity is `n`.
            }
            if i % 4096 == 4095 {
                cond_resched();
            }
        }
        // INVARIANT: all slots are null.
        Ok(Self { slots })
    }

    /// Number of slots.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Number of pages installed in slots `[first, first + n)`. O(n): for accounting.
    pub(crate) fn present_in(&self, first: usize, n: usize) -> usize {
        let mut count = 0;
        for (i, s) in self.slots.iter().skip(first).take(n).enumerate() {
            count += usize::from(!s.load(Relaxed).is_null());
            if i % 4096 == 4095 {
                cond_resched();
            }
        }
        count
    }

    /// Returns the page in slot `i`, if one was installed. Never sleeps.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<BorrowedPage<'_>> {
        // ORDERING: Acquire pairs with the Release in `install`, so the page's contents
        // (zeroed by the allocator) are visible before we hand it to the MMU.
        let p = NonNull::new(self.slots.get(i)?.load(Acquire))?;
        // SAFETY: A non-null slot points to a page this array owns until it is dropped
        // (type invariant), and the returned borrow cannot outlive `&self`.
        Some(unsafe { BorrowedPage::from_raw(p) })
    }

    /// Stores `page` in the empty slot `i`, or frees it if another thread was first.
    ///
    /// Returns `None` if `i` is out of range (and frees `page`).
    pub(crate) fn install(&self, i: usize, page: Page) -> Option<Installed<'_>> {
        let slot = self.slots.get(i)?;
        let raw = page.as_ptr();
        // ORDERING: Release publishes the zeroed contents with the pointer.
        match slot.cmpxchg(null_mut(), raw, Release) {
            Ok(_) => {
                // The array owns the page from now on (type invariant).
                core::mem::forget(page);
                // SAFETY: `raw` is the page we just stored; it lives until `self` drops.
                Some(Installed::Stored(unsafe {
                    BorrowedPage::from_raw(NonNull::new(raw)?)
                }))
            }
            Err(_) => {
                drop(page);
                // ORDERING: a failed cmpxchg orders nothing; the winner's page contents
                // must be visible before we map them, so read the slot again with Acquire.
                let winner = NonNull::new(slot.load(Acquire))?;
                // SAFETY: Non-null slots hold pages owned by `self` (type invariant).
                Some(Installed::Lost(unsafe { BorrowedPage::from_raw(winner) }))
            }
        }
    }
}

impl PageSlots {
    /// Frees the pages of slots `[first, first + n)` (empty slots stay empty) and
    /// returns how many it freed. Process context.
    ///
    /// # Safety
    ///
    /// No thread can reach these slots any more, nor will again: no region that can
    /// still be found by a fault covers them, every fault that found one that did has
    /// finished, and no PTE maps their pages (the writer's quiesce and zap,
    /// `protocol/writer.rs`).
    pub(crate) unsafe fn punch(&self, first: usize, n: usize) -> usize {
        let mut freed = 0;
        for (i, slot) in self.slots.iter().skip(first).take(n).enumerate() {
            if i % 4096 == 4095 {
                cond_resched();
            }
            let p = slot.xchg(null_mut(), Relaxed);
            if !p.is_null() {
                // SAFETY: We took the one reference this array owned (type invariant)
                // out of the slot; nothing can reach the page any more (caller's
                // contract).
                unsafe { bindings::__free_pages(p, 0) };
                freed += 1;
            }
        }
        freed
    }
}

impl Drop for PageSlots {
    fn drop(&mut self) {
        for (i, slot) in self.slots.iter().enumerate() {
            if i % 4096 == 4095 {
                cond_resched(); // Regions are dropped in process context only.
            }
            let p = slot.load(Relaxed);
            if !p.is_null() {
                // PTEs map the page without a reference (special PTEs, see
                // `vm_ops::PteTable`): the owner of a region drops it only after its
                // range was zapped or the arena VMA is gone.
                // SAFETY: We own the one reference to this page (type invariant) and
                // nobody can reach the slots any more (`&mut self`).
                unsafe { bindings::__free_pages(p, 0) };
            }
        }
    }
}
