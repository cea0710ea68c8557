//! Priority inversion (issue 11 (c), Nielsen's objection to `mmap_sem`): on one CPU, a
//! `SCHED_FIFO` thread that faults, a low-priority (`SCHED_OTHER`) thread that maps
//! and unmaps, and medium-priority `SCHED_FIFO` CPU hogs.
//!
//! ```text
//! faulter  SCHED_FIFO 30   zap its 16 pages, touch each (timed), sleep 1 ms, again
//! hogs     SCHED_FIFO 20   spin 5 ms, sleep 5 ms, again (each; two by default)
//! writer   SCHED_OTHER     MAP 16 pages, touch one, UNMAP, again (never sleeps)
//! ```
//!
//! The writer runs only while every hog sleeps. When a hog wakes while the writer
//! holds the engine's lock for write, a fault that needs the lock waits: on `rwsem` and
//! `percpu` until the hogs let the writer run again (the inversion: the faulter's
//! latency is the hogs' burst), on `pi` only for the writer's own critical section
//! (the waiting faulter lends the writer its priority, above the hogs'). `rcu`'s
//! faults never wait for a writer; `mmap` is the kernel's own anonymous memory (its
//! faults run under the per-VMA lock, its writer under `mmap_lock`).
//!
//! The hogs' duty cycle stays under the RT throttle (95%): the faulter never waits for
//! the throttle, only for the lock. Every thread is pinned to CPU 0.

use crate::workloads::{anon_mmap, anon_munmap, System};
use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
};
use vmalab::{uapi, Device, PAGE_SIZE};

/// Priorities (`SCHED_FIFO`).
const FAULTER_PRIO: i32 = 30;
const HOG_PRIO: i32 = 20;
/// The main thread, which only sleeps and stops the scene, above everything.
const MAIN_PRIO: i32 = 40;
/// A hog's burst and pause.
const HOG_SPIN: Duration = Duration::from_millis(5);
const HOG_PAUSE: Duration = Duration::from_millis(5);
/// Pages the faulter touches per round, and the writer maps.
const PAGES: usize = 16;

/// One scene's result.
#[derive(Clone, Debug, Default)]
pub struct InversionRun {
    /// The faulter's timed touches (each a fault).
    pub faults: u64,
    /// Median, 99th percentile and worst touch, in µs.
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Touches that took longer than 1 ms (a hog's burst is 5 ms).
    pub over_1ms: u64,
    /// MAP+UNMAP pairs the writer completed.
    pub writer_ops: u64,
    /// Read locks that waited for the writer (`VMALAB_CTR_READ_WAITS`; engines with a
    /// tree lock — on `pi` each boosted the writer; NaN for `mmap`).
    pub read_waits: f64,
}

/// Pins the calling thread to CPU 0 and gives it `policy`/`prio`.
fn place(policy: i32, prio: i32) {
    // SAFETY: A zeroed `cpu_set_t` is an empty set; `CPU_SET` and `sched_*` get valid
    // pointers to locals; 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        let r = libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            r,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
        let param = libc::sched_param {
            sched_priority: prio,
        };
        let r = libc::sched_setscheduler(0, policy, &param);
        assert_eq!(
            r,
            0,
            "sched_setscheduler: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Back to normal scheduling (the main thread, after the scene).
fn unplace() {
    // SAFETY: As in `place`; a full set allows every CPU.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_OTHER, &param);
    }
}

/// The memory the scene runs on: an arena (engines) or anonymous memory (`mmap`).
enum Mem {
    Arena(Device, vmalab::Arena, usize),
    Anon(*mut u8),
}

// SAFETY: The faulter alone touches the faulting pages; the writer uses its own.
unsafe impl Sync for Mem {}

impl Drop for Mem {
    fn drop(&mut self) {
        if let Mem::Anon(p) = *self {
            anon_munmap(p, PAGES * PAGE_SIZE);
        }
    }
}

impl Mem {
    /// The engine's read-wait counter (NaN: not an engine).
    fn read_waits(&self) -> f64 {
        match self {
            Mem::Arena(dev, ..) => {
                dev.info().expect("info").counters[uapi::VMALAB_CTR_READ_WAITS] as f64
            }
            Mem::Anon(_) => f64::NAN,
        }
    }

    fn new(sys: System) -> Self {
        match sys {
            System::Engine(e) => {
                let size = 64 << 20;
                let dev = Device::with_engine(e, size).expect("open");
                let off = dev.map(PAGES * PAGE_SIZE).expect("map");
                let arena = dev.mmap_arena(size).expect("mmap arena");
                Mem::Arena(dev, arena, off)
            }
            _ => Mem::Anon(anon_mmap(PAGES * PAGE_SIZE)),
        }
    }

    /// The faulter's pages.
    fn pages(&self) -> *mut u8 {
        match self {
            Mem::Arena(_, a, off) => a.at(*off),
            Mem::Anon(p) => *p,
        }
    }

    /// One writer cycle: MAP, touch one page, UNMAP.
    fn writer_cycle(&self) {
        let len = PAGES * PAGE_SIZE;
        match self {
            Mem::Arena(dev, arena, _) => {
                let off = dev.map(len).expect("writer map");
                // SAFETY: A fresh read-write region of the arena.
                unsafe { arena.at(off).cast::<u64>().write_volatile(1) };
                dev.unmap(off, len).expect("writer unmap");
            }
            Mem::Anon(_) => {
                let p = anon_mmap(len);
                // SAFETY: A fresh writable mapping of at least 8 bytes.
                unsafe { p.cast::<u64>().write_volatile(1) };
                anon_munmap(p, len);
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs the scene on `sys` for `secs` of guest time with `hogs` hogs.
pub fn inversion(sys: System, secs: f64, hogs: usize) -> InversionRun {
    let mem = Mem::new(sys);
    let stop = AtomicBool::new(false);
    let writer_ops = AtomicU64::new(0);
    let waits_before = mem.read_waits();
    place(libc::SCHED_FIFO, MAIN_PRIO);
    let lat = std::thread::scope(|s| {
        let (mem, stop, writer_ops) = (&mem, &stop, &writer_ops);
        s.spawn(move || {
            place(libc::SCHED_OTHER, 0);
            while !stop.load(Relaxed) {
                mem.writer_cycle();
                writer_ops.fetch_add(1, Relaxed);
            }
        });
        for _ in 0..hogs {
            s.spawn(move || {
                place(libc::SCHED_FIFO, HOG_PRIO);
                while !stop.load(Relaxed) {
                    let t0 = Instant::now();
                    while t0.elapsed() < HOG_SPIN {
                        std::hint::spin_loop();
                    }
                    std::thread::sleep(HOG_PAUSE);
                }
            });
        }
        let faulter = s.spawn(move || {
            place(libc::SCHED_FIFO, FAULTER_PRIO);
            let base = mem.pages();
            let mut lat = Vec::new();
            while !stop.load(Relaxed) {
                // SAFETY: The faulter's own pages; DONTNEED only drops their PTEs.
                unsafe { libc::madvise(base.cast(), PAGES * PAGE_SIZE, libc::MADV_DONTNEED) };
                for p in 0..PAGES {
                    let t0 = Instant::now();
                    // SAFETY: A page of the faulter's read-write pages.
                    unsafe {
                        base.add(p * PAGE_SIZE)
                            .cast::<u64>()
                            .write_volatile(p as u64)
                    };
                    lat.push(t0.elapsed().as_secs_f64() * 1e6);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            lat
        });
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Relaxed);
        faulter.join().expect("faulter")
    });
    unplace();
    let read_waits = mem.read_waits() - waits_before;
    let mut sorted = lat;
    sorted.sort_by(f64::total_cmp);
    InversionRun {
        faults: sorted.len() as u64,
        p50_us: percentile(&sorted, 0.5),
        p99_us: percentile(&sorted, 0.99),
        max_us: sorted.last().copied().unwrap_or(f64::NAN),
        over_1ms: sorted.iter().filter(|&&v| v > 1000.0).count() as u64,
        writer_ops: writer_ops.load(Relaxed),
        read_waits,
    }
}
