//! One giant region (issue 13): a region that spans many PTE tables. `ptshard` keeps a
//! region in the tree of every 2 MiB span it crosses, so what is one tree entry for the
//! other engines is one per span there: a MAP or an UNMAP of the region, and a split
//! of it (whose two parts must replace it in every span), cost work per span — Piggin's
//! design moves the cost of a big VMA onto its writers.
//!
//! ```text
//! per cycle   MAP the region (SPANS x 2 MiB), touch the first page of each span,
//!             UNMAP one page in its middle (a split), PROTECT one page a quarter in
//!             (a split in three), UNMAP all of it
//! ```
//!
//! Reported per system: median µs of each operation, the engine's bookkeeping bytes
//! for the region (after the touches), and the touches' ns per fault. Reference: an
//! anonymous mapping (mmap, munmap of a page, mprotect of a page, munmap).

use crate::workloads::{anon_mmap, anon_munmap, median, System};
use std::time::Instant;
use vmalab::{uapi, Device, PAGE_SIZE};

/// Bytes one PTE table maps.
const SPAN: usize = 2 << 20;

/// One run's medians.
#[derive(Clone, Debug, Default)]
pub struct GiantRun {
    pub map_us: f64,
    pub split_us: f64,
    pub protect_us: f64,
    pub unmap_us: f64,
    /// First touches, one per span: ns per fault.
    pub touch_ns: f64,
    /// Engine bookkeeping bytes with the region mapped.
    pub bytes: f64,
}

impl GiantRun {
    /// The medians of the samples of MAP, split, PROTECT, UNMAP and touch.
    fn of([map, split, protect, unmap, touch]: [Vec<f64>; 5], bytes: f64) -> Self {
        GiantRun {
            map_us: median(map),
            split_us: median(split),
            protect_us: median(protect),
            unmap_us: median(unmap),
            touch_ns: median(touch),
            bytes,
        }
    }
}

fn us(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

/// `cycles` cycles on a region of `spans` spans.
pub fn giant(sys: System, spans: usize, cycles: usize) -> GiantRun {
    let len = spans * SPAN;
    let (mut map, mut split, mut protect, mut unmap, mut touch) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut bytes = 0.0;
    let System::Engine(e) = sys else {
        for _ in 0..cycles {
            let t = Instant::now();
            let p = anon_mmap(len);
            map.push(us(t));
            let t = Instant::now();
            for s in 0..spans {
                // SAFETY: Inside the fresh mapping.
                unsafe { p.add(s * SPAN).cast::<u64>().write_volatile(1) };
            }
            touch.push(us(t) * 1e3 / spans as f64);
            let t = Instant::now();
            anon_munmap(p.wrapping_add(len / 2), PAGE_SIZE);
            split.push(us(t));
            let t = Instant::now();
            // SAFETY: One page of our own mapping.
            unsafe { libc::mprotect(p.add(len / 4).cast(), PAGE_SIZE, libc::PROT_READ) };
            protect.push(us(t));
            let t = Instant::now();
            anon_munmap(p, len);
            unmap.push(us(t));
        }
        return GiantRun::of([map, split, protect, unmap, touch], bytes);
    };
    let dev = Device::with_engine(e, len + SPAN).expect("open");
    let arena = dev.mmap_arena(len + SPAN).expect("mmap");
    for _ in 0..cycles {
        let t = Instant::now();
        let off = dev.map(len).expect("giant MAP");
        map.push(us(t));
        let t = Instant::now();
        for s in 0..spans {
            arena.store(off + s * SPAN, 1).expect("touch");
        }
        touch.push(us(t) * 1e3 / spans as f64);
        bytes = dev.info().expect("info").meta_bytes as f64;
        let t = Instant::now();
        dev.unmap(off + len / 2, PAGE_SIZE).expect("split");
        split.push(us(t));
        let t = Instant::now();
        dev.protect(off + len / 4, PAGE_SIZE, uapi::VMALAB_PROT_READ)
            .expect("protect");
        protect.push(us(t));
        let t = Instant::now();
        dev.unmap(off, len).expect("UNMAP");
        unmap.push(us(t));
        dev.sync().expect("sync");
    }
    GiantRun::of([map, split, protect, unmap, touch], bytes)
}
