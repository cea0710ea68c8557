//! vmalab benchmarks: every engine in one run, reported as ratios.
//!
//! Sections:
//! - `faults` (will-it-scale style): threads re-fault present pages of (a) their own
//!   slices or (b) one shared region, by stores (write faults) with and without (c) one
//!   writer thread mapping/unmapping a small region (`+writer`) or splitting and
//!   merging the faulting region (`+split`) every millisecond, and by loads (`-read`:
//!   read faults through `map_pages`). Kernel reference: a memfd `MAP_SHARED` mapping
//!   faulted the same way (its writers: anonymous mmap/munmap, mprotect). A point
//!   repeats passes over its pages until it has `--min-faults` faults or `--min-secs`
//!   of measured time, and `--min-writer-ops` writer operations with a writer. A loop
//!   that did not fault as it claims, or a point its `--max-secs` cap cut short, is
//!   reported INVALID, not as a number.
//! - `writer`: map and unmap latency, idle and with faulting threads.
//! - `ebizzy` (`ebizzy -m`, LTP's algorithm and defaults): 2 x CPUs threads, per
//!   record a fresh 512 KiB mapping, memcpy from a random source chunk, binary search,
//!   unmap; records/s, user/sys time, minor faults. Reference: anonymous mmap/munmap.
//! - `churn` (small chunks): the same loop with 1-32-page regions and a linear search:
//!   bound by writer latency.
//! - `inversion`: priority inversion — a `SCHED_FIFO` thread's fault latency while a
//!   low-priority writer maps and unmaps and medium-priority hogs run, all on CPU 0
//!   (`inversion.rs`).
//! - `memory`: kernel bytes per region and per page.
//! - `giant`: one region over many PTE tables (`--giant-spans`, 2 MiB each): MAP, a
//!   first touch per table, a split, a PROTECT, UNMAP (`giant.rs`).
//!
//! What time means is in `VMALAB_MODE` (set by `tools/vm`): under `icount` a
//! nanosecond is an instruction (path lengths, repeatable); under plain `tcg` only
//! ratios within one run and the counters (shared-line writes per fault) mean anything.
//! Every run prints an A/A control (`rcu` vs `rcu+exp`, same fault path). Benchmarks
//! are not tests: nothing here asserts a timing.
//!
//! ```text
//! vmalab-bench [--threads 1,2,4] [--repeat N] [--pages N] [--engine NAME]...
//!              [--ebizzy-secs S] [--min-faults N] [--min-secs S] [--min-writer-ops N]
//!              [--max-secs S] [--writer-ops N] [--sections LIST] [--lock-stat]
//!              [--inversion-secs S] [--hogs N] [--writers-secs S]
//!              [--giant-spans N] [--giant-cycles N]
//!              [--out DIR] [--smoke]
//! ```

mod giant;
mod inversion;
mod report;
mod workloads;
mod writers;

use report::Report;
use std::{path::PathBuf, time::Duration};
use workloads::{Access, FaultRun, Layout, System, WriterKind};

struct Opts {
    threads: Vec<usize>,
    repeat: usize,
    pages: usize,
    engines: Vec<vmalab::EngineSpec>,
    ebizzy_secs: f64,
    /// Seconds of each priority-inversion scene, and its hogs.
    inversion_secs: f64,
    hogs: usize,
    /// Seconds of each two-writers scene.
    writers_secs: f64,
    /// The giant region's size in 2 MiB spans, and its cycles.
    giant_spans: usize,
    giant_cycles: usize,
    out: Option<PathBuf>,
    writer_ops: usize,
    point: workloads::PointLength,
    /// Sections to run (`--sections`; `--lock-stat` is `--sections kernel-lines`).
    sections: Vec<String>,
}

/// Every section, in run order; all but `kernel-lines` run by default.
const SECTIONS: [&str; 9] = [
    "kernel-lines",
    "faults",
    "writer",
    "writers",
    "ebizzy",
    "churn",
    "inversion",
    "memory",
    "giant",
];

fn parse() -> Opts {
    let mut o = Opts {
        threads: vec![1, 2, 4],
        repeat: 3,
        pages: 2048,
        engines: Vec::new(),
        ebizzy_secs: 2.0,
        inversion_secs: 3.0,
        hogs: 2,
        writers_secs: 2.0,
        giant_spans: 256,
        giant_cycles: 20,
        out: std::env::var_os("VMALAB_RESULTS").map(PathBuf::from),
        writer_ops: 1000,
        point: workloads::PointLength {
            min_faults: 100_000,
            min_secs: 1.0,
            min_writer_ops: 1000,
            max_secs: 60.0,
        },
        sections: SECTIONS[1..].iter().map(|s| s.to_string()).collect(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--lock-stat" {
            o.sections = vec!["kernel-lines".into()];
            continue;
        }
        if a == "--smoke" {
            // The test suite's run: everything once, tiny, so the code cannot rot.
            o.threads = vec![1, 2];
            o.repeat = 1;
            o.pages = 64;
            o.ebizzy_secs = 0.2;
            o.inversion_secs = 0.2;
            o.writers_secs = 0.2;
            o.giant_spans = 4;
            o.giant_cycles = 2;
            o.writer_ops = 10;
            o.point = workloads::PointLength {
                min_faults: 0,
                min_secs: 0.0,
                min_writer_ops: 2,
                max_secs: 1.0,
            };
            continue;
        }
        let v = args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--threads" => {
                o.threads = v
                    .split(',')
                    .map(|t| t.parse().expect("thread count"))
                    .collect()
            }
            "--repeat" => o.repeat = v.parse().expect("repeat"),
            "--pages" => o.pages = v.parse().expect("pages"),
            "--ebizzy-secs" => o.ebizzy_secs = v.parse().expect("seconds"),
            "--inversion-secs" => o.inversion_secs = v.parse().expect("seconds"),
            "--hogs" => o.hogs = v.parse().expect("hogs"),
            "--writers-secs" => o.writers_secs = v.parse().expect("seconds"),
            "--giant-spans" => o.giant_spans = v.parse().expect("spans"),
            "--giant-cycles" => o.giant_cycles = v.parse().expect("cycles"),
            "--min-faults" => o.point.min_faults = v.parse().expect("faults"),
            "--min-secs" => o.point.min_secs = v.parse().expect("seconds"),
            "--min-writer-ops" => o.point.min_writer_ops = v.parse().expect("operations"),
            "--max-secs" => o.point.max_secs = v.parse().expect("seconds"),
            "--writer-ops" => o.writer_ops = v.parse().expect("operations"),
            "--sections" => {
                o.sections = v.split(',').map(str::to_string).collect();
                if let Some(bad) = o.sections.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                    panic!("unknown section {bad} (sections: {})", SECTIONS.join(","));
                }
            }
            "--out" => o.out = Some(PathBuf::from(v)),
            "--engine" => o
                .engines
                .push(vmalab::engine(&v).unwrap_or_else(|| panic!("unknown engine {v}"))),
            _ => panic!("unknown option {a}"),
        }
    }
    if o.engines.is_empty() {
        o.engines = vmalab::engines();
    }
    o
}

/// The A/A control: `rcu` and `rcu+exp` share their fault path (they differ only in
/// the writer's grace period), so their writer-free fault rates must agree. Returns
/// the largest relative difference over every cell and a one-line verdict (within 1%
/// or not). Under plain TCG they will not: that is what the control shows.
fn aa_control(rep: &Report) -> (f64, String) {
    let mut worst: f64 = 0.0;
    let mut cells = 0;
    for r in rep.rows.iter().filter(|r| {
        r.section == "faults"
            && r.metric == "faults/s"
            && r.system == "rcu"
            && (r.variant == "private" || r.variant == "shared")
    }) {
        if let Some(b) = rep.peer(r, "rcu+exp") {
            let d = (r.value - b).abs() / r.value.max(b).max(f64::MIN_POSITIVE);
            worst = worst.max(d);
            cells += 1;
        }
    }
    let verdict = if cells == 0 {
        "A/A control (rcu vs rcu+exp): not measured (it needs the faults section and both engines)"
            .to_string()
    } else {
        format!(
            "A/A control: rcu vs rcu+exp (same fault path), writer-free faults/s in {cells} \
             cells: largest difference {:.2}% — {}",
            worst * 100.0,
            if worst <= 0.01 {
                "agree within 1%"
            } else {
                "DO NOT agree within 1%: these timings are noise at that level"
            }
        )
    };
    (worst, verdict)
}

/// The `kernel-lines` section (`--lock-stat`, debug kernel): what the kernel itself
/// writes per fault, beside the engine's own count. Every system faults (stores) with
/// one thread per CPU in both layouts; `/proc/lock_stat` is cleared before and read
/// after each point: acquisitions per fault of the per-VMA lock, the PTE-table lock,
/// `mmap_lock` and vmalab's own lock classes, and for the locks lock_stat can follow
/// across CPUs (spinlocks, rwsems; not the per-VMA lock, which is taken through its
/// reference count) the acquisitions that found the lock last taken on another CPU:
/// cache-line transfers.
fn kernel_lines(o: &Opts, rep: &mut Report, systems: &[System], cpus: usize) {
    if workloads::lock_stat().is_none() {
        eprintln!("# kernel-lines: no /proc/lock_stat (not the debug kernel): skipped");
        return;
    }
    let t = cpus.max(2);
    for layout in [Layout::Private, Layout::Shared] {
        let variant = if layout == Layout::Private {
            "private"
        } else {
            "shared"
        };
        for &sys in systems {
            eprintln!("# kernel-lines {variant} threads={t} {}", sys.name());
            workloads::lock_stat_clear();
            let r = workloads::fault_loop(sys, layout, Access::Write, t, o.pages, None, o.point);
            let ls = workloads::lock_stat().expect("lock_stat went away");
            for ((family, _), (acq, bounces)) in workloads::LOCK_CLASSES.iter().zip(ls) {
                let per = |n: u64| n as f64 / r.faults;
                let acq_metric: &'static str = match *family {
                    "vm_lock" => "vm_lock_acq/fault",
                    "ptlock" => "ptlock_acq/fault",
                    "mmap_lock" => "mmap_lock_acq/fault",
                    _ => "vmalab_acq/fault",
                };
                rep.add("kernel-lines", variant, t, sys.name(), acq_metric, per(acq));
                match *family {
                    "ptlock" => rep.add(
                        "kernel-lines",
                        variant,
                        t,
                        sys.name(),
                        "ptlock_bounce/fault",
                        per(bounces),
                    ),
                    "vmalab" => rep.add(
                        "kernel-lines",
                        variant,
                        t,
                        sys.name(),
                        "vmalab_bounce/fault",
                        per(bounces),
                    ),
                    _ => {}
                }
            }
            if let System::Engine(_) = sys {
                rep.add(
                    "kernel-lines",
                    variant,
                    t,
                    sys.name(),
                    "engine_wr/fault",
                    r.shared_writes,
                );
            }
        }
    }
}

fn main() {
    let o = parse();
    let mut rep = Report::default();
    let engines: Vec<System> = o.engines.iter().map(|&e| System::Engine(e)).collect();
    let is_floor =
        |s: &System| matches!(s, System::Engine(e) if e.id == vmalab::uapi::VMALAB_ENGINE_NONE);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "# vmalab-bench: engines {:?}, threads {:?}, {} CPUs, median of {}",
        engines.iter().map(|s| s.name()).collect::<Vec<_>>(),
        o.threads,
        cpus,
        o.repeat
    );

    // `--lock-stat`: the kernel-lines section alone (debug kernel); otherwise every
    // other section.
    let mut lines_systems = engines.clone();
    lines_systems.push(System::Memfd);
    let run = |section: &str| o.sections.iter().any(|s| s == section);
    if run("kernel-lines") {
        kernel_lines(&o, &mut rep, &lines_systems, cpus);
    }
    let layouts: &[Layout] = if run("faults") {
        &[Layout::Private, Layout::Shared]
    } else {
        &[]
    };

    // (a)/(b) x (c): fault loops: stores (->fault) with and without writers, and
    // loads (->map_pages, fault-around) without.
    let period = Duration::from_millis(1);
    let mut invalid: Vec<String> = Vec::new();
    let mut loops = Vec::new();
    for &layout in layouts {
        for writer in [
            None,
            Some((WriterKind::Churn, period)),
            Some((WriterKind::Split, period)),
        ] {
            loops.push((layout, Access::Write, writer));
        }
        loops.push((layout, Access::Read, None));
    }
    for (layout, access, writer) in loops {
        let variant = format!(
            "{}{}{}",
            if layout == Layout::Private {
                "private"
            } else {
                "shared"
            },
            if access == Access::Read { "-read" } else { "" },
            match writer {
                None => "",
                Some((WriterKind::Churn, _)) => "+writer",
                Some((WriterKind::Split, _)) => "+split",
            }
        );
        for &t in &o.threads {
            let mut systems = engines.clone();
            systems.push(System::Memfd);
            // The floor cannot change its regions.
            systems.retain(|s| writer.is_none() || !is_floor(s));
            // Repeats interleaved across systems (round r of every system, then round
            // r + 1), so that a drift during the run hits every system alike.
            let mut runs: Vec<Vec<FaultRun>> = vec![Vec::new(); systems.len()];
            for round in 0..o.repeat {
                for (i, &sys) in systems.iter().enumerate() {
                    eprintln!(
                        "# faults {variant} threads={t} {} (round {}/{})",
                        sys.name(),
                        round + 1,
                        o.repeat
                    );
                    runs[i].push(workloads::fault_loop(
                        sys, layout, access, t, o.pages, writer, o.point,
                    ));
                }
            }
            for (sys, runs) in systems.into_iter().zip(runs) {
                let mut add = |metric: &'static str, f: &dyn Fn(&FaultRun) -> f64| {
                    let samples = runs.iter().map(f).collect();
                    rep.add_samples("faults", &variant, t, sys.name(), metric, samples);
                };
                // A run that did not measure what it claims is reported, not printed
                // as a number.
                if let Some(Err(why)) = runs.iter().map(|r| r.valid.clone()).find(|v| v.is_err()) {
                    invalid.push(format!("{variant} threads={t} {}: {why}", sys.name()));
                    add("invalid", &|_| 1.0);
                    continue;
                }
                // A point cut short by its wall-time cap is not the point asked for.
                if let Some(r) = runs.iter().find(|r| r.short) {
                    invalid.push(format!(
                        "{variant} threads={t} {}: short point ({:.0} faults, {:.2} s, {} writer \
                         ops when --max-secs ran out)",
                        sys.name(),
                        r.faults,
                        r.secs,
                        r.writer_ops
                    ));
                    add("invalid", &|_| 1.0);
                    continue;
                }
                add("faults/s", &|r| r.rate);
                add("ns/fault", &|r| r.ns_per_fault);
                add("minflt/touch", &|r| r.minflt_per_touch);
                add("faults", &|r| r.faults);
                add("secs", &|r| r.secs);
                if let System::Engine(_) = sys {
                    add("shared_wr/fault", &|r| r.shared_writes);
                    add("span_locks/fault", &|r| r.span_locks);
                    add("slow_frac", &|r| r.slow_frac);
                    add("retry/fault", &|r| r.retries);
                    add("faults/touch", &|r| r.faults_per_touch);
                }
                if writer.is_some() {
                    add("writer_ops", &|r| r.writer_ops as f64);
                }
            }
        }
    }

    // Writer latency, idle and with faulting threads.
    let busy = o
        .threads
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .saturating_sub(1);
    // Back to back, idle and with faulters; and idle with 50 ms between cycles (a
    // writer after a quiet spell: `percpu+sem` pays its grace period again), a tenth as
    // many cycles.
    let spaced = Duration::from_millis(50);
    let variants: &[(usize, Duration)] = match (run("writer"), busy) {
        (false, _) => &[],
        (true, 0) => &[(0, Duration::ZERO), (0, spaced)],
        (true, _) => &[(0, Duration::ZERO), (busy, Duration::ZERO), (0, spaced)],
    };
    for &(faulters, spacing) in variants {
        let (variant, ops) = match (faulters, spacing.is_zero()) {
            (0, true) => ("idle".to_string(), o.writer_ops),
            (0, false) => ("idle-spaced".to_string(), o.writer_ops.div_ceil(10)),
            _ => (format!("{faulters}-faulters"), o.writer_ops),
        };
        let mut systems: Vec<System> = engines.iter().copied().filter(|s| !is_floor(s)).collect();
        if faulters == 0 {
            systems.push(System::Mmap);
        }
        for sys in systems {
            eprintln!("# writer {variant} {}", sys.name());
            let w = workloads::writer_latency(sys, ops, 16, faulters, spacing);
            rep.add("writer", &variant, faulters, sys.name(), "map_us", w.map_us);
            rep.add(
                "writer",
                &variant,
                faulters,
                sys.name(),
                "split_us",
                w.split_us,
            );
            rep.add(
                "writer",
                &variant,
                faulters,
                sys.name(),
                "unmap_us",
                w.unmap_us,
            );
            rep.add("writer", &variant, faulters, sys.name(), "cycles/s", w.rate);
            if let System::Engine(_) = sys {
                rep.add(
                    "writer",
                    &variant,
                    faulters,
                    sys.name(),
                    "percpu_lines/op",
                    w.percpu_lines,
                );
            }
        }
    }

    // Two writers (disjoint or overlapping ranges) beside faulters whose faults sleep:
    // Lespinasse's parallelism. Rounds interleaved across systems.
    if run("writers") {
        let faulters = o.threads.iter().copied().max().unwrap_or(1);
        let systems: Vec<System> = engines.iter().copied().filter(|s| !is_floor(s)).collect();
        let scenes = [
            ("disjoint", 0, writers::Scene::Disjoint),
            ("disjoint", faulters, writers::Scene::Disjoint),
            ("same-span", faulters, writers::Scene::SameSpan),
            ("overlapping", faulters, writers::Scene::Overlapping),
        ];
        for (variant, f, scene) in scenes {
            let mut runs = vec![Vec::new(); systems.len()];
            for round in 0..o.repeat {
                for (i, &sys) in systems.iter().enumerate() {
                    eprintln!(
                        "# writers {variant} faulters={f} {} (round {}/{})",
                        sys.name(),
                        round + 1,
                        o.repeat
                    );
                    runs[i].push(writers::two_writers(sys, o.writers_secs, f, scene));
                }
            }
            for (&sys, runs) in systems.iter().zip(runs) {
                let mut add = |metric: &'static str, g: &dyn Fn(&writers::WritersRun) -> f64| {
                    let samples = runs.iter().map(g).collect();
                    rep.add_samples("writers", variant, f, sys.name(), metric, samples);
                };
                add("cycles/s", &|r| r.cycles);
                add("faults/s", &|r| r.faults);
                add("read_waits/cycle", &|r| r.read_waits);
                add("writer_waits/cycle", &|r| r.writer_waits);
            }
        }
    }

    // ebizzy -m (LTP's algorithm and defaults: 2 x CPUs threads), then the small-chunk
    // map churn, at the thread count of the fault loops. Repeats interleaved across
    // systems, as for the fault loops.
    let mut systems: Vec<System> = engines.iter().copied().filter(|s| !is_floor(s)).collect();
    systems.push(System::Mmap);
    type Workload = fn(System, usize, Duration) -> workloads::EbizzyRun;
    let churn_threads = o.threads.iter().copied().max().unwrap_or(1);
    let ebizzies: [(&str, &str, usize, Workload); 2] = [
        ("ebizzy", "-m", 2 * cpus, workloads::ebizzy_m),
        (
            "churn",
            "small-chunks",
            churn_threads,
            workloads::small_chunks,
        ),
    ];
    for (section, variant, t, workload) in ebizzies.into_iter().filter(|e| run(e.0)) {
        let mut runs: Vec<Vec<workloads::EbizzyRun>> = vec![Vec::new(); systems.len()];
        for round in 0..o.repeat {
            for (i, &sys) in systems.iter().enumerate() {
                eprintln!(
                    "# {section} {variant} threads={t} {} (round {}/{})",
                    sys.name(),
                    round + 1,
                    o.repeat
                );
                runs[i].push(workload(sys, t, Duration::from_secs_f64(o.ebizzy_secs)));
            }
        }
        for (&sys, runs) in systems.iter().zip(runs) {
            let mut add = |metric: &'static str, f: &dyn Fn(&workloads::EbizzyRun) -> f64| {
                let samples = runs.iter().map(f).collect();
                rep.add_samples(section, variant, t, sys.name(), metric, samples);
            };
            add("records/s", &|r| r.records);
            add("user_s", &|r| r.user);
            add("sys_s", &|r| r.sys);
            add("minflt", &|r| r.minflt as f64);
            add("ctx_switches", &|r| r.csw as f64);
            if section == "churn" && matches!(sys, System::Engine(_)) {
                add("writer_waits/rec", &|r| r.writer_waits);
            }
        }
    }

    // Priority inversion: one scene per system and round, rounds interleaved.
    if run("inversion") {
        let mut systems: Vec<System> = engines.iter().copied().filter(|s| !is_floor(s)).collect();
        systems.push(System::Mmap);
        let mut runs = vec![Vec::new(); systems.len()];
        for round in 0..o.repeat {
            for (i, &sys) in systems.iter().enumerate() {
                eprintln!(
                    "# inversion {} hogs {} (round {}/{})",
                    o.hogs,
                    sys.name(),
                    round + 1,
                    o.repeat
                );
                runs[i].push(inversion::inversion(sys, o.inversion_secs, o.hogs));
            }
        }
        for (&sys, runs) in systems.iter().zip(runs) {
            let mut add = |metric: &'static str, f: &dyn Fn(&inversion::InversionRun) -> f64| {
                let samples = runs.iter().map(f).collect();
                rep.add_samples("inversion", "rt-fault", o.hogs, sys.name(), metric, samples);
            };
            add("max_us", &|r| r.max_us);
            add("p99_us", &|r| r.p99_us);
            add("p50_us", &|r| r.p50_us);
            add("over_1ms", &|r| r.over_1ms as f64);
            add("faults", &|r| r.faults as f64);
            add("writer_ops", &|r| r.writer_ops as f64);
            if let System::Engine(_) = sys {
                add("read_waits", &|r| r.read_waits);
            }
        }
    }

    // Memory.
    for &sys in engines.iter().filter(|_| run("memory")) {
        let (per_region, slab_per_region, per_page) = workloads::memory(sys, 2000);
        rep.add(
            "memory",
            "2000-regions",
            0,
            sys.name(),
            "B/region",
            per_region,
        );
        rep.add(
            "memory",
            "2000-regions",
            0,
            sys.name(),
            "slab_B/region",
            slab_per_region,
        );
        rep.add("memory", "2000-regions", 0, sys.name(), "B/page", per_page);
    }

    // One giant region: the cost of a region over many PTE tables.
    if run("giant") {
        let mut systems: Vec<System> = engines.iter().copied().filter(|s| !is_floor(s)).collect();
        systems.push(System::Mmap);
        let variant = format!("{}-spans", o.giant_spans);
        let mut runs = vec![Vec::new(); systems.len()];
        for round in 0..o.repeat {
            for (i, &sys) in systems.iter().enumerate() {
                eprintln!(
                    "# giant {variant} {} (round {}/{})",
                    sys.name(),
                    round + 1,
                    o.repeat
                );
                runs[i].push(giant::giant(sys, o.giant_spans, o.giant_cycles));
            }
        }
        for (&sys, runs) in systems.iter().zip(runs) {
            let mut add = |metric: &'static str, f: &dyn Fn(&giant::GiantRun) -> f64| {
                let samples = runs.iter().map(f).collect();
                rep.add_samples("giant", &variant, 0, sys.name(), metric, samples);
            };
            add("map_us", &|r| r.map_us);
            add("split_us", &|r| r.split_us);
            add("protect_us", &|r| r.protect_us);
            add("unmap_us", &|r| r.unmap_us);
            add("touch_ns", &|r| r.touch_ns);
            if let System::Engine(_) = sys {
                add("bytes", &|r| r.bytes);
            }
        }
    }

    let mode = std::env::var("VMALAB_MODE").unwrap_or_else(|_| "unknown".into());
    println!(
        "# vmalab-bench results ({cpus} CPUs, mode {mode}: {})",
        match mode.as_str() {
            "icount" =>
                "guest time is QEMU's instruction counter, 1 ns = 1 instruction: \
                         rates are path lengths, deterministic; caches are not modelled",
            "tcg" =>
                "plain emulation: only ratios and counters mean anything, \
                      timings swing ±50% between runs",
            "kvm" => "hardware virtualisation",
            _ => "unknown",
        }
    );
    let aa = aa_control(&rep);
    println!("# {}", aa.1);
    if invalid.is_empty() {
        println!("# validity: every fault loop faulted as it should (see fault_loop)");
    } else {
        for why in &invalid {
            println!("# INVALID (not reported): {why}");
        }
    }
    for (section, metric, unit) in [
        ("faults", "faults/s", "higher is better"),
        (
            "faults",
            "shared_wr/fault",
            "engine's writes to shared cache lines per fault",
        ),
        (
            "faults",
            "ns/fault",
            "time per kernel fault; icount with 1 vCPU: instructions per fault",
        ),
        (
            "faults",
            "minflt/touch",
            "kernel-counted faults per page touched (1.00 for stores; loads: fault-around)",
        ),
        ("faults", "slow_frac", "fraction of faults on the slow path"),
        (
            "faults",
            "retry/fault",
            "failed checks under the PTE lock per fault (spf: arena-wide count, spf+region: the region's mark)",
        ),
        (
            "faults",
            "span_locks/fault",
            "span locks per fault (ptshard: a write to its 2 MiB span's line, not the arena's)",
        ),
        (
            "kernel-lines",
            "engine_wr/fault",
            "the engine's own shared-line writes per fault",
        ),
        (
            "kernel-lines",
            "vm_lock_acq/fault",
            "per-VMA lock taken (vma->vm_refcnt: 2 atomic writes, one line per VMA)",
        ),
        (
            "kernel-lines",
            "ptlock_acq/fault",
            "PTE-table lock acquisitions (a fault takes it once; zaps add theirs)",
        ),
        (
            "kernel-lines",
            "ptlock_bounce/fault",
            "PTE-table lock last taken on another CPU: its line moved",
        ),
        (
            "kernel-lines",
            "vmalab_acq/fault",
            "vmalab lock classes taken (rwsem engine: its rw_semaphore)",
        ),
        (
            "kernel-lines",
            "vmalab_bounce/fault",
            "vmalab lock last taken on another CPU",
        ),
        (
            "kernel-lines",
            "mmap_lock_acq/fault",
            "mmap_lock taken (0: faults stay under the per-VMA lock)",
        ),
        (
            "faults",
            "faults",
            "kernel faults per point (points last >= --min-faults or --min-secs)",
        ),
        ("faults", "secs", "measured seconds per point"),
        (
            "faults",
            "faults/touch",
            "engine-counted faults per page touched",
        ),
        (
            "faults",
            "writer_ops",
            "writer pairs completed: map+unmap (+writer), split+merge (+split)",
        ),
        (
            "writer",
            "map_us",
            "median µs of a MAP of 16 pages, lower is better",
        ),
        (
            "writer",
            "split_us",
            "median µs of an UNMAP of the middle page (a split), lower is better",
        ),
        (
            "writer",
            "unmap_us",
            "median µs of an UNMAP of the rest (two regions)",
        ),
        (
            "writer",
            "cycles/s",
            "map+touch+split+unmap cycles per second",
        ),
        (
            "writer",
            "percpu_lines/op",
            "per-CPU reader counters a writer read per operation (percpu: the CPUs summed)",
        ),
        (
            "writers",
            "cycles/s",
            "two writers' MAP+touch+UNMAP cycles per second (threads column: faulters \
             whose first touches sleep 2 ms), higher is better",
        ),
        (
            "writers",
            "faults/s",
            "the faulters' slow first touches per second",
        ),
        (
            "writers",
            "read_waits/cycle",
            "faults (and mkwrite lookups) that waited for a writer, per writer cycle",
        ),
        (
            "writers",
            "writer_waits/cycle",
            "writers whose range lock waited (range: pages, ptshard: spans), per writer cycle",
        ),
        (
            "ebizzy",
            "records/s",
            "ebizzy -m: 512 KiB mmap+memcpy+bsearch+munmap per record, higher is better",
        ),
        ("ebizzy", "user_s", "CPU seconds"),
        ("ebizzy", "sys_s", "CPU seconds"),
        ("ebizzy", "minflt", "minor faults"),
        ("ebizzy", "ctx_switches", "voluntary + involuntary"),
        (
            "churn",
            "records/s",
            "small-chunk map churn (1-32 pages): writer latency bound, higher is better",
        ),
        ("churn", "sys_s", "CPU seconds"),
        (
            "churn",
            "writer_waits/rec",
            "writers whose range lock waited for another writer, per record (range: pages, \
             ptshard: 2 MiB spans)",
        ),
        (
            "inversion",
            "max_us",
            "worst fault of the SCHED_FIFO thread (threads column: hogs), lower is better",
        ),
        ("inversion", "p99_us", "99th percentile fault"),
        ("inversion", "p50_us", "median fault"),
        (
            "inversion",
            "over_1ms",
            "faults that waited longer than 1 ms (a hog burst is 5 ms)",
        ),
        ("inversion", "faults", "timed faults per scene"),
        (
            "inversion",
            "writer_ops",
            "the low-priority writer's map+unmap pairs per scene",
        ),
        (
            "inversion",
            "read_waits",
            "faults whose read lock waited for the writer (pi: each boosted it)",
        ),
        ("memory", "B/region", "engine-accounted kernel bytes"),
        ("memory", "slab_B/region", "slab growth per region"),
        ("memory", "B/page", "kernel bytes per page beyond the page"),
        (
            "giant",
            "map_us",
            "median µs of a MAP of the giant region, lower is better",
        ),
        (
            "giant",
            "split_us",
            "median µs of an UNMAP of one page in its middle (a split)",
        ),
        (
            "giant",
            "protect_us",
            "median µs of a PROTECT of one page a quarter in (a split in three)",
        ),
        ("giant", "unmap_us", "median µs of the UNMAP of all of it"),
        (
            "giant",
            "touch_ns",
            "ns per first touch, one per 2 MiB span",
        ),
        (
            "giant",
            "bytes",
            "engine bookkeeping bytes with the region mapped",
        ),
    ] {
        rep.print_section(section, metric, unit);
    }
    if let Some(dir) = o.out {
        std::fs::create_dir_all(&dir).expect("create results dir");
        let uname = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut meta: Vec<(String, String)> = [
            ("kernel", uname.trim().to_string()),
            ("cpus", cpus.to_string()),
            ("mode", mode.clone()),
            ("repeat", o.repeat.to_string()),
            ("pages_per_thread", o.pages.to_string()),
            ("aa_max_diff_pct", format!("{:.3}", aa.0 * 100.0)),
            ("aa_control", aa.1.clone()),
            ("invalid", invalid.join(" | ")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        // From tools/run: commit, kernel build (version, flavour, config hash),
        // rustc, mode, vCPUs, arguments.
        let host = std::env::var("VMALAB_BENCH_META").unwrap_or_default();
        meta.extend(
            host.split(';')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (format!("host_{k}"), v.to_string())),
        );
        rep.write_files(&dir, &meta).expect("write results");
        let svgs = rep.write_svgs(&dir).expect("write plots");
        println!(
            "\n# wrote {}/results.csv, results.json, {}",
            dir.display(),
            svgs.join(", ")
        );
    }
}
