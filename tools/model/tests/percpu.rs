//! Zijlstra's scalable rw_mutex (`rust/protocol/percpu_rw.rs`, the `percpu` engine's
//! lock) under loom: readers on two "CPUs" (one of them migrates between its lock and
//! its unlock) against a writer.
//!
//! Checked in every interleaving: the writer never holds the lock while a reader does,
//! no lost wake-up, no deadlock. Negative controls (the model's primitives broken):
//! no grace period after the announcement (a reader that missed the flag counts in
//! after the writer summed), and an unlock that never wakes the writer (deadlock).

mod common;

use common::hold::DrainWait;
use common::percpu_rw::{self, PercpuRw, ReadPath};
use common::{check, Rcu};
use loom::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::SeqCst};
use loom::sync::{Arc, Mutex, MutexGuard, RwLockReadGuard};
use loom::thread;

/// What the model breaks (negative controls).
#[derive(Clone, Copy, PartialEq)]
enum Broken {
    Nothing,
    NoGracePeriod,
    NoWake,
}

struct World {
    counters: [AtomicIsize; 2],
    announced: AtomicBool,
    writers: Mutex<()>,
    rcu: Rcu,
    broken: Broken,
    /// What the lock protects: readers inside, and whether the writer is.
    readers_inside: AtomicUsize,
    writer_inside: AtomicBool,
}

/// The world as one CPU sees it (`add_this_cpu` adds to that CPU's counter).
struct Cpu<'a> {
    w: &'a World,
    cpu: usize,
}

impl<'a> PercpuRw for Cpu<'a> {
    type ReadSection<'b>
        = RwLockReadGuard<'b, ()>
    where
        Self: 'b;
    type WriterGuard<'b>
        = MutexGuard<'b, ()>
    where
        Self: 'b;

    fn rcu_read_lock(&self) -> RwLockReadGuard<'_, ()> {
        self.w.rcu.lock.read().unwrap()
    }

    fn synchronize(&self) {
        if self.w.broken != Broken::NoGracePeriod {
            drop(self.w.rcu.lock.write().unwrap());
        }
    }

    fn writer_mutex(&self) -> MutexGuard<'_, ()> {
        self.w.writers.lock().unwrap()
    }

    fn add_this_cpu(&self, v: isize) {
        self.w.counters[self.cpu].fetch_add(v, SeqCst);
    }

    fn sum(&self) -> isize {
        self.w.counters.iter().map(|c| c.load(SeqCst)).sum()
    }

    // Read-modify-writes, not a load and a store: loom treats `SeqCst` as `AcqRel`,
    // which allows the store-buffering outcome (the reader's decrement and the
    // writer's announcement each missed by the other) that the module's full barriers
    // (`fetch_add(Full)` before the read of the flag) forbid. An RMW reads the latest
    // value, so the flag's modification order orders the two sides as a fence would.
    fn announced(&self) -> bool {
        self.w.announced.fetch_or(false, SeqCst)
    }

    fn announce(&self, on: bool) {
        self.w.announced.swap(on, SeqCst);
    }

    fn wait_until(&self, done: &dyn Fn() -> bool) {
        self.w.rcu.waiter.wait_until(done);
    }

    fn wake(&self) {
        if self.w.broken != Broken::NoWake {
            self.w.rcu.waiter.wake_all();
        }
    }
}

impl World {
    fn cpu(&self, cpu: usize) -> Cpu<'_> {
        Cpu { w: self, cpu }
    }

    /// A reader: locks on `lock_cpu`, unlocks on `unlock_cpu` (it may migrate).
    fn read(&self, lock_cpu: usize, unlock_cpu: usize) -> ReadPath {
        let path = percpu_rw::read_lock(&self.cpu(lock_cpu));
        self.readers_inside.fetch_add(1, SeqCst);
        assert!(
            !self.writer_inside.load(SeqCst),
            "a reader got in while the writer held the lock"
        );
        self.readers_inside.fetch_sub(1, SeqCst);
        percpu_rw::read_unlock(&self.cpu(unlock_cpu));
        path
    }

    fn write(&self) {
        let cpu = self.cpu(0);
        let guard = percpu_rw::write_lock(&cpu);
        self.writer_inside.store(true, SeqCst);
        assert_eq!(
            self.readers_inside.load(SeqCst),
            0,
            "the writer got in while a reader held the lock"
        );
        self.writer_inside.store(false, SeqCst);
        percpu_rw::write_unlock(&cpu, guard);
    }
}

fn run(readers: usize, broken: Broken) {
    check(readers + 1, move || {
        let w = Arc::new(World {
            counters: [AtomicIsize::new(0), AtomicIsize::new(0)],
            announced: AtomicBool::new(false),
            writers: Mutex::new(()),
            rcu: Rcu::new(),
            broken,
            readers_inside: AtomicUsize::new(0),
            writer_inside: AtomicBool::new(false),
        });
        let threads: Vec<_> = (0..readers)
            .map(|i| {
                let w = w.clone();
                // The first reader migrates from CPU 1 to CPU 0 inside its section.
                thread::spawn(move || w.read(1, i % 2))
            })
            .collect();
        w.write();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(w.cpu(0).sum(), 0, "counts left over");
    });
}

#[test]
fn reader_vs_writer() {
    run(1, Broken::Nothing);
}

#[test]
fn two_readers_vs_writer() {
    run(2, Broken::Nothing);
}

#[test]
#[should_panic(expected = "while a reader held the lock")]
fn negative_no_grace_period() {
    run(1, Broken::NoGracePeriod);
}

#[test]
#[should_panic(expected = "deadlock")]
fn negative_unlock_never_wakes() {
    run(1, Broken::NoWake);
}
