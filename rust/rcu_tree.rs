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
//! - A writer removes entries ([`RcuRangeMap::store`], [`RcuRangeMap::erase`]) and gets
//!   them back only through [`RcuRangeMap::reclaim`], which waits for a grace period
//!   (so every reader that found them has left its read section, and every `Held` made
//!   from them has been counted), then waits for their user counts to drain.
//!
//! Lock order: this map's `drain` mutex is innermost; it is taken by readers dropping
//! the last [`Held`] of an entry a writer waits for, and by that writer.

use core::{marker::PhantomData, ops::Deref, ptr::NonNull};
use kernel::{
    bindings,
    ffi::c_ulong,
    new_condvar, new_mutex,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Full},
        rcu, CondVar, Mutex,
    },
    types::Opaque,
};

/// A map entry: the value plus what the drain protocol needs. Derefs to the value.
pub(crate) struct Node<T> {
    value: T,
    /// Readers holding the entry past their RCU read section.
    users: Atomic<u32>,
    /// Set by a writer waiting for `users` to reach zero.
    draining: Atomic<bool>,
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
        // SAFETY: The node is alive until this hold is released (type invariant).
        let node = unsafe { self.node.as_ref() };
        // ORDERING: a fully ordered decrement, then the load of `draining`; the writer
        // does a fully ordered set of `draining`, then loads `users`. One of the two
        // sides sees the other's write (store-buffering), so no wakeup is lost.
        if node.users.fetch_sub(1, Full) == 1 && node.draining.load(Acquire) {
            let _guard = self.map.drain.lock();
            self.map.drained.notify_all();
        }
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
            out.push(Retired { node }, GFP_KERNEL)?;
            if index == 0 || index as usize > last {
                return Ok(());
            }
        }
    }

    /// Maps `[first, last]` to `value`, atomically replacing whatever entries lie in
    /// that range (which must lie entirely inside it); those are appended to `retired`.
    /// On error nothing changed.
    pub(crate) fn store(
        &self,
        first: usize,
        last: usize,
        value: T,
        retired: &mut KVec<Retired<T>>,
    ) -> Result {
        let node = KBox::new(
            Node {
                value,
                users: Atomic::new(0),
                draining: Atomic::new(false),
            },
            GFP_KERNEL,
        )?;
        let mut old = KVec::new();
        self.entries_in(first, last, &mut old)?;
        retired.reserve(old.len(), GFP_KERNEL)?;
        let ptr = KBox::into_raw(node);
        // SAFETY: The tree is initialised; `ptr` is a valid, aligned, non-reserved
        // entry; GFP_KERNEL is fine in the writer's process context.
        let ret = unsafe {
            bindings::mtree_store_range(
                self.tree.get(),
                first as c_ulong,
                last as c_ulong,
                ptr.cast(),
                bindings::GFP_KERNEL,
            )
        };
        if ret != 0 {
            // SAFETY: The store failed, so the tree did not take `ptr`: still ours.
            drop(unsafe { KBox::from_raw(ptr) });
            return Err(Error::from_errno(ret));
        }
        for r in old {
            // Room was reserved above.
            retired.push(r, GFP_KERNEL)?;
        }
        Ok(())
    }

    /// Removes the entry covering `index`, if any.
    pub(crate) fn erase(&self, index: usize) -> Option<Retired<T>> {
        // SAFETY: The tree is initialised (type invariant).
        let p = unsafe { bindings::mtree_erase(self.tree.get(), index as c_ulong) };
        // INVARIANT: `mtree_erase` removed the entry from the tree.
        NonNull::new(p.cast::<Node<T>>()).map(|node| Retired { node })
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

    /// Holds `entry` (just returned by [`Self::load`] under `guard`) beyond the read
    /// section. One atomic increment on the entry: the slow path's cost.
    pub(crate) fn hold(&self, entry: &Node<T>, _guard: &rcu::Guard) -> Held<'_, T> {
        // The node is alive: we are inside the read section in which it was found, and
        // `reclaim` waits a grace period before it looks at `users`.
        entry.users.fetch_add(1, Full);
        // INVARIANT: the increment above counts this hold.
        Held {
            node: NonNull::from(entry),
            map: self,
        }
    }

    /// Frees retired entries once no reader can use them: waits for a grace period,
    /// then for each entry's holds to drain, then calls `f` on its value. Returns how
    /// many entries had holds to wait for.
    ///
    /// `expedited` waits with `synchronize_rcu_expedited()` (IPIs every CPU, shorter).
    pub(crate) fn reclaim(
        &self,
        retired: KVec<Retired<T>>,
        expedited: bool,
        mut f: impl FnMut(T),
    ) -> u64 {
        if retired.is_empty() {
            return 0;
        }
        if expedited {
            // SAFETY: Process context, no locks held: `synchronize_rcu_expedited` may
            // sleep and has no other requirement.
            unsafe { bindings::synchronize_rcu_expedited() };
        } else {
            rcu::synchronize_rcu();
        }
        let mut waits = 0;
        for r in retired {
            // SAFETY: `r.node` left the tree before the grace period that just ended, so
            // no reader can newly find or hold it; existing holds are counted in
            // `users`, and we free it only once that is zero.
            let node = unsafe { r.node.as_ref() };
            // ORDERING: a fully ordered RMW, then the load; pairs with the fully ordered
            // decrement in `Held::drop` (see there).
            node.draining.xchg(true, Full);
            if node.users.load(Acquire) != 0 {
                waits += 1;
                let mut guard = self.drain.lock();
                while node.users.load(Acquire) != 0 {
                    self.drained.wait(&mut guard);
                }
            }
            // SAFETY: Unreachable from the tree, past a grace period and with no holds
            // left: we own the box again (type invariant of `Retired`).
            let node = unsafe { KBox::from_raw(r.node.as_ptr()) };
            f(KBox::into_inner(node).value);
        }
        waits
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
    }
}

#[kunit_tests(vmalab_rcu_range_map)]
mod tests {
    use super::*;

    fn value_at(map: &RcuRangeMap<u32>, index: usize) -> Option<u32> {
        let guard = rcu::read_lock();
        map.load(index, &guard).map(|n| **n)
    }

    #[test]
    fn store_replace_erase_reclaim() -> Result {
        let map = KBox::pin_init(RcuRangeMap::<u32>::new(), GFP_KERNEL)?;
        let mut retired = KVec::new();
        map.store(10, 19, 1, &mut retired)?;
        map.store(20, 29, 2, &mut retired)?;
        assert_eq!(retired.len(), 0);
        assert_eq!(value_at(&map, 9), None);
        assert_eq!(value_at(&map, 10), Some(1));
        assert_eq!(value_at(&map, 19), Some(1));
        assert_eq!(value_at(&map, 29), Some(2));
        assert_eq!(value_at(&map, 30), None);

        // One store over both: readers see old or new, never a gap; both retire.
        map.store(10, 29, 3, &mut retired)?;
        assert_eq!(value_at(&map, 15), Some(3));
        assert_eq!(value_at(&map, 25), Some(3));
        let mut freed = KVec::new();
        let waits = map.reclaim(retired, false, |v| {
            let _ = freed.push(v, GFP_KERNEL);
        });
        assert_eq!(waits, 0);
        assert_eq!(&freed[..], &[1, 2]);

        // A hold released before the writer reclaims costs no wait.
        {
            let guard = rcu::read_lock();
            let entry = map.load(12, &guard).ok_or(ENOENT)?;
            let held = map.hold(entry, &guard);
            drop(guard);
            assert_eq!(*held, 3);
        }
        let mut retired = KVec::new();
        retired.push(map.erase(12).ok_or(ENOENT)?, GFP_KERNEL)?;
        assert_eq!(value_at(&map, 12), None);
        assert!(map.erase(12).is_none());
        let mut freed = KVec::new();
        assert_eq!(
            map.reclaim(retired, true, |v| {
                let _ = freed.push(v, GFP_KERNEL);
            }),
            0
        );
        assert_eq!(&freed[..], &[3]);
        Ok(())
    }
}
