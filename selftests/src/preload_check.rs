//! vmalab-preload-check: an ordinary program (plain libc `mmap`/`munmap`/`mprotect`/
//! `mremap`) that checks, in TAP, that `libvmalab_preload.so` put its memory on a
//! vmalab engine. tools/guest-suite runs it once per engine that accepts changes:
//!
//! ```text
//! LD_PRELOAD=$PWD/target/release/libvmalab_preload.so VMALAB_PRELOAD_ENGINE=rcu \
//!     target/release/vmalab-preload-check
//! vmalab-preload-check --engines     # the engine names to run it with, one a line
//! ```
//!
//! Without the interposer most checks fail (`not ok`): that is its negative control.
//! Memory is accessed through [`vmalab::probe`], so a `SIGBUS`/`SIGSEGV` is a result.

use std::{ptr, sync::Barrier};
use vmalab::{probe, uapi, PAGE_SIZE};

const MIB: usize = 1 << 20;
const PLAN: usize = 12;

struct Tap {
    n: usize,
    failed: usize,
    engine: String,
}

impl Tap {
    fn check(&mut self, ok: bool, name: &str, why: &str) {
        self.n += 1;
        let (e, n) = (&self.engine, self.n);
        if ok {
            println!("ok {n} - {e}: {name}");
        } else {
            self.failed += 1;
            println!("not ok {n} - {e}: {name}");
            println!("#   {why}");
        }
    }
}

/// The `/dev/vmalab` mapping of this process, from `/proc/self/maps`.
fn arena() -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with(" /dev/vmalab"))?;
    let (lo, rest) = line.split_once('-')?;
    let hi = rest.split_whitespace().next()?;
    Some((
        usize::from_str_radix(lo, 16).ok()?,
        usize::from_str_radix(hi, 16).ok()?,
    ))
}

fn in_arena(p: *mut u8, len: usize) -> bool {
    arena().is_some_and(|(lo, hi)| p as usize >= lo && p as usize + len <= hi)
}

/// `VMALAB_IOC_INFO` on the interposer's file, found through `/proc/self/fd`.
fn info() -> Option<uapi::VmalabInfo> {
    let fd = std::fs::read_dir("/proc/self/fd")
        .ok()?
        .flatten()
        .find_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            (target.as_os_str() == "/dev/vmalab")
                .then(|| e.file_name().to_str()?.parse::<i32>().ok())?
        })?;
    let mut i = uapi::VmalabInfo::default();
    // SAFETY: `i` is a live `VmalabInfo`, the size VMALAB_IOC_INFO encodes.
    let r = unsafe { libc::ioctl(fd, uapi::VMALAB_IOC_INFO as libc::c_ulong, &mut i) };
    (r == 0).then_some(i)
}

fn map(len: usize, prot: i32) -> *mut u8 {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    // SAFETY: A fresh anonymous mapping placed by the kernel (or the interposer).
    let p = unsafe { libc::mmap(ptr::null_mut(), len, prot, flags, -1, 0) };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

fn word(p: *mut u8, i: usize) -> *mut u64 {
    p.wrapping_add(i * 8).cast()
}

/// The pattern of word `i`.
fn tag(i: usize) -> u64 {
    0x5eed_0000_0000_0000 | i as u64
}

/// Stores the pattern into the words of `pages` of `p`; the first failure.
fn fill(p: *mut u8, pages: impl Iterator<Item = usize>) -> Result<(), String> {
    for pg in pages {
        for i in pg * PAGE_SIZE / 8..(pg + 1) * PAGE_SIZE / 8 {
            // SAFETY: `p` is our own 1 MiB mapping; no Rust object lives there.
            unsafe { probe::store(word(p, i), tag(i)) }
                .map_err(|f| format!("store word {i}: {f:?}"))?;
        }
    }
    Ok(())
}

/// Checks the pattern in the words of `pages` of `p`; the first difference.
fn verify(p: *mut u8, pages: impl Iterator<Item = usize>) -> Result<(), String> {
    for pg in pages {
        for i in pg * PAGE_SIZE / 8..(pg + 1) * PAGE_SIZE / 8 {
            match probe::load(word(p, i)) {
                Ok(v) if v == tag(i) => {}
                r => return Err(format!("word {i}: {r:x?}, expected {:#x}", tag(i))),
            }
        }
    }
    Ok(())
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--engines") {
        for e in vmalab::engines()
            .iter()
            .filter(|e| uapi::engine_can_modify_mapped(e.id))
        {
            println!("{}", e.name);
        }
        return;
    }
    probe::install();
    let engine = std::env::var("VMALAB_PRELOAD_ENGINE").unwrap_or_else(|_| "rcu".into());
    let spec = vmalab::engine(&engine);
    let mut t = Tap {
        n: 0,
        failed: 0,
        engine: engine.clone(),
    };
    println!("1..{PLAN}");
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let pages = MIB / PAGE_SIZE;

    let p = map(MIB, rw);
    t.check(
        !p.is_null() && in_arena(p, MIB),
        "1 MiB anonymous private mmap lands in the /dev/vmalab mapping",
        &format!("mmap -> {p:?}, arena {:x?}", arena()),
    );
    let i = info();
    let same = |i: &uapi::VmalabInfo| spec.is_some_and(|s| s.id == i.engine && s.flags == i.flags);
    t.check(
        i.as_ref().is_some_and(same),
        "the process's /dev/vmalab file runs the engine asked for",
        &format!("{spec:?}, INFO {i:?}"),
    );
    if p.is_null() {
        for _ in 3..=PLAN {
            t.check(false, "skipped: the 1 MiB mmap failed", "mmap failed");
        }
        std::process::exit(1);
    }

    // 4 threads fault their own pages in concurrently, then read a neighbour's.
    let threads = 4;
    let barrier = Barrier::new(threads);
    let p_addr = p as usize;
    let r: Result<(), String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|k| {
                let barrier = &barrier;
                s.spawn(move || {
                    let p = p_addr as *mut u8;
                    fill(p, (k..pages).step_by(threads))?;
                    barrier.wait();
                    verify(p, ((k + 1) % threads..pages).step_by(threads))
                })
            })
            .collect();
        hs.into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
    });
    let r = r.and_then(|()| verify(p, 0..pages));
    t.check(
        r.is_ok(),
        "4 threads fault disjoint pages concurrently; every word reads back",
        &format!("{r:?}"),
    );

    let small = map(PAGE_SIZE, rw);
    t.check(
        !small.is_null() && !in_arena(small, PAGE_SIZE),
        "a 4 KiB mmap (under the threshold) is not in the arena",
        &format!("mmap -> {small:?}, arena {:x?}", arena()),
    );
    // SAFETY: Our own 4 KiB mapping.
    unsafe { libc::munmap(small.cast(), PAGE_SIZE) };

    // SAFETY: Our own mapping; we only change its protection.
    let r = unsafe { libc::mprotect(p.cast(), 16 * PAGE_SIZE, libc::PROT_READ) };
    // SAFETY: Our own mapping (a store that succeeds only rewrites the pattern).
    let st = unsafe { probe::store(word(p, 3), tag(3)) };
    let ok = r == 0 && st == Err(probe::Fault::Segv) && verify(p, 0..16).is_ok();
    t.check(
        ok,
        "mprotect(PROT_READ): a store gets SIGSEGV, the data stays",
        &format!("mprotect {r}, store {st:?}"),
    );

    // SAFETY: As above.
    let r = unsafe { libc::mprotect(p.cast(), 16 * PAGE_SIZE, rw) };
    // SAFETY: As above.
    let st = unsafe { probe::store(word(p, 3), tag(3)) };
    t.check(
        r == 0 && st.is_ok() && verify(p, 0..16).is_ok(),
        "mprotect(PROT_READ|PROT_WRITE): stores work again",
        &format!("mprotect {r}, store {st:?}"),
    );

    let mid = pages / 2;
    // SAFETY: We unmap one page of our own mapping and touch it only through probes.
    let r = unsafe { libc::munmap(p.wrapping_add(mid * PAGE_SIZE).cast(), PAGE_SIZE) };
    let hole = probe::load(word(p, mid * PAGE_SIZE / 8));
    let rest = verify(p, (0..pages).filter(|&pg| pg != mid));
    t.check(
        r == 0 && hole == Err(probe::Fault::Bus) && rest.is_ok(),
        "munmap of the middle page: it SIGBUSes, the rest keeps its data",
        &format!("munmap {r}, load {hole:?}, rest {rest:?}"),
    );

    // SAFETY: An unaligned munmap changes nothing.
    let r = unsafe { libc::munmap(p.wrapping_add(1).cast(), PAGE_SIZE) };
    let e = errno();
    t.check(
        r == -1 && e == libc::EINVAL && verify(p, 0..1).is_ok(),
        "munmap at an unaligned address: EINVAL, nothing changes",
        &format!("munmap {r}, errno {e}"),
    );

    // SAFETY: A refused mremap changes nothing; one that succeeded is reported below.
    let q = unsafe { libc::mremap(p.cast(), PAGE_SIZE, 2 * PAGE_SIZE, libc::MREMAP_MAYMOVE) };
    let e = errno();
    t.check(
        q == libc::MAP_FAILED && e == libc::ENOMEM,
        "mremap of arena memory: ENOMEM (the arena never moves)",
        &format!("mremap -> {q:?}, errno {e}"),
    );

    let ro = map(32 * PAGE_SIZE, libc::PROT_READ);
    let zero = probe::load(word(ro, 100));
    // SAFETY: Our own read-only mapping: the store must fault.
    let st = unsafe { probe::store(word(ro, 100), 1) };
    t.check(
        in_arena(ro, 32 * PAGE_SIZE) && zero == Ok(0) && st == Err(probe::Fault::Segv),
        "a PROT_READ mmap lands in the arena, reads zero, refuses stores",
        &format!("mmap -> {ro:?}, load {zero:?}, store {st:?}"),
    );
    // SAFETY: Our own mappings, no longer used.
    let r = unsafe { libc::munmap(ro.cast(), 32 * PAGE_SIZE) | libc::munmap(p.cast(), MIB) };
    let gone = [0, 1, mid + 1, pages - 1].map(|pg| probe::load(word(p, pg * PAGE_SIZE / 8)));
    let regions = info().map(|i| i.regions);
    t.check(
        r == 0 && gone.iter().all(|g| *g == Err(probe::Fault::Bus)) && regions == Some(0),
        "munmap of the rest: every page SIGBUSes, no region is left",
        &format!("munmap {r}, loads {gone:?}, regions {regions:?}"),
    );

    let i = info().unwrap_or_default();
    let k = |n: usize| i.counters[n];
    let faults = k(uapi::VMALAB_CTR_FAULT_FAST) + k(uapi::VMALAB_CTR_FAULT_SLOW);
    println!(
        "# INFO: faults {faults}, page_alloc {}, sigbus {}, sigsegv {}, map {}, unmap {}, protect {}",
        k(uapi::VMALAB_CTR_PAGE_ALLOC),
        k(uapi::VMALAB_CTR_FAULT_SIGBUS),
        k(uapi::VMALAB_CTR_FAULT_SIGSEGV),
        k(uapi::VMALAB_CTR_MAP),
        k(uapi::VMALAB_CTR_UNMAP),
        k(uapi::VMALAB_CTR_PROTECT),
    );
    let ok = faults > 0
        && k(uapi::VMALAB_CTR_PAGE_ALLOC) >= pages as u64
        && k(uapi::VMALAB_CTR_FAULT_SIGBUS) >= 5
        && k(uapi::VMALAB_CTR_FAULT_SIGSEGV) >= 2
        && k(uapi::VMALAB_CTR_MAP) >= 2
        && k(uapi::VMALAB_CTR_PROTECT) >= 3;
    t.check(ok, "the engine served the faults (INFO: faults, a page per touched page, SIGBUS/SIGSEGV, MAP, PROTECT)", "INFO counters too low (see above)");
    assert_eq!(t.n, PLAN);
    std::process::exit(i32::from(t.failed > 0));
}
