//! The `rcu` engine under loom, with the module's own code for every step that
//! decides: the fault (`rust/protocol/rcu_fault.rs`), the hold/release/drain word
//! (`hold.rs`), the writer's order (`writer.rs`) and its wait (`reclaim.rs`).
//!
//! Modelled, for one faulting address:
//! - RCU: a read section holds a reader-writer lock for read; `synchronize_rcu` takes
//!   it for write once and drops it: it waits for every reader that began before it,
//!   and readers that begin after it see everything written before it. (Stricter than
//!   RCU, which never blocks a new reader; an epoch-counter model needs SeqCst
//!   store-buffering guarantees that loom does not model.)
//! - The map: which region covers the address (A, B or none); UNMAP's publish sets
//!   none (`mtree_erase`), REPLACE's sets B (one `mtree_store_range`).
//! - Memory: each region's map entry (hold word, freed flag) and page (freed flag);
//!   a reader's access to a freed entry panics, so does a PTE installed to a freed page.
//! - Page tables: the address's PTE under its PTE lock; faults install, the zap clears.
//!
//! Checked in every interleaving: no access to a freed entry or page; once the writer
//! returned, no PTE maps the removed region's page; a fault maps the page of a region
//! the map held while it looked; no lost wake-up, no deadlock (loom fails a model
//! whose threads all block).
//!
//! Not modelled: the maple tree's internals (its RCU safety is the kernel's), the
//! publish itself (one tree call in the module, one store here), memory orderings
//! weaker than SeqCst (the kernel's `Full` and `Acquire` are given as SeqCst), several
//! entries sharing one condvar, the fast path of `map_pages` (a lookup and an install
//! inside `do_fault_around`'s read section: the fast path of the fault, without hold).

mod common;

use common::hold::{self, HoldWord};
use common::rcu_fault::{self, RcuFault};
use common::reclaim::{self, Wait};
use common::writer::{self, Writer, Zap};
use common::{check, Entry, Mm, Rcu, RcuReclaimer, A, B, NONE};
use loom::sync::atomic::{AtomicU32, Ordering::SeqCst};
use loom::sync::{Arc, RwLockReadGuard};
use loom::thread;

struct World {
    /// RCU: held for read by a read section, for write by a grace period.
    rcu: Rcu,
    /// Which region's entry the map holds for the address.
    map: AtomicU32,
    entries: [Entry; 2],
    mm: Mm,
}

impl World {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            rcu: Rcu::new(),
            map: AtomicU32::new(A),
            entries: [Entry::new(), Entry::new()],
            mm: Mm::new(),
        })
    }
}

/// How a modelled fault releases its hold: the module's `hold::release`, or a mutant.
type Release = fn(&Entry) -> bool;

/// The module's release.
fn module_release(e: &Entry) -> bool {
    hold::release(e)
}

/// One fault's steps; `slow` faults need a sleep (slow backing, no PTE table).
struct FaultSteps<'a> {
    w: &'a World,
    slow: bool,
    release: Release,
}

/// A hold: released (and the writer woken if it says so) when dropped, as the
/// module's `rcu_tree::Held`.
struct Held<'a> {
    w: &'a World,
    region: u32,
    release: Release,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if (self.release)(&self.w.entries[self.region as usize]) {
            hold::DrainWait::wake_all(&self.w.rcu.waiter);
        }
    }
}

impl<'a> RcuFault for FaultSteps<'a> {
    type Guard = RwLockReadGuard<'a, ()>;
    type Found<'g>
        = u32
    where
        Self: 'g;
    type Held = Held<'a>;
    type Out = ();

    fn read_lock(&self) -> Self::Guard {
        self.w.rcu.lock.read().unwrap()
    }

    fn lookup<'g>(&'g self, _guard: &'g Self::Guard) -> Option<u32> {
        let region = self.w.map.load(SeqCst);
        if region == NONE {
            return None;
        }
        // The entry's value says where the region's page is: a use of the entry.
        self.w.entries[region as usize].touch();
        Some(region)
    }

    fn missing(&self) {}

    fn map_atomic(&self, region: &u32) -> Option<()> {
        if self.slow {
            return None;
        }
        self.w.entries[*region as usize].touch();
        self.w.mm.install(*region);
        Some(())
    }

    fn hold<'g>(&'g self, region: u32, _guard: &'g Self::Guard) -> Held<'a> {
        hold::hold(&self.w.entries[region as usize]);
        Held {
            w: self.w,
            region,
            release: self.release,
        }
    }

    fn map_held(&self, held: Held<'a>) {
        // ... sleeps (slow backing, PTE table allocation) ...
        self.w.entries[held.region as usize].touch();
        self.w.mm.install(held.region);
    }
}

/// The writer's operation on the address: UNMAP of A, or REPLACE of A by B.
struct WriterSteps<'a> {
    w: &'a World,
    replace: bool,
    wait: Wait,
}

impl Writer for WriterSteps<'_> {
    /// The region taken out.
    type Unpublished = u32;
    type Error = ();

    fn publish(&mut self) -> Result<u32, ()> {
        self.w
            .map
            .store(if self.replace { B } else { NONE }, SeqCst);
        Ok(A)
    }

    fn quiesce(&mut self, region: &mut u32) {
        let entry = &self.w.entries[*region as usize];
        reclaim::reclaim(&mut RcuReclaimer(&self.w.rcu), [entry], self.wait);
    }

    fn zap(&mut self, _region: &u32) {
        self.w.mm.zap();
    }

    fn free(&mut self, region: u32) {
        // As `Space`: while a mutant is armed, the regions are parked, not freed.
        if self.wait == Wait::Normal {
            self.w.mm.free_page(region);
        }
    }
}

/// Faults (`true`: slow) on the address against one writer operation.
struct Run {
    faults: &'static [bool],
    replace: bool,
    wait: Wait,
    zap: Zap,
    release: Release,
}

impl Run {
    const fn unmap(faults: &'static [bool]) -> Self {
        Self {
            faults,
            replace: false,
            wait: Wait::Normal,
            zap: Zap::Normal,
            release: module_release,
        }
    }

    const fn replace(faults: &'static [bool]) -> Self {
        Self {
            replace: true,
            ..Self::unmap(faults)
        }
    }

    fn check(self) {
        let Run {
            faults,
            replace,
            wait,
            zap,
            release,
        } = self;
        check(faults.len() + 1, move || {
            let w = World::new();
            let threads: Vec<_> = faults
                .iter()
                .map(|&slow| {
                    let w = w.clone();
                    thread::spawn(move || {
                        rcu_fault::fault(&FaultSteps {
                            w: &w,
                            slow,
                            release,
                        })
                    })
                })
                .collect();
            let mut op = WriterSteps {
                w: &w,
                replace,
                wait,
            };
            writer::write(&mut op, zap).unwrap();
            for t in threads {
                t.join().unwrap();
            }
            w.mm.assert_no_pte_of(A);
        });
    }
}

#[test]
fn fast_path_fault_vs_unmap() {
    Run::unmap(&[false]).check();
}

#[test]
fn slow_path_fault_vs_unmap() {
    Run::unmap(&[true]).check();
}

#[test]
fn two_slow_faults_vs_unmap() {
    Run::unmap(&[true, true]).check();
}

#[test]
fn fast_and_slow_faults_vs_unmap() {
    Run::unmap(&[false, true]).check();
}

#[test]
fn fast_path_fault_vs_replace() {
    Run::replace(&[false]).check();
}

#[test]
fn slow_path_fault_vs_replace() {
    Run::replace(&[true]).check();
}

#[test]
fn slow_and_fast_faults_vs_replace() {
    Run::replace(&[true, false]).check();
}

// Negative controls: the checker must find each of these.

/// The release before issue 8: decrement, then read the entry's "draining" flag —
/// which the writer may have freed in between.
fn release_before_issue_8(e: &Entry) -> bool {
    let old = e.sub_full(1);
    // The old code's `draining` flag lived in the entry, next to the count: reading it
    // is an access to the entry after the decrement.
    old & !hold::DRAINING == 1 && e.load_acquire() & hold::DRAINING != 0
}

#[test]
#[should_panic(expected = "use after free")]
fn negative_release_before_issue_8_is_a_use_after_free() {
    Run {
        release: release_before_issue_8,
        ..Run::unmap(&[true])
    }
    .check();
}

#[test]
#[should_panic(expected = "survived the writer's zap")]
fn negative_skip_grace_period_leaves_a_pte() {
    Run {
        wait: Wait::MutantSkipGracePeriod,
        ..Run::unmap(&[false])
    }
    .check();
}

#[test]
#[should_panic(expected = "survived the writer's zap")]
fn negative_skip_drain_leaves_a_pte() {
    Run {
        wait: Wait::MutantSkipDrain,
        ..Run::unmap(&[true])
    }
    .check();
}

#[test]
#[should_panic(expected = "survived the writer's zap")]
fn negative_replace_skip_drain_leaves_a_pte_of_the_old_region() {
    Run {
        wait: Wait::MutantSkipDrain,
        ..Run::replace(&[true])
    }
    .check();
}

#[test]
#[should_panic(expected = "survived the writer's zap")]
fn negative_skip_zap_leaves_a_pte() {
    Run {
        zap: Zap::MutantSkip,
        wait: Wait::MutantSkipDrain, // any mutant parks the regions, as in `Space`
        ..Run::unmap(&[false])
    }
    .check();
}

/// A release that never wakes the writer: a lost wake-up.
fn release_without_wake(e: &Entry) -> bool {
    let _ = hold::release(e);
    false
}

#[test]
#[should_panic(expected = "deadlock")]
fn negative_lost_wake_up_is_a_deadlock() {
    Run {
        release: release_without_wake,
        ..Run::unmap(&[true])
    }
    .check();
}
