// SPDX-License-Identifier: GPL-2.0

//! The vmalab user-space ABI: ioctl numbers, `#[repr(C)]` argument structures and
//! counter indices.
//!
//! This file is the single definition of the ABI. The kernel module compiles it as
//! `crate::uapi`; the user-space crate (`tools/libvmalab`) includes the very same file
//! with `#[path]`, and `rust/uapi.h` mirrors it for C users (`cargo test` checks
//! the two agree). It therefore depends on `core` only.
//!
//! Model: one open file of `/dev/vmalab` is one address space. Its `mmap` creates the
//! *arena*. Inside the arena, *regions* (vmalab's own VMAs) are created and destroyed
//! with [`VMALAB_IOC_MAP`] / [`VMALAB_IOC_UNMAP`] and re-protected with
//! [`VMALAB_IOC_PROTECT`]. Offsets and lengths are bytes from
//! the start of the arena and must be page aligned.

#![deny(unsafe_code)]

/// The ioctl "type" byte of every vmalab ioctl.
pub const VMALAB_IOC_MAGIC: u32 = 0xB6;

const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// Encodes an ioctl number the way `include/uapi/asm-generic/ioctl.h` does.
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << IOC_DIRSHIFT)
        | (VMALAB_IOC_MAGIC << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}

/// Chooses the engine and the arena size. Only valid before the first region or mmap.
pub const VMALAB_IOC_CONFIG: u32 = ioc(IOC_WRITE, 0x01, core::mem::size_of::<VmalabConfig>());
/// Creates a region (like `mmap`, `MAP_FIXED_NOREPLACE` or `MAP_FIXED`).
///
/// The argument is written back unchanged before anything else happens, so an
/// argument the caller cannot write fails with `EFAULT` and changes nothing. If the
/// final write of the placed offset still fails (another thread unmapped or protected
/// the argument meanwhile), the region stands, as a successful `mmap` does, and the
/// call fails with `EFAULT`; regions a `REPLACE` displaced are gone either way.
pub const VMALAB_IOC_MAP: u32 = ioc(
    IOC_READ | IOC_WRITE,
    0x02,
    core::mem::size_of::<VmalabMap>(),
);
/// Destroys the regions in a range, cutting those it overlaps (like `munmap`).
pub const VMALAB_IOC_UNMAP: u32 = ioc(IOC_WRITE, 0x03, core::mem::size_of::<VmalabUnmap>());
/// Changes the protection of a range, splitting the regions at its ends (like
/// `mprotect`).
pub const VMALAB_IOC_PROTECT: u32 = ioc(IOC_WRITE, 0x05, core::mem::size_of::<VmalabProtect>());
/// Waits until the memory that writers of this address space handed to deferred
/// reclaim before the call (engines `spf` and `rcu` with
/// [`VMALAB_CONFIG_DEFERRED`], whose UNMAP returns before a grace period) has been
/// freed, so that [`VmalabInfo::pages`] and the counters account for it. Returns at
/// once for other engines; `ERESTARTSYS` if a signal comes while it waits.
pub const VMALAB_IOC_SYNC: u32 = ioc(0, 0x06, 0);
/// Reads the engine, the arena size and the counters.
pub const VMALAB_IOC_INFO: u32 = ioc(IOC_READ, 0x04, core::mem::size_of::<VmalabInfo>());
/// Test-only: makes the module emit a kernel `WARNING` (needs `test_hooks=1`), so that
/// the VM harness can prove that it notices splats.
pub const VMALAB_IOC_TEST_WARN: u32 = ioc(0, 0x3f, 0);

/// Test-only: arms protocol mutants and delays in this address space (needs
/// `test_hooks=1`; `EPERM` otherwise; `EINVAL` before the engine exists or for a
/// mutant the engine does not have). The selftests' negative controls use it.
pub const VMALAB_IOC_TEST_HOOKS: u32 =
    ioc(IOC_WRITE, 0x3e, core::mem::size_of::<VmalabTestHooks>());

/// Mutant: writers skip the zap of removed ranges (all engines that modify).
pub const VMALAB_MUTANT_SKIP_ZAP: u32 = 1 << 0;
/// Mutant (`rcu`): writers skip the grace period and the wait for holds.
pub const VMALAB_MUTANT_SKIP_GRACE_PERIOD: u32 = 1 << 1;
/// Mutant (`rcu`): writers wait for a grace period but not for holds to drain.
pub const VMALAB_MUTANT_SKIP_DRAIN: u32 = 1 << 2;
/// Mutant (`rwsem`, `percpu`, `pi`): faults drop the read lock before they install the PTE,
/// so writers no longer wait for them. (`ptshard`: a fault that slept installs through
/// the region it held without re-taking its span lock and confirming the region.)
pub const VMALAB_MUTANT_UNLOCKED_INSTALL: u32 = 1 << 3;
/// Mutant (all engines that modify): a writer does not wait for running writer
/// operations that cover its range, so a MAP can be placed where an UNMAP has
/// published but not yet zapped, and the new region's stores go to the old pages.
/// (`ptshard`: placement ignores retiring ranges; with it armed, an UNMAP also sleeps
/// 1 ms between freeing its range and its zap, to open that window.)
pub const VMALAB_MUTANT_SKIP_RETIRE_WAIT: u32 = 1 << 4;
/// Mutant (`pi`): a fault waits for a writer by retrying the read lock with sleeps in
/// between instead of on the writer's `rt_mutex`, so it no longer boosts the writer.
pub const VMALAB_MUTANT_POLL_READ: u32 = 1 << 5;
/// Mutant (`spf`, `rcu` with [`VMALAB_CONFIG_DEFERRED`]): faults install their PTE
/// without checking, under the PTE lock, that no writer took their region out since
/// they looked it up; a fault that found a region before an UNMAP can map its page
/// after the UNMAP's zap.
pub const VMALAB_MUTANT_SKIP_VALIDATE: u32 = 1 << 6;
/// All mutant bits.
pub const VMALAB_MUTANTS_ALL: u32 = (1 << 7) - 1;

/// Argument of [`VMALAB_IOC_TEST_HOOKS`]. Mutants keep the module memory-safe: regions
/// (and `rcu` entries) a mutant writer removes are kept until the file is released, and
/// once a mutant was armed in a file so is every region any writer removes from it
/// (a fault a mutant writer did not wait for may still be using an older one).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmalabTestHooks {
    /// `VMALAB_MUTANT_*` bits.
    pub mutants: u32,
    /// `rcu`: microseconds a slow-path fault sleeps right after releasing its hold
    /// (at most [`VMALAB_MAX_DELAY_US`]; 0: off).
    pub release_delay_us: u32,
    /// All engines: microseconds `->pfn_mkwrite` sleeps between looking the region's
    /// protection up and making the PTE writable (at most [`VMALAB_MAX_DELAY_US`]; 0:
    /// off). Widens the window in which a writer can change the protection.
    pub mkwrite_delay_us: u32,
    /// `spf`, `rcu`: microseconds a fault (and fault-around) spins (inside its RCU
    /// read section) between looking its region up and taking the PTE lock to install (at most [`VMALAB_MAX_SPIN_US`]; 0: off). Widens the window in
    /// which a writer can publish and zap under it.
    pub install_delay_us: u32,
}

/// Largest accepted [`VmalabTestHooks::install_delay_us`] (a busy wait in an RCU read
/// section).
pub const VMALAB_MAX_SPIN_US: u32 = 1_000;

/// Largest arena (bytes): 128 TiB, the x86-64 user address space. `EINVAL` above.
pub const VMALAB_MAX_ARENA_SIZE: u64 = 1 << 47;
/// Most regions one file may hold at once (like `vm.max_map_count`). A MAP beyond it
/// fails with `ENOMEM`, as `mmap` does.
pub const VMALAB_MAX_REGIONS: u64 = 65_536;
/// Most pages all regions of one file may span at once (64 GiB; the page-slot arrays
/// then take 128 MiB). A MAP beyond it fails with `ENOMEM`.
pub const VMALAB_MAX_REGION_PAGES: u64 = 1 << 24;

/// Engine: one `rw_semaphore` around the region tree (the `mmap_sem` baseline).
pub const VMALAB_ENGINE_RWSEM: u32 = 1;
/// Engine: Wilcox's RCU region lookup with per-region references for sleeping faults.
pub const VMALAB_ENGINE_RCU: u32 = 2;
/// Engine: the measurement floor. Regions are fixed when the arena is mapped and
/// looked up with no synchronisation; map/unmap/protect after that fail with `EPERM`.
pub const VMALAB_ENGINE_NONE: u32 = 3;
/// Engine: Zijlstra's scalable rw_mutex (2007) around the region tree: readers count
/// themselves in per-CPU counters; a writer announces itself, waits a grace period and
/// sums every CPU's counter until no reader is left.
pub const VMALAB_ENGINE_PERCPU: u32 = 4;
/// Engine: Nielsen's read-side priority-inheriting rw lock (2007) around the region
/// tree: a fault that waits for a writer sleeps on an `rt_mutex` the writer owns and
/// lends it its priority.
pub const VMALAB_ENGINE_PI: u32 = 5;
/// Engine: Lespinasse's speculative faults (2021): a fault takes no lock; it reads the
/// arena's sequence count, looks its region up under RCU, prepares the page, and
/// installs the PTE only if, under the PTE lock, no writer took a region out since;
/// otherwise it retries, and after a few failed tries takes the writers' mutex.
pub const VMALAB_ENGINE_SPF: u32 = 6;
/// Engine: Lespinasse's split lock (2021): a short mutex for the region tree plus a
/// range lock held by faults (one page, read) and by writers (the range they change,
/// write), so that faults and writers in disjoint ranges do not wait for each other.
pub const VMALAB_ENGINE_RANGE: u32 = 7;
/// Engine: Piggin's page-table-sharded regions (2009): each 2 MiB span of the arena
/// (what one PTE table maps) has its own small extent tree under its own spinlock, so
/// a fault locks only its span; a fault that must sleep holds its region, drops the
/// lock, and confirms the region under it again before it installs. Placement is a
/// separate global free-space tree.
pub const VMALAB_ENGINE_PTSHARD: u32 = 8;
/// Engine ids are dense from 1; this is one past the last valid id.
pub const VMALAB_ENGINE_END: u32 = 9;

/// Returns the name of an engine id, or `None` for an unknown id.
pub const fn engine_name(id: u32) -> Option<&'static str> {
    match id {
        VMALAB_ENGINE_RWSEM => Some("rwsem"),
        VMALAB_ENGINE_RCU => Some("rcu"),
        VMALAB_ENGINE_NONE => Some("none"),
        VMALAB_ENGINE_PERCPU => Some("percpu"),
        VMALAB_ENGINE_PI => Some("pi"),
        VMALAB_ENGINE_SPF => Some("spf"),
        VMALAB_ENGINE_RANGE => Some("range"),
        VMALAB_ENGINE_PTSHARD => Some("ptshard"),
        _ => None,
    }
}

/// Whether an engine can create and destroy regions after the arena is mapped.
pub const fn engine_can_modify_mapped(id: u32) -> bool {
    id != VMALAB_ENGINE_NONE
}

/// Config flag: writers of the `rcu` engine wait with `synchronize_rcu_expedited()`
/// instead of `synchronize_rcu()` (shorter writer latency; IPIs to every CPU).
pub const VMALAB_CONFIG_EXPEDITED: u32 = 1 << 0;
/// Config flag: the `percpu` engine runs on the kernel's `percpu_rw_semaphore` instead
/// of Zijlstra's 2007 rw_mutex (configuration `percpu+sem`).
pub const VMALAB_CONFIG_KERNEL_LOCK: u32 = 1 << 1;
/// Config flag: the `rcu` engine's writers do not wait for a grace period: faults
/// check under the PTE lock that their region is still published, and the memory of
/// what a writer took out is freed after a grace period by a worker (configuration
/// `rcu+def`; see [`VMALAB_IOC_SYNC`]).
pub const VMALAB_CONFIG_DEFERRED: u32 = 1 << 2;
/// Config flag: the `spf` engine checks a per-region mark instead of the arena-wide
/// sequence count, so a writer makes only the faults on the regions it takes out
/// retry (configuration `spf+region`).
pub const VMALAB_CONFIG_REGION_SEQ: u32 = 1 << 3;
/// Config flag: the `ptshard` engine places MAPs of up to a quarter of a chunk (512
/// pages) from a chunk of free space cached per CPU (2048 pages, taken from the global
/// free-space tree), so that placements on different CPUs neither take the tree's
/// lock nor land in the same 2 MiB spans (configuration `ptshard+pcpu`).
pub const VMALAB_CONFIG_CPU_CACHE: u32 = 1 << 4;
/// All valid [`VmalabConfig::flags`] bits (a flag is ignored by the engines it does not
/// name).
pub const VMALAB_CONFIG_FLAGS_ALL: u32 = VMALAB_CONFIG_EXPEDITED
    | VMALAB_CONFIG_KERNEL_LOCK
    | VMALAB_CONFIG_DEFERRED
    | VMALAB_CONFIG_REGION_SEQ
    | VMALAB_CONFIG_CPU_CACHE;

/// Argument of [`VMALAB_IOC_CONFIG`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmalabConfig {
    /// One of the `VMALAB_ENGINE_*` ids; 0 keeps the module's default engine.
    pub engine: u32,
    /// `VMALAB_CONFIG_*` flags.
    pub flags: u32,
    /// Size of the arena in bytes (page aligned, non-zero); a later `mmap` must have
    /// exactly this length. 0 leaves it to be fixed by the first `mmap`.
    pub arena_size: u64,
}

/// Place the region exactly at `offset`; fail with `EEXIST` if it overlaps a region
/// (like `MAP_FIXED_NOREPLACE`).
pub const VMALAB_MAP_FIXED: u32 = 1 << 0;
/// Place the region exactly at `offset`, replacing what it covers (like `MAP_FIXED`):
/// regions it overlaps in part are cut, keeping their parts outside it (same pages,
/// data, backing and protection).
pub const VMALAB_MAP_REPLACE: u32 = 1 << 1;
/// All valid [`VmalabMap::flags`] bits.
pub const VMALAB_MAP_FLAGS_ALL: u32 = VMALAB_MAP_FIXED | VMALAB_MAP_REPLACE;

/// Backing: zero-filled pages allocated on first touch (anonymous-like).
pub const VMALAB_BACKING_ZERO: u32 = 0;
/// Backing: like [`VMALAB_BACKING_ZERO`], but the first touch of each page sleeps for
/// [`VmalabMap::delay_us`] microseconds, standing in for I/O.
pub const VMALAB_BACKING_SLOW: u32 = 1;
/// Largest accepted [`VmalabMap::delay_us`] (one second).
pub const VMALAB_MAX_DELAY_US: u32 = 1_000_000;

/// Argument of [`VMALAB_IOC_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmalabMap {
    /// In: the offset for `FIXED`/`REPLACE` (ignored otherwise). Out: where the
    /// region was placed.
    pub offset: u64,
    /// Length in bytes: page aligned, non-zero.
    pub length: u64,
    /// `VMALAB_MAP_*` flags; `FIXED` and `REPLACE` are mutually exclusive.
    pub flags: u32,
    /// One of the `VMALAB_BACKING_*` kinds.
    pub backing: u32,
    /// First-touch delay for [`VMALAB_BACKING_SLOW`]; must be 0 otherwise.
    pub delay_us: u32,
    /// Must be 0.
    pub reserved: u32,
}

/// Argument of [`VMALAB_IOC_UNMAP`]: any page-aligned range inside the arena. Regions
/// it overlaps in part are cut, keeping their parts outside it (same pages, data,
/// backing and protection); a range with no region in it succeeds and changes
/// nothing, as `munmap` does. Once the call returns, every access to the range
/// raises `SIGBUS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmalabUnmap {
    /// Offset of the range in bytes, page aligned.
    pub offset: u64,
    /// Length of the range in bytes, page aligned and non-zero.
    pub length: u64,
}

/// Protection: reads only; a write raises `SIGSEGV`.
pub const VMALAB_PROT_READ: u32 = 1 << 0;
/// Protection bit: writes (only together with [`VMALAB_PROT_READ`]).
pub const VMALAB_PROT_WRITE: u32 = 1 << 1;
/// Protection: reads and writes (what a MAP creates).
pub const VMALAB_PROT_READ_WRITE: u32 = VMALAB_PROT_READ | VMALAB_PROT_WRITE;

/// Argument of [`VMALAB_IOC_PROTECT`]. Every page of the range must be in a region
/// (`ENOMEM` otherwise, as `mprotect` answers, and nothing changes). Regions are split
/// at the range's ends, and parts that end up with the same pages (contiguous),
/// backing and protection are merged again. Once the call returns, a write to a page
/// made read-only raises `SIGSEGV` (no PTE mapped before still allows it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmalabProtect {
    /// Offset of the range in bytes, page aligned.
    pub offset: u64,
    /// Length of the range in bytes, page aligned and non-zero.
    pub length: u64,
    /// [`VMALAB_PROT_READ`] or [`VMALAB_PROT_READ_WRITE`] (`EINVAL` otherwise).
    pub prot: u32,
    /// Must be 0.
    pub reserved: u32,
}

/// Number of counter slots in [`VmalabInfo::counters`] (room to grow).
pub const VMALAB_NR_COUNTERS: usize = 32;

/// Counter: faults resolved without sleeping and without a per-region reference or
/// lock held across a sleep: by `map_pages`, or by the first, atomic step of `->fault`.
pub const VMALAB_CTR_FAULT_FAST: usize = 0;
/// Counter: faults resolved by the slow path of `->fault` (may sleep; takes the
/// engine's lock or a per-region reference).
pub const VMALAB_CTR_FAULT_SLOW: usize = 1;
/// Counter: faults answered with `SIGBUS` (no region at the address).
pub const VMALAB_CTR_FAULT_SIGBUS: usize = 2;
/// Counter (`spf`, `rcu` with [`VMALAB_CONFIG_DEFERRED`]): fault attempts whose
/// check under the PTE lock found that a writer had taken their region out (nothing
/// installed; `spf` tries again, `rcu` lets the access fault again, fault-around
/// leaves the fault to `->fault`).
pub const VMALAB_CTR_FAULT_RETRY: usize = 3;
/// Counter: faults answered with `VM_FAULT_OOM`.
pub const VMALAB_CTR_FAULT_OOM: usize = 4;
/// Counter: extra pages mapped around a fault by `map_pages`.
pub const VMALAB_CTR_FAULT_AROUND: usize = 5;
/// Counter: pages allocated for regions.
pub const VMALAB_CTR_PAGE_ALLOC: usize = 6;
/// Counter: pages released by regions (on unmap and close).
pub const VMALAB_CTR_PAGE_FREE: usize = 7;
/// Counter: page allocations lost to a concurrent fault on the same page.
pub const VMALAB_CTR_PAGE_RACE: usize = 8;
/// Counter: first touches of a slow-backed page (each one slept).
pub const VMALAB_CTR_SLOW_SLEEP: usize = 9;
/// Counter: successful map ioctls.
pub const VMALAB_CTR_MAP: usize = 10;
/// Counter: successful unmap ioctls.
pub const VMALAB_CTR_UNMAP: usize = 11;
/// Counter: regions a `REPLACE` map took out (whole or cut).
pub const VMALAB_CTR_REPLACED: usize = 12;
/// Counter: regions freed.
pub const VMALAB_CTR_REGION_FREE: usize = 13;
/// Counter: page-table zaps issued by unmap/replace.
pub const VMALAB_CTR_ZAP: usize = 14;
/// Counter: nanoseconds spent in map/unmap ioctls (writer latency, summed).
pub const VMALAB_CTR_WRITER_NS: usize = 15;
/// Counter: writes to cache lines shared between CPUs made by the engine's own
/// fault-path code (lock/refcount atomics), counted by the engine.
pub const VMALAB_CTR_SHARED_WRITES: usize = 16;
/// Counter: grace periods writers waited for (`synchronize_rcu`).
pub const VMALAB_CTR_GRACE_PERIODS: usize = 17;
/// Counter: removed regions whose slow-path references a writer had to wait for.
pub const VMALAB_CTR_REFCOUNT_WAITS: usize = 18;
/// Counter: faults answered with `SIGSEGV` (a write to a read-only region).
pub const VMALAB_CTR_FAULT_SIGSEGV: usize = 19;
/// Counter: successful protect ioctls.
pub const VMALAB_CTR_PROTECT: usize = 20;
/// Counter (`percpu`): per-CPU reader counters writers read while summing them (one
/// line each; Dumazet's O(CPUs) per writer).
pub const VMALAB_CTR_PERCPU_LINES: usize = 21;
/// Counter (`rwsem`, `percpu`, `percpu+sem`, `pi`): read locks (faults, `pfn_mkwrite`
/// lookups) that waited for a writer — on `pi`, each one boosted it.
pub const VMALAB_CTR_READ_WAITS: usize = 22;
/// Counter (`spf`): faults that gave up speculating after repeated retries and took
/// the writers' mutex.
pub const VMALAB_CTR_FAULT_FALLBACK: usize = 23;
/// Counter (`spf`, `rcu` with [`VMALAB_CONFIG_DEFERRED`]): writer operations whose
/// memory a worker freed after a grace period (deferred reclaim).
pub const VMALAB_CTR_DEFERRED_FREES: usize = 24;
/// Counter (`ptshard`): span locks taken by faults (`map_pages`, `->fault`,
/// `pfn_mkwrite` lookups). Each is a write to the span's own line, shared only with
/// faults in the same 2 MiB — not counted in [`VMALAB_CTR_SHARED_WRITES`], which
/// counts lines every faulting CPU of the arena writes.
pub const VMALAB_CTR_SPAN_LOCKS: usize = 25;
/// Counter (`range`, `ptshard`): writers whose range lock waited (`range`: for faults
/// or a writer in its pages; `ptshard`: for a writer in its 2 MiB spans).
pub const VMALAB_CTR_WRITER_WAITS: usize = 26;
/// Number of counters currently defined.
pub const VMALAB_CTR_DEFINED: usize = 27;

/// Counter names, indexed by `VMALAB_CTR_*`.
pub const COUNTER_NAMES: [&str; VMALAB_CTR_DEFINED] = [
    "fault_fast",
    "fault_slow",
    "fault_sigbus",
    "fault_retry",
    "fault_oom",
    "fault_around",
    "page_alloc",
    "page_free",
    "page_race",
    "slow_sleep",
    "map",
    "unmap",
    "replaced",
    "region_free",
    "zap",
    "writer_ns",
    "shared_writes",
    "grace_periods",
    "refcount_waits",
    "fault_sigsegv",
    "protect",
    "percpu_lines",
    "read_waits",
    "fault_fallback",
    "deferred_frees",
    "span_locks",
    "writer_waits",
];

/// Argument of [`VMALAB_IOC_INFO`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmalabInfo {
    /// The engine id in use (0 until the engine is fixed by the first map or mmap).
    pub engine: u32,
    /// The `VMALAB_CONFIG_*` flags in use.
    pub flags: u32,
    /// Number of regions currently mapped.
    pub regions: u64,
    /// Arena size in bytes (0 while not yet fixed).
    pub arena_size: u64,
    /// Bytes of kernel memory held by region bookkeeping (structures and page slots,
    /// not the pages themselves).
    pub meta_bytes: u64,
    /// Pages currently held by regions.
    pub pages: u64,
    /// Counters, indexed by `VMALAB_CTR_*`, summed over CPUs.
    pub counters: [u64; VMALAB_NR_COUNTERS],
}

impl Default for VmalabInfo {
    fn default() -> Self {
        Self {
            engine: 0,
            flags: 0,
            regions: 0,
            arena_size: 0,
            meta_bytes: 0,
            pages: 0,
            counters: [0; VMALAB_NR_COUNTERS],
        }
    }
}
