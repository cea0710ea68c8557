//! Read-side priority inheritance (`pi`): a real-time thread whose fault waits for a
//! writer must lend the writer its priority, and the writer's effective priority must
//! be seen to rise while it holds the lock.
//!
//! The scene, on a `pi` space (every thread's priority is read from
//! `/proc/self/task/<tid>/stat`, field 18: the scheduler's `prio - 100`, 20 for a
//! normal nice-0 task, `-(1 + rt_priority)` for a `SCHED_FIFO` one):
//!
//! ```text
//! holder (normal):       touch slow page ─── sleeps 800 ms in the fault, read lock held ───┐
//! writer (normal):             UNMAP: owns the rt_mutex, waits for the holder ...............├─ returns
//! faulter (SCHED_FIFO 10):           touch page → waits for the writer on its rt_mutex ......└─ mapped
//! main:                               poll the writer's priority every 2 ms
//! ```
//!
//! `pi` must show the writer at the faulter's priority (−11) while the faulter waits;
//! the locks without PI (`rwsem`, `percpu`, `percpu+sem`) must leave it at 20;
//! with `VMALAB_MUTANT_POLL_READ` (the faulter retries the lock with sleeps instead of
//! waiting on the `rt_mutex`) the writer stays at 20 — the negative control.

use crate::{Ctx, Outcome, TestResult};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::*};
use std::time::{Duration, Instant};
use vmalab::{errno_name, uapi, Device, PAGE_SIZE};

/// The faulter's `SCHED_FIFO` priority.
const RT_PRIO: i32 = 10;
/// What `/proc/.../stat` shows for a task running at it.
const RT_STAT_PRIO: i64 = -(1 + RT_PRIO as i64);
/// How long the holder's first touch sleeps in the fault (the slow backing).
const HOLD_US: u32 = 800_000;

/// What one run saw.
#[derive(Debug)]
pub struct BoostReport {
    /// The writer's priority before the faulter arrived.
    pub writer_before: i64,
    /// The lowest (strongest) priority the writer showed while the faulter waited.
    pub writer_min: i64,
    /// Polls of the writer's priority while the faulter waited.
    pub polls: u64,
    /// Whether the writer was still inside its UNMAP when the faulter started (the
    /// scene happened as drawn).
    pub writer_busy_at_fault: bool,
    /// Milliseconds the faulter's access took.
    pub fault_ms: u128,
}

/// The calling thread's kernel id.
fn gettid() -> i32 {
    // SAFETY: `gettid` has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// The scheduler priority of thread `tid` of this process (`stat` field 18).
pub fn stat_prio(tid: i32) -> Result<i64, String> {
    let path = format!("/proc/self/task/{tid}/stat");
    let s = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    rest.split_whitespace()
        .nth(18 - 3)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| format!("{path}: no priority field in {s:?}"))
}

/// Makes the calling thread `SCHED_FIFO` at `prio`.
pub fn set_fifo(prio: i32) -> Result<(), String> {
    let param = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: `param` is a valid `sched_param`; 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(format!(
            "sched_setscheduler(SCHED_FIFO, {prio}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Runs the scene once with `mutants` armed (0: none).
pub fn run(ctx: &Ctx, mutants: u32) -> Result<BoostReport, Outcome> {
    let fail = |s: String| Outcome::Fail(s);
    let ok = |what: &str, r: Result<usize, vmalab::Errno>| {
        r.map_err(|e| Outcome::Fail(format!("{what}: {}", errno_name(e))))
    };
    let size = 64 * PAGE_SIZE;
    let dev = Device::with_engine(ctx.engine, size).map_err(|e| fail(format!("open: {e}")))?;
    let slow = ok("map slow", dev.map_slow(PAGE_SIZE, HOLD_US))?;
    let victim = ok("map victim", dev.map(PAGE_SIZE))?;
    let target = ok("map target", dev.map(PAGE_SIZE))?;
    let arena = dev
        .mmap_arena(size)
        .map_err(|e| fail(format!("mmap arena: {}", errno_name(e))))?;
    if mutants != 0 {
        dev.test_hooks(mutants, 0)
            .map_err(|e| fail(format!("test hooks: {}", errno_name(e))))?;
    }
    let writer_tid = AtomicI32::new(0);
    let writer_done = AtomicBool::new(false);
    let faulter_done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let holder = s.spawn(|| arena.load(slow));
        std::thread::sleep(Duration::from_millis(150));
        let writer = s.spawn(|| {
            writer_tid.store(gettid(), SeqCst);
            let r = dev.unmap(victim, PAGE_SIZE);
            writer_done.store(true, SeqCst);
            r
        });
        std::thread::sleep(Duration::from_millis(150));
        let tid = writer_tid.load(SeqCst);
        let writer_before = stat_prio(tid).map_err(fail)?;
        let writer_busy_at_fault = !writer_done.load(SeqCst);
        let faulter = s.spawn(|| -> Result<u128, String> {
            set_fifo(RT_PRIO)?;
            let t0 = Instant::now();
            let r = arena.load(target);
            faulter_done.store(true, SeqCst);
            r.map_err(|f| format!("faulter's load: {f:?}"))?;
            Ok(t0.elapsed().as_millis())
        });
        let (mut writer_min, mut polls) = (writer_before, 0u64);
        while !faulter_done.load(SeqCst) && !writer_done.load(SeqCst) {
            if let Ok(p) = stat_prio(tid) {
                writer_min = writer_min.min(p);
                polls += 1;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let fault_ms = faulter.join().expect("faulter").map_err(fail)?;
        writer
            .join()
            .expect("writer")
            .map_err(|e| fail(format!("unmap: {}", errno_name(e))))?;
        holder
            .join()
            .expect("holder")
            .map_err(|f| fail(format!("holder's load: {f:?}")))?;
        Ok(BoostReport {
            writer_before,
            writer_min,
            polls,
            writer_busy_at_fault,
            fault_ms,
        })
    })
}

/// The scene is valid: the writer was normal, still busy when the faulter came, and
/// the faulter waited long enough to be watched.
fn valid(r: &BoostReport) -> TestResult {
    if r.writer_before != 20 || !r.writer_busy_at_fault || r.polls < 5 {
        return Err(Outcome::Fail(format!(
            "the scene did not happen as drawn (writer at {} before, busy {}, {} polls): {r:?}",
            r.writer_before, r.writer_busy_at_fault, r.polls
        )));
    }
    Ok(())
}

/// `pi`: the writer is boosted to the waiting faulter's priority.
pub fn pi_boosts_writer(ctx: &Ctx) -> TestResult {
    let r = run(ctx, 0)?;
    println!("#   {r:?}");
    valid(&r)?;
    if r.writer_min != RT_STAT_PRIO {
        return Err(Outcome::Fail(format!(
            "the writer's priority went from {} to at best {} while a SCHED_FIFO {RT_PRIO} \
             fault waited for it, want {RT_STAT_PRIO}",
            r.writer_before, r.writer_min
        )));
    }
    println!(
        "#   boosted: the writer ran at priority {} (the fault took {} ms)",
        r.writer_min, r.fault_ms
    );
    Ok(())
}

/// `rwsem`, `percpu`, `percpu+sem`: the same scene, and the writer is *not* boosted —
/// the RT fault waits behind it at the writer's own priority (the inversion the
/// `inversion` benchmark measures).
pub fn no_pi_leaves_writer_unboosted(ctx: &Ctx) -> TestResult {
    let r = run(ctx, 0)?;
    println!("#   {r:?}");
    valid(&r)?;
    if r.writer_min != r.writer_before {
        return Err(Outcome::Fail(format!(
            "{}: the writer's priority moved from {} to {}, but this lock has no PI to move it",
            ctx.engine.name, r.writer_before, r.writer_min
        )));
    }
    println!(
        "#   not boosted: the writer stayed at {} while a SCHED_FIFO {RT_PRIO} fault waited {} ms",
        r.writer_min, r.fault_ms
    );
    Ok(())
}

/// Negative control: with the faulter polling instead of waiting on the `rt_mutex`, no
/// boost may be seen.
pub fn mutant_poll_read_is_caught(ctx: &Ctx) -> TestResult {
    let r = run(ctx, uapi::VMALAB_MUTANT_POLL_READ)?;
    println!("#   {r:?}");
    valid(&r)?;
    if r.writer_min == RT_STAT_PRIO {
        return Err(Outcome::Fail(format!(
            "the writer was boosted although the faulter never waited on its rt_mutex: {r:?}"
        )));
    }
    println!(
        "#   caught: the writer stayed at priority {} (the fault took {} ms)",
        r.writer_min, r.fault_ms
    );
    Ok(())
}
