//! Splits and PROTECT on the `rcu` engine under loom, with the module's fault
//! (`rust/protocol/rcu_fault.rs`), hold word (`hold.rs`), writer order (`writer.rs`)
//! and wait (`reclaim.rs`): the writer side of a split is a replace of one region by
//! several that share its pages.
//!
//! Modelled: two addresses X and Y, pages PX and PY. Region R covers both (read-write);
//! L is R's part at X (same page PX); P is a read-only region over X (same page PX).
//! - UNMAP of Y (a cut): the publish stores L over X, then empties Y (the order of
//!   `RcuRangeMap::replace`: new entries first, then the holes); R is unpublished; the
//!   zap covers Y only; step 4 frees PY (the cut-out part's page) and keeps PX.
//! - PROTECT of X read-only (R covers X only here): the publish stores P over X; R is
//!   unpublished; the zap covers X; no page dies.
//! - A fault (fast or slow, read or write) resolves X or Y through whatever entry it
//!   finds; a write to a read-only region is refused (`SIGSEGV`), otherwise the PTE is
//!   installed writable exactly when the region is read-write.
//!
//! Checked in every interleaving: no access to a freed entry; no PTE installed to a
//! freed page and no page freed while mapped; once the UNMAP returned no PTE at Y,
//! while PX stays allocated; once the PROTECT returned no writable PTE at X.

mod common;

use common::hold::{self, DrainWait};
use common::rcu_fault::{self, RcuFault};
use common::reclaim::{self, Wait};
use common::writer::{self, Writer, Zap};
use common::{check, Entry, Rcu, RcuReclaimer, NONE};
use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use loom::sync::{Arc, Mutex, RwLockReadGuard};
use loom::thread;

const X: usize = 0;
const Y: usize = 1;
/// Regions (map entries).
const R: u32 = 0;
const L: u32 = 1;
const P: u32 = 2;

/// A PTE: which page it maps (`X` or `Y` as page index), and whether writable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pte {
    page: usize,
    writable: bool,
}

struct World {
    rcu: Rcu,
    /// Per address, the entry the map holds.
    map: [AtomicU32; 2],
    entries: [Entry; 3],
    /// Per address, its PTE under its PTE lock.
    ptes: [Mutex<Option<Pte>>; 2],
    /// Per page (PX, PY), freed by the writer.
    page_freed: [AtomicBool; 2],
}

impl World {
    fn new(y_mapped: bool) -> Arc<Self> {
        Arc::new(Self {
            rcu: Rcu::new(),
            map: [
                AtomicU32::new(R),
                AtomicU32::new(if y_mapped { R } else { NONE }),
            ],
            entries: [Entry::new(), Entry::new(), Entry::new()],
            ptes: [Mutex::new(None), Mutex::new(None)],
            page_freed: [AtomicBool::new(false), AtomicBool::new(false)],
        })
    }

    fn read_only(region: u32) -> bool {
        region == P
    }

    /// Installs the PTE of `addr` through `region` (its page is the one at `addr`).
    fn install(&self, addr: usize, region: u32) {
        self.entries[region as usize].touch();
        let mut pte = self.ptes[addr].lock().unwrap();
        assert!(
            !self.page_freed[addr].load(SeqCst),
            "a fault installed a PTE to a freed page"
        );
        if pte.is_none() {
            *pte = Some(Pte {
                page: addr,
                writable: !Self::read_only(region),
            });
        }
    }

    fn zap(&self, addr: usize) {
        *self.ptes[addr].lock().unwrap() = None;
    }

    fn free_page(&self, page: usize) {
        let pte = self.ptes[page].lock().unwrap();
        assert!(pte.is_none(), "a page was freed while a PTE mapped it");
        self.page_freed[page].store(true, SeqCst);
    }
}

struct FaultSteps<'a> {
    w: &'a World,
    addr: usize,
    slow: bool,
    write: bool,
}

struct Held<'a> {
    w: &'a World,
    region: u32,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if hold::release(&self.w.entries[self.region as usize]) {
            self.w.rcu.waiter.wake_all();
        }
    }
}

impl FaultSteps<'_> {
    /// The install of a fault that found `region`, or its refusal.
    fn resolve(&self, region: u32) {
        if self.write && World::read_only(region) {
            return; // SIGSEGV
        }
        self.w.install(self.addr, region);
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
        let region = self.w.map[self.addr].load(SeqCst);
        (region != NONE).then(|| {
            self.w.entries[region as usize].touch();
            region
        })
    }

    fn missing(&self) {}

    fn map_atomic(&self, region: &u32) -> Option<()> {
        if self.slow {
            return None;
        }
        self.resolve(*region);
        Some(())
    }

    fn hold<'g>(&'g self, region: u32, _guard: &'g Self::Guard) -> Held<'a> {
        hold::hold(&self.w.entries[region as usize]);
        Held { w: self.w, region }
    }

    fn map_held(&self, held: Held<'a>) {
        self.resolve(held.region);
    }
}

/// The two writer operations.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    /// UNMAP Y: R becomes L over X.
    CutY,
    /// PROTECT X read-only: R becomes P over X.
    ProtectX,
}

struct WriterSteps<'a> {
    w: &'a World,
    op: Op,
    wait: Wait,
    /// A mutant is armed: regions are parked, pages not freed (as `Space`).
    parked: bool,
    /// Model mutant: step 4 frees every page of the old region, the kept part's too.
    punch_kept: bool,
}

impl Writer for WriterSteps<'_> {
    type Unpublished = u32;
    type Error = ();

    fn publish(&mut self) -> Result<u32, ()> {
        match self.op {
            Op::CutY => {
                self.w.map[X].store(L, SeqCst);
                self.w.map[Y].store(NONE, SeqCst);
            }
            Op::ProtectX => self.w.map[X].store(P, SeqCst),
        }
        Ok(R)
    }

    fn quiesce(&mut self, region: &mut u32) {
        let entry = &self.w.entries[*region as usize];
        reclaim::reclaim(&mut RcuReclaimer(&self.w.rcu), [entry], self.wait);
    }

    fn zap(&mut self, _region: &u32) {
        self.w.zap(if self.op == Op::CutY { Y } else { X });
    }

    fn free(&mut self, _region: u32) {
        if self.op == Op::CutY && !self.parked {
            self.w.free_page(Y); // the cut-out part's page; PX lives on in L
            if self.punch_kept {
                self.w.free_page(X);
            }
        }
    }
}

/// A fault: address, slow, write.
type F = (usize, bool, bool);

fn run(op: Op, faults: &'static [F], wait: Wait, zap: Zap) {
    run_with(op, faults, wait, zap, false);
}

fn run_with(op: Op, faults: &'static [F], wait: Wait, zap: Zap, punch_kept: bool) {
    check(faults.len() + 1, move || {
        let w = World::new(op == Op::CutY);
        let threads: Vec<_> = faults
            .iter()
            .map(|&(addr, slow, write)| {
                let w = w.clone();
                thread::spawn(move || {
                    let f = FaultSteps {
                        w: &w,
                        addr,
                        slow,
                        write,
                    };
                    rcu_fault::fault(&f)
                })
            })
            .collect();
        let parked = wait != Wait::Normal || zap != Zap::Normal;
        let mut steps = WriterSteps {
            w: &w,
            op,
            wait,
            parked,
            punch_kept,
        };
        writer::write(&mut steps, zap).unwrap();
        for t in threads {
            t.join().unwrap();
        }
        match op {
            Op::CutY => {
                assert!(
                    w.ptes[Y].lock().unwrap().is_none(),
                    "a PTE of the cut-out part survived the writer's zap"
                );
                assert!(
                    !w.page_freed[X].load(SeqCst),
                    "the kept part's page was freed"
                );
            }
            Op::ProtectX => assert!(
                !w.ptes[X].lock().unwrap().is_some_and(|p| p.writable),
                "a writable PTE survived PROTECT read-only"
            ),
        }
    });
}

#[test]
fn faults_on_both_parts_vs_cut() {
    run(
        Op::CutY,
        &[(X, true, true), (Y, false, false)],
        Wait::Normal,
        Zap::Normal,
    );
}

#[test]
fn slow_fault_on_cut_part_vs_cut() {
    run(Op::CutY, &[(Y, true, false)], Wait::Normal, Zap::Normal);
}

#[test]
fn fast_fault_on_cut_part_vs_cut() {
    run(Op::CutY, &[(Y, false, true)], Wait::Normal, Zap::Normal);
}

#[test]
fn slow_write_fault_vs_protect() {
    run(Op::ProtectX, &[(X, true, true)], Wait::Normal, Zap::Normal);
}

#[test]
fn fast_write_and_read_faults_vs_protect() {
    run(
        Op::ProtectX,
        &[(X, false, true), (X, true, false)],
        Wait::Normal,
        Zap::Normal,
    );
}

// Negative controls.

#[test]
#[should_panic(expected = "survived the writer's zap")]
fn negative_cut_skip_drain_leaves_a_pte() {
    run(
        Op::CutY,
        &[(Y, true, false)],
        Wait::MutantSkipDrain,
        Zap::Normal,
    );
}

#[test]
#[should_panic(expected = "survived PROTECT read-only")]
fn negative_protect_skip_zap_leaves_a_writable_pte() {
    run(
        Op::ProtectX,
        &[(X, false, true)],
        Wait::MutantSkipDrain,
        Zap::MutantSkip,
    );
}

#[test]
#[should_panic(expected = "survived PROTECT read-only")]
fn negative_protect_skip_grace_period_leaves_a_writable_pte() {
    run(
        Op::ProtectX,
        &[(X, false, true)],
        Wait::MutantSkipGracePeriod,
        Zap::Normal,
    );
}

#[test]
#[should_panic(expected = "freed")]
fn negative_cut_that_frees_the_kept_part_frees_a_mapped_page() {
    run_with(
        Op::CutY,
        &[(X, false, false)],
        Wait::Normal,
        Zap::Normal,
        true,
    );
}
