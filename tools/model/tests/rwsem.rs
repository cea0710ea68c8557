//! The `rwsem` engine under loom: the shared writer order (`rust/protocol/writer.rs`)
//! with a publish under the write lock and nothing to quiesce.
//!
//! The engine's reader side has no core of its own to share: a fault takes the
//! kernel's `rw_semaphore` for read around its lookup and its install
//! (`engine/rwsem.rs`), written here again in a few lines; the semaphore is modelled
//! as a reader-writer lock. The negative controls are the mutants the selftests arm
//! for this engine: skipping the zap (the module's `writer.rs`), and installing after
//! the read lock is dropped (the model's rendition of `VMALAB_MUTANT_UNLOCKED_INSTALL`).
//!
//! Checked in every interleaving: no PTE to a freed page, no page freed while mapped,
//! no PTE of the removed region once the writer returned, no deadlock.

mod common;

use common::writer::{self, Writer, Zap};
use common::{check, Mm, A, NONE};
use loom::sync::{Arc, RwLock};
use loom::thread;

struct World {
    /// The region tree under the engine's semaphore: the region covering the address.
    tree: RwLock<u32>,
    mm: Mm,
}

impl World {
    /// One fault: look up and install under the read lock (`unlocked`: the mutant,
    /// which drops the lock between the two).
    fn fault(&self, unlocked: bool) {
        let tree = self.tree.read().unwrap();
        let region = *tree;
        if region == NONE {
            return; // SIGBUS
        }
        if unlocked {
            drop(tree);
        }
        self.mm.install(region);
    }
}

/// The writer's UNMAP of A.
struct Unmap<'a> {
    w: &'a World,
    /// Whether a mutant is armed (the regions are then parked, as in `Space`).
    mutant: bool,
}

impl Writer for Unmap<'_> {
    type Unpublished = u32;
    type Error = ();

    fn publish(&mut self) -> Result<u32, ()> {
        *self.w.tree.write().unwrap() = NONE;
        Ok(A)
    }

    fn quiesce(&mut self, _region: &mut u32) {} // the engine's default

    fn zap(&mut self, _region: &u32) {
        self.w.mm.zap();
    }

    fn free(&mut self, region: u32) {
        if !self.mutant {
            self.w.mm.free_page(region);
        }
    }
}

fn run(faults: usize, unlocked: bool, zap: Zap) {
    check(faults + 1, move || {
        let w = Arc::new(World {
            tree: RwLock::new(A),
            mm: Mm::new(),
        });
        let threads: Vec<_> = (0..faults)
            .map(|_| {
                let w = w.clone();
                thread::spawn(move || w.fault(unlocked))
            })
            .collect();
        let mut op = Unmap {
            w: &w,
            mutant: zap == Zap::MutantSkip,
        };
        writer::write(&mut op, zap).unwrap();
        for t in threads {
            t.join().unwrap();
        }
        w.mm.assert_no_pte_of(A);
    });
}

#[test]
fn fault_vs_unmap() {
    run(1, false, Zap::Normal);
}

#[test]
fn two_faults_vs_unmap() {
    run(2, false, Zap::Normal);
}

#[test]
#[should_panic(expected = "survived the writer's zap")]
fn negative_skip_zap_leaves_a_pte() {
    run(1, false, Zap::MutantSkip);
}

#[test]
#[should_panic(expected = "a PTE to a freed page")]
fn negative_unlocked_install_maps_a_freed_page() {
    run(1, true, Zap::Normal);
}
