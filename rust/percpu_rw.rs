// SPDX-License-Identifier: GPL-2.0

//! Zijlstra's scalable rw_mutex (2007), owning the data it protects: the `percpu`
//! engine's lock. The protocol is `protocol/percpu_rw.rs` (shared with the loom model);
//! this file supplies its primitives — one cache-line aligned reader counter per
//! possible CPU, an RCU read section, a writers' `Mutex`, and a waiter (`SpinLock` +
//! `CondVar`: a reader may release from `map_pages`, in atomic context) — and the
//! guards. 7.3's Rust has no per-CPU allocator abstraction, so the counters are an
//! array indexed by [`CpuId::current`], as `stats.rs` does; a reader that migrates
//! between lock and unlock leaves +1 on one CPU and −1 on another, which sums right.
//!
//! Lock order: `writers` → `waiter`; the RCU read section is innermost (nothing sleeps
//! in it).

use crate::protocol::percpu_rw::{self, PercpuRw, ReadPath};
use core::{cell::UnsafeCell, ops::Deref, ops::DerefMut};
use kernel::{
    cpu::{nr_cpu_ids, CpuId},
    new_condvar, new_mutex, new_spinlock,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Full, Relaxed},
        rcu, CondVar, Mutex, MutexGuard, SpinLock,
    },
    types::NotThreadSafe,
};

/// One CPU's reader count, on a cache line of its own.
#[repr(C, align(64))]
struct CpuCount(Atomic<isize>);

/// A reader-writer lock protecting a `T`: `&T` to readers, `&mut T` to the one writer.
///
/// # Invariants
///
/// `data` is only accessed through a [`ReadGuard`] (a reader counted in, see
/// `protocol/percpu_rw.rs`) or a [`WriteGuard`] (`writers` held, the announcement made
/// and the counters summed to zero after a grace period).
#[pin_data]
pub(crate) struct PercpuRwLock<T> {
    counts: KVec<CpuCount>,
    /// Counters read by writers' sums since [`PercpuRwLock::take_lines_read`].
    lines_read: Atomic<u64>,
    announced: Atomic<bool>,
    #[pin]
    writers: Mutex<()>,
    #[pin]
    waiter: SpinLock<()>,
    #[pin]
    drained: CondVar,
    data: UnsafeCell<T>,
}

// SAFETY: The lock hands out `&T` to many threads at once (`T: Sync`) and `&mut T` to
// one thread at a time, possibly not the one that created it (`T: Send`).
unsafe impl<T: Send + Sync> Sync for PercpuRwLock<T> {}
// SAFETY: Moving the owner moves the `T` (`T: Send`); the rest has no thread affinity.
unsafe impl<T: Send> Send for PercpuRwLock<T> {}

impl<T> PercpuRwLock<T> {
    /// Returns an initialiser for a lock protecting `data`, with a counter per possible
    /// CPU.
    pub(crate) fn new(data: T) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            counts: {
                let n = nr_cpu_ids() as usize;
                let mut v = KVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
                for _ in 0..n {
                    v.push(CpuCount(Atomic::new(0)), GFP_KERNEL_ACCOUNT)?;
                }
                v
            },
            lines_read: Atomic::new(0),
            announced: Atomic::new(false),
            writers <- new_mutex!((), "vmalab_percpu_writers"),
            waiter <- new_spinlock!((), "vmalab_percpu_waiter"),
            drained <- new_condvar!("vmalab_percpu_drained"),
            data: UnsafeCell::new(data),
        }? Error)
    }

    /// Takes the lock for read, sleeping behind an announced writer. Returns the guard
    /// and the path taken.
    pub(crate) fn read(&self) -> (ReadGuard<'_, T>, ReadPath) {
        let path = percpu_rw::read_lock(self);
        // INVARIANT: counted in.
        (
            ReadGuard {
                lock: self,
                _not_send: NotThreadSafe,
            },
            path,
        )
    }

    /// Takes the lock for read if no writer is announced; no sleep (atomic context).
    pub(crate) fn try_read(&self) -> Option<ReadGuard<'_, T>> {
        // INVARIANT: counted in when `try_read_lock` says so. (`then`, not `then_some`:
        // a guard made eagerly and dropped on failure would count a reader out that
        // never came in — the first version did, and writers waited forever.)
        percpu_rw::try_read_lock(self).then(|| ReadGuard {
            lock: self,
            _not_send: NotThreadSafe,
        })
    }

    /// Takes the lock for write (sleeps until every reader left).
    pub(crate) fn write(&self) -> WriteGuard<'_, T> {
        let writers = percpu_rw::write_lock(self);
        // INVARIANT: announced, grace period passed, counters summed to zero.
        WriteGuard {
            lock: self,
            writers: Some(writers),
        }
    }

    /// Per-CPU counters the writers' sums read since the last call (the holder of the
    /// write lock calls it: only writers sum).
    pub(crate) fn take_lines_read(&self) -> u64 {
        self.lines_read.xchg(0, Relaxed)
    }
}

impl<T> PercpuRw for PercpuRwLock<T> {
    type ReadSection<'a>
        = rcu::Guard
    where
        Self: 'a;
    type WriterGuard<'a>
        = MutexGuard<'a, ()>
    where
        Self: 'a;

    fn rcu_read_lock(&self) -> rcu::Guard {
        rcu::read_lock()
    }

    fn synchronize(&self) {
        rcu::synchronize_rcu();
    }

    fn writer_mutex(&self) -> MutexGuard<'_, ()> {
        self.writers.lock()
    }

    fn add_this_cpu(&self, v: isize) {
        let cpu = CpuId::current().as_u32() as usize;
        // `counts` has an entry for every possible CPU id.
        if let Some(c) = self.counts.get(cpu) {
            c.0.fetch_add(v, Full);
        }
    }

    fn sum(&self) -> isize {
        self.lines_read.add(self.counts.len() as u64, Relaxed);
        self.counts
            .iter()
            .fold(0isize, |s, c| s.wrapping_add(c.0.load(Relaxed)))
    }

    fn announced(&self) -> bool {
        self.announced.load(Acquire)
    }

    fn announce(&self, on: bool) {
        self.announced.xchg(on, Full);
    }

    fn wait_until(&self, done: &dyn Fn() -> bool) {
        let mut guard = self.waiter.lock();
        while !done() {
            self.drained.wait(&mut guard);
        }
    }

    fn wake(&self) {
        let _guard = self.waiter.lock();
        self.drained.notify_all();
    }
}

/// A read lock on a [`PercpuRwLock`].
///
/// # Invariants
///
/// The holder is counted in as a reader of `lock`.
pub(crate) struct ReadGuard<'a, T> {
    lock: &'a PercpuRwLock<T>,
    _not_send: NotThreadSafe,
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: A counted-in reader excludes the writer (type invariants), so no
        // `&mut T` exists while this `&T` does.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    fn drop(&mut self) {
        percpu_rw::read_unlock(self.lock);
    }
}

/// A write lock on a [`PercpuRwLock`].
///
/// # Invariants
///
/// The holder is the lock's one writer; `writers` is `Some` until the drop.
pub(crate) struct WriteGuard<'a, T> {
    lock: &'a PercpuRwLock<T>,
    writers: Option<MutexGuard<'a, ()>>,
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: The writer excludes every reader and other writer (type invariants).
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: As in `deref`; `&mut self` makes this the only reference.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for WriteGuard<'_, T> {
    fn drop(&mut self) {
        if let Some(writers) = self.writers.take() {
            percpu_rw::write_unlock(self.lock, writers);
        }
    }
}

#[kunit_tests(vmalab_percpu_rw)]
mod tests {
    use super::*;

    #[test]
    fn counts_balance() -> Result {
        let lock = KBox::pin_init(PercpuRwLock::new(7u32), GFP_KERNEL)?;
        {
            let (r, path) = lock.read();
            assert_eq!(*r, 7);
            assert_eq!(path, ReadPath::Fast);
            assert_eq!(lock.sum(), 1);
            let t = lock.try_read();
            assert!(t.is_some());
            assert_eq!(lock.sum(), 2);
        }
        assert_eq!(lock.sum(), 0);
        // An announced writer: `try_read` fails and leaves the count alone.
        lock.announce(true);
        assert!(lock.try_read().is_none());
        assert_eq!(lock.sum(), 0);
        lock.announce(false);
        {
            let mut w = lock.write();
            *w = 8;
        }
        assert!(!lock.announced());
        assert_eq!(*lock.read().0, 8);
        assert_eq!(lock.sum(), 0);
        // The writer's sums were counted: one per CPU counter, at least once.
        assert!(lock.take_lines_read() >= lock.counts.len() as u64);
        Ok(())
    }
}
