// SPDX-License-Identifier: GPL-2.0

//! A safe wrapper for the kernel's `struct percpu_rw_semaphore` owning the data it
//! protects: the `percpu+sem` configuration's lock, today's descendant of Zijlstra's
//! 2007 rw_mutex (`percpu_rw.rs`), so both are compared in the same run.
//!
//! What the kernel's version does differently (`kernel/locking/percpu-rwsem.c`): the
//! announcement is an `rcu_sync`, so a writer that follows another within a grace
//! period skips the `synchronize_rcu()`, and readers that arrive while it is not idle
//! take a slow path that is still per-CPU (an increment and a full barrier) unless a
//! writer holds `block`; writers and blocked readers queue on one wait queue.
//!
//! 7.3's `kernel::sync` has no wrapper for it, so this file holds the raw FFI:
//! `__percpu_init_rwsem`, `percpu_free_rwsem`, `percpu_down_write`, `percpu_up_write`
//! (exported functions) and, through `shim.c`, the header inlines `percpu_down_read`,
//! `percpu_down_read_trylock`, `percpu_up_read`. Nothing else in vmalab calls these.

use core::{cell::UnsafeCell, ffi::c_void, marker::PhantomPinned, ops::Deref, ops::DerefMut};
use kernel::{
    bindings,
    error::to_result,
    prelude::*,
    sync::LockClassKey,
    types::{NotThreadSafe, Opaque},
};

mod ffi {
    use core::ffi::c_void;

    extern "C" {
        /// `percpu_down_read()`; returns whether a writer held the semaphore
        /// (`percpu_is_write_locked()`) just before: the reader then queues on the
        /// semaphore's wait queue (a hint, read without a lock).
        pub(super) fn vmalab_percpu_down_read(sem: *mut c_void) -> bool;
        /// `percpu_down_read_trylock()`.
        pub(super) fn vmalab_percpu_down_read_trylock(sem: *mut c_void) -> bool;
        /// `percpu_up_read()`.
        pub(super) fn vmalab_percpu_up_read(sem: *mut c_void);
    }
}

/// Creates a [`PercpuRwSem`] initialiser with a lockdep class unique to the call site.
macro_rules! new_percpu_rwsem {
    ($inner:expr, $name:literal $(,)?) => {
        $crate::percpu_rwsem::PercpuRwSem::new($inner, $name, kernel::static_lock_class!())
    };
}
pub(crate) use new_percpu_rwsem;

/// A `percpu_rw_semaphore` protecting a `T`: `&T` to readers, `&mut T` to the writer.
///
/// # Invariants
///
/// `sem` is an initialised `percpu_rw_semaphore` (its per-CPU counters allocated) until
/// the drop frees it; `data` is only accessed through a [`ReadGuard`] (held for read)
/// or a [`WriteGuard`] (held for write).
#[pin_data(PinnedDrop)]
pub(crate) struct PercpuRwSem<T> {
    #[pin]
    sem: Opaque<bindings::percpu_rw_semaphore>,
    data: UnsafeCell<T>,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: The semaphore hands out `&T` to many threads at once (`T: Sync`) and `&mut T`
// to one thread at a time, possibly not the one that created it (`T: Send`).
unsafe impl<T: Send + Sync> Sync for PercpuRwSem<T> {}
// SAFETY: Moving the owner moves the `T` (`T: Send`); the semaphore is pinned and has
// no thread affinity while unlocked (its counters are per CPU, not per thread).
unsafe impl<T: Send> Send for PercpuRwSem<T> {}

impl<T> PercpuRwSem<T> {
    /// Returns an initialiser for a semaphore protecting `data` (`ENOMEM` if its
    /// per-CPU counters cannot be allocated).
    pub(crate) fn new(
        data: T,
        name: &'static CStr,
        key: Pin<&'static LockClassKey>,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            // SAFETY: `slot` is valid for writes while the closure runs; `name` and `key`
            // are 'static, as lockdep requires. On error nothing was allocated
            // (`__percpu_init_rwsem` fails only when `alloc_percpu` does, first).
            sem <- Opaque::try_ffi_init(|slot| to_result(unsafe {
                bindings::__percpu_init_rwsem(slot, name.as_char_ptr(), key.as_ptr())
            })),
            data: UnsafeCell::new(data),
            _pin: PhantomPinned,
        }? Error)
    }

    fn raw(&self) -> *mut c_void {
        self.sem.get().cast()
    }

    /// Takes the semaphore for read, sleeping while a writer holds it. Returns the
    /// guard and whether a writer held it as the reader arrived.
    #[inline]
    pub(crate) fn read(&self) -> (ReadGuard<'_, T>, bool) {
        // SAFETY: `sem` is initialised (type invariant); process context (the caller's
        // contract, checked by `might_sleep()` inside).
        let queued = unsafe { ffi::vmalab_percpu_down_read(self.raw()) };
        // INVARIANT: we hold the semaphore for read.
        (
            ReadGuard {
                lock: self,
                _not_send: NotThreadSafe,
            },
            queued,
        )
    }

    /// Takes the semaphore for read if no writer holds it; never sleeps (atomic
    /// context).
    #[inline]
    pub(crate) fn try_read(&self) -> Option<ReadGuard<'_, T>> {
        // SAFETY: `sem` is initialised (type invariant); the trylock never sleeps.
        let got = unsafe { ffi::vmalab_percpu_down_read_trylock(self.raw()) };
        // INVARIANT: held for read when the trylock says so (`then`: no guard is built,
        // and dropped, for a failed try).
        got.then(|| ReadGuard {
            lock: self,
            _not_send: NotThreadSafe,
        })
    }

    /// Takes the semaphore for write, sleeping until readers and writers are gone.
    #[inline]
    pub(crate) fn write(&self) -> WriteGuard<'_, T> {
        // SAFETY: `sem` is initialised (type invariant); process context.
        unsafe { bindings::percpu_down_write(self.sem.get()) };
        // INVARIANT: we hold the semaphore for write.
        WriteGuard {
            lock: self,
            _not_send: NotThreadSafe,
        }
    }
}

#[pinned_drop]
impl<T> PinnedDrop for PercpuRwSem<T> {
    fn drop(self: Pin<&mut Self>) {
        // `percpu_free_rwsem` frees the per-CPU counters and may wait for a pending
        // `rcu_sync` callback: the owner is dropped in process context (file or
        // engine release).
        // SAFETY: `sem` is initialised (type invariant); being dropped, no guard
        // borrows it.
        unsafe { bindings::percpu_free_rwsem(self.sem.get()) };
    }
}

/// Shared access to the data of a [`PercpuRwSem`] held for read.
///
/// # Invariants
///
/// `lock.sem` is held for read by this thread for the guard's lifetime.
pub(crate) struct ReadGuard<'a, T> {
    lock: &'a PercpuRwSem<T>,
    _not_send: NotThreadSafe,
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: Held for read (type invariant): no `&mut T` exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: This guard holds the semaphore for read (type invariant);
        // `percpu_up_read` never sleeps, so this may run in atomic context.
        unsafe { ffi::vmalab_percpu_up_read(self.lock.raw()) };
    }
}

/// Exclusive access to the data of a [`PercpuRwSem`] held for write.
///
/// # Invariants
///
/// `lock.sem` is held for write by this thread for the guard's lifetime.
pub(crate) struct WriteGuard<'a, T> {
    lock: &'a PercpuRwSem<T>,
    _not_send: NotThreadSafe,
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: Held for write (type invariant): this guard is the only accessor.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: Held for write (type invariant): this guard is the only accessor.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for WriteGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: This guard holds the semaphore for write (type invariant).
        unsafe { bindings::percpu_up_write(self.lock.sem.get()) };
    }
}

#[kunit_tests(vmalab_percpu_rwsem)]
mod tests {
    use super::*;

    #[test]
    fn read_write_try() -> Result {
        let lock = KBox::pin_init(new_percpu_rwsem!(7u32, c"kunit_percpu_rwsem"), GFP_KERNEL)?;
        {
            let (r, queued) = lock.read();
            assert_eq!(*r, 7);
            assert!(!queued);
            // Readers share.
            assert!(lock.try_read().is_some());
        }
        {
            let mut w = lock.write();
            *w = 8;
        }
        // After a writer the readers' fast path needs a grace period; the slow path
        // still gets in while no writer holds the semaphore.
        assert_eq!(*lock.read().0, 8);
        assert!(lock.try_read().is_some());
        Ok(())
    }
}
