//! Split and protect races: readers (and, for PROTECT, writers) on every page of a
//! range while the test's main thread cuts holes in its regions, maps them again,
//! replaces across region boundaries and re-protects, so that one region is replaced
//! by up to three while faults are in flight. Every page has its own published state,
//! and every access is checked against it.
//!
//! Split race, per round (the range stays fully mapped between rounds):
//!
//! ```text
//! hole:     Live(g) -> Busy -> UNMAP [a,b) -> Gap -> Busy -> MAP FIXED [a,b) -> Fresh -> fill -> Live(g')
//! replace:  Live(g) -> Busy -> MAP REPLACE [a,b) -> Fresh -> fill -> Live(g')
//! protect:  PROTECT RO [a,b), then RW again (pages stay Live: reads are always fine)
//! ```
//!
//! Pages outside `[a, b)` stay `Live` throughout: they are the parts of cut regions
//! that survive, and must keep their pages and data (a load reads exactly what the
//! generation wrote; `SIGBUS` or zero is a violation). Inside, after an UNMAP returned
//! every access must `SIGBUS`; after a MAP returned every load must read zero. After
//! the RO/RW round trip the regions must have merged back (the region count is what
//! it was), and at the end, with everything unmapped, no page may be left.
//!
//! Protect race: writer threads store to random pages while the main thread makes
//! ranges read-only and read-write again. Once PROTECT RO returned, a store to the
//! range must raise `SIGSEGV` and the range's data must not change; once RW returned,
//! stores must succeed; loads always succeed.

// A page's published state is `race::state(round, phase)`: the round makes every
// transition a new value, so a slow access spanning whole rounds cannot see the same
// state come back (seen on the debug kernel before states carried their round).
use crate::race::{pattern, state as st, PHASE_BUSY, PHASE_FRESH, PHASE_GAP, PHASE_LIVE};
use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering::*},
    Mutex,
};
use std::time::Duration;
use vmalab::{errno_name, probe, uapi, Arena, Device, PAGE_SIZE};

/// The writer is changing the page: anything but `SIGSEGV` is fine.
const BUSY: u64 = PHASE_BUSY;
/// The page holds generation `g`, unchanged until the writer says otherwise.
const LIVE: u64 = PHASE_LIVE;
/// The UNMAP covering the page has returned: every access must `SIGBUS`.
const GAP: u64 = PHASE_GAP;
/// The MAP covering the page has returned, not yet filled: loads read zero.
const FRESH: u64 = PHASE_FRESH;
/// (Protect race) PROTECT RO of the page returned: stores must `SIGSEGV`.
const RO: u64 = PHASE_GAP;

/// Parameters of a split or protect race.
pub struct SplitSpec {
    /// Reader (split race) or writer (protect race) threads.
    pub threads: usize,
    /// Pages in the range.
    pub pages: usize,
    /// Minimum checked accesses before the main thread stops.
    pub accesses: u64,
    /// Minimum rounds.
    pub rounds: u64,
}

/// What a race observed.
#[derive(Debug, Default)]
pub struct SplitReport {
    /// Accesses checked.
    pub accesses: u64,
    /// Rounds the main thread ran.
    pub rounds: u64,
    /// Split race: loads of surviving pages made while a cut was in progress;
    /// protect race: stores made while a range was read-only (after PROTECT returned).
    pub kept_probes: u64,
    /// Split race: accesses after an UNMAP returned; protect race: stores refused.
    pub gap_probes: u64,
    /// Split race: loads of a fresh region before its fill.
    pub fresh_probes: u64,
    /// Violations, with the first few described.
    pub violations: u64,
    /// Up to 10 descriptions.
    pub examples: Vec<String>,
}

struct Shared {
    state: Vec<AtomicU64>,
    /// The main thread is inside an ioctl that changes the range.
    in_op: AtomicBool,
    stop: AtomicBool,
    accesses: AtomicU64,
    kept: AtomicU64,
    gap: AtomicU64,
    fresh: AtomicU64,
    violations: AtomicU64,
    examples: Mutex<Vec<String>>,
}

impl Shared {
    fn new(pages: usize) -> Self {
        Self {
            state: (0..pages).map(|_| AtomicU64::new(st(0, BUSY))).collect(),
            in_op: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            accesses: AtomicU64::new(0),
            kept: AtomicU64::new(0),
            gap: AtomicU64::new(0),
            fresh: AtomicU64::new(0),
            violations: AtomicU64::new(0),
            examples: Mutex::new(Vec::new()),
        }
    }

    fn violation(&self, what: String) {
        if self.violations.fetch_add(1, Relaxed) < 10 {
            self.examples.lock().unwrap().push(what);
        }
    }

    fn set(&self, a: usize, b: usize, s: u64) {
        for p in &self.state[a..b] {
            p.store(s, Release);
        }
    }

    fn report(&self, rounds: u64) -> SplitReport {
        SplitReport {
            accesses: self.accesses.load(Relaxed),
            rounds,
            kept_probes: self.kept.load(Relaxed),
            gap_probes: self.gap.load(Relaxed),
            fresh_probes: self.fresh.load(Relaxed),
            violations: self.violations.load(Relaxed),
            examples: self.examples.lock().unwrap().clone(),
        }
    }
}

/// A small xorshift generator (deterministic per thread).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// A random range of at most `max` pages inside `[0, pages)`.
    fn range(&mut self, pages: usize, max: usize) -> (usize, usize) {
        let len = 1 + self.below(max as u64) as usize;
        let a = self.below((pages - len + 1) as u64) as usize;
        (a, a + len)
    }
}

fn split_reader(sh: &Shared, arena: &Arena, base: usize, pages: usize, seed: u64) {
    let mut rng = Rng(seed | 1);
    let (mut n, mut kept, mut gap, mut fresh) = (0, 0, 0, 0);
    while !sh.stop.load(Relaxed) {
        for _ in 0..256 {
            let p = rng.below(pages as u64) as usize;
            let off = base + p * PAGE_SIZE + 8 * rng.below((PAGE_SIZE / 8) as u64) as usize;
            let s1 = sh.state[p].load(Acquire);
            let during_op = sh.in_op.load(Acquire);
            let r = arena.load(off);
            let s2 = sh.state[p].load(Acquire);
            n += 1;
            let stable = s1 == s2;
            let (gen, phase) = (s1 >> 2, s1 & 3);
            match (r, stable, phase) {
                (Err(probe::Fault::Segv), _, _) => {
                    sh.violation(format!("SIGSEGV loading {off:#x}: the arena is gone"))
                }
                (Ok(v), true, LIVE) => {
                    if during_op {
                        kept += 1;
                    }
                    if v != pattern(gen, off) {
                        sh.violation(format!(
                            "page {p} (gen {gen}, outside every change) read {v:#x} at {off:#x}, want {:#x}{}",
                            pattern(gen, off),
                            if during_op { " (during a cut)" } else { "" }
                        ));
                    }
                }
                (Err(_), true, LIVE) => sh.violation(format!(
                    "SIGBUS at {off:#x}: page {p} is mapped (gen {gen}){}",
                    if during_op {
                        ", a cut was in progress"
                    } else {
                        ""
                    }
                )),
                (Ok(v), true, GAP) => sh.violation(format!(
                    "load at {off:#x} read {v:#x} after the UNMAP of page {p} returned"
                )),
                (Err(_), true, GAP) => gap += 1,
                (Ok(v), true, FRESH) => {
                    fresh += 1;
                    if v != 0 {
                        sh.violation(format!(
                            "page {p} read {v:#x} at {off:#x} after the MAP over it returned, before any fill"
                        ));
                    }
                }
                (Err(_), true, FRESH) => sh.violation(format!(
                    "SIGBUS at {off:#x} after the MAP over page {p} returned"
                )),
                (Ok(v), _, _) if v != 0 && v & ((1 << 40) - 1) != (off as u64 >> 3) => sh
                    .violation(format!(
                        "word at {off:#x} holds {v:#x}: another page's data"
                    )),
                _ => {}
            }
        }
        sh.accesses.fetch_add(256, Relaxed);
    }
    sh.kept.fetch_add(kept, Relaxed);
    sh.gap.fetch_add(gap, Relaxed);
    sh.fresh.fetch_add(fresh, Relaxed);
    let _ = n;
}

fn fill(arena: &Arena, base: usize, a: usize, b: usize, gen: u64) -> Result<(), String> {
    for off in (base + a * PAGE_SIZE..base + b * PAGE_SIZE).step_by(8) {
        arena
            .store(off, pattern(gen, off))
            .map_err(|f| format!("fill at {off:#x}: {f:?}"))?;
    }
    Ok(())
}

fn map_at(dev: &Device, off: usize, len: usize, replace: bool) -> Result<(), String> {
    match dev.map_at(off, len, replace) {
        Ok(o) if o == off => Ok(()),
        Ok(o) => Err(format!("MAP landed at {o:#x}, not {off:#x}")),
        Err(e) => Err(format!("MAP [{off:#x}, +{len:#x}): {}", errno_name(e))),
    }
}

fn ioctl_ok(what: &str, r: Result<(), vmalab::Errno>) -> Result<(), String> {
    r.map_err(|e| format!("{what}: {}", errno_name(e)))
}

/// The split race on `[base, base + pages)` of a fresh space.
pub fn split(
    dev: &Device,
    arena: &Arena,
    base: usize,
    spec: &SplitSpec,
) -> Result<SplitReport, String> {
    let pages = spec.pages;
    let sh = Shared::new(pages);
    map_at(dev, base, pages * PAGE_SIZE, false)?;
    fill(arena, base, 0, pages, 0)?;
    sh.set(0, pages, st(0, LIVE));
    let mut rounds = 0;
    let result = std::thread::scope(|s| -> Result<(), String> {
        for t in 0..spec.threads {
            let sh = &sh;
            s.spawn(move || {
                split_reader(sh, arena, base, pages, 0x9E37_79B9 ^ ((t as u64 + 1) << 21))
            });
        }
        let body = (|| -> Result<(), String> {
            let mut rng = Rng(0x5EED_5EED);
            let mut gen = 1u64;
            let op = |f: &mut dyn FnMut() -> Result<(), String>| -> Result<(), String> {
                sh.in_op.store(true, Release);
                let r = f();
                sh.in_op.store(false, Release);
                r
            };
            while rounds < spec.rounds || sh.accesses.load(Relaxed) < spec.accesses {
                let (a, b) = rng.range(pages, pages / 4);
                let (off, len) = (base + a * PAGE_SIZE, (b - a) * PAGE_SIZE);
                if rounds % 2 == 0 {
                    // A hole: UNMAP cuts the regions there, MAP FIXED fills it again.
                    sh.set(a, b, st(gen, BUSY));
                    op(&mut || ioctl_ok("UNMAP", dev.unmap(off, len)))?;
                    sh.set(a, b, st(gen, GAP));
                    std::thread::sleep(Duration::from_micros(300));
                    sh.set(a, b, st(gen, BUSY));
                    map_at(dev, off, len, false)?;
                } else {
                    // A REPLACE over [a, b), cutting what pokes out of it.
                    sh.set(a, b, st(gen, BUSY));
                    op(&mut || map_at(dev, off, len, true))?;
                }
                sh.set(a, b, st(gen, FRESH));
                std::thread::sleep(Duration::from_micros(200));
                sh.set(a, b, st(gen, BUSY));
                fill(arena, base, a, b, gen)?;
                sh.set(a, b, st(gen, LIVE));
                gen += 1;
                // Split by protection and merge back: the count must come back.
                let (c, d) = rng.range(pages, pages / 2);
                let (off, len) = (base + c * PAGE_SIZE, (d - c) * PAGE_SIZE);
                let before = dev.info().map_err(errno_name)?.regions;
                op(&mut || {
                    ioctl_ok("PROTECT RO", dev.protect(off, len, uapi::VMALAB_PROT_READ))?;
                    ioctl_ok(
                        "PROTECT RW",
                        dev.protect(off, len, uapi::VMALAB_PROT_READ_WRITE),
                    )
                })?;
                let after = dev.info().map_err(errno_name)?.regions;
                if after != before {
                    sh.violation(format!(
                        "PROTECT RO then RW of pages [{c}, {d}): {before} regions became {after} (no merge back)"
                    ));
                }
                rounds += 1;
            }
            Ok(())
        })();
        sh.stop.store(true, Relaxed);
        body
    });
    result?;
    // Everything unmapped: no region and no page may be left.
    ioctl_ok("UNMAP all", dev.unmap(base, pages * PAGE_SIZE))?;
    // Deferred reclaim (`spf`, `rcu+def`) frees after the UNMAP returns.
    ioctl_ok("SYNC", dev.sync())?;
    let i = dev.info().map_err(errno_name)?;
    if i.regions != 0 || i.pages != 0 {
        sh.violation(format!(
            "after unmapping everything: {} regions, {} pages left (split pages leaked)",
            i.regions, i.pages
        ));
    }
    Ok(sh.report(rounds))
}

fn protect_writer(sh: &Shared, arena: &Arena, base: usize, pages: usize, seed: u64) {
    let mut rng = Rng(seed | 1);
    let (mut ro_stores, mut refused) = (0, 0);
    while !sh.stop.load(Relaxed) {
        for _ in 0..256 {
            let p = rng.below(pages as u64) as usize;
            let off = base + p * PAGE_SIZE + 8 * rng.below((PAGE_SIZE / 8) as u64) as usize;
            let v = rng.next() | 1;
            let s1 = sh.state[p].load(Acquire);
            let r = arena.store(off, v);
            let s2 = sh.state[p].load(Acquire);
            let stable = s1 == s2;
            match (r, stable, s1 & 3) {
                (Ok(()), true, RO) => {
                    ro_stores += 1;
                    sh.violation(format!(
                        "store to {off:#x} succeeded after PROTECT RO of page {p} returned"
                    ));
                }
                (Err(probe::Fault::Segv), true, RO) => ro_stores += 1,
                (Err(probe::Fault::Segv), true, LIVE) => sh.violation(format!(
                    "SIGSEGV storing to {off:#x}: page {p} is read-write"
                )),
                (Err(probe::Fault::Bus), _, _) => {
                    sh.violation(format!("SIGBUS storing to {off:#x}: the region is mapped"))
                }
                _ => {}
            }
            if r.is_err() {
                refused += 1;
            }
            // Readers' side: a load never fails.
            if let Err(f) = arena.load(off) {
                sh.violation(format!("{f:?} loading {off:#x}: the region is mapped"));
            }
        }
        sh.accesses.fetch_add(512, Relaxed);
    }
    sh.kept.fetch_add(ro_stores, Relaxed);
    sh.gap.fetch_add(refused, Relaxed);
}

/// The protect race on `[base, base + pages)` of a fresh space.
pub fn protect(
    dev: &Device,
    arena: &Arena,
    base: usize,
    spec: &SplitSpec,
) -> Result<SplitReport, String> {
    let pages = spec.pages;
    let sh = Shared::new(pages);
    map_at(dev, base, pages * PAGE_SIZE, false)?;
    sh.set(0, pages, st(0, LIVE));
    let mut rounds = 0;
    let result = std::thread::scope(|s| -> Result<(), String> {
        for t in 0..spec.threads {
            let sh = &sh;
            s.spawn(move || {
                protect_writer(sh, arena, base, pages, 0xC0FF_EE00 ^ ((t as u64 + 1) << 23))
            });
        }
        let body = (|| -> Result<(), String> {
            let mut rng = Rng(0xDEC0_DED1);
            while rounds < spec.rounds || sh.accesses.load(Relaxed) < spec.accesses {
                let (a, b) = rng.range(pages, pages / 2);
                let (off, len) = (base + a * PAGE_SIZE, (b - a) * PAGE_SIZE);
                sh.set(a, b, st(rounds + 1, BUSY));
                ioctl_ok("PROTECT RO", dev.protect(off, len, uapi::VMALAB_PROT_READ))?;
                sh.set(a, b, st(rounds + 1, RO));
                // While read-only, the data must not change.
                let snap: Vec<u64> = (off..off + len)
                    .step_by(8)
                    .map(|o| arena.load(o).unwrap_or(0))
                    .collect();
                std::thread::sleep(Duration::from_micros(500));
                for (k, o) in (off..off + len).step_by(8).enumerate() {
                    let now = arena.load(o).unwrap_or(0);
                    if now != snap[k] {
                        sh.violation(format!(
                            "word at {o:#x} changed from {:#x} to {now:#x} while read-only",
                            snap[k]
                        ));
                        break;
                    }
                }
                sh.set(a, b, st(rounds + 1, BUSY));
                ioctl_ok(
                    "PROTECT RW",
                    dev.protect(off, len, uapi::VMALAB_PROT_READ_WRITE),
                )?;
                sh.set(a, b, st(rounds + 1, LIVE));
                std::thread::sleep(Duration::from_micros(300));
                rounds += 1;
            }
            Ok(())
        })();
        sh.stop.store(true, Relaxed);
        body
    });
    result?;
    let i = dev.info().map_err(errno_name)?;
    if i.regions != 1 {
        sh.violation(format!(
            "{} regions after every range was made read-write again (no merge back)",
            i.regions
        ));
    }
    Ok(sh.report(rounds))
}
