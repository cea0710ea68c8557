//! The randomized client: bounded-time fuzzing of every ioctl and of the arena VMA.
//!
//! - [`fuzz_sequence`]: one thread, random sequences of every ioctl (junk, boundary,
//!   overflowing, overlapping, out-of-arena and bad-pointer arguments), `mmap` /
//!   `munmap` / `mremap` / `mprotect` / `madvise` / `fork` on the arena and probing
//!   loads/stores, checked against a shadow model of the regions and their data.
//! - [`fuzz_threads_close`] / [`fuzz_threads_munmap`]: `ctx.threads` threads issue
//!   random ioctls, probes and `madvise` calls while the main thread closes the device
//!   (resp. unmaps the arena) at a random moment.
//!
//! Every call must succeed or fail with an errno from [`ALLOWED`]. Each test prints
//! `#   seed 0x…`; a failure names the seed, the operation index and the call, and
//! shows the operations before it.
//!
//! Environment: `VMALAB_FUZZ_SEED` (decimal or `0x` hex; default: from the clock),
//! `VMALAB_FUZZ_SECS` (time budget of `fuzz_sequence`, default 8 s; the two threaded
//! variants get half of it each, in rounds of 0.1–1 s), `VMALAB_FUZZ_OPS` (operation
//! cap, per thread for the threaded tests; for `fuzz_sequence` the same seed replays
//! the same calls, so a cap just past a failing index reproduces it),
//! `VMALAB_FUZZ_TRACE=1` (print every call of `fuzz_sequence` with its result and
//! duration), `VMALAB_FUZZ_HUGE=1` (also issue valid MAPs longer than
//! [`HUGE_REGION`]).

use crate::{Ctx, Outcome, TestResult};
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fmt::Write as _,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::SeqCst},
        Mutex,
    },
    time::{Duration, Instant},
};
use vmalab::{probe, uapi, Device, Errno, PAGE_SIZE};

// ---------------------------------------------------------------------------------
// What a call may return
// ---------------------------------------------------------------------------------

/// The kinds of call the fuzzer checks errnos for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Call {
    /// A vmalab ioctl (CONFIG, MAP, UNMAP, INFO), a junk ioctl number or a bad pointer.
    Ioctl,
    /// An ioctl on a descriptor another thread may have closed (threaded test only).
    IoctlRacingClose,
    /// `mmap` of the device.
    Mmap,
    /// `munmap` of the arena or of part of it.
    Munmap,
    /// `mremap` of the arena or of part of it.
    Mremap,
    /// `mprotect` of the arena or of part of it.
    Mprotect,
    /// `madvise` on the arena or part of it.
    Madvise,
}

/// THE errno table: besides success, each kind of call may fail only with these.
/// Anything else fails the test. Every entry says why it is legitimate.
const ALLOWED: &[(Call, &[Errno])] = &[
    (
        Call::Ioctl,
        &[
            // Malformed argument: alignment, zero or oversized length, overflow, outside
            // the arena, unknown flags/engine/backing/protection, reserved != 0, MAP
            // before the arena size is known, CONFIG arena_size above
            // VMALAB_MAX_ARENA_SIZE (uapi.rs, space.rs, README "Limits, errnos").
            libc::EINVAL,
            // MAP without FIXED/REPLACE and no free gap; a MAP or split beyond the file's
            // budget (VMALAB_MAX_REGIONS regions, VMALAB_MAX_REGION_PAGES pages); an
            // allocation failure; PROTECT of a range with a page in no region.
            libc::ENOMEM,
            // MAP FIXED over an existing region.
            libc::EEXIST,
            // CONFIG after the engine was created or the arena mapped.
            libc::EBUSY,
            // Engine `none` after mmap; the test ioctls without test_hooks=1 (never issued).
            libc::EPERM,
            // A bad argument pointer (NULL, unmapped, read-only for MAP/INFO, kernel).
            libc::EFAULT,
            // An unknown ioctl number.
            libc::ENOTTY,
            // (E2BIG, in the initial set, is gone: nothing in the module or in
            // `ioctl(2)`'s path to it returns it, and it was never seen.)
        ],
    ),
    (
        Call::IoctlRacingClose,
        &[
            libc::EINVAL,
            libc::ENOMEM,
            libc::EEXIST,
            libc::EBUSY,
            libc::EPERM,
            libc::EFAULT,
            libc::ENOTTY,
            // The descriptor was closed by another thread (checked: only after close).
            libc::EBADF,
        ],
    ),
    (
        Call::Mmap,
        &[
            // MAP_PRIVATE, pgoff != 0, a length other than the configured arena size,
            // length 0, an unaligned offset (vm_ops.rs, space.rs, mm/mmap.c).
            libc::EINVAL,
            // The device is already mapped (even if that arena is gone since).
            libc::EBUSY,
            // No room for a huge length; length overflow in do_mmap.
            libc::ENOMEM,
            // (EPERM of the initial set dropped: never seen; PROT_EXEC, which a noexec
            // /dev would refuse with EPERM, is never asked for.)
            // MAP_SHARED_VALIDATE with an unknown flag bit (do_mmap).
            libc::EOPNOTSUPP,
            // A file offset so large that the mapping would end past the largest file
            // position a driver may use (mm/mmap.c: file_mmap_ok).
            libc::EOVERFLOW,
        ],
    ),
    (
        Call::Munmap,
        &[
            // Part of the arena (the arena refuses to split: may_split), unaligned
            // address, length 0.
            libc::EINVAL,
            // (The initial set also had ENOMEM, EPERM, EAGAIN and EFAULT. Dropped: never
            // seen, and munmap(2) returns them only for a split over the map count
            // limit or a sealed mapping, neither of which an arena can be.)
        ],
    ),
    (
        Call::Mremap,
        &[
            // Shrinking (needs a split), moving (vm_ops->mremap refuses), part of the
            // arena, MREMAP_DONTUNMAP on a VM_DONTEXPAND mapping, bad flags/lengths.
            libc::EINVAL,
            // Growing a VM_DONTEXPAND mapping (mm/mremap.c: vrm_check_vma / resize).
            libc::EFAULT,
            // (ENOMEM, EPERM and EAGAIN of the initial set dropped: never seen; growing
            // fails EFAULT before any room is looked for, and the arena is neither
            // sealed nor mlocked.)
        ],
    ),
    (
        Call::Mprotect,
        &[
            // Part of the arena with a different protection (would split: may_split),
            // unaligned address, PROT_GROWSDOWN on a mapping that does not grow.
            libc::EINVAL,
            // (ENOMEM, EPERM, EAGAIN and EFAULT of the initial set dropped: never seen;
            // the fuzzer never asks for a range outside the arena, and the arena is not
            // sealed.)
        ],
    ),
    (
        Call::Madvise,
        &[
            // Advice refused for a VM_SPECIAL (VM_IO, VM_MIXEDMAP) or non-anonymous mapping:
            // DOFORK, DODUMP, FREE, WIPEONFORK, GUARD_*, HUGEPAGE without THP, COLLAPSE,
            // MERGEABLE without KSM; advice that changes VMA flags on part of the arena
            // (would split); an unaligned address; an unknown advice; MADV_POPULATE_* on
            // the arena, which is VM_IO (GUP refuses it: "incompatible mapping"), or on
            // the PROT_NONE stand-in of an unmapped arena.
            libc::EINVAL,
            // (ENOMEM, EPERM and EAGAIN of the initial set dropped: never seen; ranges
            // are always inside the arena or its PROT_NONE stand-in.)
            // (EFAULT, seen while the arena was not VM_IO — MADV_POPULATE_* over a page
            // with no region, the fault's SIGBUS reported as EFAULT — is gone: GUP now
            // refuses the whole arena with EINVAL, so EFAULT would mean VM_IO was lost.)
            // MADV_REMOVE punches a hole with vfs_fallocate(), which refuses anything
            // but regular files and block devices (fs/open.c).
            libc::ENODEV,
        ],
    ),
];

fn allowed(call: Call, e: Errno) -> bool {
    ALLOWED
        .iter()
        .any(|(c, set)| *c == call && set.contains(&e))
}

/// Valid MAPs longer than this (bytes) that fit the file's page budget are only issued
/// with `VMALAB_FUZZ_HUGE=1`: each allocates up to 128 MiB of page slots, filled one by
/// one, which takes seconds under TCG and would eat the time budget. (Lengths beyond
/// the budget are issued: they must fail ENOMEM before allocating anything.) 64 MiB.
const HUGE_REGION: u64 = 64 << 20;

// ---------------------------------------------------------------------------------
// Randomness, budgets, reporting
// ---------------------------------------------------------------------------------

/// splitmix64: tiny, deterministic, good enough.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 if `n == 0`).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    /// Index into `weights`, chosen with probability proportional to each weight.
    fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut r = self.below(weights.iter().sum());
        for (i, &w) in weights.iter().enumerate() {
            if r < w {
                return i;
            }
            r -= w;
        }
        weights.len() - 1
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

/// The run's seed: `VMALAB_FUZZ_SEED`, else the clock.
fn base_seed() -> u64 {
    env_u64("VMALAB_FUZZ_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u64;
        Rng::new(t ^ (pid << 32)).next()
    })
}

/// Each test draws from its own stream of the run's seed.
fn test_seed(seed: u64, test: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in test.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    Rng::new(seed ^ h).next()
}

/// The time budget per test.
fn budget() -> Duration {
    let secs = std::env::var("VMALAB_FUZZ_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| *s >= 0.0)
        .unwrap_or(8.0);
    Duration::from_secs_f64(secs)
}

fn announce(seed: u64, ctx: &Ctx, test: &str) {
    println!(
        "#   seed {seed:#x} (replay: VMALAB_FUZZ_SEED={seed:#x} vmalab-selftests --engine {} --filter {test})",
        ctx.engine.name
    );
}

fn ename(e: Errno) -> String {
    let n = match e {
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::EACCES => "EACCES",
        libc::E2BIG => "E2BIG",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ESPIPE => "ESPIPE",
        libc::ENOSYS => "ENOSYS",
        libc::ETXTBSY => "ETXTBSY",
        _ => return vmalab::errno_name(e),
    };
    n.to_string()
}

fn res<T: std::fmt::Debug>(r: &Result<T, Errno>) -> String {
    match r {
        Ok(v) => format!("ok {v:x?}"),
        Err(e) => ename(*e),
    }
}

fn errno() -> Errno {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

// ---------------------------------------------------------------------------------
// Raw calls
// ---------------------------------------------------------------------------------

const P: u64 = PAGE_SIZE as u64;
/// The highest page-aligned u64.
const LAST_PAGE: u64 = !(P - 1);

fn ioctl(fd: i32, cmd: u32, arg: usize) -> Result<i64, Errno> {
    // SAFETY: Every caller passes either a pointer to a live buffer of the size `cmd`
    // encodes, or an address that is not ours (NULL, PROT_NONE, kernel, non-canonical),
    // or an unknown command; the kernel validates the rest.
    let r = unsafe { libc::ioctl(fd, cmd as libc::c_ulong, arg) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(i64::from(r))
    }
}

fn sys_mmap(
    addr: usize,
    len: u64,
    prot: i32,
    flags: i32,
    fd: i32,
    off: u64,
) -> Result<usize, Errno> {
    // SAFETY: Callers only pass MAP_FIXED for ranges they own (the arena, the scratch
    // reservation); otherwise the kernel picks a free range.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len as usize,
            prot,
            flags,
            fd,
            off as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        Err(errno())
    } else {
        Ok(p as usize)
    }
}

fn sys_ret(r: libc::c_int) -> Result<(), Errno> {
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

fn sys_munmap(addr: usize, len: u64) -> Result<(), Errno> {
    // SAFETY: Callers pass ranges inside the arena (or the arena itself).
    sys_ret(unsafe { libc::munmap(addr as *mut libc::c_void, len as usize) })
}

fn sys_mprotect(addr: usize, len: u64, prot: i32) -> Result<(), Errno> {
    // SAFETY: Callers pass ranges inside the arena.
    sys_ret(unsafe { libc::mprotect(addr as *mut libc::c_void, len as usize, prot) })
}

fn sys_madvise(addr: usize, len: u64, advice: i32) -> Result<(), Errno> {
    // SAFETY: Callers pass ranges inside the arena (or inside a PROT_NONE reservation
    // that replaced it); no advice used here can affect other memory.
    sys_ret(unsafe { libc::madvise(addr as *mut libc::c_void, len as usize, advice) })
}

fn sys_mremap(
    old: usize,
    old_len: u64,
    new_len: u64,
    flags: i32,
    new: usize,
) -> Result<usize, Errno> {
    // SAFETY: `old` is in the arena; with MREMAP_FIXED, `new` is our scratch
    // reservation, which the caller re-reserves afterwards.
    let p = unsafe {
        libc::mremap(
            old as *mut libc::c_void,
            old_len as usize,
            new_len as usize,
            flags,
            new as *mut libc::c_void,
        )
    };
    if p == libc::MAP_FAILED {
        Err(errno())
    } else {
        Ok(p as usize)
    }
}

/// A private PROT_NONE reservation of `len` bytes at `addr` (MAP_FIXED) or anywhere.
fn reserve(addr: usize, len: u64) -> Result<usize, Errno> {
    let fixed = if addr != 0 { libc::MAP_FIXED } else { 0 };
    sys_mmap(
        addr,
        len,
        libc::PROT_NONE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | fixed,
        -1,
        0,
    )
}

/// The `/dev/vmalab` mappings of this process, as `(start, end)`.
fn device_vmas() -> Vec<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter(|l| l.ends_with(vmalab::DEVICE_PATH))
        .filter_map(|l| {
            let range = l.split_whitespace().next()?;
            let (a, b) = range.split_once('-')?;
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect()
}

/// The bytes of a `#[repr(C)]` UAPI struct (all are padding-free integer structs).
fn bytes_of<T: Copy>(t: &T) -> Vec<u8> {
    // SAFETY: `t` is a live `T`; the UAPI structs have no padding (vmalab_main.rs), so
    // every byte is initialised.
    unsafe { std::slice::from_raw_parts((t as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

// Advice numbers (asm-generic/mman-common.h), spelled out: libc lacks some.
const MADV_NORMAL: i32 = 0;
const MADV_RANDOM: i32 = 1;
const MADV_SEQUENTIAL: i32 = 2;
const MADV_WILLNEED: i32 = 3;
const MADV_DONTNEED: i32 = 4;
const MADV_FREE: i32 = 8;
const MADV_REMOVE: i32 = 9;
const MADV_DONTFORK: i32 = 10;
const MADV_DOFORK: i32 = 11;
const MADV_MERGEABLE: i32 = 12;
const MADV_UNMERGEABLE: i32 = 13;
const MADV_HUGEPAGE: i32 = 14;
const MADV_NOHUGEPAGE: i32 = 15;
const MADV_DONTDUMP: i32 = 16;
const MADV_DODUMP: i32 = 17;
const MADV_WIPEONFORK: i32 = 18;
const MADV_KEEPONFORK: i32 = 19;
const MADV_COLD: i32 = 20;
const MADV_PAGEOUT: i32 = 21;
const MADV_POPULATE_READ: i32 = 22;
const MADV_POPULATE_WRITE: i32 = 23;
const MADV_DONTNEED_LOCKED: i32 = 24;
const MADV_COLLAPSE: i32 = 25;
const MADV_GUARD_INSTALL: i32 = 102;
const MADV_GUARD_REMOVE: i32 = 103;

/// Every advice the fuzzer gives (never HWPOISON/SOFT_OFFLINE: they damage pages for
/// real), plus one unknown number.
const ADVICE: &[(i32, &str)] = &[
    (MADV_DONTNEED, "DONTNEED"),
    (MADV_DOFORK, "DOFORK"),
    (MADV_DONTFORK, "DONTFORK"),
    (MADV_WILLNEED, "WILLNEED"),
    (MADV_REMOVE, "REMOVE"),
    (MADV_FREE, "FREE"),
    (MADV_POPULATE_READ, "POPULATE_READ"),
    (MADV_POPULATE_WRITE, "POPULATE_WRITE"),
    (MADV_COLD, "COLD"),
    (MADV_PAGEOUT, "PAGEOUT"),
    (MADV_NORMAL, "NORMAL"),
    (MADV_RANDOM, "RANDOM"),
    (MADV_SEQUENTIAL, "SEQUENTIAL"),
    (MADV_DONTDUMP, "DONTDUMP"),
    (MADV_DODUMP, "DODUMP"),
    (MADV_WIPEONFORK, "WIPEONFORK"),
    (MADV_KEEPONFORK, "KEEPONFORK"),
    (MADV_HUGEPAGE, "HUGEPAGE"),
    (MADV_NOHUGEPAGE, "NOHUGEPAGE"),
    (MADV_MERGEABLE, "MERGEABLE"),
    (MADV_UNMERGEABLE, "UNMERGEABLE"),
    (MADV_DONTNEED_LOCKED, "DONTNEED_LOCKED"),
    (MADV_COLLAPSE, "COLLAPSE"),
    (MADV_GUARD_INSTALL, "GUARD_INSTALL"),
    (MADV_GUARD_REMOVE, "GUARD_REMOVE"),
    (77, "unknown(77)"),
];

/// Ioctl numbers that are not vmalab's: junk `nr`s and sizes with vmalab's type, and
/// the real commands with the wrong direction or size. Never a test ioctl (TEST_WARN
/// WARNs and TEST_HOOKS arms mutants when the module runs with test_hooks=1) and never
/// a real command.
fn junk_cmd(rng: &mut Rng) -> u32 {
    let real = [
        uapi::VMALAB_IOC_CONFIG,
        uapi::VMALAB_IOC_MAP,
        uapi::VMALAB_IOC_UNMAP,
        uapi::VMALAB_IOC_INFO,
        uapi::VMALAB_IOC_PROTECT,
        uapi::VMALAB_IOC_SYNC,
        uapi::VMALAB_IOC_TEST_WARN,
        uapi::VMALAB_IOC_TEST_HOOKS,
    ];
    loop {
        let cmd = match rng.below(5) {
            0 => (uapi::VMALAB_IOC_MAGIC << 8) | rng.below(256) as u32,
            1 => {
                (rng.below(4) as u32) << 30
                    | (rng.below(1 << 14) as u32) << 16
                    | (uapi::VMALAB_IOC_MAGIC << 8)
                    | rng.below(256) as u32
            }
            // A real command with another direction or size.
            2 => rng.pick(&real[..4]) ^ (1 << (16 + rng.below(16))),
            3 => rng.pick(&real[..4]) ^ (1 << (30 + rng.below(2))),
            // TCGETS: a tty ioctl on a misc device.
            _ => 0x5401,
        };
        if !real.contains(&cmd) {
            return cmd;
        }
    }
}

// ---------------------------------------------------------------------------------
// The shadow model
// ---------------------------------------------------------------------------------

/// One region as the fuzzer believes it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reg {
    /// Length in bytes.
    len: u64,
    /// Which MAP created its pages; the parts of a split share it.
    origin: u64,
    /// Byte offset of its first page in that MAP's pages.
    first: u64,
    /// Slow-backed.
    slow: bool,
    /// Read-only (PROTECT).
    ro: bool,
}

impl Reg {
    /// Whether `next`, placed right after `self` at `gap == 0`, continues its pages with
    /// the same protection (the module then merges them into one region).
    fn continued_by(&self, next: &Reg) -> bool {
        self.origin == next.origin && self.first + self.len == next.first && self.ro == next.ro
    }
}

/// What the fuzzer believes about the regions and their data.
#[derive(Default)]
struct Model {
    /// start -> region.
    regions: BTreeMap<u64, Reg>,
    /// Known words in regions: offset -> value; `None` = written by the kernel with
    /// something we cannot predict. Words not listed read as zero.
    words: HashMap<u64, Option<u64>>,
    /// The next MAP's origin.
    next_origin: u64,
}

impl Model {
    /// Bytes of slow-backed regions inside `[s, e)`.
    fn slow_bytes(&self, s: u64, e: u64) -> u64 {
        self.regions
            .iter()
            .filter(|(_, r)| r.slow)
            .map(|(&rs, r)| (rs + r.len).min(e).saturating_sub(rs.max(s)))
            .sum()
    }
    /// Regions intersecting `[s, e)`, as `(start, length)`.
    fn overlapping(&self, s: u64, e: u64) -> Vec<(u64, u64)> {
        self.regions
            .iter()
            .filter(|&(&rs, r)| rs < e && rs + r.len > s)
            .map(|(&rs, r)| (rs, r.len))
            .collect()
    }
    fn region_at(&self, off: u64) -> Option<(u64, u64)> {
        self.overlapping(off, off + 1).first().copied()
    }
    /// Whether the page at `off` is in a read-only region.
    fn read_only_at(&self, off: u64) -> bool {
        self.region_at(off)
            .and_then(|(s, _)| self.regions.get(&s))
            .is_some_and(|r| r.ro)
    }
    /// Whether every byte of `[s, e)` is in some region.
    fn covers(&self, s: u64, e: u64) -> bool {
        let mut at = s;
        for (rs, rl) in self.overlapping(s, e) {
            if rs > at {
                return false;
            }
            at = rs + rl;
        }
        at >= e
    }
    /// Removes `[s, e)` from the regions, keeping the parts of those it cuts (same
    /// pages), and forgets the words there (UNMAP, REPLACE).
    fn cut(&mut self, s: u64, e: u64) {
        for (rs, _) in self.overlapping(s, e) {
            let r = self.regions.remove(&rs).expect("listed");
            if rs < s {
                self.regions.insert(rs, Reg { len: s - rs, ..r });
            }
            if rs + r.len > e {
                let len = rs + r.len - e;
                let first = r.first + (e - rs);
                self.regions.insert(e, Reg { len, first, ..r });
            }
        }
        self.words.retain(|&o, _| o < s || o >= e);
    }
    /// How many regions a cut of `[s, e)` would leave.
    fn regions_after_cut(&self, s: u64, e: u64) -> usize {
        let over = self.overlapping(s, e);
        let kept = over.iter().filter(|&&(rs, _)| rs < s).count()
            + over.iter().filter(|&&(rs, rl)| rs + rl > e).count();
        self.regions.len() - over.len() + kept
    }
    /// A new region of `len` bytes at `o` (over nothing: the caller cut first).
    fn add(&mut self, o: u64, len: u64, slow: bool) {
        self.next_origin += 1;
        let origin = self.next_origin;
        let r = Reg {
            len,
            origin,
            first: 0,
            slow,
            ro: false,
        };
        self.regions.insert(o, r);
    }
    /// PROTECT `[s, e)` (covered): splits at its ends, then merges neighbours that
    /// continue each other, as the module does.
    fn protect(&mut self, s: u64, e: u64, ro: bool) {
        for (rs, _) in self.overlapping(s, e) {
            let r = self.regions.remove(&rs).expect("listed");
            let (ms, me) = (rs.max(s), (rs + r.len).min(e));
            if rs < ms {
                self.regions.insert(rs, Reg { len: ms - rs, ..r });
            }
            let first = r.first + (ms - rs);
            self.regions.insert(
                ms,
                Reg {
                    len: me - ms,
                    first,
                    ro,
                    ..r
                },
            );
            if rs + r.len > me {
                let first = r.first + (me - rs);
                let len = rs + r.len - me;
                self.regions.insert(me, Reg { len, first, ..r });
            }
        }
        let all: Vec<(u64, Reg)> = self.regions.iter().map(|(&k, &r)| (k, r)).collect();
        let mut merged: Vec<(u64, Reg)> = Vec::new();
        for (k, r) in all {
            match merged.last_mut() {
                Some((ls, l)) if *ls + l.len == k && l.continued_by(&r) => l.len += r.len,
                _ => merged.push((k, r)),
            }
        }
        self.regions = merged.into_iter().collect();
    }
    /// Pages held by all regions.
    fn pages(&self) -> u64 {
        self.regions.values().map(|r| r.len / P).sum()
    }

    /// First-fit gap of `len` bytes in an arena of `arena` bytes.
    fn first_fit(&self, len: u64, arena: u64) -> Option<u64> {
        let mut prev = 0;
        for (&s, r) in &self.regions {
            if s - prev >= len {
                return Some(prev);
            }
            prev = s + r.len;
        }
        (arena.saturating_sub(prev) >= len).then_some(prev)
    }
    /// Marks the words of `[a, a + len)` as unknown (the kernel wrote there).
    fn clobber(&mut self, a: u64, len: u64) {
        for o in (a & !7..a + len).step_by(8) {
            if self.region_at(o).is_some() {
                self.words.insert(o, None);
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// fuzz_sequence
// ---------------------------------------------------------------------------------

/// The arena as mapped in this process.
#[derive(Clone, Copy, Debug)]
struct ArenaMap {
    base: usize,
    size: u64,
    prot: i32,
}

/// One open device (address space) and what we know about it.
struct Episode {
    dev: Option<Device>,
    /// The arena, while it is mapped.
    arena: Option<ArenaMap>,
    /// An mmap of this device succeeded once (a second one must fail).
    mmapped: bool,
    /// Arena size from INFO (0: not fixed yet).
    arena_size: u64,
    /// Engine from INFO (0: not created yet).
    engine: u32,
    /// The shadow model (`None` where the fuzzer cannot follow, see its uses).
    model: Option<Model>,
    /// The engine the last successful CONFIG chose (None: the module's default).
    want_engine: Option<u32>,
    /// Valid engine ids carried by CONFIGs that failed.
    failed_engines: Vec<u32>,
}

impl Episode {
    fn can_modify(&self) -> bool {
        !(self.mmapped && self.engine == uapi::VMALAB_ENGINE_NONE)
    }
}

/// Where an ioctl argument lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ptr {
    /// A buffer of ours.
    Good,
    /// A buffer of ours at an odd address.
    Unaligned,
    /// NULL.
    Null,
    /// Address 16.
    Sixteen,
    /// A page below mmap_min_addr: never mapped.
    Unmapped,
    /// A read-only page holding the argument.
    ReadOnly,
    /// A PROT_NONE page.
    NoAccess,
    /// The first page above the 47-bit user address space.
    TopOfUser,
    /// A non-canonical address.
    NonCanonical,
    /// A kernel address.
    Kernel,
    /// Inside the arena at this offset (8-aligned).
    InArena(u64),
}

impl Ptr {
    /// Whether the kernel must answer EFAULT whatever the command.
    fn always_faults(self) -> bool {
        matches!(
            self,
            Ptr::Null
                | Ptr::Sixteen
                | Ptr::Unmapped
                | Ptr::NoAccess
                | Ptr::TopOfUser
                | Ptr::NonCanonical
                | Ptr::Kernel
        )
    }
}

/// Fixed helpers: a read-only page, a PROT_NONE page, a reservation for mremap
/// targets, a buffer for arguments.
struct Scratch {
    ro: usize,
    none: usize,
    remap: usize,
    buf: Vec<u64>,
}

/// Largest arena `mremap(MREMAP_FIXED)` may try to move into the scratch reservation.
const REMAP_MAX: u64 = 64 << 20;

/// Largest range the fuzzer populates (MAP_POPULATE/MAP_LOCKED, MADV_POPULATE_*):
/// bounds the memory and time a run can spend.
const POPULATE_MAX: u64 = 64 << 20;

impl Scratch {
    fn new() -> Result<Self, String> {
        let ro = sys_mmap(
            0,
            P,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
        .map_err(|e| format!("scratch mmap: {}", ename(e)))?;
        let none = reserve(0, P).map_err(|e| format!("scratch: {}", ename(e)))?;
        let remap = reserve(0, REMAP_MAX).map_err(|e| format!("scratch: {}", ename(e)))?;
        Ok(Self {
            ro,
            none,
            remap,
            buf: vec![0; 128],
        })
    }

    /// Puts `bytes` in the read-only page.
    fn fill_ro(&self, bytes: &[u8]) -> Result<(), String> {
        sys_mprotect(self.ro, P, libc::PROT_READ | libc::PROT_WRITE)
            .map_err(|e| format!("mprotect scratch: {}", ename(e)))?;
        // SAFETY: `ro` is our own page, now writable; `bytes` fits (≤ 1 KiB).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ro as *mut u8, bytes.len()) };
        sys_mprotect(self.ro, P, libc::PROT_READ)
            .map_err(|e| format!("mprotect scratch: {}", ename(e)))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = sys_munmap(self.ro, P);
        let _ = sys_munmap(self.none, P);
        let _ = sys_munmap(self.remap, REMAP_MAX);
    }
}

/// Counters for the summary line.
#[derive(Default)]
struct Tally {
    /// op -> (calls, successes)
    ops: BTreeMap<&'static str, (u64, u64)>,
    /// (op, errno) -> count
    errnos: BTreeMap<(&'static str, Errno), u64>,
}

impl Tally {
    fn add<T>(&mut self, op: &'static str, r: &Result<T, Errno>) {
        let e = self.ops.entry(op).or_default();
        e.0 += 1;
        match r {
            Ok(_) => e.1 += 1,
            Err(x) => *self.errnos.entry((op, *x)).or_default() += 1,
        }
    }
    fn merge(&mut self, o: Tally) {
        for (k, (n, ok)) in o.ops {
            let e = self.ops.entry(k).or_default();
            e.0 += n;
            e.1 += ok;
        }
        for (k, n) in o.errnos {
            *self.errnos.entry(k).or_default() += n;
        }
    }

    fn summary(&self) -> String {
        let mut s = String::new();
        for (op, (n, ok)) in &self.ops {
            let _ = write!(s, " {op} {ok}/{n}");
        }
        let mut e = String::new();
        for ((op, x), n) in &self.errnos {
            let _ = write!(e, " {op}:{}x{n}", ename(*x));
        }
        format!("ok/calls:{s}\nerrnos:{e}")
    }
}

/// A violated expectation.
type Check = Result<(), String>;

/// Expectations evaluated (for the summary: proof that the checks ran).
static CHECKS: AtomicU64 = AtomicU64::new(0);

fn expect(cond: bool, msg: impl FnOnce() -> String) -> Check {
    CHECKS.fetch_add(1, SeqCst);
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

fn errno_ok<T>(call: Call, r: &Result<T, Errno>) -> Check {
    match r {
        Err(e) if !allowed(call, *e) => Err(format!(
            "{call:?} failed with {}, which is not in the allowed set",
            ename(*e)
        )),
        _ => Ok(()),
    }
}

struct Seq<'a> {
    ctx: &'a Ctx,
    rng: Rng,
    seed: u64,
    idx: u64,
    hist: VecDeque<String>,
    tally: Tally,
    /// kind -> (first message, count)
    notes: BTreeMap<&'static str, (String, u64)>,
    huge: bool,
    trace: bool,
    probes_checked: u64,
    words_checked: u64,
    skipped_huge: u64,
    scratch: Scratch,
    ep: Episode,
    episodes: u64,
}

/// Operations slower than this are listed in the output.
const SLOW_OP: Duration = Duration::from_millis(500);

/// The outcome of one operation: a line for the history, or a violation.
type Step = Result<String, String>;

impl<'a> Seq<'a> {
    fn new(ctx: &'a Ctx, seed: u64) -> Result<Self, String> {
        Ok(Self {
            ctx,
            rng: Rng::new(seed),
            seed,
            idx: 0,
            hist: VecDeque::new(),
            tally: Tally::default(),
            notes: BTreeMap::new(),
            huge: env_flag("VMALAB_FUZZ_HUGE"),
            trace: env_flag("VMALAB_FUZZ_TRACE"),
            probes_checked: 0,
            words_checked: 0,
            skipped_huge: 0,
            scratch: Scratch::new()?,
            ep: Episode {
                dev: None,
                arena: None,
                mmapped: false,
                arena_size: 0,
                engine: 0,
                model: None,
                want_engine: None,
                failed_engines: Vec::new(),
            },
            episodes: 0,
        })
    }

    /// Records a note of some kind: the first message is kept, the rest counted.
    fn note(&mut self, kind: &'static str, msg: String) {
        let e = self.notes.entry(kind).or_insert((msg, 0));
        e.1 += 1;
    }

    fn fd(&self) -> Option<i32> {
        self.ep.dev.as_ref().map(Device::fd)
    }

    /// Whether faulting in all of `[s, e)` is cheap enough: not too large, and not too
    /// many slow-backed pages (each first touch sleeps, and under TCG a short sleep
    /// costs milliseconds).
    fn may_populate(&self, s: u64, e: u64) -> bool {
        self.ep
            .model
            .as_ref()
            .is_some_and(|m| e - s <= POPULATE_MAX && m.slow_bytes(s, e) <= 64 * P)
    }

    /// A random region of the model, if any.
    fn pick_region(&mut self) -> Option<(u64, u64)> {
        let n = self.ep.model.as_ref()?.regions.len() as u64;
        let k = self.rng.below(n) as usize;
        let m = self.ep.model.as_ref()?;
        m.regions.iter().nth(k).map(|(&s, r)| (s, r.len))
    }

    fn remember(&mut self, line: String) {
        if self.hist.len() == 24 {
            self.hist.pop_front();
        }
        self.hist.push_back(line);
    }

    /// The arena size to aim values at (a guess while unknown).
    fn a(&self) -> u64 {
        if self.ep.arena_size != 0 {
            self.ep.arena_size
        } else {
            16 << 20
        }
    }

    fn info(&self) -> Result<uapi::VmalabInfo, String> {
        let fd = self.fd().ok_or("INFO with no device")?;
        let mut i = uapi::VmalabInfo::default();
        ioctl(fd, uapi::VMALAB_IOC_INFO, &mut i as *mut _ as usize)
            .map_err(|e| format!("INFO failed: {}", ename(e)))?;
        Ok(i)
    }

    /// Reads engine and arena size from INFO into the episode.
    fn refresh(&mut self) -> Result<uapi::VmalabInfo, String> {
        let i = self.info()?;
        self.saw_info(&i)?;
        Ok(i)
    }

    /// Takes engine and arena size from INFO; the engine, once created, must be the
    /// one the last successful CONFIG chose.
    fn saw_info(&mut self, i: &uapi::VmalabInfo) -> Check {
        if let (0, Some(w)) = (self.ep.engine, self.ep.want_engine) {
            if i.engine != 0 && i.engine != w {
                if self.ep.failed_engines.contains(&i.engine) {
                    return Err(format!(
                        "engine {} was created, the last successful CONFIG chose {w}; \
                         only a failed CONFIG carried {}",
                        i.engine, i.engine
                    ));
                } else {
                    return Err(format!(
                        "engine {} was created, the last successful CONFIG chose {w}",
                        i.engine
                    ));
                }
            }
        }
        self.ep.engine = i.engine;
        self.ep.arena_size = i.arena_size;
        Ok(())
    }

    fn run(&mut self, deadline: Instant, cap: u64) -> TestResult {
        while self.idx < cap && Instant::now() < deadline {
            if self.ep.dev.is_none() && self.ep.arena.is_none() {
                self.end_episode()
                    .map_err(|e| self.failure("episode end", e))?;
                self.begin_episode()
                    .map_err(|e| self.failure("episode start", e))?;
            }
            let t0 = Instant::now();
            let (desc, r) = self.step();
            let took = t0.elapsed();
            if took > SLOW_OP {
                self.note(
                    "slow",
                    format!("op #{} took {:.2} s: {desc}", self.idx, took.as_secs_f64()),
                );
            }
            if self.trace {
                println!(
                    "#   trace #{} {desc} -> {r:?} ({:.1} ms)",
                    self.idx,
                    took.as_secs_f64() * 1e3
                );
            }
            match r {
                Ok(out) => self.remember(format!("#{} {desc} -> {out}", self.idx)),
                Err(why) => return Err(Outcome::Fail(self.failure(&desc, why))),
            }
            self.idx += 1;
        }
        self.end_episode()
            .map_err(|e| self.failure("final episode end", e))?;
        Ok(())
    }

    fn failure(&self, desc: &str, why: String) -> String {
        let mut s = format!(
            "seed {:#x} ({}), op #{}: {desc}: {why}\nprevious ops:",
            self.seed, self.ctx.engine.name, self.idx
        );
        for h in &self.hist {
            let _ = write!(s, "\n  {h}");
        }
        s
    }

    fn begin_episode(&mut self) -> Check {
        self.episodes += 1;
        let dev = Device::open().map_err(|e| format!("open: {e}"))?;
        self.ep = Episode {
            dev: Some(dev),
            arena: None,
            mmapped: false,
            arena_size: 0,
            engine: 0,
            model: Some(Model::default()),
            want_engine: None,
            failed_engines: Vec::new(),
        };
        // Mostly start configured for the engine under test; sometimes leave it to the
        // random ops (module default engine, size fixed by mmap).
        if !self.rng.one_in(5) {
            let size = P * self.rng.pick(&[16, 64, 256, 1024, 4096]);
            let e = self.ctx.engine;
            let fd = self.fd().ok_or("no device")?;
            let mut c = uapi::VmalabConfig {
                engine: e.id,
                flags: e.flags,
                arena_size: size,
            };
            ioctl(fd, uapi::VMALAB_IOC_CONFIG, &mut c as *mut _ as usize)
                .map_err(|x| format!("initial CONFIG: {}", ename(x)))?;
            self.ep.want_engine = Some(e.id);
            self.refresh()?;
        }
        self.remember(format!(
            "-- episode {} (arena size {:#x})",
            self.episodes, self.ep.arena_size
        ));
        Ok(())
    }

    /// Closes the episode: final model check, unmap everything and check the page
    /// count drops to zero (a user-visible leak check), unmap the arena, close.
    fn end_episode(&mut self) -> Check {
        if self.ep.dev.is_some() {
            let i = self.info()?;
            if let Some(m) = &self.ep.model {
                expect(i.regions == m.regions.len() as u64, || {
                    format!("INFO.regions {} != model {}", i.regions, m.regions.len())
                })?;
            }
            let frozen = self.ep.mmapped && i.engine == uapi::VMALAB_ENGINE_NONE;
            if !frozen && i.arena_size != 0 && i.regions != 0 {
                let fd = self.fd().ok_or("no device")?;
                let mut u = uapi::VmalabUnmap {
                    offset: 0,
                    length: i.arena_size,
                };
                let r = ioctl(fd, uapi::VMALAB_IOC_UNMAP, &mut u as *mut _ as usize);
                if self.ep.model.is_some() {
                    r.map_err(|e| format!("final UNMAP of the whole arena: {}", ename(e)))?;
                    // Deferred reclaim (`spf`, `rcu+def`) frees after the UNMAP returns.
                    ioctl(fd, uapi::VMALAB_IOC_SYNC, 0)
                        .map_err(|e| format!("SYNC: {}", ename(e)))?;
                    let j = self.info()?;
                    expect(j.regions == 0 && j.pages == 0, || {
                        format!(
                            "after unmapping every region: {} regions, {} pages still held (leak?)",
                            j.regions, j.pages
                        )
                    })?;
                }
            }
        }
        if let Some(a) = self.ep.arena.take() {
            sys_munmap(a.base, a.size).map_err(|e| format!("munmap arena: {}", ename(e)))?;
        }
        self.ep.dev = None;
        expect(device_vmas().is_empty(), || {
            format!(
                "device mappings left after the episode: {:x?}",
                device_vmas()
            )
        })
    }

    /// One random operation: its description and outcome.
    fn step(&mut self) -> (String, Step) {
        let dev = self.ep.dev.is_some();
        let arena = self.ep.arena.is_some();
        let d = |b: bool, w: u64| if b { w } else { 0 };
        let weights = [
            d(dev, 3),          // 0 config
            d(dev, 22),         // 1 map
            d(dev, 12),         // 2 unmap
            d(dev, 6),          // 3 info
            d(dev, 5),          // 4 bad pointer
            d(dev, 3),          // 5 junk ioctl
            d(dev, 4),          // 6 mmap
            d(arena, 2),        // 7 munmap
            d(arena, 2),        // 8 mremap
            d(arena, 3),        // 9 mprotect
            d(arena, 6),        // 10 madvise
            d(arena, 25),       // 11 probe
            1,                  // 12 fork
            d(dev && arena, 1), // 13 close the device, keep the arena
            d(dev && arena, 1), // 14 another device's arena over ours
            d(dev, 4),          // 15 protect
            1,                  // 16 end the episode
        ];
        match self.rng.weighted(&weights) {
            0 => self.op_config(),
            1 => self.op_map(),
            2 => self.op_unmap(),
            3 => self.op_info(),
            4 => self.op_bad_pointer(),
            5 => self.op_junk_ioctl(),
            6 => self.op_mmap(),
            7 => self.op_munmap(),
            8 => self.op_mremap(),
            9 => self.op_mprotect(),
            10 => self.op_madvise(),
            11 => self.op_probe(),
            12 => self.op_fork(),
            13 => {
                self.ep.dev = None;
                ("close the device (arena stays)".into(), Ok("ok".into()))
            }
            14 => self.op_foreign(),
            15 => self.op_protect(),
            _ => {
                let r = self.end_episode().map(|()| "ok".to_string());
                ("end of episode".into(), r)
            }
        }
    }

    // -- value generators ------------------------------------------------------------

    fn gen_len(&mut self) -> u64 {
        let a = self.a();
        match self.rng.below(16) {
            0..=6 => P * (1 + self.rng.below(16)),
            7 => P * (1 + self.rng.below((a / P).max(1))),
            8 => a,
            9 => a.saturating_add(P),
            10 => 0,
            11 => P * self.rng.below(16) + 1 + self.rng.below(P - 1),
            12 => self.rng.pick(&[
                1 << 40,
                1 << 47,
                u64::MAX,
                LAST_PAGE,
                1 << 63,
                (i64::MAX as u64) & !(P - 1),
            ]),
            13 => self.rng.next(),
            14 => a.saturating_sub(P),
            _ => self.rng.next() & !(P - 1) & ((1u64 << self.rng.below(48)) - 1),
        }
    }

    fn gen_off(&mut self) -> u64 {
        let a = self.a();
        let near = self.pick_region();
        match self.rng.below(16) {
            0..=4 => P * self.rng.below((a / P).max(1)),
            5..=7 => match near {
                Some((s, l)) => {
                    let k = P * self.rng.below(4);
                    match self.rng.below(4) {
                        0 => s,
                        1 => s.saturating_sub(k),
                        2 => s + l,
                        _ => s + k,
                    }
                }
                None => P * self.rng.below(64),
            },
            8 => 0,
            9 => a,
            10 => a.saturating_sub(P),
            11 => a.saturating_add(P * self.rng.below(4)),
            12 => P * self.rng.below((a / P).max(1)) + 1 + self.rng.below(P - 1),
            13 => self
                .rng
                .pick(&[1 << 40, LAST_PAGE, u64::MAX, 1 << 63, LAST_PAGE - P]),
            14 => self.rng.next(),
            _ => P * self.rng.below(64),
        }
    }

    fn gen_arena_size(&mut self) -> u64 {
        match self.rng.below(10) {
            0..=4 => P * self.rng.pick(&[1, 2, 16, 256, 1024, 4096, 16384]),
            5 => 0,
            6 => P * self.rng.below(1024) + 1 + self.rng.below(P - 1),
            7 => self
                .rng
                .pick(&[1 << 40, 1 << 47, LAST_PAGE, u64::MAX, 1 << 63]),
            8 => self.rng.next(),
            _ => P * (1 + self.rng.below(16384)),
        }
    }

    fn gen_ptr(&mut self, in_arena_ok: bool) -> Ptr {
        let arena = self
            .ep
            .arena
            .filter(|a| a.prot == libc::PROT_READ | libc::PROT_WRITE);
        match self.rng.below(13) {
            0 => Ptr::Null,
            1 => Ptr::Sixteen,
            2 => Ptr::Unmapped,
            3 => Ptr::ReadOnly,
            4 => Ptr::NoAccess,
            5 => Ptr::TopOfUser,
            6 => Ptr::NonCanonical,
            7 => Ptr::Kernel,
            8 => Ptr::Unaligned,
            9..=10 if in_arena_ok && arena.is_some() => {
                let a = arena.map_or(P, |a| a.size);
                // Prefer a region's page, so that the argument can be read.
                let off = match self.pick_region() {
                    Some((s, l)) if self.rng.below(4) != 0 => s + (self.rng.below(l) & !7),
                    _ => self.rng.below(a) & !7,
                };
                let off = off.min(a.saturating_sub(8)) & !7;
                // Not into a read-only region: the kernel could read an argument there
                // that our store could not put (an unpredictable one).
                let ro = |o| self.ep.model.as_ref().is_some_and(|m| m.read_only_at(o));
                if ro(off) || ro(off + 8 * 37) {
                    Ptr::Good
                } else {
                    Ptr::InArena(off)
                }
            }
            _ => Ptr::Good,
        }
    }

    /// Places `bytes` as ptr says; returns the address to pass, and whether every
    /// store into the arena went through (false: the kernel must fault too).
    fn place(&mut self, ptr: Ptr, bytes: &[u8]) -> Result<(usize, bool), String> {
        let buf = self.scratch.buf.as_mut_ptr() as usize;
        Ok(match ptr {
            Ptr::Good | Ptr::Unaligned => {
                let at = buf + usize::from(ptr == Ptr::Unaligned);
                // SAFETY: `buf` has 1 KiB; the structs are ≤ 304 bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, bytes.len())
                };
                (at, true)
            }
            Ptr::Null => (0, true),
            Ptr::Sixteen => (16, true),
            Ptr::Unmapped => (0x1000, true),
            Ptr::ReadOnly => {
                self.scratch.fill_ro(bytes)?;
                (self.scratch.ro, true)
            }
            Ptr::NoAccess => (self.scratch.none, true),
            // TASK_SIZE_MAX with 4-level paging; with 5-level paging above the default
            // mmap window, where nothing is mapped without an explicit hint.
            Ptr::TopOfUser => (0x7fff_ffff_f000, true),
            Ptr::NonCanonical => (0x8000_0000_0000_0000, true),
            Ptr::Kernel => (0xffff_ffff_8100_0000, true),
            Ptr::InArena(off) => {
                let a = self.ep.arena.ok_or("InArena without an arena")?;
                let at = a.base + off as usize;
                let mut all = true;
                for (k, w) in bytes.chunks(8).enumerate() {
                    let o = off + 8 * k as u64;
                    if o + 8 > a.size {
                        all = false;
                        break;
                    }
                    let v = u64::from_ne_bytes(w.try_into().map_err(|_| "odd struct size")?);
                    // SAFETY: Inside our arena (checked above).
                    match unsafe { probe::store((a.base + o as usize) as *mut u64, v) } {
                        Ok(()) => {
                            if let Some(m) = self.ep.model.as_mut() {
                                if m.region_at(o).is_some() {
                                    m.words.insert(o, Some(v));
                                }
                            }
                        }
                        Err(_) => all = false,
                    }
                }
                (at, all)
            }
        })
    }

    /// Reads back `len` bytes the kernel may have written at `at` (placed by `place`).
    fn read_back(&self, ptr: Ptr, at: usize, len: usize) -> Option<Vec<u8>> {
        match ptr {
            Ptr::Good | Ptr::Unaligned => {
                // SAFETY: `at` points into our buffer with `len` bytes to spare.
                Some(unsafe { std::slice::from_raw_parts(at as *const u8, len) }.to_vec())
            }
            Ptr::InArena(_) => {
                let mut v = Vec::with_capacity(len);
                for k in (0..len).step_by(8) {
                    v.extend_from_slice(&probe::load((at + k) as *const u64).ok()?.to_ne_bytes());
                }
                Some(v)
            }
            _ => None,
        }
    }

    // -- ioctls --------------------------------------------------------------------

    fn op_config(&mut self) -> (String, Step) {
        let e = self.ctx.engine;
        let c = uapi::VmalabConfig {
            engine: self.rng.pick(&[0, e.id, e.id, 1, 2, 3, 4, 999, u32::MAX]),
            flags: match self.rng.below(6) {
                0 => 0,
                1 | 2 => e.flags,
                3 => uapi::VMALAB_CONFIG_EXPEDITED,
                4 => 1 << 5,
                _ => self.rng.next() as u32,
            },
            arena_size: self.gen_arena_size(),
        };
        let ptr = if self.rng.one_in(6) {
            self.gen_ptr(true)
        } else {
            Ptr::Good
        };
        let desc = format!("CONFIG {c:x?} via {ptr:?}");
        let r = self.do_config(c, ptr);
        (desc, r)
    }

    fn do_config(&mut self, c: uapi::VmalabConfig, ptr: Ptr) -> Step {
        let fd = self.fd().ok_or("no device")?;
        let before = self.info()?;
        let (at, stored) = self.place(ptr, &bytes_of(&c))?;
        let r = ioctl(fd, uapi::VMALAB_IOC_CONFIG, at);
        self.tally.add("config", &r);
        errno_ok(Call::Ioctl, &r)?;
        if ptr.always_faults() || !stored {
            expect(r == Err(libc::EFAULT), || {
                "a bad pointer did not fault".into()
            })?;
        }
        match r {
            Ok(_) if c.engine != 0 => self.ep.want_engine = Some(c.engine),
            Err(_) if uapi::engine_name(c.engine).is_some() => {
                self.ep.failed_engines.push(c.engine)
            }
            _ => {}
        }
        let after = self.refresh()?;
        let valid = c.flags & !uapi::VMALAB_CONFIG_FLAGS_ALL == 0
            && (c.engine == 0 || uapi::engine_name(c.engine).is_some())
            && c.arena_size.is_multiple_of(P)
            && c.arena_size <= uapi::VMALAB_MAX_ARENA_SIZE;
        match r {
            Ok(_) => {
                expect(valid, || "CONFIG with invalid arguments succeeded".into())?;
                expect(before.engine == 0 && !self.ep.mmapped, || {
                    "CONFIG succeeded after the engine was created or the arena mapped".into()
                })?;
                expect(after.flags == c.flags, || {
                    format!("INFO.flags {:#x} after CONFIG", after.flags)
                })?;
                if c.arena_size != 0 {
                    expect(after.arena_size == c.arena_size, || {
                        format!("INFO.arena_size {:#x} after CONFIG", after.arena_size)
                    })?;
                }
            }
            Err(_) => {
                if (before.flags, before.arena_size, before.engine)
                    != (after.flags, after.arena_size, after.engine)
                {
                    return Err(format!(
                        "failed CONFIG {c:x?} changed INFO from {:?} to {:?}",
                        (before.engine, before.flags, before.arena_size),
                        (after.engine, after.flags, after.arena_size)
                    ));
                }
            }
        }
        Ok(res(&r))
    }

    fn gen_map(&mut self) -> uapi::VmalabMap {
        let flags = match self.rng.below(20) {
            0..=6 => 0,
            7..=13 => uapi::VMALAB_MAP_FIXED,
            14..=17 => uapi::VMALAB_MAP_REPLACE,
            18 => self
                .rng
                .pick(&[uapi::VMALAB_MAP_FIXED | uapi::VMALAB_MAP_REPLACE, 1 << 7]),
            _ => self.rng.next() as u32,
        };
        let (backing, delay_us) = match self.rng.below(20) {
            0..=15 => (uapi::VMALAB_BACKING_ZERO, 0),
            16..=17 => (uapi::VMALAB_BACKING_SLOW, self.rng.below(201) as u32),
            18 => (
                self.rng.pick(&[
                    2,
                    u32::MAX,
                    uapi::VMALAB_BACKING_SLOW,
                    uapi::VMALAB_BACKING_ZERO,
                ]),
                self.rng.pick(&[0, 1, 200]),
            ),
            _ => (
                uapi::VMALAB_BACKING_SLOW,
                self.rng.pick(&[uapi::VMALAB_MAX_DELAY_US + 1, u32::MAX]),
            ),
        };
        uapi::VmalabMap {
            offset: self.gen_off(),
            length: self.gen_len(),
            flags,
            backing,
            delay_us,
            reserved: if self.rng.one_in(40) {
                1 + self.rng.below(u32::MAX as u64) as u32
            } else {
                0
            },
        }
    }

    /// Whether MAP arguments pass every argument check of today's module for the
    /// current arena size (so the result is decided by the regions alone).
    fn map_args_valid(&self, m: &uapi::VmalabMap) -> bool {
        let a = self.ep.arena_size;
        let backing_ok = match m.backing {
            uapi::VMALAB_BACKING_ZERO => m.delay_us == 0,
            uapi::VMALAB_BACKING_SLOW => m.delay_us <= uapi::VMALAB_MAX_DELAY_US,
            _ => false,
        };
        let range_ok = match m.flags {
            0 => true,
            uapi::VMALAB_MAP_FIXED | uapi::VMALAB_MAP_REPLACE => {
                m.offset.is_multiple_of(P) && m.offset.checked_add(m.length).is_some_and(|e| e <= a)
            }
            _ => false,
        };
        a != 0
            && m.reserved == 0
            && backing_ok
            && m.length.is_multiple_of(P)
            && m.length != 0
            && m.length <= a
            && range_ok
    }

    fn op_map(&mut self) -> (String, Step) {
        let m = self.gen_map();
        let mut ptr = if self.rng.one_in(8) {
            self.gen_ptr(true)
        } else {
            Ptr::Good
        };
        if matches!(ptr, Ptr::InArena(_)) && self.ep.arena.is_none() {
            ptr = Ptr::Good;
        }
        let desc = format!("MAP {m:x?} via {ptr:?}");
        let within_budget = m.length / P <= uapi::VMALAB_MAX_REGION_PAGES;
        if m.length > HUGE_REGION && within_budget && !self.huge && self.map_args_valid(&m) {
            self.skipped_huge += 1;
            return (
                desc,
                Ok("skipped (huge; VMALAB_FUZZ_HUGE=1 issues it)".into()),
            );
        }
        let r = self.do_map(m, ptr);
        (desc, r)
    }

    fn do_map(&mut self, m: uapi::VmalabMap, ptr: Ptr) -> Step {
        let fd = self.fd().ok_or("no device")?;
        let valid = self.map_args_valid(&m);
        let (at, stored) = self.place(ptr, &bytes_of(&m))?;
        let r = ioctl(fd, uapi::VMALAB_IOC_MAP, at);
        self.tally.add("map", &r);
        errno_ok(Call::Ioctl, &r)?;
        let size = std::mem::size_of::<uapi::VmalabMap>();
        if let Ptr::InArena(off) = ptr {
            // The kernel wrote the result there (or tried to).
            if let Some(md) = self.ep.model.as_mut() {
                md.clobber(off, size as u64);
            }
        }
        if ptr.always_faults() || !stored {
            expect(r == Err(libc::EFAULT), || {
                "a bad pointer did not fault".into()
            })?;
            return Ok(res(&r));
        }
        if ptr == Ptr::ReadOnly {
            // The module writes the argument back before it changes anything, so an
            // argument the caller cannot write fails whatever it says, and changes
            // nothing (README: limits, errnos, guarantees).
            expect(r == Err(libc::EFAULT), || {
                "MAP through a read-only argument must fail EFAULT".into()
            })?;
            return Ok(res(&r));
        }
        expect(r != Err(libc::EFAULT), || {
            "MAP through a readable and writable argument failed EFAULT".into()
        })?;
        let placed = if r.is_ok() {
            let back = self
                .read_back(ptr, at, size)
                .ok_or("cannot read the MAP result back")?;
            Some(u64::from_ne_bytes(
                back[..8].try_into().map_err(|_| "short")?,
            ))
        } else {
            None
        };
        if self.ep.engine == 0 {
            // The engine is created by this very call.
            self.refresh()?;
        }
        let a = self.ep.arena_size;
        let can = self.ep.can_modify();
        let Some(model) = self.ep.model.as_ref() else {
            return Ok(format!("{} at {placed:x?}", res(&r)));
        };
        let (s, e) = (m.offset, m.offset.wrapping_add(m.length));
        // The per-file limits (uapi.rs): one more region, m.length more pages.
        let over_budget = model.regions.len() as u64 + 1 > uapi::VMALAB_MAX_REGIONS
            || model.pages() + m.length / P > uapi::VMALAB_MAX_REGION_PAGES;
        if valid && !can {
            // (The budget is charged before the engine refuses.)
            expect(
                r == Err(libc::EPERM) || (over_budget && r == Err(libc::ENOMEM)),
                || "engine none after mmap must refuse MAP with EPERM".into(),
            )?;
        } else if valid {
            match m.flags {
                uapi::VMALAB_MAP_FIXED => {
                    if model.overlapping(s, e).is_empty() && over_budget {
                        expect(r == Err(libc::ENOMEM), || {
                            format!(
                                "FIXED beyond the file's budget ({} regions, {} pages) must fail ENOMEM",
                                model.regions.len(),
                                model.pages()
                            )
                        })?;
                    } else if model.overlapping(s, e).is_empty() {
                        expect(
                            r.is_ok() || (r == Err(libc::ENOMEM) && m.length > HUGE_REGION),
                            || "FIXED onto free space must succeed".into(),
                        )?;
                    } else if over_budget {
                        // The budget is charged before the placement is checked.
                        expect(r == Err(libc::EEXIST) || r == Err(libc::ENOMEM), || {
                            format!(
                                "FIXED over {:x?} beyond the budget must fail EEXIST or ENOMEM",
                                model.overlapping(s, e)
                            )
                        })?;
                    } else {
                        expect(r == Err(libc::EEXIST), || {
                            format!("FIXED over {:x?} must fail EEXIST", model.overlapping(s, e))
                        })?;
                    }
                }
                0 if r == Err(libc::ENOMEM) && m.length <= HUGE_REGION && !over_budget => {
                    let gap = model.first_fit(m.length, a);
                    expect(gap.is_none(), || {
                        format!("MAP anywhere: ENOMEM although {gap:x?} is free")
                    })?;
                }
                0 if r.is_ok() => expect(!over_budget, || {
                    "MAP anywhere beyond the file's budget succeeded".into()
                })?,
                _ => {}
            }
        }
        if let Some(o) = placed {
            expect(valid, || "MAP with invalid arguments succeeded".into())?;
            expect(
                o.is_multiple_of(P) && o.checked_add(m.length).is_some_and(|e| e <= a),
                || format!("placed at {o:#x}, outside an arena of {a:#x}"),
            )?;
            if m.flags != 0 {
                expect(o == m.offset, || format!("FIXED/REPLACE placed at {o:#x}"))?;
            }
            let e = o + m.length;
            let over = model.overlapping(o, e);
            if m.flags != uapi::VMALAB_MAP_REPLACE {
                expect(over.is_empty(), || {
                    format!("new region [{o:#x}, {e:#x}) overlaps {over:x?}")
                })?;
            }
            if let Some(model) = self.ep.model.as_mut() {
                model.cut(o, e);
                model.add(o, m.length, m.backing == uapi::VMALAB_BACKING_SLOW);
            }
        }
        Ok(format!("{} at {placed:x?}", res(&r)))
    }

    fn op_unmap(&mut self) -> (String, Step) {
        // Mostly exact regions or spans of them, sometimes anything.
        let pick_region = self.pick_region();
        let u = match (self.rng.below(3), pick_region) {
            (0, Some((s, l))) => uapi::VmalabUnmap {
                offset: s,
                length: l,
            },
            (1, Some((s, _))) => uapi::VmalabUnmap {
                offset: s,
                length: P * (1 + self.rng.below(64)),
            },
            _ => uapi::VmalabUnmap {
                offset: self.gen_off(),
                length: self.gen_len(),
            },
        };
        let ptr = if self.rng.one_in(8) {
            self.gen_ptr(true)
        } else {
            Ptr::Good
        };
        let desc = format!("UNMAP {u:x?} via {ptr:?}");
        let r = self.do_unmap(u, ptr);
        (desc, r)
    }

    /// The common head of a range ioctl (`UNMAP`, `PROTECT`): issues `cmd` with its
    /// argument `arg` at `ptr` and checks what the pointer alone decides. `None`: the
    /// pointer was bad and the call faulted, as it must; else the result to judge.
    fn range_ioctl(
        &mut self,
        name: &'static str,
        cmd: u32,
        arg: &[u8],
        ptr: Ptr,
    ) -> Result<Option<Result<i64, Errno>>, String> {
        let fd = self.fd().ok_or("no device")?;
        let (at, stored) = self.place(ptr, arg)?;
        let r = ioctl(fd, cmd, at);
        self.tally.add(name, &r);
        errno_ok(Call::Ioctl, &r)?;
        if ptr.always_faults() || !stored {
            expect(r == Err(libc::EFAULT), || {
                "a bad pointer did not fault".into()
            })?;
            return Ok(None);
        }
        if self.ep.engine == 0 {
            self.refresh()?;
        }
        Ok(Some(r))
    }

    /// Whether `[offset, offset + length)` is a valid range of the arena: page aligned,
    /// not empty, no overflow, inside it.
    fn range_valid(&self, offset: u64, length: u64) -> bool {
        let a = self.ep.arena_size;
        a != 0
            && offset.is_multiple_of(P)
            && length.is_multiple_of(P)
            && length != 0
            && offset.checked_add(length).is_some_and(|e| e <= a)
    }

    fn do_unmap(&mut self, u: uapi::VmalabUnmap, ptr: Ptr) -> Step {
        let Some(r) = self.range_ioctl("unmap", uapi::VMALAB_IOC_UNMAP, &bytes_of(&u), ptr)? else {
            return Ok(res(&Err::<(), _>(libc::EFAULT)));
        };
        let can = self.ep.can_modify();
        let valid = self.range_valid(u.offset, u.length);
        let Some(model) = self.ep.model.as_ref() else {
            return Ok(res(&r));
        };
        let (s, e) = (u.offset, u.offset.wrapping_add(u.length));
        if valid && !can {
            expect(r == Err(libc::EPERM), || {
                "engine none after mmap must refuse UNMAP with EPERM".into()
            })?;
        } else if valid {
            // Like munmap: any range, cutting what it overlaps; one with no region in
            // it changes nothing. Only a split beyond the region budget may fail.
            let over_budget = model.regions_after_cut(s, e) as u64 > uapi::VMALAB_MAX_REGIONS;
            expect(r.is_ok() || (over_budget && r == Err(libc::ENOMEM)), || {
                format!(
                    "UNMAP [{s:#x}, {e:#x}) over {:x?} must succeed",
                    model.overlapping(s, e)
                )
            })?;
        }
        if r.is_ok() {
            expect(valid, || "UNMAP with invalid arguments succeeded".into())?;
            if let Some(model) = self.ep.model.as_mut() {
                model.cut(s, e);
            }
        }
        Ok(res(&r))
    }

    fn op_protect(&mut self) -> (String, Step) {
        // Mostly inside or across regions we believe exist, sometimes anything.
        let pick_region = self.pick_region();
        let (offset, length) = match (self.rng.below(3), pick_region) {
            (0, Some((s, l))) => {
                let a = P * self.rng.below(l / P);
                (s + a, P * (1 + self.rng.below((l - a) / P)))
            }
            (1, Some((s, _))) => (s, P * (1 + self.rng.below(64))),
            _ => (self.gen_off(), self.gen_len()),
        };
        let prot = match self.rng.below(8) {
            0..=2 => uapi::VMALAB_PROT_READ,
            3..=5 => uapi::VMALAB_PROT_READ_WRITE,
            6 => self.rng.pick(&[0, uapi::VMALAB_PROT_WRITE, 4, 7, u32::MAX]),
            _ => self.rng.next() as u32,
        };
        let p = uapi::VmalabProtect {
            offset,
            length,
            prot,
            reserved: u32::from(self.rng.one_in(16)),
        };
        let ptr = if self.rng.one_in(8) {
            self.gen_ptr(true)
        } else {
            Ptr::Good
        };
        let desc = format!("PROTECT {p:x?} via {ptr:?}");
        let r = self.do_protect(p, ptr);
        (desc, r)
    }

    fn do_protect(&mut self, p: uapi::VmalabProtect, ptr: Ptr) -> Step {
        let arg = bytes_of(&p);
        let Some(r) = self.range_ioctl("protect", uapi::VMALAB_IOC_PROTECT, &arg, ptr)? else {
            return Ok(res(&Err::<(), _>(libc::EFAULT)));
        };
        let can = self.ep.can_modify();
        let ro = match p.prot {
            uapi::VMALAB_PROT_READ => Some(true),
            uapi::VMALAB_PROT_READ_WRITE => Some(false),
            _ => None,
        };
        let valid = p.reserved == 0 && ro.is_some() && self.range_valid(p.offset, p.length);
        let Some(model) = self.ep.model.as_ref() else {
            return Ok(res(&r));
        };
        let (s, e) = (p.offset, p.offset.wrapping_add(p.length));
        if valid && !can {
            expect(r == Err(libc::EPERM), || {
                "engine none after mmap must refuse PROTECT with EPERM".into()
            })?;
        } else if valid && !model.covers(s, e) {
            expect(r == Err(libc::ENOMEM), || {
                format!(
                    "PROTECT [{s:#x}, {e:#x}) over {:x?} (a page in no region) must fail ENOMEM",
                    model.overlapping(s, e)
                )
            })?;
        } else if valid {
            // At most one region in three; only that may exceed the budget.
            let near_budget = model.regions.len() as u64 + 2 > uapi::VMALAB_MAX_REGIONS;
            expect(r.is_ok() || (near_budget && r == Err(libc::ENOMEM)), || {
                format!(
                    "PROTECT [{s:#x}, {e:#x}) over {:x?} must succeed",
                    model.overlapping(s, e)
                )
            })?;
        } else {
            expect(r.is_err(), || {
                "PROTECT with invalid arguments succeeded".into()
            })?;
        }
        if r.is_ok() {
            if let (Some(model), Some(ro)) = (self.ep.model.as_mut(), ro) {
                model.protect(s, e, ro);
            }
        }
        Ok(res(&r))
    }

    fn op_info(&mut self) -> (String, Step) {
        let ptr = if self.rng.one_in(4) {
            self.gen_ptr(true)
        } else {
            Ptr::Good
        };
        let desc = format!("INFO via {ptr:?}");
        let r = self.do_info(ptr);
        (desc, r)
    }

    fn do_info(&mut self, ptr: Ptr) -> Step {
        let fd = self.fd().ok_or("no device")?;
        let size = std::mem::size_of::<uapi::VmalabInfo>();
        let (at, _) = match ptr {
            Ptr::ReadOnly => (self.scratch.ro, true),
            Ptr::InArena(_) => (self.place(ptr, &[])?.0, true),
            _ => self.place(ptr, &[0; 8])?,
        };
        let r = ioctl(fd, uapi::VMALAB_IOC_INFO, at);
        self.tally.add("info", &r);
        errno_ok(Call::Ioctl, &r)?;
        if let Ptr::InArena(off) = ptr {
            if let Some(m) = self.ep.model.as_mut() {
                m.clobber(off, size as u64);
            }
        }
        if ptr.always_faults() || ptr == Ptr::ReadOnly {
            expect(r == Err(libc::EFAULT), || {
                "INFO into a bad or read-only pointer did not fault".into()
            })?;
            return Ok(res(&r));
        }
        if !matches!(ptr, Ptr::Good | Ptr::Unaligned) {
            return Ok(res(&r));
        }
        r.map_err(|e| format!("INFO into a good buffer failed: {}", ename(e)))?;
        let back = self.read_back(ptr, at, size).ok_or("read back")?;
        // SAFETY: `back` has exactly size_of::<VmalabInfo>() bytes of a valid
        // VmalabInfo (integers only); read_unaligned copes with any alignment.
        let i: uapi::VmalabInfo = unsafe { std::ptr::read_unaligned(back.as_ptr().cast()) };
        if let Some(m) = &self.ep.model {
            expect(i.regions == m.regions.len() as u64, || {
                format!(
                    "INFO.regions {} != model {} ({:x?})",
                    i.regions,
                    m.regions.len(),
                    m.regions
                )
            })?;
        }
        expect(
            self.ep.arena_size == 0 || i.arena_size == self.ep.arena_size,
            || {
                format!(
                    "INFO.arena_size {:#x}, expected {:#x}",
                    i.arena_size, self.ep.arena_size
                )
            },
        )?;
        expect(self.ep.engine == 0 || i.engine == self.ep.engine, || {
            format!("INFO.engine {} changed from {}", i.engine, self.ep.engine)
        })?;
        self.saw_info(&i)?;
        Ok(format!("ok: {} regions, {} pages", i.regions, i.pages))
    }

    fn op_bad_pointer(&mut self) -> (String, Step) {
        // Only pointers the kernel must refuse; arguments that could be read are the
        // other ops' business.
        let ptr = self.rng.pick(&[
            Ptr::Null,
            Ptr::Sixteen,
            Ptr::Unmapped,
            Ptr::NoAccess,
            Ptr::TopOfUser,
            Ptr::NonCanonical,
            Ptr::Kernel,
        ]);
        let cmd = self.rng.pick(&[
            uapi::VMALAB_IOC_CONFIG,
            uapi::VMALAB_IOC_MAP,
            uapi::VMALAB_IOC_UNMAP,
            uapi::VMALAB_IOC_INFO,
        ]);
        let desc = format!("ioctl {cmd:#x} with bad pointer {ptr:?}");
        let r = (|| -> Step {
            let fd = self.fd().ok_or("no device")?;
            let (at, _) = self.place(ptr, &[])?;
            let r = ioctl(fd, cmd, at);
            self.tally.add("badptr", &r);
            errno_ok(Call::Ioctl, &r)?;
            expect(r == Err(libc::EFAULT), || {
                "a bad pointer did not fault".into()
            })?;
            Ok(res(&r))
        })();
        (desc, r)
    }

    fn op_junk_ioctl(&mut self) -> (String, Step) {
        let cmd = junk_cmd(&mut self.rng);
        // The argument: our (zeroed) buffer, or NULL: never an address that is
        // someone's memory, since a junk command might write through it.
        let arg = if self.rng.one_in(2) {
            self.scratch.buf.fill(0);
            self.scratch.buf.as_mut_ptr() as usize
        } else {
            0
        };
        let desc = format!("ioctl {cmd:#x} (junk number) arg {arg:#x}");
        let r = (|| -> Step {
            let fd = self.fd().ok_or("no device")?;
            let r = ioctl(fd, cmd, arg);
            self.tally.add("junk", &r);
            errno_ok(Call::Ioctl, &r)?;
            expect(r == Err(libc::ENOTTY), || {
                "an unknown ioctl must fail ENOTTY".into()
            })?;
            Ok(res(&r))
        })();
        (desc, r)
    }

    // -- the arena VMA -----------------------------------------------------------------

    /// Checks /proc/self/maps: the arena is exactly one VMA where we think it is (or
    /// gone). Returns whether it is still there.
    fn check_vmas(&mut self, what: &str) -> Check {
        let vmas = device_vmas();
        match self.ep.arena {
            Some(a) => {
                let want = (a.base, a.base + a.size as usize);
                if vmas.is_empty() && what == "mmap(MAP_FIXED)" {
                    // A MAP_FIXED mmap over the arena unmaps it (->close runs) before
                    // the device refuses the new mapping (EBUSY); the kernel cannot
                    // reattach a closed VMA and leaves a gap (mm/vma.c:
                    // vms_abort_munmap_vmas). Kernel behaviour, not vmalab's.
                    self.note(
                        "gap",
                        format!(
                            "a failed mmap(MAP_FIXED) over the arena left a gap (first at op #{})",
                            self.idx
                        ),
                    );
                    self.ep.arena = None;
                    Ok(())
                } else {
                    expect(vmas == [want], || {
                        format!(
                            "arena VMA {want:x?} became {vmas:x?} after {what} (split or moved)"
                        )
                    })
                }
            }
            None => expect(vmas.is_empty(), || {
                format!("unexpected device VMAs {vmas:x?} after {what}")
            }),
        }
    }

    fn op_mmap(&mut self) -> (String, Step) {
        let a = self.a();
        let size = match self.rng.below(12) {
            0..=5 => a,
            6 => a.saturating_add(P),
            7 => (a / 2) & !(P - 1),
            8 => a - 1,
            9 => 0,
            10 => self.rng.pick(&[1 << 40, 1 << 47, LAST_PAGE]),
            _ => P * (1 + self.rng.below(64)),
        };
        let flags = match self.rng.below(14) {
            0..=6 => libc::MAP_SHARED,
            7 => libc::MAP_PRIVATE,
            8 => libc::MAP_SHARED_VALIDATE,
            9 => libc::MAP_SHARED | libc::MAP_POPULATE,
            10 => libc::MAP_SHARED | libc::MAP_NORESERVE | libc::MAP_LOCKED,
            11 => libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC,
            12 => libc::MAP_SHARED | libc::MAP_FIXED,
            _ => libc::MAP_PRIVATE | libc::MAP_POPULATE,
        };
        let prot = self.rng.pick(&[
            libc::PROT_READ | libc::PROT_WRITE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::PROT_READ,
            libc::PROT_NONE,
            libc::PROT_WRITE,
        ]);
        let off = match self.rng.below(10) {
            0..=6 => 0,
            7 => P,
            8 => 1,
            _ => self
                .rng
                .pick(&[1 << 40, (i64::MAX as u64) & !(P - 1), LAST_PAGE]),
        };
        // MAP_POPULATE and MAP_LOCKED fault in the whole arena.
        let flags = if self.may_populate(0, size) {
            flags
        } else {
            flags & !(libc::MAP_POPULATE | libc::MAP_LOCKED)
        };
        // MAP_FIXED only over our own arena, never longer than it.
        let (addr, size, flags) = match self.ep.arena {
            Some(ar) if flags & libc::MAP_FIXED != 0 => (ar.base, size.min(ar.size), flags),
            _ => (0, size, flags & !libc::MAP_FIXED),
        };
        let desc = format!(
            "mmap(addr {addr:#x}, len {size:#x}, prot {prot:#x}, flags {flags:#x}, off {off:#x})"
        );
        let r = self.do_mmap(addr, size, prot, flags, off);
        (desc, r)
    }

    fn do_mmap(&mut self, addr: usize, size: u64, prot: i32, flags: i32, off: u64) -> Step {
        let fd = self.fd().ok_or("no device")?;
        let r = sys_mmap(addr, size, prot, flags, fd, off);
        self.tally.add("mmap", &r);
        errno_ok(Call::Mmap, &r)?;
        if let Ok(p) = r {
            let rounded = size.div_ceil(P) * P;
            let private =
                flags & (libc::MAP_SHARED | libc::MAP_SHARED_VALIDATE) == libc::MAP_PRIVATE;
            let second = self.ep.mmapped;
            let known = self.ep.arena_size;
            self.ep.mmapped = true;
            if addr != 0 {
                // MAP_FIXED replaced the arena by a new one: only possible if this
                // were a first mmap; keep tracking it either way.
                self.ep.arena = None;
            }
            let old = self.ep.arena.replace(ArenaMap {
                base: p,
                size: rounded,
                prot,
            });
            expect(old.is_none() && !second, || {
                "a second mmap of the device succeeded".into()
            })?;
            expect(!private && off == 0, || {
                "MAP_PRIVATE or pgoff != 0 arena accepted".into()
            })?;
            expect(known == 0 || known == rounded, || {
                format!("arena of {rounded:#x} bytes mapped, configured {known:#x}")
            })?;
            self.refresh()?;
            expect(self.ep.arena_size == rounded, || {
                format!(
                    "INFO.arena_size {:#x} after mmap of {rounded:#x}",
                    self.ep.arena_size
                )
            })?;
        }
        self.check_vmas(if addr != 0 { "mmap(MAP_FIXED)" } else { "mmap" })?;
        Ok(res(&r))
    }

    /// A random range inside the arena: (offset, length).
    fn arena_range(&mut self, a: ArenaMap) -> (u64, u64) {
        let pages = a.size / P;
        match self.rng.below(8) {
            0..=1 => (0, a.size),
            2 => (0, P * (1 + self.rng.below(pages))),
            3 => {
                let s = self.rng.below(pages);
                (P * s, a.size - P * s)
            }
            4 => (P * self.rng.below(pages), 0),
            5 => {
                let s = self.rng.below(pages);
                (P * s + 1 + self.rng.below(P - 1), P)
            }
            _ => {
                let s = self.rng.below(pages);
                let n = 1 + self.rng.below((pages - s).min(64));
                (P * s, P * n - self.rng.below(2) * self.rng.below(P))
            }
        }
    }

    fn op_munmap(&mut self) -> (String, Step) {
        let Some(a) = self.ep.arena else {
            return ("munmap (no arena)".into(), Ok("skipped".into()));
        };
        let (o, l) = self.arena_range(a);
        let desc = format!(
            "munmap(arena + {o:#x}, {l:#x}) of an arena of {:#x}",
            a.size
        );
        let r = (|| -> Step {
            let r = sys_munmap(a.base + o as usize, l);
            self.tally.add("munmap", &r);
            errno_ok(Call::Munmap, &r)?;
            let whole = o == 0 && l.div_ceil(P) * P == a.size;
            if r.is_ok() && whole {
                self.ep.arena = None;
            } else if r.is_ok() && l != 0 {
                return Err("munmap of part of the arena succeeded (the arena was split)".into());
            }
            if whole {
                expect(r.is_ok(), || "munmap of the whole arena failed".into())?;
            }
            self.check_vmas("munmap")?;
            Ok(res(&r))
        })();
        (desc, r)
    }

    fn op_mremap(&mut self) -> (String, Step) {
        let Some(a) = self.ep.arena else {
            return ("mremap (no arena)".into(), Ok("skipped".into()));
        };
        let k = P * (1 + self.rng.below(4));
        let scratch = self.scratch.remap;
        let mm = libc::MREMAP_MAYMOVE;
        let (old, old_len, new_len, flags, new) = match self.rng.below(9) {
            0 => (a.base, a.size, a.size, 0, 0),
            1 => (a.base, a.size, a.size.saturating_sub(k).max(P), 0, 0),
            2 => (a.base, a.size, a.size + k, 0, 0),
            3 => (a.base, a.size, 2 * a.size, mm, 0),
            4 if a.size <= REMAP_MAX => (a.base, a.size, a.size, mm | libc::MREMAP_FIXED, scratch),
            5 => (a.base, a.size, a.size, mm | libc::MREMAP_DONTUNMAP, 0),
            6 if a.size > P => (a.base + P as usize, P, 2 * P, mm, 0),
            7 => (a.base + 1, a.size, a.size, mm, 0),
            _ => (a.base, a.size, 0, mm, 0),
        };
        let desc = format!(
            "mremap(arena + {:#x}, {old_len:#x}, {new_len:#x}, flags {flags:#x}, new {new:#x})",
            old - a.base
        );
        let r = (|| -> Step {
            let r = sys_mremap(old, old_len, new_len, flags, new);
            if flags & libc::MREMAP_FIXED != 0 {
                // The target range was unmapped before the move was refused: take the
                // scratch reservation back before anything else can land there.
                reserve(scratch, REMAP_MAX)
                    .map_err(|e| format!("re-reserve scratch: {}", ename(e)))?;
            }
            self.tally.add("mremap", &r);
            errno_ok(Call::Mremap, &r)?;
            if let Ok(p) = r {
                if p != a.base || new_len != old_len || old != a.base {
                    if p != a.base && old == a.base && flags & libc::MREMAP_DONTUNMAP == 0 {
                        self.ep.arena = Some(ArenaMap {
                            base: p,
                            size: new_len,
                            ..a
                        });
                    }
                    return Err(format!("mremap moved or resized the arena to {p:#x}"));
                }
            }
            self.check_vmas("mremap")?;
            Ok(res(&r))
        })();
        (desc, r)
    }

    fn op_mprotect(&mut self) -> (String, Step) {
        let Some(a) = self.ep.arena else {
            return ("mprotect (no arena)".into(), Ok("skipped".into()));
        };
        let (o, l) = self.arena_range(a);
        let prot = self.rng.pick(&[
            libc::PROT_READ | libc::PROT_WRITE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::PROT_READ,
            libc::PROT_NONE,
            libc::PROT_WRITE,
            libc::PROT_READ | libc::PROT_GROWSDOWN,
        ]);
        let desc = format!(
            "mprotect(arena + {o:#x}, {l:#x}, {prot:#x}) of an arena of {:#x}",
            a.size
        );
        let r = (|| -> Step {
            let r = sys_mprotect(a.base + o as usize, l, prot);
            self.tally.add("mprotect", &r);
            errno_ok(Call::Mprotect, &r)?;
            let whole = o == 0 && l.div_ceil(P) * P == a.size;
            if r.is_ok() && l != 0 {
                // x86: PROT_WRITE implies read access.
                let eff = |p: i32| {
                    if p & libc::PROT_WRITE != 0 {
                        libc::PROT_READ | libc::PROT_WRITE
                    } else {
                        p
                    }
                };
                if whole {
                    if let Some(ar) = self.ep.arena.as_mut() {
                        ar.prot = prot;
                    }
                } else {
                    expect(eff(prot) == eff(a.prot), || {
                        "mprotect of part of the arena changed its protection (split)".into()
                    })?;
                }
            }
            if whole && prot & libc::PROT_GROWSDOWN == 0 {
                expect(r.is_ok(), || "mprotect of the whole arena failed".into())?;
            }
            self.check_vmas("mprotect")?;
            Ok(res(&r))
        })();
        (desc, r)
    }

    fn op_madvise(&mut self) -> (String, Step) {
        let Some(a) = self.ep.arena else {
            return ("madvise (no arena)".into(), Ok("skipped".into()));
        };
        let (o, l) = self.arena_range(a);
        let (mut adv, mut name) = self.rng.pick(ADVICE);
        if matches!(adv, MADV_POPULATE_READ | MADV_POPULATE_WRITE)
            && !self.may_populate(o, o.saturating_add(l))
        {
            (adv, name) = (MADV_DONTNEED, "DONTNEED");
        }
        let desc = format!(
            "madvise(arena + {o:#x}, {l:#x}, {name}) of an arena of {:#x}",
            a.size
        );
        let r = (|| -> Step {
            let r = sys_madvise(a.base + o as usize, l, adv);
            self.tally.add(name, &r);
            errno_ok(Call::Madvise, &r)?;
            self.check_vmas("madvise")?;
            Ok(res(&r))
        })();
        (desc, r)
    }

    fn op_probe(&mut self) -> (String, Step) {
        let Some(a) = self.ep.arena else {
            return ("probe (no arena)".into(), Ok("skipped".into()));
        };
        // Mostly inside a region we believe exists.
        let region = self.pick_region();
        let off = match region {
            Some((s, l)) if self.rng.below(3) != 0 => s + self.rng.below(l),
            _ => self.rng.below(a.size),
        } & !7;
        let off = off.min(a.size - 8);
        let store = self.rng.one_in(2);
        let v = self.rng.next() | 1;
        let desc = if store {
            format!("store {v:#x} at arena + {off:#x}")
        } else {
            format!("load at arena + {off:#x}")
        };
        let r = (|| -> Step {
            let p = (a.base + off as usize) as *mut u64;
            let got = if store {
                // SAFETY: Inside our arena, which is device memory, never a Rust object.
                unsafe { probe::store(p, v) }.map(|()| v)
            } else {
                probe::load(p)
            };
            let Some(m) = self.ep.model.as_mut() else {
                return Ok(format!("{got:x?}"));
            };
            self.probes_checked += 1;
            let in_region = m.region_at(off).is_some();
            let readable = a.prot & (libc::PROT_READ | libc::PROT_WRITE) != 0;
            let writable = a.prot & libc::PROT_WRITE != 0;
            let want: Result<(), probe::Fault> =
                if !readable || (store && !writable) || (store && m.read_only_at(off)) {
                    Err(probe::Fault::Segv)
                } else if !in_region {
                    Err(probe::Fault::Bus)
                } else {
                    Ok(())
                };
            expect(got.map(drop) == want, || {
                format!(
                    "got {got:x?}, expected {want:?} (region {:x?}, prot {:#x})",
                    m.region_at(off),
                    a.prot
                )
            })?;
            if let Ok(x) = got {
                if store {
                    m.words.insert(off, Some(v));
                } else {
                    let expected = m.words.get(&off).copied().unwrap_or(Some(0));
                    if let Some(e) = expected {
                        self.words_checked += 1;
                        expect(x == e, || {
                            format!("read {x:#x}, expected {e:#x} (stale or lost data)")
                        })?;
                    }
                }
            }
            Ok(format!("{got:x?}"))
        })();
        (desc, r)
    }

    /// A second device maps its arena with MAP_FIXED exactly over ours (which goes),
    /// then our UNMAP must not zap the other device's pages (vm_ops::zap checks the VMA
    /// at our old address belongs to our space): our ZAP counter stays, the other
    /// device's data and page count stay.
    fn op_foreign(&mut self) -> (String, Step) {
        let desc = "another device's arena mmap(MAP_FIXED) over ours, then UNMAP all of ours";
        let r = (|| -> Step {
            let Some(a) = self.ep.arena else {
                return Ok("skipped: no arena".into());
            };
            if self.ep.model.is_none()
                || !self.ep.can_modify()
                || a.size > REMAP_MAX
                || a.prot != libc::PROT_READ | libc::PROT_WRITE
            {
                return Ok("skipped".into());
            }
            let e = self.ctx.engine;
            let other = Device::with_config(e.id, e.flags, a.size as usize)
                .map_err(|x| format!("second device: {x}"))?;
            other
                .map_at(0, a.size as usize, false)
                .map_err(|x| format!("second device MAP: {}", ename(x)))?;
            let r = sys_mmap(
                a.base,
                a.size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                other.fd(),
                0,
            );
            self.tally.add("foreign", &r);
            errno_ok(Call::Mmap, &r)?;
            let p = r.map_err(|x| format!("second device's mmap(MAP_FIXED): {}", ename(x)))?;
            // Ours is gone; the range is the other device's arena now.
            self.ep.arena = None;
            expect(p == a.base, || format!("MAP_FIXED mapped at {p:#x}"))?;
            let offs: Vec<u64> = (0..4).map(|k| k * (a.size / 4) + 8 * k).collect();
            for &o in &offs {
                // SAFETY: Inside the other device's arena, which we just mapped there.
                unsafe { probe::store((a.base + o as usize) as *mut u64, !o) }
                    .map_err(|f| format!("store into the other arena: {f:?}"))?;
            }
            let before = self.info()?.counters[uapi::VMALAB_CTR_ZAP];
            let ours = self.ep.model.as_ref().map_or(0, |m| m.regions.len());
            if ours > 0 {
                let fd = self.fd().ok_or("no device")?;
                let mut u = uapi::VmalabUnmap {
                    offset: 0,
                    length: a.size,
                };
                ioctl(fd, uapi::VMALAB_IOC_UNMAP, &mut u as *mut _ as usize)
                    .map_err(|x| format!("UNMAP of all our regions: {}", ename(x)))?;
                if let Some(m) = self.ep.model.as_mut() {
                    m.cut(0, a.size);
                }
            }
            let after = self.info()?.counters[uapi::VMALAB_CTR_ZAP];
            expect(after == before, || {
                "our UNMAP zapped the other device's arena at our old address".into()
            })?;
            for &o in &offs {
                let v = probe::load((a.base + o as usize) as *const u64);
                expect(v == Ok(!o), || format!("other arena + {o:#x}: {v:x?}"))?;
            }
            let i = other
                .info()
                .map_err(|x| format!("second device INFO: {}", ename(x)))?;
            let pages = offs
                .iter()
                .map(|o| o / P)
                .collect::<std::collections::BTreeSet<_>>()
                .len() as u64;
            expect(i.regions == 1 && i.pages == pages, || {
                format!("second device after our UNMAP: {i:?}")
            })?;
            sys_munmap(a.base, a.size).map_err(|x| format!("munmap: {}", ename(x)))?;
            drop(other);
            self.check_vmas("foreign")?;
            Ok(format!("ok; {ours} regions of ours unmapped"))
        })();
        (desc.into(), r)
    }

    /// fork: the child probes the arena (it must not have it: VM_DONTCOPY) and calls
    /// INFO on the inherited descriptor; sometimes it also unmaps every region of the
    /// shared space (the zap must reach the parent's mm), or, while the parent has
    /// never mapped the device, maps the arena itself and exits with it mapped (the
    /// space then remembers a dead mm).
    fn op_fork(&mut self) -> (String, Step) {
        let arena = self.ep.arena;
        let fd = self.fd();
        let a = self.ep.arena_size;
        // Region starts; read-only regions listed apart (a store there must SIGSEGV).
        let model_regions: Option<Vec<u64>> = self.ep.model.as_ref().map(|m| {
            m.regions
                .iter()
                .filter(|(_, r)| !r.ro)
                .map(|(&k, _)| k)
                .collect()
        });
        let read_only = self
            .ep
            .model
            .as_ref()
            .map_or(0, |m| m.regions.values().filter(|r| r.ro).count() as u64);
        let expect_regions = model_regions.as_ref().map(|r| r.len() as u64 + read_only);
        let offs: Vec<u64> = match arena {
            Some(a) => (0..4).map(|_| self.rng.below(a.size) & !7).collect(),
            None => Vec::new(),
        };
        let unmap = fd.is_some()
            && self.ep.can_modify()
            && expect_regions.is_some_and(|n| n > 0)
            && self.rng.one_in(3);
        let mmap = fd.is_some()
            && !unmap
            && !self.ep.mmapped
            && a != 0
            && a <= REMAP_MAX
            && model_regions.is_some()
            && self.rng.one_in(3);
        let desc = format!(
            "fork; child probes arena offsets {offs:x?}, calls INFO{}{}",
            if unmap { ", UNMAPs every region" } else { "" },
            if mmap {
                ", mmaps the arena and exits with it"
            } else {
                ""
            }
        );
        let r = (|| -> Step {
            // SAFETY: This test is single-threaded; the child only probes, makes a few
            // system calls and leaves with _exit.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                return Err(format!("fork: {}", ename(errno())));
            }
            if pid == 0 {
                let mut code = 0;
                if let Some(a) = arena {
                    for &o in &offs {
                        if probe::load((a.base + o as usize) as *const u64)
                            != Err(probe::Fault::Segv)
                        {
                            code = 1;
                        }
                    }
                }
                if let Some(fd) = fd {
                    let mut i = uapi::VmalabInfo::default();
                    match ioctl(fd, uapi::VMALAB_IOC_INFO, &mut i as *mut _ as usize) {
                        Err(_) => code = 2,
                        Ok(_) if expect_regions.is_some_and(|n| n != i.regions) => code = 3,
                        Ok(_) => {}
                    }
                    if unmap {
                        let mut u = uapi::VmalabUnmap {
                            offset: 0,
                            length: a,
                        };
                        if ioctl(fd, uapi::VMALAB_IOC_UNMAP, &mut u as *mut _ as usize).is_err() {
                            code = 4;
                        }
                    }
                    if mmap {
                        let flags = libc::MAP_SHARED;
                        match sys_mmap(0, a, libc::PROT_READ | libc::PROT_WRITE, flags, fd, 0) {
                            Ok(base) => {
                                for &o in model_regions.iter().flatten() {
                                    // SAFETY: Inside the arena this child just mapped.
                                    if unsafe { probe::store((base + o as usize) as *mut u64, 7) }
                                        .is_err()
                                    {
                                        code = 6;
                                    }
                                }
                            }
                            Err(_) => code = 5,
                        }
                    }
                }
                // SAFETY: Leave the child at once.
                unsafe { libc::_exit(code) };
            }
            let mut status = 0;
            // SAFETY: Reaping our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                100 + libc::WTERMSIG(status)
            };
            self.tally
                .add::<()>("fork", &if code == 0 { Ok(()) } else { Err(code) });
            match code {
                0 => {}
                1 => {
                    return Err(
                        "the child could reach the parent's arena (VM_DONTCOPY lost)".into(),
                    )
                }
                2 => return Err("INFO failed in the child".into()),
                3 => return Err("INFO.regions in the child differs from the model".into()),
                4 => return Err("UNMAP of every region failed in the child".into()),
                5 => return Err("the child could not mmap the arena".into()),
                6 => return Err("a region page did not take a store in the child's arena".into()),
                c => return Err(format!("the child died: status {c}")),
            }
            if unmap {
                if let Some(m) = self.ep.model.as_mut() {
                    m.cut(0, a);
                }
            }
            if mmap {
                // The space's one arena was the child's and died with it.
                self.ep.mmapped = true;
                self.refresh()?;
                if let Some(m) = self.ep.model.as_mut() {
                    let starts: Vec<u64> = m.regions.keys().copied().collect();
                    for o in starts {
                        m.words.insert(o, None);
                    }
                }
            }
            Ok("ok".into())
        })();
        (desc, r)
    }
}

/// Fresh device after everything is closed: INFO works and shows a fresh space.
fn fresh_device_ok() -> Result<(), String> {
    let dev = Device::open().map_err(|e| format!("reopen: {e}"))?;
    let i = dev
        .info()
        .map_err(|e| format!("INFO on a fresh device: {}", ename(e)))?;
    expect(
        i.engine == 0 && i.regions == 0 && i.arena_size == 0 && i.pages == 0,
        || format!("fresh device is not fresh: {i:?}"),
    )
}

/// Random single-threaded sequences of every call, checked against the model.
pub fn fuzz_sequence(ctx: &Ctx) -> TestResult {
    let seed = base_seed();
    announce(seed, ctx, "fuzz_sequence");
    let cap = env_u64("VMALAB_FUZZ_OPS").unwrap_or(1_000_000);
    let start = Instant::now();
    let mut s = Seq::new(ctx, test_seed(seed, "fuzz_sequence")).map_err(Outcome::Fail)?;
    s.seed = seed;
    let r = s.run(start + budget(), cap);
    println!(
        "#   {} ops, {} episodes in {:.1} s; {} checks, {} probes and {} data words checked against the model",
        s.idx,
        s.episodes,
        start.elapsed().as_secs_f64(),
        CHECKS.load(SeqCst),
        s.probes_checked,
        s.words_checked,
    );
    for line in s.tally.summary().lines() {
        println!("#   {line}");
    }
    if s.skipped_huge > 0 {
        println!(
            "#   {} huge-region MAPs not issued (VMALAB_FUZZ_HUGE=1 issues them)",
            s.skipped_huge
        );
    }
    for (msg, n) in s.notes.values() {
        println!(
            "#   note: {msg}{}",
            if *n > 1 {
                format!(" (x{n})")
            } else {
                String::new()
            }
        );
    }
    r?;
    drop(s);
    fresh_device_ok().map_err(Outcome::Fail)
}

// ---------------------------------------------------------------------------------
// Threads racing close / munmap
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Race {
    /// The main thread closes the device fd.
    Close,
    /// The main thread unmaps the arena (replacing it with a PROT_NONE reservation).
    Munmap,
}

/// What the workers share with the main thread during one round.
struct Shared {
    fd: i32,
    base: usize,
    size: u64,
    /// Set just before the fd is closed.
    closed: AtomicBool,
    /// Set just before the arena is unmapped.
    gone: AtomicBool,
    stop: AtomicBool,
    ops: AtomicU64,
    faults: AtomicU64,
    errors: Mutex<Vec<String>>,
}

const ROUND_ARENA: u64 = 8 << 20;

/// One worker: random ioctls, probes and madvise calls until told to stop.
fn worker(sh: &Shared, seed: u64, t: usize, cap: u64, engine: vmalab::EngineSpec) -> Tally {
    let mut tally = Tally::default();
    let mut rng = Rng::new(seed);
    let mut i = 0u64;
    let a = sh.size;
    let fail = |i: u64, desc: &str, why: String| {
        let mut e = sh.errors.lock().unwrap_or_else(|p| p.into_inner());
        if e.len() < 8 {
            e.push(format!("thread {t} op #{i}: {desc}: {why}"));
        }
    };
    while !sh.stop.load(SeqCst) && i < cap {
        i += 1;
        let op = rng.weighted(&[10, 6, 4, 2, 2, 16, 2]);
        match op {
            0..=4 => {
                let (cmd, mut buf, desc): (u32, Vec<u64>, String) = match op {
                    0 => {
                        let slow = rng.one_in(4);
                        let m = uapi::VmalabMap {
                            offset: P * rng.below(a / P),
                            length: P * (1 + rng.below(8)),
                            flags: rng.pick(&[
                                0,
                                uapi::VMALAB_MAP_FIXED,
                                uapi::VMALAB_MAP_REPLACE,
                                1 << 9,
                            ]),
                            backing: u32::from(slow),
                            delay_us: if slow { rng.below(201) as u32 } else { 0 },
                            reserved: 0,
                        };
                        (uapi::VMALAB_IOC_MAP, words_of(&m), format!("MAP {m:x?}"))
                    }
                    1 => {
                        let u = match rng.below(4) {
                            0 => uapi::VmalabUnmap {
                                offset: 0,
                                length: a,
                            },
                            _ => uapi::VmalabUnmap {
                                offset: P * rng.below(a / P),
                                length: P * (1 + rng.below(16)),
                            },
                        };
                        (
                            uapi::VMALAB_IOC_UNMAP,
                            words_of(&u),
                            format!("UNMAP {u:x?}"),
                        )
                    }
                    2 => (
                        uapi::VMALAB_IOC_INFO,
                        vec![0; std::mem::size_of::<uapi::VmalabInfo>() / 8],
                        "INFO".into(),
                    ),
                    3 => {
                        let c = uapi::VmalabConfig {
                            engine: engine.id,
                            flags: 0,
                            arena_size: a,
                        };
                        (
                            uapi::VMALAB_IOC_CONFIG,
                            words_of(&c),
                            format!("CONFIG {c:x?}"),
                        )
                    }
                    _ => {
                        let cmd = junk_cmd(&mut rng);
                        (cmd, vec![0; 64], format!("junk ioctl {cmd:#x}"))
                    }
                };
                let bad = rng.one_in(16);
                let arg = if bad { 16 } else { buf.as_mut_ptr() as usize };
                let r = ioctl(sh.fd, cmd, arg);
                tally.add(
                    match op {
                        0 => "map",
                        1 => "unmap",
                        2 => "info",
                        3 => "config",
                        _ => "junk",
                    },
                    &r,
                );
                let closed = sh.closed.load(SeqCst);
                let call = if closed {
                    Call::IoctlRacingClose
                } else {
                    Call::Ioctl
                };
                if let Err(e) = errno_ok(call, &r) {
                    fail(i, &desc, e);
                } else if r == Err(libc::EBADF) && !closed {
                    fail(i, &desc, "EBADF before the fd was closed".into());
                } else if bad && r.is_ok() {
                    fail(i, &desc, "a bad pointer did not fault".into());
                }
                if cmd == uapi::VMALAB_IOC_INFO && r.is_ok() {
                    // SAFETY: INFO filled `buf`, exactly size_of::<VmalabInfo>() bytes,
                    // u64-aligned, of integers.
                    let info: uapi::VmalabInfo = unsafe { std::ptr::read(buf.as_ptr().cast()) };
                    if info.arena_size != a {
                        fail(i, &desc, format!("INFO.arena_size {:#x}", info.arena_size));
                    }
                }
            }
            5 => {
                let off = rng.below(a) & !7;
                let p = (sh.base + off as usize) as *mut u64;
                let store = rng.one_in(2);
                let r = if store {
                    // SAFETY: Inside the arena or, once it is gone, inside the PROT_NONE
                    // reservation that replaced it: never memory of ours.
                    unsafe { probe::store(p, rng.next()) }
                } else {
                    probe::load(p).map(drop)
                };
                if r.is_err() {
                    sh.faults.fetch_add(1, SeqCst);
                }
                if r == Err(probe::Fault::Segv) && !sh.gone.load(SeqCst) {
                    fail(
                        i,
                        &format!("probe at arena + {off:#x}"),
                        "SIGSEGV while the arena is mapped".into(),
                    );
                }
            }
            _ => {
                let off = P * rng.below(a / P);
                let len = P * (1 + rng.below(32));
                let len = len.min(a - off);
                let (adv, name) = rng.pick(&[
                    (MADV_DONTNEED, "DONTNEED"),
                    (MADV_POPULATE_READ, "POPULATE_READ"),
                    (MADV_POPULATE_WRITE, "POPULATE_WRITE"),
                    (MADV_COLD, "COLD"),
                    (MADV_PAGEOUT, "PAGEOUT"),
                ]);
                let r = sys_madvise(sh.base + off as usize, len, adv);
                tally.add(name, &r);
                if let Err(e) = errno_ok(Call::Madvise, &r) {
                    fail(
                        i,
                        &format!("madvise(arena + {off:#x}, {len:#x}, {name})"),
                        e,
                    );
                }
            }
        }
    }
    sh.ops.fetch_add(i, SeqCst);
    tally
}

/// The words of a UAPI struct (their sizes are multiples of 8), as an ioctl buffer.
fn words_of<T: Copy>(t: &T) -> Vec<u64> {
    bytes_of(t)
        .chunks(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
        .collect()
}

fn race_rounds(ctx: &Ctx, race: Race, name: &str) -> TestResult {
    let seed = base_seed();
    announce(seed, ctx, name);
    let mut rng = Rng::new(test_seed(seed, name));
    let cap = env_u64("VMALAB_FUZZ_OPS").unwrap_or(200_000);
    let start = Instant::now();
    // The two threaded variants are one test in two halves.
    let deadline = start + budget() / 2;
    let (mut rounds, mut ops, mut faults) = (0u64, 0u64, 0u64);
    let mut tally = Tally::default();
    while rounds == 0 || Instant::now() < deadline {
        rounds += 1;
        let fail = |why: String| {
            Outcome::Fail(format!(
                "seed {seed:#x} ({}), round {rounds}: {why}",
                ctx.engine.name
            ))
        };
        let dev = Device::with_engine(ctx.engine, ROUND_ARENA as usize)
            .map_err(|e| fail(format!("open/config: {e}")))?;
        // A few regions before mmap, so that engine `none` has some too.
        for k in 0..4 {
            dev.map_at(
                (k * 32 + rng.below(16) as usize) * PAGE_SIZE,
                8 * PAGE_SIZE,
                false,
            )
            .map_err(|e| fail(format!("setup MAP: {}", ename(e))))?;
        }
        let base = sys_mmap(
            0,
            ROUND_ARENA,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            dev.fd(),
            0,
        )
        .map_err(|e| fail(format!("mmap arena: {}", ename(e))))?;
        let sh = Shared {
            fd: dev.fd(),
            base,
            size: ROUND_ARENA,
            closed: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            ops: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
        };
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64;
        let round_ms = (100 + rng.below(900)).min(left.max(50));
        let event_ms = rng.below(round_ms);
        // Close variant, every other round: the arena goes too, later, so that the
        // file's release (the last reference) runs while the threads still probe.
        let unmap_ms = (race == Race::Close && rng.one_in(2))
            .then(|| event_ms + rng.below(round_ms - event_ms));
        let mut dev = Some(dev);
        let worker_seeds: Vec<u64> = (0..ctx.threads).map(|_| rng.next()).collect();
        std::thread::scope(|s| -> Result<(), Outcome> {
            let mut handles = Vec::new();
            for (t, &ws) in worker_seeds.iter().enumerate() {
                let sh = &sh;
                let engine = ctx.engine;
                handles.push(s.spawn(move || worker(sh, ws, t, cap, engine)));
            }
            std::thread::sleep(Duration::from_millis(event_ms));
            match race {
                Race::Close => {
                    sh.closed.store(true, SeqCst);
                    // No thread opens anything until the workers are joined, so the
                    // number cannot be reused under them.
                    drop(dev.take());
                }
                Race::Munmap => {
                    sh.gone.store(true, SeqCst);
                    // munmap, with the range kept reserved (PROT_NONE) so that stray
                    // stores from the workers cannot land in some later mapping: a
                    // MAP_FIXED mmap unmaps the arena VMA exactly like munmap does.
                    reserve(base, ROUND_ARENA)
                        .map_err(|e| fail(format!("unmap arena: {}", ename(e))))?;
                }
            }
            let mut now_ms = event_ms;
            if let Some(t) = unmap_ms {
                std::thread::sleep(Duration::from_millis(t - event_ms));
                sh.gone.store(true, SeqCst);
                reserve(base, ROUND_ARENA)
                    .map_err(|e| fail(format!("unmap arena after close: {}", ename(e))))?;
                now_ms = t;
            }
            std::thread::sleep(Duration::from_millis(round_ms - now_ms));
            sh.stop.store(true, SeqCst);
            for h in handles {
                let t = h.join().map_err(|_| fail("a worker panicked".into()))?;
                tally.merge(t);
            }
            Ok(())
        })?;
        ops += sh.ops.load(SeqCst);
        faults += sh.faults.load(SeqCst);
        let errs = sh.errors.into_inner().unwrap_or_else(|p| p.into_inner());
        if !errs.is_empty() {
            return Err(fail(format!(
                "event at {event_ms} ms (arena unmapped at {unmap_ms:?} ms) of {round_ms} ms:\n{}",
                errs.join("\n")
            )));
        }
        match race {
            Race::Close if unmap_ms.is_some() => {
                sys_munmap(base, ROUND_ARENA)
                    .map_err(|e| fail(format!("munmap reservation: {}", ename(e))))?;
            }
            Race::Close => {
                // The arena outlives the fd: probes still work (any result but SIGSEGV).
                for k in 0..16u64 {
                    let r = probe::load((base + (k * (ROUND_ARENA / 16)) as usize) as *const u64);
                    if r == Err(probe::Fault::Segv) {
                        return Err(fail("arena access SIGSEGV after close".into()));
                    }
                }
                sys_munmap(base, ROUND_ARENA)
                    .map_err(|e| fail(format!("munmap arena: {}", ename(e))))?;
            }
            Race::Munmap => {
                // The space outlives the arena: ioctls still work; unmap everything.
                let dev = dev.take().ok_or_else(|| fail("device gone".into()))?;
                let i = dev
                    .info()
                    .map_err(|e| fail(format!("INFO after the arena went: {}", ename(e))))?;
                if ctx.engine.id != uapi::VMALAB_ENGINE_NONE && i.regions > 0 {
                    dev.unmap(0, ROUND_ARENA as usize).map_err(|e| {
                        fail(format!("UNMAP all after the arena went: {}", ename(e)))
                    })?;
                    dev.sync()
                        .map_err(|e| fail(format!("SYNC: {}", ename(e))))?;
                    let j = dev
                        .info()
                        .map_err(|e| fail(format!("INFO: {}", ename(e))))?;
                    if j.regions != 0 || j.pages != 0 {
                        return Err(fail(format!("after unmapping everything: {j:?}")));
                    }
                }
                drop(dev);
                sys_munmap(base, ROUND_ARENA)
                    .map_err(|e| fail(format!("munmap reservation: {}", ename(e))))?;
            }
        }
        if !device_vmas().is_empty() {
            return Err(fail(format!("device mappings left: {:x?}", device_vmas())));
        }
    }
    println!(
        "#   {rounds} rounds, {ops} ops ({faults} probe faults) from {} threads in {:.1} s",
        ctx.threads,
        start.elapsed().as_secs_f64()
    );
    for line in tally.summary().lines() {
        println!("#   {line}");
    }
    fresh_device_ok().map_err(Outcome::Fail)
}

/// Threads hammer ioctls and the arena while the device fd is closed under them.
pub fn fuzz_threads_close(ctx: &Ctx) -> TestResult {
    race_rounds(ctx, Race::Close, "fuzz_threads_close")
}

/// Threads hammer ioctls and the arena while the arena is unmapped under them.
pub fn fuzz_threads_munmap(ctx: &Ctx) -> TestResult {
    race_rounds(ctx, Race::Munmap, "fuzz_threads_munmap")
}
