//! The retiring-range rule (`rust/protocol/retire.rs`) under loom: an UNMAP of region
//! A, whose page is mapped, against a MAP placed anywhere (which can only land where
//! A was) followed by a store into the new region B. The engine is `rwsem`-like
//! (publish under the tree's write lock, nothing to quiesce); the writer order is the
//! module's `writer.rs`.
//!
//! Checked in every interleaving: a store into B never goes through a PTE of A (it
//! would land in A's page and vanish at A's zap — the data loss ebizzy found), no PTE
//! to a freed page, no page freed while mapped, no deadlock. Negative control: the
//! mutant that skips the wait (`VMALAB_MUTANT_SKIP_RETIRE_WAIT`).
//!
//! The same for a MAP placed by the engine's own allocator before its publish
//! (`retire::publish_placed`, `ptshard`): A's page is free in the allocator once the
//! UNMAP published, and placement must not take it while the UNMAP still retires it.

mod common;

use common::retire::{self, RetireList, Retiring, Span};
use common::writer::{self, Writer, Zap};
use common::{check, Mm, A, B, NONE};
use loom::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use loom::thread;

/// The space's retiring list, lock and wait queue.
struct RetireQueue {
    list: Mutex<Vec<(usize, usize)>>,
    cv: Condvar,
}

/// The locked list (an `Option` so that `wait` can hand the guard to loom's condvar).
struct Locked<'a>(Option<MutexGuard<'a, Vec<(usize, usize)>>>);

impl RetireList for RetireQueue {
    type Locked<'a> = Locked<'a>;

    fn lock(&self) -> Locked<'_> {
        Locked(Some(self.list.lock().unwrap()))
    }

    fn wait(&self, locked: &mut Locked<'_>) -> bool {
        let g = locked.0.take().expect("locked");
        locked.0 = Some(self.cv.wait(g).unwrap());
        false // No signals in the model.
    }

    fn notify_all(&self) {
        self.cv.notify_all();
    }
}

impl Retiring for Locked<'_> {
    fn any(&self, f: &dyn Fn((usize, usize)) -> bool) -> bool {
        self.0.as_ref().expect("locked").iter().any(|&r| f(r))
    }

    fn reserve_one(&mut self) -> bool {
        true
    }

    fn push(&mut self, range: (usize, usize)) {
        self.0.as_mut().expect("locked").push(range);
    }

    fn remove(&mut self, range: (usize, usize)) {
        let v = self.0.as_mut().expect("locked");
        let i = v.iter().position(|&r| r == range).expect("on the list");
        v.remove(i);
    }
}

struct World {
    /// The region tree under the engine's semaphore: what covers the one page.
    tree: RwLock<u32>,
    mm: Mm,
    retire: RetireQueue,
    /// The test mutant.
    skip_wait: bool,
    /// The MAP is placed by the engine's allocator before its publish.
    placed: bool,
}

/// The UNMAP of A (page 0), under the rule.
struct Unmap<'a> {
    w: &'a World,
    retiring: Option<(usize, usize)>,
}

impl Writer for Unmap<'_> {
    type Unpublished = u32;
    type Error = ();

    fn publish(&mut self) -> Result<u32, ()> {
        let (region, range) = retire::publish(
            &self.w.retire,
            Span::At(0, 1),
            self.w.skip_wait,
            |_| (),
            || {
                *self.w.tree.write().unwrap() = NONE;
                Ok((A, Some((0, 1))))
            },
        )?;
        self.retiring = range;
        Ok(region)
    }

    fn quiesce(&mut self, _region: &mut u32) {}

    fn zap(&mut self, _region: &u32) {
        self.w.mm.zap();
    }

    fn free(&mut self, region: u32) {
        // A mutant's regions are parked, pages and all (as in `Space`).
        if !self.w.skip_wait {
            self.w.mm.free_page(region);
        }
        retire::finish(&self.w.retire, self.retiring.take());
    }
}

impl World {
    /// A MAP placed anywhere (the only free page is A's, once A left), then one store
    /// into the new region: through the PTE if there is one, else by a fault.
    fn map_and_store(&self) {
        let mapped = if self.placed {
            // The allocator: page 0 is free once the UNMAP published (`ptshard`
            // releases a range after its publish), and taken if `busy` says so.
            retire::publish_placed(
                &self.retire,
                self.skip_wait,
                |_| (),
                |busy| {
                    if *self.tree.read().unwrap() != NONE || busy(0, 1).is_some() {
                        return Err(()); // ENOMEM: no free page no writer retires.
                    }
                    Ok((0, 1))
                },
                |_| {
                    *self.tree.write().unwrap() = B;
                    Ok(((), None))
                },
            )
        } else {
            retire::publish(
                &self.retire,
                Span::Anywhere,
                self.skip_wait,
                |_| (),
                || {
                    let mut tree = self.tree.write().unwrap();
                    if *tree != NONE {
                        return Err(()); // ENOMEM: no free page yet.
                    }
                    *tree = B;
                    Ok(((), None))
                },
            )
        };
        if mapped.is_err() {
            return;
        }
        match self.mm.pte() {
            NONE => {
                let tree = self.tree.read().unwrap();
                self.mm.install(*tree);
            }
            A => panic!("a store into the new region went to the old region's page"),
            _ => {}
        }
    }
}

fn run(skip_wait: bool, placed: bool) {
    check(2, move || {
        let w = Arc::new(World {
            tree: RwLock::new(A),
            mm: Mm::new(),
            retire: RetireQueue {
                list: Mutex::new(Vec::new()),
                cv: Condvar::new(),
            },
            skip_wait,
            placed,
        });
        // A's page is mapped: it was faulted before.
        w.mm.install(A);
        let mapper = {
            let w = w.clone();
            thread::spawn(move || w.map_and_store())
        };
        let mut op = Unmap {
            w: &w,
            retiring: None,
        };
        writer::write(&mut op, Zap::Normal).unwrap();
        mapper.join().unwrap();
        assert!(
            w.retire.list.lock().unwrap().is_empty(),
            "a range stayed on the list"
        );
    });
}

#[test]
fn map_anywhere_vs_unmap() {
    run(false, false);
}

#[test]
#[should_panic(expected = "went to the old region's page")]
fn negative_skip_retire_wait_loses_the_store() {
    run(true, false);
}

#[test]
fn map_placed_vs_unmap() {
    run(false, true);
}

#[test]
#[should_panic(expected = "went to the old region's page")]
fn negative_placed_skip_retire_wait_loses_the_store() {
    run(true, true);
}
