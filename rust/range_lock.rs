// SPDX-License-Identifier: GPL-2.0

//! A range lock over arena pages (Lespinasse, seed 003 part II): readers lock one page,
//! writers a range; a writer excludes the readers and writers that overlap its range,
//! and nothing else.
//!
//! The state is one shared structure — the pages readers hold and the writers' ranges,
//! under a mutex — which is exactly his prototype's cost: "the prototype needs to
//! maintain a shared structure holding addresses for each pending page fault.
//! Updating this shared structure gets very expensive in high concurrency page fault
//! benchmarks". Every reader writes it twice (register, unregister), each time under
//! the mutex: [`READ_WRITES`] shared-line writes per fault, counted by the engine.
//!
//! Rules:
//! - a reader of page `p` waits while any writer range (waiting or holding) contains
//!   `p`, then registers `p` (writers are preferred: a stream of faults on a page
//!   cannot starve a writer);
//! - a writer takes a ticket and registers its range at once (blocking new readers in
//!   it), then waits until no registered reader is in its range and no writer with an
//!   earlier ticket overlaps it (first come, first served among overlapping writers: no
//!   cycle, so no deadlock);
//! - unlocking unregisters and wakes every waiter (they recheck).
//!
//! Lock order: the range lock's mutex is innermost: taken and released inside each
//! call, never held while waiting (the condvar drops it) or when the call returns. A
//! *held* range orders as a lock: per-VMA lock → read range (faults); write range →
//! the engine's tree mutex (writers).

#![deny(unsafe_code)]

use kernel::{
    new_condvar, new_mutex,
    prelude::*,
    sync::{CondVar, Mutex},
};

/// Shared-line writes of one read lock and unlock: the mutex's acquire and release
/// and the registration, twice.
pub(crate) const READ_WRITES: u64 = 6;

/// A writer's range and whether it holds it yet.
struct Writer {
    start: usize,
    end: usize,
    ticket: u64,
}

/// What the mutex protects.
struct Ranges {
    /// Pages held by readers (a multiset).
    readers: KVec<usize>,
    /// Writers in ticket order, waiting or holding.
    writers: KVec<Writer>,
    /// The next writer's ticket.
    next: u64,
}

impl Ranges {
    fn writer_covers(&self, pgoff: usize) -> bool {
        self.writers
            .iter()
            .any(|w| w.start <= pgoff && pgoff < w.end)
    }

    fn writer_may_go(&self, start: usize, end: usize, ticket: u64) -> bool {
        !self.readers.iter().any(|&p| start <= p && p < end)
            && !self
                .writers
                .iter()
                .any(|w| w.ticket < ticket && w.start < end && start < w.end)
    }
}

/// The range lock.
#[pin_data]
pub(crate) struct RangeLock {
    #[pin]
    state: Mutex<Ranges>,
    #[pin]
    changed: CondVar,
}

/// Page `pgoff` held for read; unlocks on drop.
pub(crate) struct ReadRange<'a> {
    lock: &'a RangeLock,
    pgoff: usize,
}

/// A range held for write; unlocks on drop.
pub(crate) struct WriteRange<'a> {
    lock: &'a RangeLock,
    ticket: u64,
    waited: bool,
}

impl WriteRange<'_> {
    /// Whether taking it waited for a reader or an overlapping writer.
    pub(crate) fn waited(&self) -> bool {
        self.waited
    }
}

impl RangeLock {
    /// A lock with nothing held.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            state <- new_mutex!(
                Ranges {
                    readers: KVec::new(),
                    writers: KVec::new(),
                    next: 0,
                },
                "vmalab_range_lock"
            ),
            changed <- new_condvar!("vmalab_range_lock_changed"),
        })
    }

    /// Locks page `pgoff` for read; also returns whether it had to wait for a writer.
    /// `ENOMEM` if the registration could not grow.
    pub(crate) fn read(&self, pgoff: usize) -> Result<(ReadRange<'_>, bool)> {
        let mut s = self.state.lock();
        let mut waited = false;
        while s.writer_covers(pgoff) {
            waited = true;
            self.changed.wait(&mut s);
        }
        s.readers.push(pgoff, GFP_KERNEL)?;
        Ok((ReadRange { lock: self, pgoff }, waited))
    }

    /// Locks pages `[start, end)` for write. `ENOMEM` if the registration could not
    /// grow (nothing is held then).
    pub(crate) fn write(&self, start: usize, end: usize) -> Result<WriteRange<'_>> {
        let mut s = self.state.lock();
        let ticket = s.next;
        s.next += 1;
        s.writers.push(Writer { start, end, ticket }, GFP_KERNEL)?;
        let mut waited = false;
        while !s.writer_may_go(start, end, ticket) {
            waited = true;
            self.changed.wait(&mut s);
        }
        Ok(WriteRange {
            lock: self,
            ticket,
            waited,
        })
    }
}

impl Drop for ReadRange<'_> {
    fn drop(&mut self) {
        let mut s = self.lock.state.lock();
        if let Some(i) = s.readers.iter().position(|&p| p == self.pgoff) {
            let _ = s.readers.remove(i);
        }
        // Only a writer can be waiting for a reader.
        let wake = s.writer_covers(self.pgoff);
        drop(s);
        if wake {
            self.lock.changed.notify_all();
        }
    }
}

impl Drop for WriteRange<'_> {
    fn drop(&mut self) {
        let mut s = self.lock.state.lock();
        if let Some(i) = s.writers.iter().position(|w| w.ticket == self.ticket) {
            let _ = s.writers.remove(i);
        }
        drop(s);
        self.lock.changed.notify_all();
    }
}

#[kunit_tests(vmalab_range_lock)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_ranges_do_not_conflict() -> Result {
        let lock = KBox::pin_init(RangeLock::new(), GFP_KERNEL)?;
        let (_r1, waited) = lock.read(5)?;
        assert!(!waited);
        // A writer beside the reader, and another beside it: neither waits.
        let _w1 = lock.write(6, 10)?;
        let _w2 = lock.write(10, 12)?;
        let (_r2, waited) = lock.read(12)?;
        assert!(!waited);
        {
            let s = lock.state.lock();
            assert!(s.writer_covers(6) && s.writer_covers(11) && !s.writer_covers(5));
            // A writer over the reader's page may not go; one past it may.
            assert!(!s.writer_may_go(0, 6, s.next));
            assert!(!s.writer_may_go(9, 11, s.next)); // earlier writers overlap
            assert!(s.writer_may_go(13, 20, s.next));
        }
        Ok(())
    }

    #[test]
    fn unlock_unregisters() -> Result {
        let lock = KBox::pin_init(RangeLock::new(), GFP_KERNEL)?;
        let (r, _) = lock.read(3)?;
        let (r2, _) = lock.read(3)?;
        drop(r);
        assert!(!lock.state.lock().writer_may_go(0, 4, 0));
        drop(r2);
        assert!(lock.state.lock().writer_may_go(0, 4, 0));
        let w = lock.write(0, 4)?;
        assert!(lock.state.lock().writer_covers(3));
        drop(w);
        let s = lock.state.lock();
        assert!(!s.writer_covers(3) && s.readers.is_empty() && s.writers.is_empty());
        Ok(())
    }
}
