//! The workloads. Each returns one number per run (plus counters); `main` repeats,
//! takes medians and reports.
//!
//! Targets ("systems"): a vmalab engine, or a kernel reference — `memfd` (a plain
//! memfd `MAP_SHARED` mapping, the kernel's own shared-file fault path) for the fault
//! loops, `mmap` (anonymous `mmap`/`munmap`, i.e. `mmap_lock`) for ebizzy.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Barrier,
    },
    time::{Duration, Instant},
};
use vmalab::{uapi, Arena, Device, PAGE_SIZE};

/// What a workload runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// A vmalab engine configuration.
    Engine(vmalab::EngineSpec),
    /// memfd `MAP_SHARED`: the kernel's own fault path.
    Memfd,
    /// Anonymous `mmap`/`munmap`: the kernel's own `mmap_lock`.
    Mmap,
}

impl System {
    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            System::Engine(e) => e.name,
            System::Memfd => "memfd",
            System::Mmap => "mmap",
        }
    }
}

/// Fault-loop layouts (will-it-scale style).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// (a) each thread faults its own region.
    Private,
    /// (b) all threads fault one giant region.
    Shared,
}

/// What the extra writer thread of a fault loop does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriterKind {
    /// Maps and unmaps a small region of its own (engines), or anonymous memory
    /// (`mmap_lock`).
    Churn,
    /// Splits the faulting region and merges it back: makes one page just past the
    /// faulted pages (inside the same region) read-only, then read-write again —
    /// `VMALAB_IOC_PROTECT` for engines, `mprotect(2)` of the memfd mapping (the
    /// kernel's VMA split and merge) for memfd. (An UNMAP and a MAP back cannot
    /// merge again — the page comes back as a region of its own — so repeating a
    /// split of the faulting region takes a protection change; the writer latency
    /// section times the UNMAP cut itself.)
    Split,
}

/// How the fault loops touch a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A store: a write fault, served by `->fault` (no fault-around for writes).
    Write,
    /// A load: a read fault, served by `->map_pages` (fault-around: one fault maps up
    /// to 16 present pages) where the PTE table exists, else `->fault`.
    Read,
}

/// One fault-loop measurement.
#[derive(Clone, Debug)]
pub struct FaultRun {
    /// Faults per second over all threads.
    pub rate: f64,
    /// Engine shared-line writes per fault (engines only).
    pub shared_writes: f64,
    /// Span locks per fault (`ptshard`: each a write to its span's own line).
    pub span_locks: f64,
    /// Faults that took the slow path, per fault.
    pub slow_frac: f64,
    /// Failed checks under the PTE lock (`spf`, `rcu+def`: a writer took the region
    /// out since the lookup), per fault.
    pub retries: f64,
    /// Writer operation pairs (map+unmap, or split+merge) completed during the run.
    pub writer_ops: u64,
    /// Faults the engine counted per page touched (1.0: every touch faulted once).
    pub faults_per_touch: f64,
    /// Faults the kernel counted (`ru_minflt` of the process) per page touched.
    pub minflt_per_touch: f64,
    /// Measured time per kernel-counted fault, in ns (under icount with 1 vCPU: the
    /// instructions of one fault, all of it: entry, the engine, the install, return).
    pub ns_per_fault: f64,
    /// Kernel-counted faults in the point.
    pub faults: f64,
    /// Measured seconds of the point (the sum of its passes).
    pub secs: f64,
    /// The point hit its wall-time cap before it was as long as asked.
    pub short: bool,
    /// Whether the run measured what it claims (see [`fault_loop`]); an invalid run's
    /// numbers are not reported.
    pub valid: Result<(), String>,
}

/// A mapping the fault loops can use: an arena (engines) or a memfd mapping.
struct Target {
    dev: Option<Device>,
    /// Arena offset of `base` (engines; 0 otherwise).
    arena_offset: usize,
    _arena: Option<Arena>,
    base: *mut u8,
    len: usize,
    _memfd: Option<(i32, usize)>,
}

// SAFETY: `base` points into a shared mapping that lives as long as the target; the
// loops access disjoint pages from different threads.
unsafe impl Sync for Target {}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some((fd, len)) = self._memfd {
            // SAFETY: Our own mapping and descriptor.
            unsafe {
                libc::munmap(self.base.cast(), len);
                libc::close(fd);
            }
        }
    }
}

const WRITER_REGION: usize = 16 * PAGE_SIZE;

/// Pages past the faulted ones inside the fault region (the split writer's page and
/// one after it, so that a split has three parts).
const SPLIT_PAGES: usize = 2;

fn target(sys: System, len: usize) -> Target {
    match sys {
        System::Engine(e) => {
            // Room for the fault region plus the writer's churn region.
            let arena_size = (len + 2 * WRITER_REGION).next_power_of_two();
            let dev = Device::with_engine(e, arena_size).expect("open /dev/vmalab");
            let off = dev
                .map(len + SPLIT_PAGES * PAGE_SIZE)
                .expect("map the fault region");
            let arena = dev.mmap_arena(arena_size).expect("mmap arena");
            let base = arena.at(off);
            Target {
                dev: Some(dev),
                arena_offset: off,
                _arena: Some(arena),
                base,
                len,
                _memfd: None,
            }
        }
        System::Memfd | System::Mmap => {
            // SAFETY: Plain syscalls creating a mapping we own.
            unsafe {
                let map_len = len + SPLIT_PAGES * PAGE_SIZE;
                let fd = libc::memfd_create(c"vmalab-bench".as_ptr(), libc::MFD_CLOEXEC);
                assert!(fd >= 0 && libc::ftruncate(fd, map_len as i64) == 0, "memfd");
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    map_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                );
                assert!(p != libc::MAP_FAILED, "mmap memfd");
                Target {
                    dev: None,
                    arena_offset: 0,
                    _arena: None,
                    base: p.cast(),
                    len,
                    _memfd: Some((fd, map_len)),
                }
            }
        }
    }
}

fn touch_all(base: *mut u8, len: usize) {
    for o in (0..len).step_by(PAGE_SIZE) {
        // SAFETY: Inside the target mapping.
        unsafe { base.add(o).cast::<u64>().write_volatile(o as u64 + 1) };
    }
}

/// Drops the PTEs of `[base, base+len)` but keeps the pages. Where a whole 2 MiB PTE
/// table's span is zapped, 7.3 frees the table too (page-table reclaim), so the first
/// re-fault there allocates one: kernel mappings (memfd) pay the same.
fn zap(base: *mut u8, len: usize) {
    // SAFETY: Our own shared mapping; DONTNEED only zaps its PTEs.
    unsafe { libc::madvise(base.cast(), len, libc::MADV_DONTNEED) };
}

fn counters(t: &Target) -> [u64; uapi::VMALAB_NR_COUNTERS] {
    t.dev.as_ref().map_or([0; uapi::VMALAB_NR_COUNTERS], |d| {
        d.info().expect("info").counters
    })
}

/// How long a fault-loop point runs: passes over the pages are repeated until the
/// point has `min_faults` kernel-counted faults or `min_secs` of measured time, and
/// (with a writer) `min_writer_ops` writer operation pairs — unless `max_secs` of wall
/// time (zaps between passes included) ran out first; a point cut short by that cap is
/// reported as such ([`FaultRun::short`]).
#[derive(Clone, Copy, Debug)]
pub struct PointLength {
    /// Faults (kernel `minflt`) a point needs.
    pub min_faults: u64,
    /// Or this much measured time.
    pub min_secs: f64,
    /// Writer operation pairs a `+writer`/`+split` point needs.
    pub min_writer_ops: u64,
    /// Wall-time cap of one point.
    pub max_secs: f64,
}

/// Re-faults present pages (the path the engines differ on): `threads` threads write
/// (or read) one word per page, `pages_per_thread` pages each, after the PTEs were
/// zapped; passes are repeated (zap between passes, outside the measured time) until
/// the point is as long as `len` asks. With `writer`, one extra thread runs a
/// [`WriterKind`] operation pair every period for the whole run.
///
/// Validity: with stores, every touch must fault exactly once (the kernel's `minflt`,
/// and for engines their own count, 1.00 per touch within 1%); with loads (fault-around
/// maps several pages per fault), every fault the engine counted must be one the
/// kernel counted, and with one thread every kernel fault must have reached the engine
/// (within 1%; with more, a fault can end as a spurious one in the kernel). The writer
/// thread's own faults (an anonymous churn writer touches one page per operation) are
/// allowed for.
pub fn fault_loop(
    sys: System,
    layout: Layout,
    access: Access,
    threads: usize,
    pages_per_thread: usize,
    writer: Option<(WriterKind, Duration)>,
    len: PointLength,
) -> FaultRun {
    let bytes = threads * pages_per_thread * PAGE_SIZE;
    // The process's first clock read faults the vDSO's data page in: not inside the
    // measured window (the validity check caught it there).
    let wall = Instant::now();
    let t = target(sys, bytes);
    touch_all(t.base, t.len);
    zap(t.base, t.len);
    let before = counters(&t);
    // Per pass: `go` (the main thread has zapped, workers start), `end` (every worker
    // has finished its touches). Each worker times itself into its slot (the main
    // thread may be descheduled around the barrier); a pass spans the earliest start
    // to the latest end, and the point's time is the sum of its passes.
    // `start`: every worker exists (thread creation faults its stack: not ours to
    // count) before the main thread reads `minflt`.
    let start = Barrier::new(threads + 1);
    let go = Barrier::new(threads + 1);
    let end = Barrier::new(threads + 1);
    let stop = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let writer_ops = AtomicU64::new(0);
    let spans: Vec<(AtomicU64, AtomicU64)> = (0..threads)
        .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
        .collect();
    let (measured, minflt, passes, short) = std::thread::scope(|s| {
        if let Some((kind, period)) = writer {
            let (done, writer_ops, dev) = (&done, &writer_ops, t.dev.as_ref());
            // The split writer's page: just past the faulted pages, same region.
            let split_page = t.base.wrapping_add(t.len) as usize;
            let split_off = t.arena_offset + t.len;
            s.spawn(move || {
                while !done.load(Relaxed) {
                    match (kind, dev) {
                        (WriterKind::Churn, Some(dev)) => {
                            let off = dev.map(WRITER_REGION).expect("writer map");
                            dev.unmap(off, WRITER_REGION).expect("writer unmap");
                        }
                        // The kernel's writer: anonymous mmap/munmap (mmap_lock).
                        (WriterKind::Churn, None) => anon_map_unmap(WRITER_REGION),
                        (WriterKind::Split, Some(dev)) => {
                            dev.protect(split_off, PAGE_SIZE, uapi::VMALAB_PROT_READ)
                                .expect("split writer: protect RO");
                            dev.protect(split_off, PAGE_SIZE, uapi::VMALAB_PROT_READ_WRITE)
                                .expect("split writer: protect RW");
                        }
                        (WriterKind::Split, None) => {
                            for prot in [libc::PROT_READ, libc::PROT_READ | libc::PROT_WRITE] {
                                // SAFETY: One page of our own memfd mapping, which no
                                // thread writes (it is past the faulted pages).
                                let r = unsafe {
                                    libc::mprotect(split_page as *mut libc::c_void, PAGE_SIZE, prot)
                                };
                                assert_eq!(r, 0, "split writer: mprotect");
                            }
                        }
                    }
                    writer_ops.fetch_add(1, Relaxed);
                    std::thread::sleep(period);
                }
            });
        }
        let epoch = Instant::now();
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let (t, start, go, end, stop) = (&t, &start, &go, &end, &stop);
                let slot = &spans[i];
                s.spawn(move || {
                    start.wait();
                    let (first, step) = match layout {
                        // Own slice: contiguous pages.
                        Layout::Private => (i * pages_per_thread, 1),
                        // One region, interleaved: neighbouring pages belong to
                        // different threads (shared PTE tables, shared region).
                        Layout::Shared => (i, threads),
                    };
                    loop {
                        go.wait();
                        if stop.load(Relaxed) {
                            break;
                        }
                        // Nothing between `go` and `end` may allocate or fault on
                        // its own: a thread's first malloc maps its arena, faults
                        // the kernel counts but we did not ask for.
                        let t0 = epoch.elapsed().as_nanos() as u64;
                        let mut sum = 0u64;
                        for k in 0..pages_per_thread {
                            let p = first + k * step;
                            let w = t.base.wrapping_add(p * PAGE_SIZE).cast::<u64>();
                            match access {
                                // SAFETY: Inside the target mapping.
                                Access::Write => unsafe { w.write_volatile(p as u64) },
                                // SAFETY: As above.
                                Access::Read => {
                                    sum = sum.wrapping_add(unsafe { w.read_volatile() })
                                }
                            }
                        }
                        std::hint::black_box(sum);
                        slot.0.store(t0, Relaxed);
                        slot.1.store(epoch.elapsed().as_nanos() as u64, Relaxed);
                        end.wait();
                    }
                })
            })
            .collect();
        start.wait();
        let minflt_before = rusage().ru_minflt;
        let (mut measured, mut passes) = (0u64, 0u64);
        let (short, minflt) = loop {
            go.wait();
            end.wait();
            passes += 1;
            let first = spans.iter().map(|s| s.0.load(Relaxed)).min().unwrap_or(0);
            let last = spans.iter().map(|s| s.1.load(Relaxed)).max().unwrap_or(0);
            measured += last - first;
            zap(t.base, t.len);
            let faults = (rusage().ru_minflt - minflt_before) as u64;
            let long_enough = faults >= len.min_faults || measured as f64 >= len.min_secs * 1e9;
            let writer_done = writer.is_none() || writer_ops.load(Relaxed) >= len.min_writer_ops;
            if long_enough && writer_done {
                break (false, faults.max(1) as f64);
            }
            if wall.elapsed().as_secs_f64() >= len.max_secs {
                break (true, faults.max(1) as f64);
            }
        };
        stop.store(true, Relaxed);
        go.wait();
        for w in workers {
            w.join().expect("worker");
        }
        done.store(true, Relaxed);
        (measured.max(1), minflt, passes, short)
    });
    let after = counters(&t);
    let d = |k: usize| after[k] - before[k];
    let faults = (d(uapi::VMALAB_CTR_FAULT_FAST) + d(uapi::VMALAB_CTR_FAULT_SLOW)).max(1);
    let touched = (passes as usize * threads * pages_per_thread) as f64;
    let engine = t.dev.is_some();
    let ops = writer_ops.load(Relaxed) as f64;
    let near = |x: f64, want: f64| (x - want).abs() <= want * 0.01 + ops;
    let valid = match access {
        Access::Write if !near(minflt, touched) => Err(format!(
            "{minflt} kernel faults for {touched} stores (want one each)"
        )),
        Access::Write if engine && !near(faults as f64, touched) => Err(format!(
            "the engine counted {faults} faults for {touched} stores (want one each)"
        )),
        // With several threads on one region, a fault can find its PTE already
        // installed by another's fault-around and end in the kernel (a spurious
        // fault the engine never sees): the kernel may count more, never fewer.
        Access::Read
            if engine
                && (faults as f64 > minflt + ops
                    || (threads == 1 && !near(faults as f64, minflt))) =>
        {
            Err(format!(
                "the engine counted {faults} faults, the kernel {minflt}"
            ))
        }
        _ => Ok(()),
    };
    let secs = measured as f64 / 1e9;
    FaultRun {
        rate: touched / secs,
        shared_writes: d(uapi::VMALAB_CTR_SHARED_WRITES) as f64 / faults as f64,
        span_locks: d(uapi::VMALAB_CTR_SPAN_LOCKS) as f64 / faults as f64,
        slow_frac: d(uapi::VMALAB_CTR_FAULT_SLOW) as f64 / faults as f64,
        retries: d(uapi::VMALAB_CTR_FAULT_RETRY) as f64 / faults as f64,
        writer_ops: writer_ops.load(Relaxed),
        faults_per_touch: faults as f64 / touched,
        minflt_per_touch: minflt / touched,
        ns_per_fault: measured as f64 / minflt,
        faults: minflt,
        secs,
        short,
        valid,
    }
}

/// Writer-side latencies (medians, µs) and the loop's rate.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriterRun {
    /// MAP of a fresh region.
    pub map_us: f64,
    /// UNMAP of one page in its middle (a split in two).
    pub split_us: f64,
    /// UNMAP of the rest (two regions).
    pub unmap_us: f64,
    /// Loop iterations per second.
    pub rate: f64,
    /// Per-CPU counter lines the engine's writers read per writer operation
    /// (`percpu`: the CPUs it sums; 0 for the others).
    pub percpu_lines: f64,
}

/// Writer-side latency: map + touch of a `pages`-page region, an UNMAP of one page in
/// its middle (a split), and an UNMAP of the rest, `n` times, on an idle space (or
/// with `faulters` threads re-faulting another region meanwhile), with `spacing` of
/// sleep between cycles (zero: back to back; a spacing longer than a few grace periods
/// lets `percpu+sem`'s `rcu_sync` go idle, so its first writer pays the grace period
/// again). The kernel's reference (`mmap`) does the same with anonymous
/// `mmap`/`munmap`.
pub fn writer_latency(
    sys: System,
    n: usize,
    pages: usize,
    faulters: usize,
    spacing: Duration,
) -> WriterRun {
    let System::Engine(e) = sys else {
        return mmap_latency(n, pages, spacing);
    };
    let busy_len = 1024 * PAGE_SIZE;
    let dev = Device::with_engine(e, 64 << 20).expect("open");
    let busy = dev.map(busy_len).expect("map");
    let arena = dev.mmap_arena(64 << 20).expect("mmap");
    let stop = AtomicBool::new(false);
    let (mut maps, mut unmaps) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut splits = Vec::with_capacity(n);
    let lines_before = dev.info().expect("info").counters[uapi::VMALAB_CTR_PERCPU_LINES];
    let rate = std::thread::scope(|s| {
        for _ in 0..faulters {
            let (arena, stop) = (&arena, &stop);
            s.spawn(move || {
                while !stop.load(Relaxed) {
                    touch_all(arena.at(busy), busy_len);
                    zap(arena.at(busy), busy_len);
                }
            });
        }
        let start = Instant::now();
        for _ in 0..n {
            std::thread::sleep(spacing);
            let t0 = Instant::now();
            let off = dev.map(pages * PAGE_SIZE).expect("map");
            maps.push(t0.elapsed().as_secs_f64() * 1e6);
            touch_all(arena.at(off), pages * PAGE_SIZE);
            let t1 = Instant::now();
            dev.unmap(off + pages / 2 * PAGE_SIZE, PAGE_SIZE)
                .expect("split");
            splits.push(t1.elapsed().as_secs_f64() * 1e6);
            let t2 = Instant::now();
            dev.unmap(off, pages * PAGE_SIZE).expect("unmap");
            unmaps.push(t2.elapsed().as_secs_f64() * 1e6);
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        stop.store(true, Relaxed);
        rate
    });
    let lines = dev.info().expect("info").counters[uapi::VMALAB_CTR_PERCPU_LINES] - lines_before;
    WriterRun {
        map_us: median(maps),
        split_us: median(splits),
        unmap_us: median(unmaps),
        rate,
        // Three writer operations per cycle: MAP, split, UNMAP.
        percpu_lines: lines as f64 / (3 * n) as f64,
    }
}

/// A fresh private anonymous mapping of `len` bytes (the kernel's own `mmap` path).
pub fn anon_mmap(len: usize) -> *mut u8 {
    // SAFETY: Creates a new mapping; touches no existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert!(p != libc::MAP_FAILED, "anonymous mmap");
    p.cast()
}

/// Unmaps a mapping made by [`anon_mmap`].
pub fn anon_munmap(p: *mut u8, len: usize) {
    // SAFETY: `p` is a mapping of `len` bytes this thread made and no longer uses.
    unsafe { libc::munmap(p.cast(), len) };
}

fn anon_map_unmap(len: usize) {
    let p = anon_mmap(len);
    // SAFETY: `p` is a fresh writable mapping of at least 8 bytes.
    unsafe { p.cast::<u64>().write_volatile(1) };
    anon_munmap(p, len);
}

fn mmap_latency(n: usize, pages: usize, spacing: Duration) -> WriterRun {
    let (mut maps, mut unmaps) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut splits = Vec::with_capacity(n);
    let len = pages * PAGE_SIZE;
    let start = Instant::now();
    for _ in 0..n {
        std::thread::sleep(spacing);
        let t0 = Instant::now();
        let p = anon_mmap(len);
        maps.push(t0.elapsed().as_secs_f64() * 1e6);
        touch_all(p, len);
        let t1 = Instant::now();
        anon_munmap(p.wrapping_add(pages / 2 * PAGE_SIZE), PAGE_SIZE);
        splits.push(t1.elapsed().as_secs_f64() * 1e6);
        let t2 = Instant::now();
        anon_munmap(p, len);
        unmaps.push(t2.elapsed().as_secs_f64() * 1e6);
    }
    WriterRun {
        map_us: median(maps),
        split_us: median(splits),
        unmap_us: median(unmaps),
        rate: n as f64 / start.elapsed().as_secs_f64(),
        percpu_lines: 0.0,
    }
}

/// One ebizzy run ([`ebizzy_m`] or [`small_chunks`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct EbizzyRun {
    /// Records (allocate + fill + search + free cycles) per second.
    pub records: f64,
    /// User and system CPU seconds of the process during the run.
    pub user: f64,
    /// System CPU seconds.
    pub sys: f64,
    /// Minor faults during the run.
    pub minflt: u64,
    /// Context switches (voluntary + involuntary) during the run.
    pub csw: u64,
    /// Writers whose range lock waited for another writer, per record (`range`,
    /// `ptshard`; measured by the small-chunk churn only).
    pub writer_waits: f64,
}

impl EbizzyRun {
    /// `records` in `dt` seconds, with the process's usage before and after.
    fn new(records: u64, dt: f64, r0: &libc::rusage, r1: &libc::rusage) -> Self {
        EbizzyRun {
            records: records as f64 / dt,
            user: secs(r1.ru_utime) - secs(r0.ru_utime),
            sys: secs(r1.ru_stime) - secs(r0.ru_stime),
            minflt: (r1.ru_minflt - r0.ru_minflt) as u64,
            csw: ((r1.ru_nvcsw + r1.ru_nivcsw) - (r0.ru_nvcsw + r0.ru_nivcsw)) as u64,
            writer_waits: 0.0,
        }
    }
}

fn rusage() -> libc::rusage {
    // SAFETY: A zeroed rusage is valid output space.
    unsafe {
        let mut r: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut r);
        r
    }
}

fn secs(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// ebizzy's `-m` defaults (LTP `utils/benchmark/ebizzy-0.3/ebizzy.c`): 10 chunks of
/// 64 Ki records of 8 bytes (512 KiB).
pub const EBIZZY_CHUNKS: usize = 10;
/// Records per chunk.
pub const EBIZZY_RECORDS: usize = 64 * 1024;
/// Bytes per chunk.
pub const EBIZZY_CHUNK_SIZE: usize = EBIZZY_RECORDS * 8;

/// ebizzy `-m`, LTP's algorithm with arena regions: `chunks` source chunks of
/// `EBIZZY_RECORDS` records (`mem[i][j] = j`) are allocated and filled once; then each
/// thread, per record: picks a random source chunk, allocates a fresh chunk-sized
/// mapping (a MAP; the reference: anonymous `mmap`), `memcpy`s the source into it
/// (every page faults once), binary-searches it for a random key (which must be
/// found), and frees it (an UNMAP / `munmap`) — for `duration`. Records/s, user and
/// sys time as ebizzy reports them. (LTP's `rand_num` multiplies its state, which
/// starts at 0, so real ebizzy always copies chunk 0 and searches key 0; here the
/// generator is the LCG it meant, so chunk and key vary. The mapping cost, which is
/// what this measures, is the same.)
pub fn ebizzy_m(sys: System, threads: usize, duration: Duration) -> EbizzyRun {
    let arena_size = ((EBIZZY_CHUNKS + threads + 1) * EBIZZY_CHUNK_SIZE).next_power_of_two();
    let dev = match sys {
        System::Engine(e) => Some(Device::with_engine(e, arena_size).expect("open")),
        _ => None,
    };
    // The arena is mapped after the source chunks (placement needs no arena).
    let src_offs: Vec<usize> = match &dev {
        Some(d) => (0..EBIZZY_CHUNKS)
            .map(|_| d.map(EBIZZY_CHUNK_SIZE).expect("map a source chunk"))
            .collect(),
        None => Vec::new(),
    };
    let arena = dev
        .as_ref()
        .map(|d| d.mmap_arena(arena_size).expect("mmap"));
    let alloc = |off_out: &mut usize| -> *mut u8 {
        match (dev.as_ref(), arena.as_ref()) {
            (Some(d), Some(a)) => {
                *off_out = d.map(EBIZZY_CHUNK_SIZE).expect("map a record chunk");
                a.at(*off_out)
            }
            _ => anon_mmap(EBIZZY_CHUNK_SIZE),
        }
    };
    let free = |p: *mut u8, off: usize| match dev.as_ref() {
        Some(d) => d
            .unmap(off, EBIZZY_CHUNK_SIZE)
            .expect("unmap a record chunk"),
        None => anon_munmap(p, EBIZZY_CHUNK_SIZE),
    };
    // Source chunks, written once (ebizzy's write_pattern).
    let srcs: Vec<usize> = (0..EBIZZY_CHUNKS)
        .map(|i| {
            let p = match (&arena, src_offs.get(i)) {
                (Some(a), Some(&off)) => a.at(off),
                _ => anon_mmap(EBIZZY_CHUNK_SIZE),
            };
            // SAFETY: A fresh mapping of one chunk, owned here.
            let chunk = unsafe { std::slice::from_raw_parts_mut(p.cast::<u64>(), EBIZZY_RECORDS) };
            for (j, r) in chunk.iter_mut().enumerate() {
                *r = j as u64;
            }
            p as usize
        })
        .collect();
    let records = AtomicU64::new(0);
    let r0 = rusage();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (records, srcs, alloc, free) = (&records, &srcs, &alloc, &free);
            s.spawn(move || {
                let mut state = t as u32 + 1;
                let mut rand = |max: usize| {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (state / 65536) as usize % max
                };
                let mut n = 0;
                while t0.elapsed() < duration {
                    let src = srcs[rand(EBIZZY_CHUNKS)] as *const u64;
                    let mut off = 0;
                    let copy = alloc(&mut off).cast::<u64>();
                    // SAFETY: `src` is a filled source chunk nobody writes any more,
                    // `copy` a fresh chunk-sized mapping owned by this thread.
                    let recs = unsafe {
                        std::ptr::copy_nonoverlapping(src, copy, EBIZZY_RECORDS);
                        std::slice::from_raw_parts(copy, EBIZZY_RECORDS)
                    };
                    let key = rand(EBIZZY_RECORDS) as u64;
                    let found = recs.binary_search(&key);
                    if found.is_err() {
                        // A copy of `mem[i][j] = j` that is not sorted: the data is
                        // wrong (this is also a check of the engine).
                        let bad = recs.iter().enumerate().find(|&(j, &r)| r != j as u64);
                        panic!(
                            "ebizzy {}: key {key} not found; first wrong record {bad:?} \
                             of the copy at arena offset {off:#x}",
                            sys.name()
                        );
                    }
                    free(copy.cast(), off);
                    n += 1;
                }
                records.fetch_add(n, Relaxed);
            });
        }
    });
    let dt = t0.elapsed().as_secs_f64();
    let r1 = rusage();
    if dev.is_none() {
        for &p in &srcs {
            anon_munmap(p as *mut u8, EBIZZY_CHUNK_SIZE);
        }
    }
    EbizzyRun::new(records.load(Relaxed), dt, &r0, &r1)
}

/// Small-chunk map churn (what this benchmark called "ebizzy-style" before it had
/// [`ebizzy_m`]; it is bound by writer latency, not by faults): each thread repeatedly
/// maps a region of 1..=32 pages (`mmap` for the reference), fills it, searches it
/// linearly for a key, and unmaps it, for `duration`.
pub fn small_chunks(sys: System, threads: usize, duration: Duration) -> EbizzyRun {
    let arena_size = 256 << 20;
    let dev = match sys {
        System::Engine(e) => Some(Device::with_engine(e, arena_size).expect("open")),
        _ => None,
    };
    let arena = dev
        .as_ref()
        .map(|d| d.mmap_arena(arena_size).expect("mmap"));
    let records = AtomicU64::new(0);
    let waits = |d: &Device| d.info().expect("info").counters[uapi::VMALAB_CTR_WRITER_WAITS];
    let waits0 = dev.as_ref().map_or(0, waits);
    let r0 = rusage();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (dev, arena, records) = (dev.as_ref(), arena.as_ref(), &records);
            s.spawn(move || {
                let mut x = 0x2545_F491_4F6C_DD1D_u64 ^ (t as u64 + 1);
                let mut n = 0;
                while t0.elapsed() < duration {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let pages = 1 + (x % 32) as usize;
                    let len = pages * PAGE_SIZE;
                    let (p, off) = match (dev, arena) {
                        (Some(d), Some(a)) => {
                            let off = d.map(len).expect("map");
                            (a.at(off), off)
                        }
                        _ => (anon_mmap(len), 0),
                    };
                    let words = len / 8;
                    // SAFETY: `p` is a fresh mapping of `len` bytes owned by this thread.
                    let buf = unsafe { std::slice::from_raw_parts_mut(p.cast::<u64>(), words) };
                    for (i, w) in buf.iter_mut().enumerate() {
                        *w = x.wrapping_mul(i as u64 + 1);
                    }
                    let key = x.wrapping_mul((x % words as u64) + 1);
                    let found = buf.iter().position(|&w| w == key);
                    std::hint::black_box(found);
                    match dev {
                        Some(d) => d.unmap(off, len).expect("unmap"),
                        None => anon_munmap(p, len),
                    }
                    n += 1;
                }
                records.fetch_add(n, Relaxed);
            });
        }
    });
    let dt = t0.elapsed().as_secs_f64();
    let r1 = rusage();
    let records = records.load(Relaxed);
    EbizzyRun {
        writer_waits: dev
            .as_ref()
            .map_or(0.0, |d| (waits(d) - waits0) as f64 / records.max(1) as f64),
        ..EbizzyRun::new(records, dt, &r0, &r1)
    }
}

/// Kernel memory per region and per mapped page: (engine-reported bytes per region,
/// slab bytes per region, engine bytes per page).
pub fn memory(sys: System, regions: usize) -> (f64, f64, f64) {
    let System::Engine(e) = sys else {
        return (0.0, 0.0, 0.0);
    };
    let slab = || -> f64 {
        let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("Slab:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            * 1024.0
    };
    let dev = Device::with_engine(e, 1 << 30).expect("open");
    let s0 = slab();
    for _ in 0..regions {
        dev.map(PAGE_SIZE).expect("map");
    }
    let s1 = slab();
    let i = dev.info().expect("info");
    let per_region = i.meta_bytes as f64 / regions as f64;
    // Per page: one 8-byte slot per page of a region; measured on a large region.
    let dev2 = Device::with_engine(e, 1 << 30).expect("open");
    dev2.map(PAGE_SIZE).expect("map");
    let small = dev2.info().expect("info").meta_bytes as f64;
    dev2.map(4096 * PAGE_SIZE).expect("map");
    let big = dev2.info().expect("info").meta_bytes as f64;
    let per_page = (big - small - per_region) / 4096.0;
    (per_region, (s1 - s0) / regions as f64, per_page)
}

/// Median of a non-empty sample.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Lock statistics of one lock class family, summed over its classes and read/write
/// lines: (acquisitions, acquisitions that bounced: the lock was last taken on
/// another CPU, i.e. its cache line moved).
pub type LockStat = (u64, u64);

/// The kernel's lock classes a fault can write, by the name `/proc/lock_stat` gives
/// them (7.3): the per-VMA lock (`vma->vm_refcnt`, acquired through lockdep only, so
/// lock_stat counts its acquisitions but not its bounces), the split PTE lock of the
/// PTE table, `mmap_lock`, and vmalab's own classes (the `rwsem` engine's lock).
pub const LOCK_CLASSES: [(&str, &str); 4] = [
    ("vm_lock", "vm_lock"),
    ("ptlock", "ptlock_ptr(ptdesc)"),
    ("mmap_lock", "&mm->mmap_lock"),
    ("vmalab", "vmalab"),
];

/// Reads `/proc/lock_stat` (debug kernel: `CONFIG_LOCK_STAT`) after switching lock
/// statistics on; one entry per [`LOCK_CLASSES`] family. `None` without lock_stat.
pub fn lock_stat() -> Option<Vec<LockStat>> {
    std::fs::write("/proc/sys/kernel/lock_stat", "1").ok()?;
    let text = std::fs::read_to_string("/proc/lock_stat").ok()?;
    let mut out = vec![(0, 0); LOCK_CLASSES.len()];
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        // "name", "name-R", "name-W", with "#version" and "/subclass" suffixes.
        let name = name.trim();
        let base = name
            .strip_suffix("-R")
            .or_else(|| name.strip_suffix("-W"))
            .unwrap_or(name);
        let base = base.split(['#', '/']).next().unwrap_or(base);
        let Some(i) = LOCK_CLASSES.iter().position(|(family, class)| {
            base == *class || (*family == "vmalab" && base.starts_with("vmalab"))
        }) else {
            continue;
        };
        // con-bounces contentions waittime(min max total avg) acq-bounces acquisitions …
        let v: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if v.len() > 7 {
            out[i].0 += v[7];
            out[i].1 += v[6];
        }
    }
    Some(out)
}

/// Clears the lock statistics (writing `0` to `/proc/lock_stat`).
pub fn lock_stat_clear() {
    let _ = std::fs::write("/proc/lock_stat", "0");
}
