//! vmalab selftests: one suite, run once per engine, TAP output.
//!
//! Each test runs in a forked child (like `kselftest_harness.h`), so a crash, a hang
//! or a leaked mapping stays contained: the parent stays single-threaded, applies a
//! timeout, and reports `ok`/`not ok` with the child's reason; a test that does not
//! apply is `ok N name # SKIP`, counted apart. The run ends with a plain
//! `N passed, N failed, N skipped` line.
//!
//! ```text
//! vmalab-selftests [--engine NAME]... [--threads N] [--filter SUBSTR] [--list]
//!                  [--stress-accesses N] [--negative-controls] [--trigger-warn]
//! ```
//!
//! `--negative-controls` runs, instead of the suite, the protocol mutants the module
//! offers when loaded with `test_hooks=1`: each must be caught by the checkers.

mod boost;
mod fuzz;
mod race;
mod split_race;
mod tests;

use std::{
    io::Write,
    time::{Duration, Instant},
};

/// What a test sees.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// Engine (id, flags, name) under test.
    pub engine: vmalab::EngineSpec,
    /// Worker threads per concurrent test.
    pub threads: usize,
    /// Minimum checked accesses for the race tests.
    pub accesses: u64,
}

/// A test's verdict: `Ok(())`, `Err(Fail(reason))`, or `Err(Skip(reason))`.
#[derive(Debug)]
pub enum Outcome {
    /// The test failed.
    Fail(String),
    /// The test does not apply here.
    Skip(String),
}

impl From<String> for Outcome {
    fn from(s: String) -> Self {
        Outcome::Fail(s)
    }
}

/// A test's result type.
pub type TestResult = Result<(), Outcome>;

/// One test of the suite.
pub struct Test {
    /// Name in TAP output (prefixed with the engine).
    pub name: &'static str,
    /// The test body, run in a forked child.
    pub run: fn(&Ctx) -> TestResult,
    /// Seconds before the child is killed (emulated guests are slow).
    pub timeout: u64,
    /// Whether the test applies to an engine configuration (else it is not planned).
    pub applies: fn(&vmalab::EngineSpec) -> bool,
    /// A negative control (needs `test_hooks=1`): planned only with
    /// `--negative-controls`, and then alone.
    pub negative: bool,
}

const EXIT_PASS: i32 = 0;
const EXIT_FAIL: i32 = 1;
const EXIT_SKIP: i32 = 4;

fn run_child(t: &Test, ctx: &Ctx) -> ! {
    vmalab::probe::install();
    let code = match (t.run)(ctx) {
        Ok(()) => EXIT_PASS,
        Err(Outcome::Fail(why)) => {
            for line in why.lines() {
                println!("#   {line}");
            }
            EXIT_FAIL
        }
        Err(Outcome::Skip(why)) => {
            println!("#   SKIP {why}");
            EXIT_SKIP
        }
    };
    let _ = std::io::stdout().flush();
    // SAFETY: Leave without running the parent's atexit handlers or destructors.
    unsafe { libc::_exit(code) }
}

/// Runs `t` in a child; returns (exit code or -signal, seconds).
fn run_forked(t: &Test, ctx: &Ctx) -> (i32, f64) {
    let _ = std::io::stdout().flush();
    let start = Instant::now();
    // SAFETY: The parent is single-threaded, so the child may do anything.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        run_child(t, ctx);
    }
    let deadline = start + Duration::from_secs(t.timeout);
    let mut status = 0;
    loop {
        // SAFETY: Waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if Instant::now() > deadline {
            println!("#   timeout after {} s: killing the test", t.timeout);
            // SAFETY: Killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return (-libc::SIGKILL, start.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let secs = start.elapsed().as_secs_f64();
    if libc::WIFEXITED(status) {
        (libc::WEXITSTATUS(status), secs)
    } else {
        (-libc::WTERMSIG(status), secs)
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: vmalab-selftests [--engine NAME]... [--threads N] [--filter SUBSTR] [--list] [--stress-accesses N] [--negative-controls]"
    );
    std::process::exit(2)
}

fn main() {
    let mut engines: Vec<vmalab::EngineSpec> = Vec::new();
    let mut threads = 4;
    let mut filter: Option<String> = None;
    let mut list = false;
    let mut negative = false;
    let mut accesses = 1_000_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--engine" => {
                let name = args.next().unwrap_or_else(|| usage());
                engines.push(vmalab::engine(&name).unwrap_or_else(|| {
                    eprintln!("unknown engine {name}; known: {:?}", vmalab::engines());
                    std::process::exit(2)
                }));
            }
            "--threads" => {
                threads = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--filter" => filter = Some(args.next().unwrap_or_else(|| usage())),
            "--stress-accesses" => {
                accesses = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--list" => list = true,
            "--negative-controls" => negative = true,
            "--trigger-warn" => {
                // Harness self-test: ask the module (loaded with test_hooks=1) to WARN.
                let dev = vmalab::Device::open().expect("open /dev/vmalab");
                let r = dev.ioctl_raw(vmalab::uapi::VMALAB_IOC_TEST_WARN, 0);
                println!("VMALAB_IOC_TEST_WARN: {r:?}");
                std::process::exit(if r.is_ok() { 0 } else { 1 });
            }
            _ => usage(),
        }
    }
    if engines.is_empty() {
        engines = vmalab::engines();
    }
    let suite = tests::suite();
    let mut plan = Vec::new();
    for &engine in &engines {
        for t in &suite {
            let full = format!("{}.{}", engine.name, t.name);
            if t.negative == negative
                && (t.applies)(&engine)
                && filter.as_deref().is_none_or(|f| full.contains(f))
            {
                plan.push((
                    Ctx {
                        engine,
                        threads,
                        accesses,
                    },
                    t,
                    full,
                ));
            }
        }
    }
    if list {
        for (_, _, full) in &plan {
            println!("{full}");
        }
        return;
    }
    println!("TAP version 13");
    println!("1..{}", plan.len());
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (i, (ctx, t, full)) in plan.iter().enumerate() {
        println!("# RUN {full}");
        let (code, secs) = run_forked(t, ctx);
        let n = i + 1;
        match code {
            EXIT_PASS => {
                passed += 1;
                println!("ok {n} {full} # {secs:.1}s");
            }
            EXIT_SKIP => {
                skipped += 1;
                println!("ok {n} {full} # SKIP");
            }
            c if c < 0 => {
                failed += 1;
                println!("not ok {n} {full} # killed by signal {}", -c);
            }
            _ => {
                failed += 1;
                println!("not ok {n} {full} # {secs:.1}s");
            }
        }
    }
    println!("# vmalab selftests: {passed} passed, {failed} failed, {skipped} skipped");
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
