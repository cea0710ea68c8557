//! Two writers and faulting threads (issue 12, Lespinasse's part II): "one thread
//! might be mmaping new memory while another releases a different range, and a third
//! might fault within his own address range too".
//!
//! ```text
//! writer A   MAP 16 pages at its base, touch one, UNMAP them, again
//! writer B   the same at its own base: 4 MiB away (disjoint: other 2 MiB spans),
//!            1 MiB away (same-span: other pages of A's span, for `ptshard`'s
//!            per-span trees) or A's base (overlapping: its MAPs are REPLACEs, so each
//!            may cut A's region)
//! faulters   each touches fresh pages of one slow-backed region (every first touch
//!            sleeps SLOW_US in the fault, holding whatever the engine holds), in a
//!            third range
//! ```
//!
//! Reported per system: writer cycles per second (both writers), faulter touches per
//! second, and the read locks that waited for a writer. A lock around everything
//! (`rwsem`) makes each writer wait for every sleeping fault and, while it waits, every
//! other fault wait for it; the range lock (`range`) makes a writer wait only for the
//! faults in its own range, and lets two writers in disjoint ranges publish at once.

use crate::workloads::System;
use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
};
use vmalab::{uapi, Device, PAGE_SIZE};

/// Pages a writer maps per cycle.
const PAGES: usize = 16;
/// First-touch delay of the faulters' region (µs): a fault that "does I/O".
pub const SLOW_US: u32 = 2000;
/// The faulters' region: more pages than they can touch in a run.
const SLOW_PAGES: usize = 8192;
/// Arena layout: the faulters' region first, the writers' ranges after it.
const ARENA: usize = 64 << 20;
const WRITER_BASE: usize = 48 << 20;

/// Where writer B works relative to writer A.
#[derive(Clone, Copy, Debug)]
pub enum Scene {
    /// 4 MiB away: other PTE tables (and `ptshard` spans), neighbours included.
    Disjoint,
    /// 1 MiB away: other pages (not neighbours) of the same PTE table.
    SameSpan,
    /// A's range, by REPLACE.
    Overlapping,
}

/// One run's result.
#[derive(Clone, Debug, Default)]
pub struct WritersRun {
    /// MAP+touch+UNMAP cycles per second, both writers together.
    pub cycles: f64,
    /// Faulters' touches (each a slow first-touch fault) per second.
    pub faults: f64,
    /// Read locks that waited for a writer, per writer cycle.
    pub read_waits: f64,
    /// Writers whose range lock waited for the other writer (`range`, `ptshard`), per
    /// writer cycle.
    pub writer_waits: f64,
}

/// One writer's loop at `base` until `stop`; returns its cycles.
fn writer(
    dev: &Device,
    arena: &vmalab::Arena,
    base: usize,
    replace: bool,
    stop: &AtomicBool,
) -> u64 {
    let len = PAGES * PAGE_SIZE;
    let mut n = 0;
    while !stop.load(Relaxed) {
        let off = dev.map_at(base, len, replace).expect("writer MAP");
        // The other writer may have cut it already (overlapping): a SIGBUS is fine.
        let _ = arena.store(off, n);
        dev.unmap(base, len).expect("writer UNMAP");
        n += 1;
    }
    n
}

/// Runs `scene` on `sys` for `secs`.
pub fn two_writers(sys: System, secs: f64, faulters: usize, scene: Scene) -> WritersRun {
    let System::Engine(e) = sys else {
        return WritersRun::default();
    };
    // The writers' stores may hit a region the other writer just unmapped.
    vmalab::probe::install();
    let dev = Device::with_engine(e, ARENA).expect("open");
    let slow = dev
        .map_slow(SLOW_PAGES * PAGE_SIZE, SLOW_US)
        .expect("map slow");
    let arena = dev.mmap_arena(ARENA).expect("mmap");
    let counter = |k: usize| dev.info().expect("info").counters[k];
    let waits0 = counter(uapi::VMALAB_CTR_READ_WAITS);
    let writer_waits0 = counter(uapi::VMALAB_CTR_WRITER_WAITS);
    let stop = AtomicBool::new(false);
    let touches = AtomicU64::new(0);
    let (b_base, overlap) = match scene {
        Scene::Disjoint => (WRITER_BASE + (4 << 20), false),
        Scene::SameSpan => (WRITER_BASE + (1 << 20), false),
        Scene::Overlapping => (WRITER_BASE, true),
    };
    let start = Instant::now();
    let cycles = std::thread::scope(|s| {
        for t in 0..faulters {
            let (arena, stop, touches) = (&arena, &stop, &touches);
            s.spawn(move || {
                let mut page = t;
                while !stop.load(Relaxed) && page < SLOW_PAGES {
                    let _ = arena.store(slow + page * PAGE_SIZE, 1);
                    touches.fetch_add(1, Relaxed);
                    page += faulters;
                }
            });
        }
        let a = s.spawn(|| writer(&dev, &arena, WRITER_BASE, overlap, &stop));
        let b = s.spawn(|| writer(&dev, &arena, b_base, overlap, &stop));
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Relaxed);
        a.join().expect("writer A") + b.join().expect("writer B")
    });
    let elapsed = start.elapsed().as_secs_f64();
    let waits = counter(uapi::VMALAB_CTR_READ_WAITS) - waits0;
    let writer_waits = counter(uapi::VMALAB_CTR_WRITER_WAITS) - writer_waits0;
    WritersRun {
        cycles: cycles as f64 / elapsed,
        faults: touches.load(Relaxed) as f64 / elapsed,
        read_waits: waits as f64 / cycles.max(1) as f64,
        writer_waits: writer_waits as f64 / cycles.max(1) as f64,
    }
}
