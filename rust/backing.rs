// SPDX-License-Identifier: GPL-2.0

//! Region backings: where a region's pages come from on first touch.
//!
//! - [`Backing::Zero`]: a zeroed page, allocated on first touch (anonymous-like).
//! - [`Backing::Slow`]: the same, but the first touch of each page sleeps first, a
//!   stand-in for I/O, so every engine's "fault must sleep" path runs in tests.

#![deny(unsafe_code)]

use crate::{
    pages::{Installed, PageSlots},
    stats::Stats,
    uapi,
};
use kernel::{
    page::{BorrowedPage, Page},
    prelude::*,
    time::{delay::fsleep, Delta},
};

/// How a region's pages are produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backing {
    /// Zero-filled on first touch.
    Zero,
    /// Zero-filled on first touch, after sleeping this long.
    Slow {
        /// Microseconds to sleep on each page's first touch.
        delay_us: u32,
    },
}

impl Backing {
    /// Decodes the UAPI `backing`/`delay_us` pair.
    pub(crate) fn from_uapi(kind: u32, delay_us: u32) -> Result<Self> {
        match kind {
            uapi::VMALAB_BACKING_ZERO if delay_us == 0 => Ok(Backing::Zero),
            uapi::VMALAB_BACKING_SLOW if delay_us <= uapi::VMALAB_MAX_DELAY_US => {
                Ok(Backing::Slow { delay_us })
            }
            _ => Err(EINVAL),
        }
    }

    /// Like [`Self::populate`], but never sleeps: usable under `rcu_read_lock()`.
    /// Returns `None` when producing the page would have to sleep (the slow backing's
    /// delay, or no memory without reclaim); the caller takes the slow path.
    pub(crate) fn populate_atomic<'a>(
        &self,
        slots: &'a PageSlots,
        i: usize,
        stats: &Stats,
    ) -> Option<BorrowedPage<'a>> {
        if let Some(page) = slots.get(i) {
            return Some(page);
        }
        if *self != Backing::Zero {
            return None;
        }
        // GFP_NOWAIT plus __GFP_ACCOUNT (the kernel crate has no constant for the
        // latter alone): the page is charged to the faulting task's memory cgroup.
        let account = GFP_KERNEL_ACCOUNT & !GFP_KERNEL;
        let page = Page::alloc_page(GFP_NOWAIT | account | __GFP_ZERO | __GFP_NOWARN).ok()?;
        Some(Self::account(slots.install(i, page)?, stats))
    }

    /// For a fault that cannot sleep where it finds the slot empty (`spf`): produces a
    /// page for this backing outside any read section — sleeps the slow backing's
    /// delay, then allocates a zeroed page — to be stored later with [`Self::adopt`].
    pub(crate) fn prepare(&self, stats: &Stats) -> Result<Page> {
        if let Backing::Slow { delay_us } = *self {
            stats.inc(uapi::VMALAB_CTR_SLOW_SLEEP);
            fsleep(Delta::from_micros(i64::from(delay_us)));
        }
        Ok(Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)?)
    }

    /// Stores `page` (from [`Self::prepare`]) in slot `i` unless another fault was
    /// first (then `page` is freed), and returns the page in the slot. Never sleeps.
    pub(crate) fn adopt<'a>(
        &self,
        slots: &'a PageSlots,
        i: usize,
        page: Page,
        stats: &Stats,
    ) -> Option<BorrowedPage<'a>> {
        Some(Self::account(slots.install(i, page)?, stats))
    }

    fn account<'a>(installed: Installed<'a>, stats: &Stats) -> BorrowedPage<'a> {
        match installed {
            Installed::Stored(p) => {
                stats.inc(uapi::VMALAB_CTR_PAGE_ALLOC);
                p
            }
            lost @ Installed::Lost(_) => {
                stats.inc(uapi::VMALAB_CTR_PAGE_RACE);
                lost.page()
            }
        }
    }

    /// Produces page `i` of `slots` if it is not there yet, and returns it.
    ///
    /// May sleep (allocation with `GFP_KERNEL`, and the slow backing's delay): call it
    /// from `->fault`, never from `map_pages`.
    pub(crate) fn populate<'a>(
        &self,
        slots: &'a PageSlots,
        i: usize,
        stats: &Stats,
    ) -> Result<BorrowedPage<'a>> {
        if let Some(page) = slots.get(i) {
            return Ok(page);
        }
        if let Backing::Slow { delay_us } = *self {
            stats.inc(uapi::VMALAB_CTR_SLOW_SLEEP);
            fsleep(Delta::from_micros(i64::from(delay_us)));
        }
        let page = Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)?;
        Ok(Self::account(slots.install(i, page).ok_or(EINVAL)?, stats))
    }
}
