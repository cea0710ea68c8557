// SPDX-License-Identifier: GPL-2.0

//! Zijlstra's scalable rw_mutex (seed 004, 2007), the `percpu` engine's lock.
//!
//! Readers count themselves in per-CPU counters; a writer announces itself with a flag,
//! makes sure every reader sees it, sums the counters over all CPUs and waits until
//! they add up to zero. The rules:
//!
//! - [`read_lock`]: inside an RCU read section, if no writer is announced, add one to
//!   this CPU's counter (no write to a line another CPU writes: the fast path); else
//!   (slow path) queue behind the writer on the writers' mutex and count in under it.
//! - [`read_unlock`]: subtract one from this CPU's counter (the reader may have moved:
//!   counters are signed, only their sum means anything) with a full barrier, then,
//!   if a writer is announced, wake it (under the waiter's lock).
//! - [`write_lock`]: take the writers' mutex (held until [`write_unlock`]: later
//!   writers and slow-path readers queue on it), announce, wait one grace period —
//!   after it every reader either saw the flag (and queues) or has its count in — then
//!   sleep until the sum over all CPUs is zero (Dumazet's objection: O(CPUs) per
//!   writer, each a line another CPU owns).
//! - [`write_unlock`]: withdraw the announcement, release the mutex.
//!
//! The 2007 patch made the flag visible with `synchronize_sched()`; today that is
//! `synchronize_rcu()`, and a reader's fast path is an RCU read section.
//!
//! Compiled into the module (`percpu_rw.rs` supplies per-CPU counters, RCU, a `Mutex`
//! and a `CondVar`) and into `tools/model` (`tests/percpu.rs`), which checks: a writer
//! never runs while a reader holds the lock, no lost wake-up, no deadlock.

/// The primitives the protocol runs on.
pub(crate) trait PercpuRw {
    /// A held RCU read section.
    type ReadSection<'a>
    where
        Self: 'a;
    /// The held writers' mutex.
    type WriterGuard<'a>
    where
        Self: 'a;

    /// Enters an RCU read section.
    fn rcu_read_lock(&self) -> Self::ReadSection<'_>;
    /// Waits for a grace period: every read section that began before has ended.
    fn synchronize(&self);
    /// Takes the writers' mutex.
    fn writer_mutex(&self) -> Self::WriterGuard<'_>;
    /// Adds `v` to the current CPU's counter, with a full barrier.
    fn add_this_cpu(&self, v: isize);
    /// Sums every CPU's counter.
    fn sum(&self) -> isize;
    /// The writer's announcement.
    fn announced(&self) -> bool;
    /// Sets or clears the announcement (fully ordered).
    fn announce(&self, on: bool);
    /// Sleeps until `done()` holds, checked under the waiter's lock.
    fn wait_until(&self, done: &dyn Fn() -> bool);
    /// Wakes the waiting writer (under the waiter's lock).
    fn wake(&self);
}

/// How a reader got in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadPath {
    /// No writer: one add to this CPU's counter.
    Fast,
    /// A writer was announced: queued on the writers' mutex.
    Slow,
}

/// Takes the lock for read.
pub(crate) fn read_lock<L: PercpuRw>(l: &L) -> ReadPath {
    {
        let _rcu = l.rcu_read_lock();
        if !l.announced() {
            l.add_this_cpu(1);
            return ReadPath::Fast;
        }
    }
    let _writers = l.writer_mutex();
    l.add_this_cpu(1);
    ReadPath::Slow
}

/// Takes the lock for read only if no writer is announced (no sleep).
pub(crate) fn try_read_lock<L: PercpuRw>(l: &L) -> bool {
    let _rcu = l.rcu_read_lock();
    if l.announced() {
        return false;
    }
    l.add_this_cpu(1);
    true
}

/// Releases a read lock.
pub(crate) fn read_unlock<L: PercpuRw>(l: &L) {
    l.add_this_cpu(-1);
    if l.announced() {
        l.wake();
    }
}

/// Takes the lock for write; the returned guard is the writers' mutex, which
/// [`write_unlock`] consumes.
pub(crate) fn write_lock<L: PercpuRw>(l: &L) -> L::WriterGuard<'_> {
    let writers = l.writer_mutex();
    l.announce(true);
    l.synchronize();
    l.wait_until(&|| l.sum() == 0);
    writers
}

/// Releases a write lock.
pub(crate) fn write_unlock<'a, L: PercpuRw>(l: &'a L, writers: L::WriterGuard<'a>) {
    l.announce(false);
    drop(writers);
}
