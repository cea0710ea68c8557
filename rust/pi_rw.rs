// SPDX-License-Identifier: GPL-2.0

//! Nielsen's read-side priority-inheriting rw lock (2007), owning the data it protects:
//! the `pi` engine's lock. The protocol, and the holes of his sketch it closes, are in
//! `protocol/pi_rw.rs` (shared with the loom model); this file supplies its primitives
//! — the state word, a kernel `rt_mutex` (priority inheritance: a task that sleeps on
//! it lends its priority to the owner) and a waiter (`SpinLock` + `CondVar`: a reader
//! may release from `map_pages`, in atomic context) — and the guards.
//!
//! 7.3's `kernel::sync` has no `rt_mutex`, so this file holds its raw FFI:
//! `__rt_mutex_init`, `rt_mutex_unlock` (exported) and `rt_mutex_lock` (a macro for
//! `rt_mutex_lock_nested` under lockdep: called through `shim.c`). Nothing else in
//! vmalab calls these. An unlocked `rt_mutex` owns nothing, so it needs no destructor.
//!
//! Lock order: `rt` → `waiter`. Readers never hold `rt` while they hold the lock.

use crate::protocol::pi_rw::{self, PiRw, ReadPath};
use core::{cell::UnsafeCell, ffi::c_void, marker::PhantomPinned, ops::Deref, ops::DerefMut};
use kernel::{
    bindings, new_condvar, new_spinlock,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Full, Release},
        CondVar, LockClassKey, SpinLock,
    },
    types::{NotThreadSafe, Opaque},
};

mod ffi {
    use core::ffi::c_void;

    extern "C" {
        /// `rt_mutex_lock()`.
        pub(super) fn vmalab_rt_mutex_lock(lock: *mut c_void);
    }
}

/// Creates a [`PiRwLock`] initialiser with a lockdep class for its `rt_mutex` unique to
/// the call site.
macro_rules! new_pi_rw {
    ($inner:expr, $name:literal $(,)?) => {
        $crate::pi_rw::PiRwLock::new($inner, $name, kernel::static_lock_class!())
    };
}
pub(crate) use new_pi_rw;

/// A reader-writer lock protecting a `T` whose waiting readers boost the writer.
///
/// # Invariants
///
/// `rt` is an initialised `rt_mutex`; `data` is only accessed through a [`ReadGuard`]
/// (a reader counted in, see `protocol/pi_rw.rs`) or a [`WriteGuard`] (`rt` owned and
/// the state −1).
#[pin_data]
pub(crate) struct PiRwLock<T> {
    state: Atomic<i32>,
    #[pin]
    rt: Opaque<bindings::rt_mutex>,
    #[pin]
    waiter: SpinLock<()>,
    #[pin]
    drained: CondVar,
    data: UnsafeCell<T>,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: The lock hands out `&T` to many threads at once (`T: Sync`) and `&mut T` to
// one thread at a time, possibly not the one that created it (`T: Send`).
unsafe impl<T: Send + Sync> Sync for PiRwLock<T> {}
// SAFETY: Moving the owner moves the `T` (`T: Send`); an unlocked `rt_mutex` has no
// thread affinity, and the lock is pinned.
unsafe impl<T: Send> Send for PiRwLock<T> {}

impl<T> PiRwLock<T> {
    /// Returns an initialiser for a lock protecting `data`.
    pub(crate) fn new(
        data: T,
        name: &'static CStr,
        key: Pin<&'static LockClassKey>,
    ) -> impl PinInit<Self> {
        pin_init!(Self {
            state: Atomic::new(0),
            // SAFETY: `slot` is valid for writes while the closure runs; `name` and `key`
            // are 'static, as lockdep requires.
            rt <- Opaque::ffi_init(|slot| unsafe {
                bindings::__rt_mutex_init(slot, name.as_char_ptr(), key.as_ptr())
            }),
            waiter <- new_spinlock!((), "vmalab_pi_waiter"),
            drained <- new_condvar!("vmalab_pi_drained"),
            data: UnsafeCell::new(data),
            _pin: PhantomPinned,
        })
    }

    /// Takes the lock for read, sleeping (and boosting the writer) while a writer holds
    /// it or waits. Returns the guard and the path taken.
    pub(crate) fn read(&self) -> (ReadGuard<'_, T>, ReadPath) {
        let path = pi_rw::read_lock(self);
        // INVARIANT: counted in.
        (
            ReadGuard {
                lock: self,
                _not_send: NotThreadSafe,
            },
            path,
        )
    }

    /// Takes the lock for read if no writer holds it or waits; no sleep (atomic
    /// context).
    pub(crate) fn try_read(&self) -> Option<ReadGuard<'_, T>> {
        // INVARIANT: counted in when `try_read_lock` says so (`then`: no guard is made,
        // and dropped, for a failed try).
        pi_rw::try_read_lock(self).then(|| ReadGuard {
            lock: self,
            _not_send: NotThreadSafe,
        })
    }

    /// Takes the lock for write (sleeps until every reader left; readers that arrive
    /// meanwhile queue on the `rt_mutex` this writer owns).
    pub(crate) fn write(&self) -> WriteGuard<'_, T> {
        let owner = pi_rw::write_lock(self);
        // INVARIANT: `rt` owned, the state −1.
        WriteGuard {
            lock: self,
            owner: Some(owner),
        }
    }
}

/// The owned `rt_mutex` of a [`PiRwLock`].
///
/// # Invariants
///
/// This task owns `rt`, and unlocks it on drop.
pub(crate) struct RtOwner<'a> {
    rt: &'a Opaque<bindings::rt_mutex>,
    _not_send: NotThreadSafe,
}

impl Drop for RtOwner<'_> {
    fn drop(&mut self) {
        // SAFETY: This task owns `rt` (type invariant); only the owner may unlock it,
        // and the guard cannot leave the task (`NotThreadSafe`).
        unsafe { bindings::rt_mutex_unlock(self.rt.get()) };
    }
}

impl<T> PiRw for PiRwLock<T> {
    type Owner<'a>
        = RtOwner<'a>
    where
        Self: 'a;

    fn rt_lock(&self) -> RtOwner<'_> {
        // SAFETY: `rt` is initialised (type invariant); process context (the callers
        // are `read` and `write`, which may sleep; `try_read` never gets here).
        unsafe { ffi::vmalab_rt_mutex_lock(self.rt.get().cast::<c_void>()) };
        // INVARIANT: we own `rt`.
        RtOwner {
            rt: &self.rt,
            _not_send: NotThreadSafe,
        }
    }

    fn state(&self) -> i32 {
        self.state.load(Acquire)
    }

    fn cmpxchg(&self, old: i32, new: i32) -> Result<i32, i32> {
        self.state.cmpxchg(old, new, Full)
    }

    fn add(&self, v: i32) -> i32 {
        self.state.fetch_add(v, Full)
    }

    fn or(&self, v: i32) -> i32 {
        // `Atomic<i32>` has no fetch_or in 7.3: a compare-and-swap loop.
        let mut s = self.state.load(Acquire);
        loop {
            match self.state.cmpxchg(s, s | v, Full) {
                Ok(old) => return old,
                Err(now) => s = now,
            }
        }
    }

    fn store(&self, v: i32) {
        self.state.store(v, Release);
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

/// A read lock on a [`PiRwLock`].
///
/// # Invariants
///
/// The holder is counted in as a reader of `lock`.
pub(crate) struct ReadGuard<'a, T> {
    lock: &'a PiRwLock<T>,
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
        pi_rw::read_unlock(self.lock);
    }
}

/// A write lock on a [`PiRwLock`].
///
/// # Invariants
///
/// The holder is the lock's one writer; `owner` is `Some` until the drop.
pub(crate) struct WriteGuard<'a, T> {
    lock: &'a PiRwLock<T>,
    owner: Option<RtOwner<'a>>,
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
        if let Some(owner) = self.owner.take() {
            pi_rw::write_unlock(self.lock, owner);
        }
    }
}

#[kunit_tests(vmalab_pi_rw)]
mod tests {
    use super::*;
    use crate::protocol::pi_rw::{WAITING, WRITER};

    #[test]
    fn states() -> Result {
        let lock = KBox::pin_init(new_pi_rw!(7u32, c"kunit_pi_rw"), GFP_KERNEL)?;
        {
            let (r, path) = lock.read();
            assert_eq!(*r, 7);
            assert_eq!(path, ReadPath::Fast);
            assert_eq!(lock.state(), 1);
            let t = lock.try_read();
            assert!(t.is_some());
            assert_eq!(lock.state(), 2);
        }
        assert_eq!(lock.state(), 0);
        // A waiting writer: `try_read` fails and leaves the count alone.
        lock.store(WAITING);
        assert!(lock.try_read().is_none());
        assert_eq!(lock.state(), WAITING);
        lock.store(0);
        {
            let mut w = lock.write();
            assert_eq!(lock.state(), WRITER);
            assert!(lock.try_read().is_none());
            *w = 8;
        }
        assert_eq!(lock.state(), 0);
        assert_eq!(*lock.read().0, 8);
        assert_eq!(lock.state(), 0);
        Ok(())
    }
}
