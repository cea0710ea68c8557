//! Nielsen's read-side priority-inheriting rw lock (`rust/protocol/pi_rw.rs`, the `pi`
//! engine's lock) under loom: readers against a writer.
//!
//! Checked in every interleaving: the writer never holds the lock while a reader does,
//! no count is lost (the state is 0 at the end), no lost wake-up, no deadlock, and the
//! writer owns the `rt_mutex` for as long as it holds the lock (so a reader that waits
//! for it waits on the `rt_mutex` it owns, and the kernel's priority inheritance has
//! someone to boost: never "no owner but waiters").
//! Negative controls (the model's primitives broken): the slow reader *sets* the count
//! to 1 as the 2007 sketch said (a reader that came in by the fast path meanwhile is
//! lost from the count: caught as a count that does not return to 0), and an unlock
//! that never wakes the writer (deadlock).

mod common;

use common::check;
use common::hold::DrainWait;
use common::pi_rw::{self, PiRw, ReadPath};
use common::Waiter;
use loom::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering::SeqCst};
use loom::sync::{Arc, Mutex, MutexGuard};
use loom::thread;

/// What the model breaks (negative controls).
#[derive(Clone, Copy, PartialEq)]
enum Broken {
    Nothing,
    SlowReaderSetsOne,
    NoWake,
}

struct World {
    state: AtomicI32,
    rt: Mutex<()>,
    /// Who owns `rt` (0: nobody), recorded by the owner inside it.
    rt_owner: AtomicUsize,
    waiter: Waiter,
    broken: Broken,
    /// What the lock protects: readers inside, and whether the writer is.
    readers_inside: AtomicUsize,
    writer_inside: AtomicBool,
}

/// One thread's handle on the lock (`id` names it as an `rt_mutex` owner).
struct Me<'a> {
    w: &'a World,
    id: usize,
}

/// The owned `rt_mutex`.
struct Owner<'a> {
    w: &'a World,
    _guard: MutexGuard<'a, ()>,
}

impl Drop for Owner<'_> {
    fn drop(&mut self) {
        self.w.rt_owner.store(0, SeqCst);
    }
}

impl<'a> PiRw for Me<'a> {
    type Owner<'b>
        = Owner<'b>
    where
        Self: 'b;

    fn rt_lock(&self) -> Owner<'_> {
        let guard = self.w.rt.lock().unwrap();
        self.w.rt_owner.store(self.id, SeqCst);
        Owner {
            w: self.w,
            _guard: guard,
        }
    }

    // Read-modify-writes for loads, as in `percpu.rs`: loom treats `SeqCst` as `AcqRel`;
    // the module's state word is only written with full barriers.
    fn state(&self) -> i32 {
        self.w.state.fetch_add(0, SeqCst)
    }

    fn cmpxchg(&self, old: i32, new: i32) -> Result<i32, i32> {
        self.w.state.compare_exchange(old, new, SeqCst, SeqCst)
    }

    fn add(&self, v: i32) -> i32 {
        if self.w.broken == Broken::SlowReaderSetsOne && v == 1 {
            // The 2007 sketch: "When it gets the mutex it sets the count to 1".
            return self.w.state.swap(1, SeqCst);
        }
        self.w.state.fetch_add(v, SeqCst)
    }

    fn or(&self, v: i32) -> i32 {
        self.w.state.fetch_or(v, SeqCst)
    }

    fn store(&self, v: i32) {
        self.w.state.swap(v, SeqCst);
    }

    fn wait_until(&self, done: &dyn Fn() -> bool) {
        self.w.waiter.wait_until(done);
    }

    fn wake(&self) {
        if self.w.broken != Broken::NoWake {
            self.w.waiter.wake_all();
        }
    }
}

/// The writer's owner id.
const WRITER_ID: usize = 1;

impl World {
    fn me(&self, id: usize) -> Me<'_> {
        Me { w: self, id }
    }

    fn read(&self, id: usize) -> ReadPath {
        let me = self.me(id);
        let path = pi_rw::read_lock(&me);
        self.readers_inside.fetch_add(1, SeqCst);
        assert!(
            !self.writer_inside.load(SeqCst),
            "a reader got in while the writer held the lock"
        );
        self.readers_inside.fetch_sub(1, SeqCst);
        pi_rw::read_unlock(&me);
        path
    }

    fn write(&self) {
        let me = self.me(WRITER_ID);
        let owner = pi_rw::write_lock(&me);
        assert_eq!(
            self.rt_owner.load(SeqCst),
            WRITER_ID,
            "the writer holds the lock without owning the rt_mutex: waiting readers \
             would boost no one"
        );
        self.writer_inside.store(true, SeqCst);
        assert_eq!(
            self.readers_inside.load(SeqCst),
            0,
            "the writer got in while a reader held the lock"
        );
        self.writer_inside.store(false, SeqCst);
        pi_rw::write_unlock(&me, owner);
    }
}

fn run(readers: usize, broken: Broken) {
    check(readers + 1, move || {
        let w = Arc::new(World {
            state: AtomicI32::new(0),
            rt: Mutex::new(()),
            rt_owner: AtomicUsize::new(0),
            waiter: Waiter::new(),
            broken,
            readers_inside: AtomicUsize::new(0),
            writer_inside: AtomicBool::new(false),
        });
        let threads: Vec<_> = (0..readers)
            .map(|i| {
                let w = w.clone();
                thread::spawn(move || w.read(WRITER_ID + 1 + i))
            })
            .collect();
        w.write();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(w.state.load(SeqCst), 0, "counts left over");
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
#[should_panic(expected = "counts left over")]
fn negative_slow_reader_sets_one() {
    run(2, Broken::SlowReaderSetsOne);
}

#[test]
#[should_panic(expected = "deadlock")]
fn negative_unlock_never_wakes() {
    run(1, Broken::NoWake);
}
