//! What the models share: the module's protocol cores, included from `rust/protocol/`
//! by `#[path]` (one source, two builds), and the model's memory and page tables.

#![allow(dead_code)]

use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use loom::sync::{Condvar, Mutex, RwLock};

#[path = "../../../../rust/protocol/hold.rs"]
pub mod hold;
#[path = "../../../../rust/protocol/percpu_rw.rs"]
pub mod percpu_rw;
#[path = "../../../../rust/protocol/pi_rw.rs"]
pub mod pi_rw;
#[path = "../../../../rust/protocol/rcu_fault.rs"]
pub mod rcu_fault;
#[path = "../../../../rust/protocol/reclaim.rs"]
pub mod reclaim;
#[path = "../../../../rust/protocol/retire.rs"]
pub mod retire;
#[path = "../../../../rust/protocol/writer.rs"]
pub mod writer;

/// Regions of the models: A (present at the start) and B (a REPLACE's new region).
pub const A: u32 = 0;
pub const B: u32 = 1;
/// "No region" in a model's map.
pub const NONE: u32 = u32::MAX;

/// One map entry's memory: the hold word, plus whether the writer freed it.
pub struct Entry {
    pub word: AtomicU32,
    pub freed: AtomicBool,
}

impl Entry {
    pub fn new() -> Self {
        Self {
            word: AtomicU32::new(0),
            freed: AtomicBool::new(false),
        }
    }

    /// Every access to the entry goes through here.
    pub fn touch(&self) {
        assert!(
            !self.freed.load(SeqCst),
            "use after free: a reader touched a freed entry"
        );
    }
}

impl hold::HoldWord for Entry {
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

/// A drain mutex and condvar (the module's map has one for all its entries).
pub struct Waiter {
    lock: Mutex<()>,
    cv: Condvar,
}

impl Waiter {
    pub fn new() -> Self {
        Self {
            lock: Mutex::new(()),
            cv: Condvar::new(),
        }
    }
}

impl hold::DrainWait for Waiter {
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

/// RCU as the models see it: a read section holds `lock` for read; a grace period takes
/// it for write once (it waits for every reader that began before it; later readers
/// see everything written before it). `waiter` is the map's drain mutex and condvar.
pub struct Rcu {
    pub lock: RwLock<()>,
    pub waiter: Waiter,
}

impl Rcu {
    pub fn new() -> Self {
        Self {
            lock: RwLock::new(()),
            waiter: Waiter::new(),
        }
    }
}

/// The models' side of `reclaim.rs`: grace periods, drains and frees of entries.
pub struct RcuReclaimer<'a>(pub &'a Rcu);

impl<'a> reclaim::Reclaimer for RcuReclaimer<'a> {
    type Entry = &'a Entry;

    fn grace_period(&mut self, _expedited: bool) {
        drop(self.0.lock.write().unwrap());
    }

    fn drain(&mut self, entry: &&'a Entry) -> bool {
        hold::drain(*entry, &self.0.waiter)
    }

    fn free(&mut self, entry: &'a Entry) {
        entry.freed.store(true, SeqCst);
    }

    fn park(&mut self, _entry: &'a Entry) {}
}

/// The page table and the regions' pages: one faulting address, whose PTE maps the
/// page of region A or B or nothing, under its PTE lock.
pub struct Mm {
    pte: Mutex<u32>,
    page_freed: [AtomicBool; 2],
}

impl Mm {
    pub fn new() -> Self {
        Self {
            pte: Mutex::new(NONE),
            page_freed: [AtomicBool::new(false), AtomicBool::new(false)],
        }
    }

    /// A fault installs the PTE of `region`'s page (under the PTE lock).
    pub fn install(&self, region: u32) {
        let mut pte = self.pte.lock().unwrap();
        assert!(
            !self.page_freed[region as usize].load(SeqCst),
            "a fault installed a PTE to a freed page"
        );
        *pte = region;
    }

    /// What the PTE maps (a store through it lands in that region's page).
    pub fn pte(&self) -> u32 {
        *self.pte.lock().unwrap()
    }

    /// The writer's zap of the range.
    pub fn zap(&self) {
        *self.pte.lock().unwrap() = NONE;
    }

    /// The writer frees `region`'s page, which no PTE may map any more.
    pub fn free_page(&self, region: u32) {
        let pte = self.pte.lock().unwrap();
        assert_ne!(*pte, region, "a page was freed while a PTE mapped it");
        self.page_freed[region as usize].store(true, SeqCst);
    }

    /// The final check, once the writer returned and every fault finished.
    pub fn assert_no_pte_of(&self, removed: u32) {
        assert_ne!(
            *self.pte.lock().unwrap(),
            removed,
            "a PTE of the removed region survived the writer's zap"
        );
    }
}

/// Runs `f` under loom: exhaustively for up to two threads (milliseconds; a bound of
/// 3 preemptions would miss the hold-release use-after-free, since lock operations
/// count), bounded to 4 preemptions for more (exhaustive takes minutes).
pub fn check(threads: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = (threads > 2).then_some(4);
    builder.check(f);
}
