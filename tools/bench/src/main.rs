//! vmalab fault-throughput benchmark (will-it-scale style), one run, all engines.
//!
//! For each engine and thread count, every thread write-faults its own fresh region
//! page by page (one store per page, so one fault per page), and the run reports
//! faults per second, the median of `--repeat` runs. A plain memfd `MAP_SHARED`
//! mapping faulted the same way is the kernel's own reference path. Numbers from an
//! emulated guest (TCG) are only meaningful as ratios within one run; the engine's
//! shared-cache-line writes per fault are printed beside them because they do not
//! depend on the machine.
//!
//! ```text
//! vmalab-bench [--threads 1,2] [--pages N] [--repeat R] [--engine NAME]...
//! ```

use std::{
    sync::Barrier,
    time::{Duration, Instant},
};
use vmalab::{uapi, Device, PAGE_SIZE};

struct Opts {
    threads: Vec<usize>,
    pages: usize,
    repeat: usize,
    engines: Vec<(u32, &'static str)>,
}

fn parse() -> Opts {
    let mut o = Opts {
        threads: vec![1, 2],
        pages: 2048,
        repeat: 3,
        engines: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--threads" => {
                o.threads = v
                    .split(',')
                    .map(|t| t.parse().expect("thread count"))
                    .collect()
            }
            "--pages" => o.pages = v.parse().expect("pages"),
            "--repeat" => o.repeat = v.parse().expect("repeat"),
            "--engine" => {
                let id = vmalab::engine_id(&v).unwrap_or_else(|| panic!("unknown engine {v}"));
                o.engines.push((id, uapi::engine_name(id).unwrap()));
            }
            _ => panic!("unknown option {a}"),
        }
    }
    if o.engines.is_empty() {
        o.engines = vmalab::engines();
    }
    o
}

/// Write-faults `pages` pages at `base` from the calling thread.
fn touch(base: *mut u8, pages: usize) {
    for p in 0..pages {
        // SAFETY: `base` points at `pages` mapped pages owned by this thread.
        unsafe {
            base.add(p * PAGE_SIZE)
                .cast::<u64>()
                .write_volatile(p as u64 + 1)
        };
    }
}

/// Runs `threads` threads over their own `bases`, returns the elapsed time.
fn timed(bases: &[usize], pages: usize) -> Duration {
    let barrier = Barrier::new(bases.len() + 1);
    std::thread::scope(|s| {
        for &b in bases {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                touch(b as *mut u8, pages);
                barrier.wait();
            });
        }
        barrier.wait();
        let t0 = Instant::now();
        barrier.wait();
        t0.elapsed()
    })
}

/// One vmalab run: returns (faults/s, shared writes per fault).
fn run_engine(engine: u32, threads: usize, pages: usize) -> (f64, f64) {
    let len = pages * PAGE_SIZE;
    let arena_size = (threads * len).next_power_of_two().max(1 << 20);
    let dev = Device::with_engine(engine, arena_size).expect("open vmalab");
    let arena = dev.mmap_arena(arena_size).expect("mmap arena");
    let bases: Vec<usize> = (0..threads)
        .map(|_| arena.at(dev.map(len).expect("map")) as usize)
        .collect();
    let before = dev.info().expect("info").counters;
    let dt = timed(&bases, pages);
    let after = dev.info().expect("info").counters;
    let faults = (after[uapi::VMALAB_CTR_FAULT_FAST] + after[uapi::VMALAB_CTR_FAULT_SLOW])
        - (before[uapi::VMALAB_CTR_FAULT_FAST] + before[uapi::VMALAB_CTR_FAULT_SLOW]);
    let writes = after[uapi::VMALAB_CTR_SHARED_WRITES] - before[uapi::VMALAB_CTR_SHARED_WRITES];
    (
        (threads * pages) as f64 / dt.as_secs_f64(),
        writes as f64 / faults.max(1) as f64,
    )
}

/// The reference: a memfd `MAP_SHARED` mapping, faulted the same way.
fn run_memfd(threads: usize, pages: usize) -> f64 {
    let len = threads * pages * PAGE_SIZE;
    // SAFETY: Plain syscalls on a descriptor and mapping we own.
    unsafe {
        let fd = libc::memfd_create(c"vmalab-bench".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0 && libc::ftruncate(fd, len as i64) == 0, "memfd");
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert!(p != libc::MAP_FAILED, "mmap memfd");
        let bases: Vec<usize> = (0..threads)
            .map(|t| p as usize + t * pages * PAGE_SIZE)
            .collect();
        let dt = timed(&bases, pages);
        libc::munmap(p, len);
        libc::close(fd);
        (threads * pages) as f64 / dt.as_secs_f64()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let o = parse();
    println!(
        "# vmalab fault throughput: {} pages/thread, write faults, median of {}",
        o.pages, o.repeat
    );
    println!("# (under TCG emulation absolute numbers are meaningless; compare ratios)");
    println!(
        "{:<8} {:>7} {:>14} {:>10} {:>16}",
        "engine", "threads", "faults/s", "vs memfd", "shared wr/fault"
    );
    for &t in &o.threads {
        let memfd = median((0..o.repeat).map(|_| run_memfd(t, o.pages)).collect());
        println!(
            "{:<8} {:>7} {:>14.0} {:>10.2} {:>16}",
            "memfd", t, memfd, 1.0, "-"
        );
        for &(id, name) in &o.engines {
            let runs: Vec<(f64, f64)> = (0..o.repeat).map(|_| run_engine(id, t, o.pages)).collect();
            let rate = median(runs.iter().map(|r| r.0).collect());
            let wpf = median(runs.iter().map(|r| r.1).collect());
            println!(
                "{:<8} {:>7} {:>14.0} {:>10.2} {:>16.2}",
                name,
                t,
                rate,
                rate / memfd,
                wpf
            );
        }
    }
}
