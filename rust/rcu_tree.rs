// SPDX-License-Identifier: GPL-2.0

//! A range map readable under RCU, whose entries can be *held* past the read section.
//!
//! `kernel::maple_tree` initialises its trees without `MT_FLAGS_USE_RCU` and offers
//! no lockless reader, so this file wraps the raw calls (`mt_init_flags`,
//! `mtree_store_range`, `mtree_erase`, `mtree_load`, `mt_find`, `mtree_destroy`) the
//! way `mm/` uses them for VMAs: writers go through the tree's internal spinlock,
//! readers walk it under `rcu_read_lock()` and write nothing.
//!
//! Entry lifetime (Wilcox's protocol, seed 002):
//! - A reader finds an entry under RCU ([`RcuRangeMap::load`]) and may use it for the
//!   rest of its read section without touching any shared line.
//! - A reader that must sleep converts the entry into a [`Held`] before leaving the
//!   read section: one atomic increment of the entry's user count.
//! - A writer replaces or removes entries ([`RcuRangeMap::replace`]) and
//!   gets them back only through [`RcuRangeMap::reclaim`], which waits for a grace
//!   period (so every reader that found them has left its read section, and every
//!   `Held` made from them has been counted), then waits for their user counts to drain.
//!
//! The hold/release/drain decisions are `protocol/hold.rs` and the reclaim order is
//! `protocol/reclaim.rs`, both shared with the loom model in `tools/model`; this file
//! supplies the kernel's atomics, mutex, condvar, grace periods and memory.
//!
//! Lock order: this map's `drain` and `graveyard` mutexes are innermost; `drain` is
//! taken by readers dropping the last [`Held`] of an entry a writer waits for, and by
//! that writer.

use crate::protocol::{
    hold::{self, DrainWait, HoldWord},
    reclaim::{self, Reclaimer},
};
use core::{marker::PhantomData, ops::Deref, ptr::NonNull};
use kernel::{
    bindings,
    ffi::{c_ulong, c_void},
    new_condvar, new_mutex,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Full, Relaxed},
        rcu, CondVar, Mutex,
    },
    time::{delay::fsleep, Delta},
    types::Opaque,
};
pub(crate) use reclaim::Wait;

/// A map entry: the value plus what the drain protocol needs. Derefs to the value.
pub(crate) struct Node<T> {
    value: T,
    /// The hold word (`protocol/hold.rs`): readers holding the entry past their RCU
    /// read section, and `DRAINING` once a writer reclaims it.
    users: Atomic<u32>,
}

impl<T> Deref for Node<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

/// A map from page ranges to `T`, readable under RCU.
///
/// # Invariants
///
/// `tree` is a maple tree initialised with `MT_FLAGS_USE_RCU`; every entry in it is a
/// pointer from `KBox::<Node<T>>::into_raw`, owned by the tree until it is removed, and
/// then by a [`Retired`] until [`Self::reclaim`] frees it.
#[pin_data(PinnedDrop)]
pub(crate) struct RcuRangeMap<T: Send + Sync> {
    #[pin]
    tree: Opaque<bindings::maple_tree>,
    #[pin]
    drain: Mutex<()>,
    #[pin]
    drained: CondVar,
    /// Test hook: microseconds a releasing reader sleeps right after its decrement.
    release_delay_us: Atomic<u32>,
    /// Entries retired by a mutant writer that skipped part of the wait (test hook):
    /// freed only when the map is dropped, so the mutant stays memory-safe.
    #[pin]
    graveyard: Mutex<KVec<Retired<T>>>,
    _owns: PhantomData<KBox<Node<T>>>,
}

// SAFETY: The maple tree serialises writers with its own spinlock and supports
// concurrent RCU readers; entries are `T: Send + Sync`.
unsafe impl<T: Send + Sync> Send for RcuRangeMap<T> {}
// SAFETY: As above.
unsafe impl<T: Send + Sync> Sync for RcuRangeMap<T> {}

/// An entry removed from the map that readers may still be using.
///
/// # Invariants
///
/// `node` came from `KBox::into_raw` and is no longer reachable from the tree.
pub(crate) struct Retired<T> {
    node: NonNull<Node<T>>,
}

// SAFETY: A retired entry is an owned box in waiting.
unsafe impl<T: Send> Send for Retired<T> {}

/// An entry held past an RCU read section; the writer that removes it waits for this
/// to drop before freeing it.
///
/// # Invariants
///
/// `node` is an entry of `map` whose `users` count includes this hold.
pub(crate) struct Held<'m, T: Send + Sync> {
    node: NonNull<Node<T>>,
    map: &'m RcuRangeMap<T>,
}

impl<T: Send + Sync> Deref for Held<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: A counted hold keeps the node alive: `reclaim` waits for `users` to
        // reach zero before freeing it (type invariant).
        unsafe { &self.node.as_ref().value }
    }
}

impl<T: Send + Sync> Drop for Held<'_, T> {
    fn drop(&mut self) {
        // SAFETY: The node is alive until this hold is released (type invariant); the
        // release below is the last use of it.
        let users = unsafe { &self.node.as_ref().users };
        // From here on the node may be freed: `release` decided from its own
        // decrement whether the writer waits for us.
        let wake = hold::release(users);
        self.map.test_release_delay();
        if wake {
            self.map.wake_all();
        }
    }
}

/// The kernel side of the hold word: fully ordered RMWs on an `Atomic<u32>`.
impl HoldWord for Atomic<u32> {
    fn add_full(&self, v: u32) -> u32 {
        self.fetch_add(v, Full)
    }

    fn sub_full(&self, v: u32) -> u32 {
        self.fetch_sub(v, Full)
    }

    fn load_acquire(&self) -> u32 {
        self.load(Acquire)
    }
}

/// The kernel side of the drain wait: the map's `drain` mutex and `drained` condvar,
/// shared by all of its entries (a writer woken for another entry checks again).
impl<T: Send + Sync> DrainWait for RcuRangeMap<T> {
    fn wait_until(&self, done: &dyn Fn() -> bool) {
        let mut guard = self.drain.lock();
        while !done() {
            self.drained.wait(&mut guard);
        }
    }

    fn wake_all(&self) {
        let _guard = self.drain.lock();
        self.drained.notify_all();
    }
}

impl<T: Send + Sync> RcuRangeMap<T> {
    /// An empty map.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes; `mt_init_flags` fully initialises it.
            tree <- Opaque::ffi_init(|slot| unsafe {
                bindings::mt_init_flags(slot, bindings::MT_FLAGS_USE_RCU)
            }),
            drain <- new_mutex!((), "vmalab_rcu_map_drain"),
            drained <- new_condvar!("vmalab_rcu_map_drained"),
            release_delay_us: Atomic::new(0),
            graveyard <- new_mutex!(KVec::new(), "vmalab_rcu_map_graveyard"),
            _owns: PhantomData,
        })
    }

    /// Collects the entries starting in `[first, last]` (by index of each entry's
    /// first page; callers pass whole entries).
    fn entries_in(&self, first: usize, last: usize, out: &mut KVec<Retired<T>>) -> Result {
        let mut index = first as c_ulong;
        loop {
            // SAFETY: The tree is initialised (type invariant); `mt_find` is an RCU
            // reader and updates `index` past the entry it returns.
            let p = unsafe { bindings::mt_find(self.tree.get(), &mut index, last as c_ulong) };
            let Some(node) = NonNull::new(p.cast::<Node<T>>()) else {
                return Ok(());
            };
            // INVARIANT: about to be removed from the tree by the caller.
            out.push(Retired { node }, GFP_KERNEL_ACCOUNT)?;
            if index == 0 || index as usize > last {
                return Ok(());
            }
        }
    }

    /// Replaces the entries in `[lo, hi)` (each lying inside it) by `new`, given as
    /// `(first, last, value)` ranges inside `[lo, hi)`, in order, not overlapping; the old
    /// entries are appended to `retired`, and what `new` does not cover is left empty.
    /// Readers see, at each index, the old entry or the new one, and where the new set
    /// has an entry never a gap. On error nothing changed (and `retired` is as it was).
    ///
    /// Only the first store may fail (`ENOMEM`); the ones after it allocate with
    /// `__GFP_NOFAIL`, as `mtree_erase` itself does, so that a change is never left
    /// half made.
    pub(crate) fn replace(
        &self,
        lo: usize,
        hi: usize,
        new: KVec<(usize, usize, T)>,
        retired: &mut KVec<Retired<T>>,
    ) -> Result {
        if lo >= hi {
            return Err(EINVAL);
        }
        let mut nodes = KVec::with_capacity(new.len(), GFP_KERNEL)?;
        let mut next = lo;
        for (first, last, value) in new {
            if first < next || last >= hi || first > last {
                return Err(EINVAL);
            }
            next = last + 1;
            let node = KBox::new(
                Node {
                    value,
                    users: Atomic::new(0),
                },
                GFP_KERNEL_ACCOUNT,
            )?;
            nodes.push((first, last, node), GFP_KERNEL)?;
        }
        let before = retired.len();
        // The entries the change will take out; still owned by the tree until it runs.
        if let Err(e) = self.entries_in(lo, hi - 1, retired) {
            // `Retired` has no destructor: this only forgets pointers the tree owns.
            retired.truncate(before);
            return Err(e);
        }
        // `kernel::alloc::Flags` has no `__GFP_NOFAIL` (nor a way to pass it raw).
        let nofail = bindings::GFP_KERNEL_ACCOUNT | (1 << bindings::___GFP_NOFAIL_BIT);
        let mut gfp = bindings::GFP_KERNEL_ACCOUNT;
        let mut covered = lo;
        for (first, last, node) in nodes {
            let ptr = KBox::into_raw(node);
            // SAFETY: The tree is initialised; `ptr` is a valid, aligned, non-reserved
            // entry; we may sleep in the writer's process context.
            let ret = unsafe { self.store_raw(first, last, ptr.cast(), gfp) };
            if ret != 0 {
                // Only the first store can fail: the tree is unchanged.
                retired.truncate(before);
                // SAFETY: The store failed, so the tree did not take `ptr`: still ours.
                drop(unsafe { KBox::from_raw(ptr) });
                return Err(Error::from_errno(ret));
            }
            gfp = nofail;
            if first > covered {
                // SAFETY: As above; storing null empties the range.
                unsafe { self.store_raw(covered, first - 1, core::ptr::null_mut(), nofail) };
            }
            covered = last + 1;
        }
        if covered < hi {
            // SAFETY: As above. The first and only change if `new` was empty: with
            // `__GFP_NOFAIL` it cannot fail either.
            unsafe { self.store_raw(covered, hi - 1, core::ptr::null_mut(), nofail) };
        }
        // INVARIANT: the entries appended above left the tree with these stores.
        Ok(())
    }

    /// `mtree_store_range`; returns its error code.
    ///
    /// # Safety
    ///
    /// `entry` is null or a pointer from `KBox::<Node<T>>::into_raw` the tree takes
    /// ownership of on success; `gfp` allows sleeping (process context, no spinlock).
    unsafe fn store_raw(
        &self,
        first: usize,
        last: usize,
        entry: *mut c_void,
        gfp: bindings::gfp_t,
    ) -> i32 {
        // SAFETY: The tree is initialised (type invariant); the caller vouches for
        // `entry` and `gfp`.
        unsafe {
            bindings::mtree_store_range(
                self.tree.get(),
                first as c_ulong,
                last as c_ulong,
                entry,
                gfp,
            )
        }
    }

    /// Test hook: makes every releasing reader sleep `us` microseconds right after its
    /// release (0: off), widening the window in which a writer may free the entry.
    pub(crate) fn set_test_release_delay(&self, us: u32) {
        self.release_delay_us.store(us, Relaxed);
    }

    fn test_release_delay(&self) {
        let us = self.release_delay_us.load(Relaxed);
        if us != 0 {
            fsleep(Delta::from_micros(i64::from(us)));
        }
    }

    /// Returns the entry covering `index`. Never sleeps and writes nothing shared.
    #[inline]
    pub(crate) fn load<'g>(&self, index: usize, _guard: &'g rcu::Guard) -> Option<&'g Node<T>> {
        // SAFETY: The tree is initialised (type invariant); `mtree_load` is an RCU
        // reader (it nests its own `rcu_read_lock` in the caller's).
        let p = unsafe { bindings::mtree_load(self.tree.get(), index as c_ulong) };
        // SAFETY: Entries are live nodes; one erased meanwhile is only freed after a
        // grace period, which the caller's guard holds off for 'g.
        unsafe { p.cast::<Node<T>>().as_ref() }
    }

    /// Returns the first entry at or after `*index` and moves `*index` past it (to 0
    /// after the last index). Never sleeps and writes nothing shared.
    pub(crate) fn find<'g>(
        &self,
        index: &mut usize,
        _guard: &'g rcu::Guard,
    ) -> Option<&'g Node<T>> {
        let mut i = *index as c_ulong;
        // SAFETY: The tree is initialised (type invariant); `mt_find` is an RCU reader
        // and advances `i` past the entry it returns.
        let p = unsafe { bindings::mt_find(self.tree.get(), &mut i, c_ulong::MAX) };
        *index = i as usize;
        // SAFETY: As in `load`: a live node, freed only after a grace period the
        // caller's guard holds off.
        unsafe { p.cast::<Node<T>>().as_ref() }
    }

    /// Holds `entry` (just returned by [`Self::load`] under `guard`) beyond the read
    /// section. One atomic increment on the entry: the slow path's cost.
    pub(crate) fn hold(&self, entry: &Node<T>, _guard: &rcu::Guard) -> Held<'_, T> {
        // The node is alive: we are inside the read section in which it was found, and
        // `reclaim` waits a grace period before it looks at `users`.
        hold::hold(&entry.users);
        // INVARIANT: the increment above counts this hold.
        Held {
            node: NonNull::from(entry),
            map: self,
        }
    }

    /// Frees retired entries once no reader can use them: waits for a grace period,
    /// then for each entry's holds to drain, then calls `f` on its value. Returns how
    /// many entries had holds to wait for.
    pub(crate) fn reclaim(&self, retired: KVec<Retired<T>>, wait: Wait, f: impl FnMut(T)) -> u64 {
        if retired.is_empty() {
            return 0;
        }
        reclaim::reclaim(&mut MapReclaimer { map: self, f }, retired, wait)
    }
}

/// The kernel side of `protocol/reclaim.rs` for a map: its grace periods, its drain
/// wait, its graveyard, and `f` for the values of freed entries.
struct MapReclaimer<'m, T: Send + Sync, F: FnMut(T)> {
    map: &'m RcuRangeMap<T>,
    f: F,
}

impl<T: Send + Sync, F: FnMut(T)> Reclaimer for MapReclaimer<'_, T, F> {
    type Entry = Retired<T>;

    fn grace_period(&mut self, expedited: bool) {
        if expedited {
            // SAFETY: Process context, no locks held (the writer's tail): may sleep,
            // and `synchronize_rcu_expedited` has no other requirement.
            unsafe { bindings::synchronize_rcu_expedited() };
        } else {
            rcu::synchronize_rcu();
        }
    }

    fn drain(&mut self, r: &Retired<T>) -> bool {
        // SAFETY: `r.node` left the tree before the grace period that just ended, so no
        // reader can newly find or hold it; it is freed only after this drain.
        let node = unsafe { r.node.as_ref() };
        hold::drain(&node.users, self.map)
    }

    fn free(&mut self, r: Retired<T>) {
        // SAFETY: Unreachable from the tree, past a grace period and with no holds left
        // (`reclaim.rs` frees only after `drain`): we own the box again (type invariant
        // of `Retired`).
        let node = unsafe { KBox::from_raw(r.node.as_ptr()) };
        (self.f)(KBox::into_inner(node).value);
    }

    fn park(&mut self, r: Retired<T>) {
        // Out of memory in a test mutant: `r` is dropped, which leaks its node (a
        // `Retired` has no destructor) rather than freeing it.
        let _ = self.map.graveyard.lock().push(r, GFP_KERNEL);
    }
}

#[pinned_drop]
impl<T: Send + Sync> PinnedDrop for RcuRangeMap<T> {
    fn drop(self: Pin<&mut Self>) {
        let mut index: c_ulong = 0;
        loop {
            // SAFETY: The tree is initialised; `mt_find` walks it under RCU internally.
            let p = unsafe { bindings::mt_find(self.tree.get(), &mut index, c_ulong::MAX) };
            if p.is_null() {
                break;
            }
            // SAFETY: The map is being dropped: no reader, writer or hold can reach it
            // any more, so each remaining node is ours to free.
            drop(unsafe { KBox::from_raw(p.cast::<Node<T>>()) });
            if index == 0 {
                break; // Wrapped past the last index.
            }
        }
        // SAFETY: The tree is initialised; this frees its nodes (the entries are gone).
        unsafe { bindings::mtree_destroy(self.tree.get()) };
        // Entries parked by a test mutant: no reader is left either.
        for r in core::mem::take(&mut *self.graveyard.lock()) {
            // SAFETY: Parked entries left the tree and are owned by the graveyard; the
            // map is being dropped, so nothing can reach them.
            drop(unsafe { KBox::from_raw(r.node.as_ptr()) });
        }
    }
}

#[kunit_tests(vmalab_rcu_range_map)]
mod tests {
    use super::*;

    fn value_at(map: &RcuRangeMap<u32>, index: usize) -> Option<u32> {
        let guard = rcu::read_lock();
        map.load(index, &guard).map(|n| **n)
    }

    fn one(first: usize, last: usize, v: u32) -> Result<KVec<(usize, usize, u32)>> {
        let mut new = KVec::new();
        new.push((first, last, v), GFP_KERNEL)?;
        Ok(new)
    }

    #[test]
    fn replace_split_erase_reclaim() -> Result {
        let map = KBox::pin_init(RcuRangeMap::<u32>::new(), GFP_KERNEL)?;
        let mut retired = KVec::new();
        map.replace(10, 20, one(10, 19, 1)?, &mut retired)?;
        map.replace(20, 30, one(20, 29, 2)?, &mut retired)?;
        assert_eq!(retired.len(), 0);
        assert_eq!(value_at(&map, 9), None);
        assert_eq!(value_at(&map, 10), Some(1));
        assert_eq!(value_at(&map, 19), Some(1));
        assert_eq!(value_at(&map, 29), Some(2));
        assert_eq!(value_at(&map, 30), None);

        // One replace over both: readers see old or new, never a gap; both retire.
        map.replace(10, 30, one(10, 29, 3)?, &mut retired)?;
        assert_eq!(value_at(&map, 15), Some(3));
        assert_eq!(value_at(&map, 25), Some(3));
        let mut freed = KVec::new();
        let waits = map.reclaim(retired, Wait::Normal, |v| {
            let _ = freed.push(v, GFP_KERNEL);
        });
        assert_eq!(waits, 0);
        assert_eq!(&freed[..], &[1, 2]);

        // A split: the parts outside a hole get new entries, the hole none; the old
        // entry retires once.
        let mut new = one(10, 13, 4)?;
        new.push((18, 29, 5), GFP_KERNEL)?;
        let mut retired = KVec::new();
        map.replace(10, 30, new, &mut retired)?;
        assert_eq!(retired.len(), 1);
        assert_eq!(value_at(&map, 13), Some(4));
        for hole in 14..18 {
            assert_eq!(value_at(&map, hole), None);
        }
        assert_eq!(value_at(&map, 18), Some(5));
        assert_eq!(value_at(&map, 29), Some(5));

        // Bad ranges change nothing.
        let mut none = KVec::new();
        assert_eq!(
            map.replace(10, 10, KVec::new(), &mut none).err(),
            Some(EINVAL)
        );
        assert_eq!(
            map.replace(10, 20, one(5, 12, 9)?, &mut none).err(),
            Some(EINVAL)
        );
        let mut overlapping = one(10, 14, 9)?;
        overlapping.push((14, 16, 9), GFP_KERNEL)?;
        assert_eq!(
            map.replace(10, 20, overlapping, &mut none).err(),
            Some(EINVAL)
        );
        assert_eq!(none.len(), 0);
        assert_eq!(value_at(&map, 10), Some(4));

        // A hold released before the writer reclaims costs no wait.
        {
            let guard = rcu::read_lock();
            let entry = map.load(12, &guard).ok_or(ENOENT)?;
            let held = map.hold(entry, &guard);
            drop(guard);
            assert_eq!(*held, 4);
        }
        // Emptying a range with nothing new in it.
        map.replace(0, 40, KVec::new(), &mut retired)?;
        assert_eq!(retired.len(), 3);
        assert_eq!(value_at(&map, 12), None);
        assert_eq!(value_at(&map, 20), None);
        let mut freed = KVec::new();
        assert_eq!(
            map.reclaim(retired, Wait::Expedited, |v| {
                let _ = freed.push(v, GFP_KERNEL);
            }),
            0
        );
        assert_eq!(&freed[..], &[3, 4, 5]);
        Ok(())
    }
}
