//! `libvmalab_preload.so`: runs an unmodified program's large anonymous memory on a
//! vmalab engine.
//!
//! ```text
//! LD_PRELOAD=$PWD/target/release/libvmalab_preload.so VMALAB_PRELOAD_ENGINE=rcu ./prog
//! ```
//!
//! The first qualifying `mmap` opens `/dev/vmalab`, configures the engine
//! (`VMALAB_PRELOAD_ENGINE`: a name [`vmalab::engine`] knows; default `rcu`) and the
//! arena size (`VMALAB_PRELOAD_ARENA`: bytes, optional `K`/`M`/`G`/`T` suffix, page
//! aligned, at most 128 TiB; default `16G`) and maps the arena. If that fails, or the
//! engine is `none` (it refuses regions once the arena is mapped), one line
//! `vmalab-preload: disabled: ...` goes to stderr and every call passes through.
//!
//! - `mmap`/`mmap64` with flags `MAP_PRIVATE | MAP_ANONYMOUS` (`MAP_NORESERVE` allowed,
//!   nothing else), offset 0, `PROT_READ | PROT_WRITE` or `PROT_READ`, and a length of
//!   at least `VMALAB_PRELOAD_MIN` bytes (default 65536) become a region placed
//!   anywhere in the arena (read-only: MAP, then PROTECT). A refused MAP (arena full,
//!   region or page budget: `ENOMEM`) falls back to the kernel and is counted.
//!   `MAP_FIXED` over arena pages: a qualifying one wholly inside the arena is a
//!   `REPLACE`; anything else fails with `EINVAL`. All other calls go to the kernel.
//! - `munmap`: the part inside the arena is an UNMAP (unaligned address: `EINVAL`, as
//!   the kernel answers), the parts outside go to the kernel. The arena itself is
//!   never unmapped.
//! - `mprotect` inside the arena: `PROT_READ | PROT_WRITE` or `PROT_READ` only;
//!   `PROT_NONE`, `PROT_EXEC` and the rest fail with `EINVAL` (regions have no such
//!   protection). A range straddling the arena's edge is applied to both parts.
//! - `mremap` from or onto arena pages fails with `ENOMEM`: the arena never moves.
//! - `fork`: the arena is `VM_DONTCOPY`, so a child has none; the child passes every
//!   new call through, and touching the parent's interposed memory gets `SIGSEGV`.
//! - glibc's own mappings (malloc's heaps and large chunks, thread stacks, `dlopen`)
//!   use its internal `__mmap` and are never interposed.
//! - `VMALAB_PRELOAD_VERBOSE=1`: one line at start and one at exit with this library's
//!   counters and the module's (`INFO`: the faults the engine served).
//!
//! Real calls are raw syscalls (`errno` set, `MAP_FAILED`/-1 returned as libc does).
//! The hot paths allocate nothing; initialisation may, and a call that arrives while it
//! runs (another thread, or an allocator recursing) passes through.

use core::{
    ffi::{c_int, c_long, c_void},
    fmt::{self, Write},
    sync::atomic::{
        AtomicBool, AtomicI32, AtomicU64, AtomicU8, AtomicUsize,
        Ordering::{Acquire, Relaxed, Release},
    },
};
use libc::{off_t, size_t, MAP_FAILED};
use vmalab::{uapi, PAGE_SIZE};

const UNINIT: u8 = 0;
const INITING: u8 = 1;
const READY: u8 = 2;
const OFF: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static FD: AtomicI32 = AtomicI32::new(-1);
static BASE: AtomicUsize = AtomicUsize::new(0);
static SIZE: AtomicUsize = AtomicUsize::new(0);
static MIN: AtomicUsize = AtomicUsize::new(65536);
static VERBOSE: AtomicBool = AtomicBool::new(false);

const MAPS: usize = 0;
const FALLBACKS: usize = 1;
const UNMAPS: usize = 2;
const PROTECTS: usize = 3;
const PASSED: usize = 4;
static COUNTS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

fn count(i: usize) {
    COUNTS[i].fetch_add(1, Relaxed);
}

/// One stderr line formatted on the stack (no allocation), written with one `write`.
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

fn say(args: fmt::Arguments<'_>) {
    let mut l = Line {
        buf: [0; 512],
        len: 0,
    };
    let _ = writeln!(l, "vmalab-preload: {args}");
    // SAFETY: Writes initialised bytes of a local buffer to stderr.
    unsafe { libc::write(2, l.buf.as_ptr().cast(), l.len) };
}

fn errno() -> c_int {
    // SAFETY: `__errno_location` returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() }
}

fn set_errno(e: c_int) {
    // SAFETY: As in `errno`.
    unsafe { *libc::__errno_location() = e };
}

fn fail(e: c_int) -> c_int {
    set_errno(e);
    -1
}

fn fail_ptr(e: c_int) -> *mut c_void {
    set_errno(e);
    MAP_FAILED
}

/// A raw syscall, every argument widened to a full register (as the kernel reads it);
/// -1 with `errno` set on failure, as libc returns.
macro_rules! sys {
    ($nr:ident $(, $a:expr)*) => { libc::syscall(libc::$nr $(, $a as c_long)*) };
}

/// One vmalab ioctl on our file; `arg` is the structure `cmd` encodes.
fn ioctl<T>(cmd: u32, arg: &mut T) -> Result<(), c_int> {
    // SAFETY: `arg` is a live, writable object of the size `cmd` encodes; the ioctl
    // changes only the arena, whose regions are the program's own memory requests.
    let r = unsafe { libc::ioctl(FD.load(Relaxed), cmd as libc::c_ulong, arg as *mut T) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn unmap(offset: usize, length: usize) -> Result<(), c_int> {
    let (offset, length) = (offset as u64, length as u64);
    count(UNMAPS);
    ioctl(
        uapi::VMALAB_IOC_UNMAP,
        &mut uapi::VmalabUnmap { offset, length },
    )
}

fn protect(offset: usize, length: usize, prot: u32) -> Result<(), c_int> {
    let (offset, length) = (offset as u64, length as u64);
    let mut p = uapi::VmalabProtect {
        offset,
        length,
        prot,
        reserved: 0,
    };
    count(PROTECTS);
    ioctl(uapi::VMALAB_IOC_PROTECT, &mut p)
}

/// MAP (`flags`: 0 = anywhere, or `VMALAB_MAP_REPLACE`), then PROTECT if read-only.
fn map_region(offset: usize, length: usize, flags: u32, prot: u32) -> Result<usize, c_int> {
    let mut m = uapi::VmalabMap {
        offset: offset as u64,
        length: length as u64,
        flags,
        ..Default::default()
    };
    ioctl(uapi::VMALAB_IOC_MAP, &mut m)?;
    let offset = m.offset as usize;
    if prot != uapi::VMALAB_PROT_READ_WRITE {
        if let Err(e) = protect(offset, length, prot) {
            let _ = unmap(offset, length);
            return Err(e);
        }
    }
    Ok(offset)
}

/// A region's protection for `prot`, if regions have it.
fn region_prot(prot: c_int) -> Option<u32> {
    match prot {
        p if p == libc::PROT_READ | libc::PROT_WRITE => Some(uapi::VMALAB_PROT_READ_WRITE),
        libc::PROT_READ => Some(uapi::VMALAB_PROT_READ),
        _ => None,
    }
}

/// The arena `(base, size)` if `[start, start + len)` (len > 0) overlaps it.
fn arena_overlap(start: usize, len: usize) -> Option<(usize, usize)> {
    if STATE.load(Acquire) != READY || len == 0 {
        return None;
    }
    let (base, size) = (BASE.load(Relaxed), SIZE.load(Relaxed));
    (start < base + size && start.saturating_add(len) > base).then_some((base, size))
}

/// The page-rounded end of `[start, start + len)`; `None` (EINVAL) if `start` is
/// unaligned, `len` is 0 or the range overflows.
fn page_end(start: usize, len: usize) -> Option<usize> {
    let end = start.checked_add(len)?.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1);
    (start.is_multiple_of(PAGE_SIZE) && len != 0).then_some(end)
}

/// Parses a size from the environment (`K`/`M`/`G`/`T` suffixes); `Err` if malformed.
fn size_env(name: &str, default: usize) -> Result<usize, ()> {
    let Ok(v) = std::env::var(name) else {
        return Ok(default);
    };
    let v = v.trim();
    let shift = match v.as_bytes().last() {
        Some(b'K' | b'k') => 10,
        Some(b'M' | b'm') => 20,
        Some(b'G' | b'g') => 30,
        Some(b'T' | b't') => 40,
        _ => 0,
    };
    let num = if shift == 0 { v } else { &v[..v.len() - 1] };
    let n: usize = num.parse().map_err(drop)?;
    n.checked_mul(1 << shift).ok_or(())
}

/// Initialises once; true if interposing. A caller that finds another initialising
/// (a thread, or an allocator recursing into `mmap`) passes through.
fn init() -> bool {
    if let Err(s) = STATE.compare_exchange(UNINIT, INITING, Acquire, Acquire) {
        return s == READY;
    }
    let ok = setup();
    STATE.store(if ok { READY } else { OFF }, Release);
    ok
}

/// Prints why the interposer is off; false.
fn disabled(why: fmt::Arguments<'_>) -> bool {
    say(format_args!("disabled: {why}"));
    false
}

fn setup() -> bool {
    let name = std::env::var("VMALAB_PRELOAD_ENGINE").unwrap_or_else(|_| "rcu".into());
    let Some(engine) = vmalab::engine(&name) else {
        return disabled(format_args!(
            "unknown engine {name:?} (one of: {})",
            vmalab::engines()
                .iter()
                .map(|e| e.name)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    if !uapi::engine_can_modify_mapped(engine.id) {
        return disabled(format_args!(
            "engine {name} refuses regions once the arena is mapped"
        ));
    }
    let arena = size_env("VMALAB_PRELOAD_ARENA", 16 << 30);
    let (Ok(arena), Ok(min)) = (arena, size_env("VMALAB_PRELOAD_MIN", 65536)) else {
        return disabled(format_args!(
            "bad VMALAB_PRELOAD_ARENA or VMALAB_PRELOAD_MIN"
        ));
    };
    // SAFETY: A constant C string; the new descriptor is ours.
    let fd = unsafe { libc::open(c"/dev/vmalab".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = vmalab::errno_name(errno());
        return disabled(format_args!("cannot open /dev/vmalab: {e}"));
    }
    FD.store(fd, Relaxed);
    let (id, flags, size) = (engine.id, engine.flags, arena as u64);
    let mut c = uapi::VmalabConfig {
        engine: id,
        flags,
        arena_size: size,
    };
    let (rw, shared) = (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED);
    let base = match ioctl(uapi::VMALAB_IOC_CONFIG, &mut c) {
        Err(e) => Err(("CONFIG", e)),
        // SAFETY: A new shared mapping of our device placed by the kernel: nothing
        // existing is touched.
        Ok(()) => match unsafe { sys!(SYS_mmap, 0, arena, rw, shared, fd, 0) } {
            -1 => Err(("arena mmap", errno())),
            p => Ok(p as usize),
        },
    };
    let base = match base {
        Ok(b) => b,
        Err((what, e)) => {
            // SAFETY: Our own descriptor, used by no one else yet.
            unsafe { libc::close(fd) };
            let e = vmalab::errno_name(e);
            return disabled(format_args!(
                "{what} (engine {name}, arena {arena} bytes): {e}"
            ));
        }
    };
    BASE.store(base, Relaxed);
    SIZE.store(arena, Relaxed);
    MIN.store(min.max(1), Relaxed);
    let verbose = std::env::var("VMALAB_PRELOAD_VERBOSE").is_ok_and(|v| v == "1");
    VERBOSE.store(verbose, Relaxed);
    // SAFETY: Registers a handler that only stores an atomic.
    unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
    if verbose {
        say(format_args!(
            "engine {name}, arena {arena} bytes at {base:#x}, threshold {min} bytes"
        ));
    }
    true
}

/// In a `fork` child: it has no arena (`VM_DONTCOPY`), so pass everything through.
unsafe extern "C" fn forked_child() {
    STATE.store(OFF, Relaxed);
}

#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = report;

/// At exit, with `VMALAB_PRELOAD_VERBOSE=1`: the counters, ours and the module's.
extern "C" fn report() {
    if !VERBOSE.load(Relaxed) || STATE.load(Acquire) != READY {
        return;
    }
    let c = |i: usize| COUNTS[i].load(Relaxed);
    let (maps, fb, un, pr, pass) = (c(MAPS), c(FALLBACKS), c(UNMAPS), c(PROTECTS), c(PASSED));
    let mut i = uapi::VmalabInfo::default();
    if let Err(e) = ioctl(uapi::VMALAB_IOC_INFO, &mut i) {
        say(format_args!(
            "INFO failed (errno {e}): the module's counters below are zeros"
        ));
    }
    let k = |n: usize| i.counters[n];
    let name = vmalab::engine_spec_name(i.engine, i.flags).unwrap_or("?");
    let (fast, slow) = (
        k(uapi::VMALAB_CTR_FAULT_FAST),
        k(uapi::VMALAB_CTR_FAULT_SLOW),
    );
    say(format_args!(
        "engine={name} maps={maps} fallbacks={fb} unmaps={un} protects={pr} passthrough={pass} \
         faults={} fault_fast={fast} fault_slow={slow} sigbus={} sigsegv={} \
         page_alloc={} regions={}",
        fast + slow,
        k(uapi::VMALAB_CTR_FAULT_SIGBUS),
        k(uapi::VMALAB_CTR_FAULT_SIGSEGV),
        k(uapi::VMALAB_CTR_PAGE_ALLOC),
        i.regions,
    ));
}

/// `mmap(2)`, interposed (see the crate docs).
///
/// # Safety
///
/// As `mmap(2)`.
#[no_mangle]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    let start = addr as usize;
    let plain = flags & !(libc::MAP_NORESERVE | libc::MAP_FIXED)
        == libc::MAP_PRIVATE | libc::MAP_ANONYMOUS
        && off == 0;
    let prot_ok = region_prot(prot).filter(|_| plain);
    let pages = len.checked_add(PAGE_SIZE - 1).map(|n| n & !(PAGE_SIZE - 1));
    if flags & libc::MAP_FIXED != 0 {
        if let Some((base, size)) = arena_overlap(start, len) {
            // Over arena pages: a REPLACE if it qualifies and fits, never a kernel mmap.
            let fits = |n: &usize| start >= base && *n <= base + size - start;
            let n = pages
                .filter(fits)
                .filter(|_| start.is_multiple_of(PAGE_SIZE));
            let r = match (prot_ok, n) {
                (Some(p), Some(n)) => map_region(start - base, n, uapi::VMALAB_MAP_REPLACE, p),
                _ => Err(libc::EINVAL),
            };
            return r.map_or_else(fail_ptr, |_| {
                count(MAPS);
                addr
            });
        }
    } else if let (Some(p), Some(n)) = (prot_ok, pages) {
        if len >= MIN.load(Relaxed) && init() {
            let saved = errno();
            if let Ok(offset) = map_region(0, n, 0, p) {
                count(MAPS);
                return (BASE.load(Relaxed) + offset) as *mut c_void;
            }
            set_errno(saved);
            count(FALLBACKS);
            // SAFETY: The caller's mmap (not MAP_FIXED), passed to the kernel.
            return unsafe { sys!(SYS_mmap, addr, len, prot, flags, fd, off) } as *mut c_void;
        }
    }
    count(PASSED);
    // SAFETY: The caller's mmap, passed to the kernel.
    unsafe { sys!(SYS_mmap, addr, len, prot, flags, fd, off) as *mut c_void }
}

/// `mmap64`: the same as [`mmap`] on x86-64.
///
/// # Safety
///
/// As `mmap(2)`.
#[no_mangle]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    // SAFETY: The caller keeps mmap's contract.
    unsafe { mmap(addr, len, prot, flags, fd, off) }
}

/// The part of `munmap`/`mprotect` inside the arena: `Err(errno)` for an unaligned,
/// empty or overflowing range, else `inside(offset, length)`'s answer and, if it
/// succeeded, the parts below and above the arena through `kernel`.
fn split(
    start: usize,
    len: usize,
    (base, size): (usize, usize),
    inside: impl Fn(usize, usize) -> Result<(), c_int>,
    kernel: impl Fn(usize, usize) -> c_long,
) -> c_int {
    let Some(end) = page_end(start, len) else {
        return fail(libc::EINVAL);
    };
    let (lo, top) = (start.max(base), base + size);
    if let Err(e) = inside(lo - base, end.min(top) - lo) {
        return fail(e);
    }
    // The kernel sets errno when it fails.
    let below = start < base && kernel(start, base - start) != 0;
    if below || (end > top && kernel(top, end - top) != 0) {
        return -1;
    }
    0
}

/// `munmap(2)`, interposed: UNMAP inside the arena, the kernel outside.
///
/// # Safety
///
/// As `munmap(2)`.
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: size_t) -> c_int {
    // SAFETY: The caller's munmap, or its parts outside the arena.
    let kernel = |a: usize, n: usize| unsafe { sys!(SYS_munmap, a, n) };
    match arena_overlap(addr as usize, len) {
        Some(arena) => split(addr as usize, len, arena, unmap, kernel),
        None => {
            count(PASSED);
            kernel(addr as usize, len) as c_int
        }
    }
}

/// `mprotect(2)`, interposed: PROTECT inside the arena (RW or R only), the kernel
/// outside.
///
/// # Safety
///
/// As `mprotect(2)`.
#[no_mangle]
pub unsafe extern "C" fn mprotect(addr: *mut c_void, len: size_t, prot: c_int) -> c_int {
    // SAFETY: The caller's mprotect, or its parts outside the arena.
    let kernel = |a: usize, n: usize| unsafe { sys!(SYS_mprotect, a, n, prot) };
    match (arena_overlap(addr as usize, len), region_prot(prot)) {
        (Some(arena), Some(p)) => split(addr as usize, len, arena, |o, n| protect(o, n, p), kernel),
        (Some(_), None) => fail(libc::EINVAL),
        (None, _) => {
            count(PASSED);
            kernel(addr as usize, len) as c_int
        }
    }
}

/// `mremap(2)` (variadic in C; the fixed five arguments are ABI-compatible on x86-64):
/// `ENOMEM` from or onto arena pages, the kernel otherwise.
///
/// # Safety
///
/// As `mremap(2)`.
#[no_mangle]
pub unsafe extern "C" fn mremap(
    old: *mut c_void,
    old_len: size_t,
    new_len: size_t,
    flags: c_int,
    new: *mut c_void,
) -> *mut c_void {
    // As glibc: the fifth argument exists only with MREMAP_FIXED.
    let new = if flags & libc::MREMAP_FIXED != 0 {
        new as usize
    } else {
        0
    };
    let onto = new != 0 && arena_overlap(new, new_len).is_some();
    if onto || arena_overlap(old as usize, old_len.max(1)).is_some() {
        return fail_ptr(libc::ENOMEM);
    }
    count(PASSED);
    // SAFETY: The caller's mremap, passed to the kernel.
    unsafe { sys!(SYS_mremap, old, old_len, new_len, flags, new) as *mut c_void }
}
