//! The `rcu` engine's fault-versus-UNMAP and fault-versus-REPLACE protocol under loom,
//! with the module's own hold/release/drain core (`rust/protocol/hold.rs`) and
//! reclaim order (`rust/protocol/reclaim.rs`).
//!
//! Modelled, for one region (one map entry and one page):
//! - RCU: a read section holds a reader-writer lock for read; `synchronize_rcu` takes
//!   it for write once and drops it: it waits for every reader that began before it,
//!   and readers that begin after it see everything written before it. (Stricter than
//!   RCU, which never blocks a new reader; an epoch-counter model needs SeqCst
//!   store-buffering guarantees that loom does not model.)
//! - The map: one "published" flag; the writer's UNMAP clears it (`mtree_erase`).
//! - Memory: the entry (hold word and value) is marked freed when the writer frees
//!   it; any access by a reader afterwards panics ("use after free").
//! - Page tables: the PTE of the region's page is a flag under a mutex (the PTE lock);
//!   faults install it, the writer's zap clears it, both under that lock.
//! - The fault: under RCU, find the entry; fast path: install inside the read section;
//!   slow path: hold, leave the read section (the sleep), install, release, and wake
//!   the writer if the release says so.
//! - The writer: unpublish, then the module's reclaim order (`rust/protocol/reclaim.rs`:
//!   grace period, then per entry drain the holds and free it; the mutants skip parts
//!   and park the entry), then zap (`Space::retire`).
//!
//! Checked in every interleaving: no access to a freed entry; once the writer returned
//! (after its zap), no PTE for the removed (or replaced) region exists; a fault maps
//! the page of the region the map held when it looked (old or new, never a freed
//! one); no lost wake-up and no deadlock (loom fails a model whose threads all block).
//!
//! Not modelled: the maple tree's internals (its RCU safety is the kernel's); the
//! unpublish and the zap around the shared reclaim are written here again (they are
//! one call each in the module); memory orderings weaker than SeqCst (loom's atomics are given
//! the kernel's `Full` and `Acquire` as SeqCst/Acquire), several entries sharing one
//! condvar.

use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use loom::sync::{Arc, Condvar, Mutex, RwLock};
use loom::thread;

#[path = "../../../rust/protocol/hold.rs"]
#[allow(dead_code)]
mod hold;
#[path = "../../../rust/protocol/reclaim.rs"]
#[allow(dead_code)]
mod reclaim;

use hold::{DrainWait, HoldWord};
use reclaim::{Reclaimer, Wait};

/// One map entry's memory: the hold word, plus whether the writer freed it.
struct Entry {
    word: AtomicU32,
    freed: AtomicBool,
}

impl Entry {
    /// Every access to the entry goes through here.
    fn touch(&self) {
        assert!(
            !self.freed.load(SeqCst),
            "use after free: a reader touched a freed entry"
        );
    }
}

impl HoldWord for Entry {
    fn add_full(&self, v: u32) -> u32 {
        self.touch();
        self.word.fetch_add(v, SeqCst)
    }

    fn sub_full(&self, v: u32) -> u32 {
        self.touch();
        self.word.fetch_sub(v, SeqCst)
    }

    fn load_acquire(&self) -> u32 {
        self.touch();
        self.word.load(SeqCst)
    }
}

/// The map's drain mutex and condvar.
struct Waiter {
    lock: Mutex<()>,
    cv: Condvar,
}

impl DrainWait for Waiter {
    fn wait_until(&self, done: &dyn Fn() -> bool) {
        let mut guard = self.lock.lock().unwrap();
        while !done() {
            guard = self.cv.wait(guard).unwrap();
        }
    }

    fn wake_all(&self) {
        let _guard = self.lock.lock().unwrap();
        self.cv.notify_all();
    }
}

struct World {
    /// RCU: held for read by a read section, for write by a grace period.
    rcu: RwLock<()>,
    published: AtomicBool,
    entry: Entry,
    waiter: Waiter,
    /// The region page's PTE, under its PTE lock.
    pte: Mutex<bool>,
}

impl World {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            rcu: RwLock::new(()),
            published: AtomicBool::new(true),
            entry: Entry {
                word: AtomicU32::new(0),
                freed: AtomicBool::new(false),
            },
            waiter: Waiter {
                lock: Mutex::new(()),
                cv: Condvar::new(),
            },
            pte: Mutex::new(false),
        })
    }

    fn synchronize_rcu(&self) {
        drop(self.rcu.write().unwrap());
    }

    /// Installs the region's PTE (the entry's value says which page: a use of it).
    fn install(&self) {
        self.entry.touch();
        *self.pte.lock().unwrap() = true;
    }

    /// One fault, on the fast path or the slow path.
    fn fault(&self, slow: bool, release: impl Fn(&Entry) -> bool) {
        let read_section = self.rcu.read().unwrap();
        if !self.published.load(SeqCst) {
            return; // SIGBUS: no region.
        }
        if !slow {
            self.install();
            return;
        }
        hold::hold(&self.entry);
        drop(read_section);
        // ... sleeps (slow backing) ...
        self.install();
        if release(&self.entry) {
            self.waiter.wake_all();
        }
    }

    /// The writer's UNMAP of the region: unpublish, reclaim (the module's code), zap.
    fn unmap(&self, wait: Wait) {
        self.published.store(false, SeqCst);
        reclaim::reclaim(&mut ModelReclaimer { world: self }, [&self.entry], wait);
        // `Space::retire`: the zap, then the region's pages are freed.
        *self.pte.lock().unwrap() = false;
    }
}

/// The model's side of `reclaim.rs`.
struct ModelReclaimer<'a> {
    world: &'a World,
}

impl<'a> Reclaimer for ModelReclaimer<'a> {
    type Entry = &'a Entry;

    fn grace_period(&mut self, _expedited: bool) {
        self.world.synchronize_rcu();
    }

    fn drain(&mut self, entry: &&'a Entry) -> bool {
        hold::drain(*entry, &self.world.waiter)
    }

    fn free(&mut self, entry: &'a Entry) {
        entry.freed.store(true, SeqCst);
    }

    fn park(&mut self, _entry: &'a Entry) {}
}

/// Runs `readers` faults (slow or fast) against one UNMAP; checks after the writer
/// returned and every thread finished that no PTE survived.
fn run(readers: &'static [bool], wait: Wait, release: fn(&Entry) -> bool) {
    let mut builder = loom::model::Builder::new();
    // One reader: exhaustive (milliseconds; a bound of 3 preemptions would miss the
    // use-after-free below, since lock operations count). Two readers: bounded to 4
    // preemptions (exhaustive takes two minutes).
    builder.preemption_bound = (readers.len() > 1).then_some(4);
    builder.check(move || {
        let w = World::new();
        let threads: Vec<_> = readers
            .iter()
            .map(|&slow| {
                let w = w.clone();
                thread::spawn(move || w.fault(slow, release))
            })
            .collect();
        w.unmap(wait);
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            !*w.pte.lock().unwrap(),
            "a PTE for the removed region survived the writer's zap"
        );
    });
}

fn module_release(e: &Entry) -> bool {
    hold::release(e)
}

#[test]
fn fast_path_fault_vs_unmap() {
    run(&[false], Wait::Normal, module_release);
}

#[test]
fn slow_path_fault_vs_unmap() {
    run(&[true], Wait::Normal, module_release);
}

#[test]
fn two_slow_faults_vs_unmap() {
    run(&[true, true], Wait::Normal, module_release);
}

#[test]
fn fast_and_slow_faults_vs_unmap() {
    run(&[false, true], Wait::Normal, module_release);
}

// Negative controls: the checker must find each of these.

/// The release before issue 8: decrement, then read a separate "draining" flag of
/// the entry — which the writer may have freed in between.
fn release_before_issue_8(e: &Entry) -> bool {
    let old = e.sub_full(1);
    // The old code's `draining` flag lived in the entry, next to the count: reading it
    // is an access to the entry after the decrement.
    old & !hold::DRAINING == 1 && e.load_acquire() & hold::DRAINING != 0
}

#[test]
#[should_panic(expected = "use after free")]
fn negative_release_before_issue_8_is_a_use_after_free() {
    run(&[true], Wait::Normal, release_before_issue_8);
}

#[test]
#[should_panic(expected = "survived the writer's zap")]
fn negative_skip_grace_period_leaves_a_pte() {
    run(&[false], Wait::MutantSkipGracePeriod, module_release);
}

#[test]
#[should_panic(expected = "survived the writer's zap")]
fn negative_skip_drain_leaves_a_pte() {
    run(&[true], Wait::MutantSkipDrain, module_release);
}

/// REPLACE: the writer swaps region A for region B in one store; a fault resolves
/// against A or B (whichever the map held when it looked) or finds nothing, and once
/// the writer returned no PTE maps A's page. B's PTE may stay (it is current).
struct Replace {
    rcu: RwLock<()>,
    /// Which region the map holds: 0 = A, 1 = B.
    current: AtomicU32,
    entries: [Entry; 2],
    waiter: Waiter,
    /// The PTE of the faulting address: which region's page it maps, if any.
    pte: Mutex<Option<u32>>,
}

impl Replace {
    fn fault(&self, slow: bool) {
        let read_section = self.rcu.read().unwrap();
        let r = self.current.load(SeqCst);
        let e = &self.entries[r as usize];
        if slow {
            hold::hold(e);
            drop(read_section);
            e.touch();
            *self.pte.lock().unwrap() = Some(r);
            if hold::release(e) {
                self.waiter.wake_all();
            }
        } else {
            e.touch();
            *self.pte.lock().unwrap() = Some(r);
            drop(read_section);
        }
    }

    fn replace(&self, wait: Wait) {
        self.current.store(1, SeqCst); // one mtree_store_range: A → B
        let mut reclaimer = ReplaceReclaimer { world: self };
        reclaim::reclaim(&mut reclaimer, [&self.entries[0]], wait);
        *self.pte.lock().unwrap() = None; // Space::retire zaps the replaced range
    }
}

struct ReplaceReclaimer<'a> {
    world: &'a Replace,
}

impl<'a> Reclaimer for ReplaceReclaimer<'a> {
    type Entry = &'a Entry;

    fn grace_period(&mut self, _expedited: bool) {
        drop(self.world.rcu.write().unwrap());
    }

    fn drain(&mut self, entry: &&'a Entry) -> bool {
        hold::drain(*entry, &self.world.waiter)
    }

    fn free(&mut self, entry: &'a Entry) {
        entry.freed.store(true, SeqCst);
    }

    fn park(&mut self, _entry: &'a Entry) {}
}

fn run_replace(slow: bool, wait: Wait) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = None;
    builder.check(move || {
        let entry = || Entry {
            word: AtomicU32::new(0),
            freed: AtomicBool::new(false),
        };
        let w = Arc::new(Replace {
            rcu: RwLock::new(()),
            current: AtomicU32::new(0),
            entries: [entry(), entry()],
            waiter: Waiter {
                lock: Mutex::new(()),
                cv: Condvar::new(),
            },
            pte: Mutex::new(None),
        });
        let reader = {
            let w = w.clone();
            thread::spawn(move || w.fault(slow))
        };
        w.replace(wait);
        reader.join().unwrap();
        assert_ne!(
            *w.pte.lock().unwrap(),
            Some(0),
            "a PTE of the replaced region survived the writer's zap"
        );
    });
}

#[test]
fn fast_path_fault_vs_replace() {
    run_replace(false, Wait::Normal);
}

#[test]
fn slow_path_fault_vs_replace() {
    run_replace(true, Wait::Normal);
}

#[test]
#[should_panic(expected = "survived the writer's zap")]
fn negative_replace_skip_drain_leaves_a_pte_of_the_old_region() {
    run_replace(true, Wait::MutantSkipDrain);
}
