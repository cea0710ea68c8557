// SPDX-License-Identifier: GPL-2.0

//! A safe wrapper for the kernel's `struct rw_semaphore` owning the data it protects.
//!
//! 7.3's `kernel::sync` has no reader-writer lock, so this file holds the raw FFI for
//! one: `__init_rwsem`, `down_read`, `down_read_trylock`, `up_read`, `down_write`,
//! `up_write` (all exported functions of `kernel/locking/rwsem.c`). Nothing else in
//! vmalab calls these.

use core::{cell::UnsafeCell, marker::PhantomPinned, ops::Deref, ops::DerefMut};
use kernel::{
    bindings,
    prelude::*,
    sync::LockClassKey,
    types::{NotThreadSafe, Opaque},
};

/// Creates an [`RwSem`] initialiser with a lockdep class unique to the call site.
macro_rules! new_rwsem {
    ($inner:expr, $name:literal $(,)?) => {
        $crate::rwsem::RwSem::new($inner, $name, kernel::static_lock_class!())
    };
}
pub(crate) use new_rwsem;

/// A reader-writer semaphore protecting a `T`: shared `&T` to readers, `&mut T` to the
/// one writer.
///
/// # Invariants
///
/// `sem` is an initialised `rw_semaphore`; `data` is only accessed through a
/// [`ReadGuard`] (sem held for read) or a [`WriteGuard`] (sem held for write).
#[pin_data]
pub(crate) struct RwSem<T> {
    #[pin]
    sem: Opaque<bindings::rw_semaphore>,
    data: UnsafeCell<T>,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: The semaphore hands out `&T` to many threads at once (`T: Sync`) and `&mut T`
// to one thread at a time, possibly not the one that created it (`T: Send`).
unsafe impl<T: Send + Sync> Sync for RwSem<T> {}
// SAFETY: Moving the owner to another thread moves the `T` (`T: Send`); the semaphore
// itself is pinned and has no thread affinity while unlocked.
unsafe impl<T: Send> Send for RwSem<T> {}

impl<T> RwSem<T> {
    /// Returns an initialiser for a semaphore protecting `data`.
    pub(crate) fn new(
        data: T,
        name: &'static CStr,
        key: Pin<&'static LockClassKey>,
    ) -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes while the closure runs; `name` and `key`
            // are 'static, as `__init_rwsem` requires for lockdep.
            sem <- Opaque::ffi_init(|slot| unsafe {
                bindings::__init_rwsem(slot, name.as_char_ptr(), key.as_ptr())
            }),
            data: UnsafeCell::new(data),
            _pin: PhantomPinned,
        })
    }

    /// Takes the semaphore for read, sleeping if a writer holds it.
    #[inline]
    pub(crate) fn read(&self) -> ReadGuard<'_, T> {
        // SAFETY: `sem` is initialised (type invariant); we may sleep (process context
        // is the caller's contract, checked by `might_sleep` inside `down_read`).
        unsafe { bindings::down_read(self.sem.get()) };
        // INVARIANT: we hold the semaphore for read.
        ReadGuard {
            lock: self,
            _not_send: NotThreadSafe,
        }
    }

    /// Takes the semaphore for read if that needs no sleep; usable in atomic context.
    #[inline]
    pub(crate) fn try_read(&self) -> Option<ReadGuard<'_, T>> {
        // SAFETY: `sem` is initialised (type invariant); `down_read_trylock` never sleeps.
        if unsafe { bindings::down_read_trylock(self.sem.get()) } == 0 {
            return None;
        }
        // INVARIANT: we hold the semaphore for read.
        Some(ReadGuard {
            lock: self,
            _not_send: NotThreadSafe,
        })
    }

    /// Takes the semaphore for write, sleeping until readers and writers are gone.
    #[inline]
    pub(crate) fn write(&self) -> WriteGuard<'_, T> {
        // SAFETY: `sem` is initialised (type invariant).
        unsafe { bindings::down_write(self.sem.get()) };
        // INVARIANT: we hold the semaphore for write.
        WriteGuard {
            lock: self,
            _not_send: NotThreadSafe,
        }
    }
}

/// Shared access to the data of an [`RwSem`] held for read.
///
/// # Invariants
///
/// `lock.sem` is held for read by this thread for the guard's lifetime.
pub(crate) struct ReadGuard<'a, T> {
    lock: &'a RwSem<T>,
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
        // SAFETY: This guard holds the semaphore for read (type invariant).
        unsafe { bindings::up_read(self.lock.sem.get()) };
    }
}

/// Exclusive access to the data of an [`RwSem`] held for write.
///
/// # Invariants
///
/// `lock.sem` is held for write by this thread for the guard's lifetime.
pub(crate) struct WriteGuard<'a, T> {
    lock: &'a RwSem<T>,
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
        unsafe { bindings::up_write(self.lock.sem.get()) };
    }
}
