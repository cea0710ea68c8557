// SPDX-License-Identifier: GPL-2.0

//! Nielsen's read-side priority-inheriting rw lock (seed 004, 2007), the `pi` engine's
//! lock: "a reader boosts the writer, but a writer can't boost the readers".
//!
//! His sketch: a count (0 free, > 0 readers, −1 a writer, and a "writer waiting" bit)
//! beside an `rt_mutex`, so that a reader who must wait for a writer waits on an
//! `rt_mutex` the writer owns — and the kernel's priority inheritance boosts the writer
//! to the reader's priority. The rules here:
//!
//! - [`read_lock`]: if the state is a plain reader count (no writer, none waiting),
//!   compare-and-swap it one up (the fast path). Otherwise (slow path) take the
//!   `rt_mutex` — the writer's, so this boosts it — count in with an atomic add and
//!   release the `rt_mutex` again.
//! - [`read_unlock`]: count out (full barrier); the reader that brings the count to 0
//!   under a waiting writer wakes it (under the waiter's lock).
//! - [`write_lock`]: take the `rt_mutex` (held until [`write_unlock`]: later writers
//!   and every reader that must wait queue on it, and boost this writer), set the
//!   waiting bit (new readers now take the slow path), sleep until the readers inside
//!   are gone (they are not boosted: a writer cannot boost them all), then set −1.
//! - [`write_unlock`]: set 0, release the `rt_mutex` (its top waiter, reader or writer,
//!   gets it).
//!
//! # The holes in the sketch, and how they are closed
//!
//! 1. **"No owner but waiters"** (his own question): while readers hold the lock his
//!    writer "adds itself to the wait-list in the mutex and sleeps" with no owner, to be
//!    woken by the last reader. `rt_mutex` has no such state: its wait list is only
//!    entered by `rt_mutex_lock()` on a mutex someone owns (on a free one it simply
//!    takes it), only the owner's unlock wakes a waiter, and PI needs an owner to boost
//!    — readers arriving then would have no one to boost, and the writer would sleep
//!    unwoken. Closed: the writer *owns* the `rt_mutex` from before it waits for the
//!    readers until it unlocks, and waits for them on a separate waiter; the `rt_mutex`
//!    always has an owner whenever anyone waits on it.
//! 2. **A slow reader "sets the count to 1"**: readers that came in by the fast path
//!    meanwhile are lost from the count, and a writer would then enter while they still
//!    hold the lock. Closed: the slow reader adds 1.
//! 3. **The writer sets −1 before it owns the `rt_mutex`**: a reader that sees −1 can
//!    take the `rt_mutex` first, count itself in and proceed, while the writer, once it
//!    gets the mutex, proceeds too. Closed: the writer changes the state only while it
//!    owns the `rt_mutex`, so a slow reader holding it knows the state is a count.
//! 4. **Check, then set**: "checks if count <= 0. If so it sets the value to −1" is two
//!    steps another CPU can come between. Closed: compare-and-swap and atomic or.
//! 5. **Writer starvation**: in the sketch, readers arriving while a writer waits see
//!    a positive count and come in. Closed by 1: they see the waiting bit and queue
//!    on the writer's `rt_mutex`.
//!
//! Compiled into the module (`pi_rw.rs` supplies the `rt_mutex`, atomics and a waiter)
//! and into `tools/model` (`tests/pi.rs`), which checks: a writer never runs while a
//! reader holds the lock, no lost wake-up, no deadlock, and every reader that waited
//! for a writer waited on the `rt_mutex` while the writer owned it (the boost).

/// A writer holds the lock.
pub(crate) const WRITER: i32 = -1;
/// A writer owns the `rt_mutex` and waits for the readers inside to leave.
pub(crate) const WAITING: i32 = 1 << 30;

/// The primitives the protocol runs on.
pub(crate) trait PiRw {
    /// The held `rt_mutex`.
    type Owner<'a>
    where
        Self: 'a;

    /// Takes the `rt_mutex`, sleeping; while asleep, the caller boosts its owner.
    fn rt_lock(&self) -> Self::Owner<'_>;
    /// The state word.
    fn state(&self) -> i32;
    /// Compare-and-swap on the state word (full barrier on success).
    fn cmpxchg(&self, old: i32, new: i32) -> Result<i32, i32>;
    /// Adds `v` to the state word with a full barrier; the old value.
    fn add(&self, v: i32) -> i32;
    /// Sets the bits `v` in the state word with a full barrier; the old value.
    fn or(&self, v: i32) -> i32;
    /// Stores `v` in the state word (release).
    fn store(&self, v: i32);
    /// Sleeps until `done()` holds, checked under the waiter's lock.
    fn wait_until(&self, done: &dyn Fn() -> bool);
    /// Wakes the waiting writer (under the waiter's lock).
    fn wake(&self);
}

/// How a reader got in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadPath {
    /// No writer: one compare-and-swap on the state word.
    Fast,
    /// A writer held the lock or waited: queued on its `rt_mutex` (and boosted it).
    Slow,
}

/// Takes the lock for read only if no writer holds it or waits (no sleep).
pub(crate) fn try_read_lock<L: PiRw>(l: &L) -> bool {
    let mut s = l.state();
    loop {
        if s < 0 || s & WAITING != 0 {
            return false;
        }
        match l.cmpxchg(s, s + 1) {
            Ok(_) => return true,
            Err(now) => s = now,
        }
    }
}

/// Takes the lock for read.
pub(crate) fn read_lock<L: PiRw>(l: &L) -> ReadPath {
    if try_read_lock(l) {
        return ReadPath::Fast;
    }
    let owner = l.rt_lock();
    // Holding the `rt_mutex`: no writer holds the lock or waits for it (a writer owns
    // the `rt_mutex` for as long as the state says so), so the state is a count.
    l.add(1);
    drop(owner);
    ReadPath::Slow
}

/// Releases a read lock.
pub(crate) fn read_unlock<L: PiRw>(l: &L) {
    if l.add(-1) - 1 == WAITING {
        l.wake();
    }
}

/// Takes the lock for write; the returned owner of the `rt_mutex` is what
/// [`write_unlock`] consumes.
pub(crate) fn write_lock<L: PiRw>(l: &L) -> L::Owner<'_> {
    let owner = l.rt_lock();
    l.or(WAITING);
    l.wait_until(&|| l.state() == WAITING);
    l.store(WRITER);
    owner
}

/// Releases a write lock.
pub(crate) fn write_unlock<'a, L: PiRw>(l: &'a L, owner: L::Owner<'a>) {
    l.store(0);
    drop(owner);
}
