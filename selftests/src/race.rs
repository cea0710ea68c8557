//! The generation checker: readers race a writer that unmaps, remaps and replaces one
//! region, and every access is checked against what the writer had published.
//!
//! The writer (the test's main thread) cycles a region at a fixed offset through
//! generations, publishing a state before and after each step:
//!
//! ```text
//! unmap mode:   Live(g) -> Busy(g) -> UNMAP -> Gap(g) -> Busy(g+1) -> MAP FIXED -> fill -> Live(g+1)
//! replace mode: Live(g) -> Busy(g) -> MAP REPLACE -> Fresh(g+1) -> Busy(g+1) -> fill -> Live(g+1)
//! ```
//!
//! With `fill: false` the writer never writes: every successful load must read zero,
//! and the point is the first touches (slow backing: each one sleeps in the fault)
//! still in flight when the writer unmaps.
//!
//! Generation `g` stores `pattern(g, offset)` into every word, so a reader can tell an
//! old page, a wrong page and a zero page apart.
//! Every word's pattern carries its generation and its own offset, so a reader can
//! tell an old page, a wrong page and a zero page apart.
//!
//! A reader loads the published state `s1`, probes one word, loads `s2`, and flags:
//! - a successful access while `s1 == s2 == Gap(g)`: a PTE survived an unmap that had
//!   returned;
//! - a word of generation `< gen(s1)`: an old generation visible after the writer
//!   that replaced it returned;
//! - a word whose offset bits are wrong: a page mapped at the wrong place;
//! - zero while `s1 == s2 == Live(g)`: a filled page lost;
//! - `SIGBUS` while `s1 == s2 == Live(g)`: a mapped region refused;
//! - `SIGSEGV`: the arena itself vanished.

use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering::*},
    Arc, Barrier,
};
use vmalab::{probe, Arena, Device, PAGE_SIZE};

/// The writer is between states for generation `g`: the region may be unmapped,
/// mapped but not yet filled, or filled. Zero and `SIGBUS` are fine; generations older
/// than `g` are not.
pub const PHASE_BUSY: u64 = 0;
/// Generation `g` is mapped and filled.
pub const PHASE_LIVE: u64 = 1;
/// The unmap of generation `g` has returned: every access must `SIGBUS`.
pub const PHASE_GAP: u64 = 2;
/// The replace that created generation `g` has returned, and the writer has not
/// filled it yet: every successful load must read zero.
pub const PHASE_FRESH: u64 = 3;

/// A published state: a phase and the generation (or round) it belongs to, so that
/// every transition is a new value and a reader that sees the same state before and
/// after its access knows none happened in between.
pub fn state(gen: u64, phase: u64) -> u64 {
    (gen << 2) | phase
}
fn gen_of(s: u64) -> u64 {
    s >> 2
}
fn phase_of(s: u64) -> u64 {
    s & 3
}

/// The word stored at arena byte `offset` in generation `gen` (never zero).
pub fn pattern(gen: u64, offset: usize) -> u64 {
    ((gen + 1) << 40) | (offset as u64 >> 3)
}

/// How the writer retires a generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `UNMAP`, a gap, then a fresh `FIXED` map.
    Unmap,
    /// `MAP` with `REPLACE` over the live region (like `mmap(MAP_FIXED)`).
    Replace,
}

/// Parameters of one race run.
pub struct RaceSpec {
    /// Reader threads.
    pub threads: usize,
    /// Region size in pages.
    pub pages: usize,
    /// Minimum total checked accesses before the writer stops.
    pub accesses: u64,
    /// Minimum generations the writer cycles before it stops.
    pub generations: u64,
    /// How generations are retired.
    pub mode: Mode,
    /// First-touch delay (µs) for a slow-backed region; 0 = zero-filled.
    pub slow_delay_us: u32,
    /// Whether the writer fills each generation (see the module docs).
    pub fill: bool,
    /// How long the writer stays in the gap after an unmap returned (µs).
    pub gap_us: u64,
}

/// What a race run observed.
#[derive(Debug, Default)]
pub struct RaceReport {
    /// Accesses checked.
    pub accesses: u64,
    /// Successful loads.
    pub ok: u64,
    /// Loads answered with SIGBUS.
    pub bus: u64,
    /// Generations cycled by the writer.
    pub generations: u64,
    /// Accesses made while an unmap had returned (all must `SIGBUS`).
    pub gap_probes: u64,
    /// Accesses made after a replace returned, before the refill (all must read
    /// zero or `SIGBUS`).
    pub fresh_probes: u64,
    /// Violations, with the first few described.
    pub violations: u64,
    /// Up to 10 descriptions.
    pub examples: Vec<String>,
}

struct Shared {
    fill: bool,
    state: AtomicU64,
    stop: AtomicBool,
    accesses: AtomicU64,
    ok: AtomicU64,
    bus: AtomicU64,
    gap_probes: AtomicU64,
    fresh_probes: AtomicU64,
    violations: AtomicU64,
    examples: std::sync::Mutex<Vec<String>>,
}

impl Shared {
    fn violation(&self, what: String) {
        if self.violations.fetch_add(1, Relaxed) < 10 {
            self.examples.lock().unwrap().push(what);
        }
    }
}

fn reader(sh: &Shared, arena: &Arena, offset: usize, len: usize, seed: u64) {
    let words = len / 8;
    let mut x = seed | 1;
    let (mut n, mut ok, mut bus) = (0u64, 0u64, 0u64);
    let (mut gap, mut fresh) = (0u64, 0u64);
    while !sh.stop.load(Relaxed) {
        for _ in 0..256 {
            // xorshift: a different word each time, all pages over time.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let woff = offset + (x as usize % words) * 8;
            let s1 = sh.state.load(Acquire);
            let r = arena.load(woff);
            let s2 = sh.state.load(Acquire);
            n += 1;
            let stable = s1 == s2;
            if stable && phase_of(s1) == PHASE_GAP {
                gap += 1;
            }
            if stable && phase_of(s1) == PHASE_FRESH {
                fresh += 1;
            }
            match r {
                Ok(v) => {
                    ok += 1;
                    if stable && phase_of(s1) == PHASE_GAP {
                        sh.violation(format!(
                            "load at {woff:#x} succeeded (value {v:#x}) after unmap of gen {} returned",
                            gen_of(s1)
                        ));
                    } else if v == 0 {
                        if stable && phase_of(s1) == PHASE_LIVE && sh.fill {
                            sh.violation(format!("zero at {woff:#x} in filled gen {}", gen_of(s1)));
                        }
                    } else if stable && phase_of(s1) == PHASE_FRESH {
                        sh.violation(format!(
                            "word at {woff:#x} is {v:#x} after the replace creating gen {} returned, before any fill",
                            gen_of(s1)
                        ));
                    } else if !sh.fill {
                        sh.violation(format!(
                            "word at {woff:#x} is {v:#x}, but nobody writes in this run"
                        ));
                    } else {
                        let vgen = (v >> 40).wrapping_sub(1);
                        if v & ((1 << 40) - 1) != (woff as u64 >> 3) {
                            sh.violation(format!(
                                "word at {woff:#x} holds {v:#x}: another page's data"
                            ));
                        } else if vgen < gen_of(s1) {
                            sh.violation(format!(
                                "word at {woff:#x} is from gen {vgen}, but gen {} was published before the load",
                                gen_of(s1)
                            ));
                        }
                    }
                }
                Err(probe::Fault::Bus) => {
                    bus += 1;
                    if stable && phase_of(s1) == PHASE_LIVE {
                        sh.violation(format!(
                            "SIGBUS at {woff:#x} while gen {} was mapped",
                            gen_of(s1)
                        ));
                    }
                }
                Err(probe::Fault::Segv) => {
                    sh.violation(format!("SIGSEGV at {woff:#x}: the arena is gone"));
                }
            }
        }
        sh.accesses.fetch_add(256, Relaxed);
    }
    sh.ok.fetch_add(ok, Relaxed);
    sh.bus.fetch_add(bus, Relaxed);
    sh.gap_probes.fetch_add(gap, Relaxed);
    sh.fresh_probes.fetch_add(fresh, Relaxed);
    let _ = n;
}

fn fill(arena: &Arena, offset: usize, len: usize, gen: u64) {
    for w in (0..len).step_by(8) {
        arena
            .store(offset + w, pattern(gen, offset + w))
            .expect("writer store into its own region failed");
    }
}

/// Runs the race on `dev`/`arena` with the region at arena offset `offset`.
pub fn run(
    dev: &Device,
    arena: &Arena,
    offset: usize,
    spec: &RaceSpec,
) -> Result<RaceReport, String> {
    let len = spec.pages * PAGE_SIZE;
    let map = |replace: bool| -> Result<(), String> {
        use vmalab::uapi::*;
        let m = VmalabMap {
            offset: offset as u64,
            length: len as u64,
            flags: if replace {
                VMALAB_MAP_REPLACE
            } else {
                VMALAB_MAP_FIXED
            },
            backing: if spec.slow_delay_us > 0 {
                VMALAB_BACKING_SLOW
            } else {
                VMALAB_BACKING_ZERO
            },
            delay_us: spec.slow_delay_us,
            reserved: 0,
        };
        match dev.map_args(m) {
            Ok(o) if o as usize == offset => Ok(()),
            Ok(o) => Err(format!("map landed at {o:#x}, not {offset:#x}")),
            Err(e) => Err(format!("map failed: {}", vmalab::errno_name(e))),
        }
    };
    let sh = Arc::new(Shared {
        fill: spec.fill,
        state: AtomicU64::new(state(0, PHASE_BUSY)),
        stop: AtomicBool::new(false),
        accesses: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        bus: AtomicU64::new(0),
        gap_probes: AtomicU64::new(0),
        fresh_probes: AtomicU64::new(0),
        violations: AtomicU64::new(0),
        examples: std::sync::Mutex::new(Vec::new()),
    });
    map(false)?;
    let start = Arc::new(Barrier::new(spec.threads + 1));
    let mut gens = 0u64;
    let result = std::thread::scope(|s| -> Result<(), String> {
        for t in 0..spec.threads {
            let (sh, start) = (sh.clone(), start.clone());
            s.spawn(move || {
                start.wait();
                reader(
                    &sh,
                    arena,
                    offset,
                    len,
                    0x9E37_79B9_7F4A_7C15 ^ ((t as u64 + 1) << 17),
                );
            });
        }
        start.wait();
        let body = (|| -> Result<(), String> {
            let mut gen = 0u64;
            loop {
                if spec.fill {
                    fill(arena, offset, len, gen);
                }
                sh.state.store(state(gen, PHASE_LIVE), Release);
                // Let readers see the live generation for a moment.
                std::thread::sleep(std::time::Duration::from_micros(500));
                gens += 1;
                let done = sh.accesses.load(Relaxed) >= spec.accesses && gens >= spec.generations;
                match spec.mode {
                    Mode::Unmap => {
                        sh.state.store(state(gen, PHASE_BUSY), Release);
                        dev.unmap(offset, len)
                            .map_err(|e| format!("unmap failed: {}", vmalab::errno_name(e)))?;
                        sh.state.store(state(gen, PHASE_GAP), Release);
                        std::thread::sleep(std::time::Duration::from_micros(spec.gap_us));
                        if done {
                            return Ok(());
                        }
                        gen += 1;
                        sh.state.store(state(gen, PHASE_BUSY), Release);
                        map(false)?;
                    }
                    Mode::Replace => {
                        if done {
                            return Ok(());
                        }
                        sh.state.store(state(gen, PHASE_BUSY), Release);
                        map(true)?;
                        gen += 1;
                        sh.state.store(state(gen, PHASE_FRESH), Release);
                        std::thread::sleep(std::time::Duration::from_micros(500));
                        sh.state.store(state(gen, PHASE_BUSY), Release);
                    }
                }
            }
        })();
        sh.stop.store(true, Relaxed);
        body
    });
    result?;
    let examples = sh.examples.lock().unwrap().clone();
    Ok(RaceReport {
        accesses: sh.accesses.load(Relaxed),
        ok: sh.ok.load(Relaxed),
        bus: sh.bus.load(Relaxed),
        generations: gens,
        gap_probes: sh.gap_probes.load(Relaxed),
        fresh_probes: sh.fresh_probes.load(Relaxed),
        violations: sh.violations.load(Relaxed),
        examples,
    })
}
