//! vmalab benchmarks: every engine in one run, reported as ratios.
//!
//! Sections:
//! - `faults` (will-it-scale style): threads re-fault present pages of (a) their own
//!   slices or (b) one shared region, by stores (write faults) with and without (c) one
//!   writer thread mapping/unmapping a small region (`+writer`) or splitting and
//!   merging the faulting region (`+split`) every millisecond, and by loads (`-read`:
//!   read faults through `map_pages`). Kernel reference: a memfd `MAP_SHARED` mapping
//!   faulted the same way (its writers: anonymous mmap/munmap, mprotect). A loop that
//!   did not fault as it claims is reported INVALID, not as a number.
//! - `writer`: map and unmap latency, idle and with faulting threads.
//! - `ebizzy` (`ebizzy -m` style): threads allocate (map), fill, search and free
//!   (unmap) chunks; records/s, user/sys time, minor faults. Reference: real
//!   anonymous mmap/munmap.
//! - `memory`: kernel bytes per region and per page.
//!
//! What time means is in `VMALAB_MODE` (set by `tools/vm`): under `icount` a
//! nanosecond is an instruction (path lengths, repeatable); under plain `tcg` only
//! ratios within one run and the counters (shared-line writes per fault) mean anything.
//! Every run prints an A/A control (`rcu` vs `rcu+exp`, same fault path). Benchmarks
//! are not tests: nothing here asserts a timing.
//!
//! ```text
//! vmalab-bench [--threads 1,2,4] [--repeat N] [--pages N] [--engine NAME]...
//!              [--ebizzy-secs S] [--out DIR] [--smoke]
//! ```

mod report;
mod workloads;

use report::Report;
use std::{path::PathBuf, time::Duration};
use workloads::{Access, FaultRun, Layout, System, WriterKind};

struct Opts {
    threads: Vec<usize>,
    repeat: usize,
    pages: usize,
    engines: Vec<vmalab::EngineSpec>,
    ebizzy_secs: f64,
    out: Option<PathBuf>,
    writer_ops: usize,
}

fn parse() -> Opts {
    let mut o = Opts {
        threads: vec![1, 2, 4],
        repeat: 3,
        pages: 2048,
        engines: Vec::new(),
        ebizzy_secs: 2.0,
        out: std::env::var_os("VMALAB_RESULTS").map(PathBuf::from),
        writer_ops: 200,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--smoke" {
            // The test suite's run: everything once, tiny, so the code cannot rot.
            o.threads = vec![1, 2];
            o.repeat = 1;
            o.pages = 64;
            o.ebizzy_secs = 0.2;
            o.writer_ops = 10;
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
        "A/A control (rcu vs rcu+exp): not measured (both engines are needed)".to_string()
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

    // (a)/(b) x (c): fault loops: stores (->fault) with and without writers, and
    // loads (->map_pages, fault-around) without.
    let period = Duration::from_millis(1);
    let mut invalid: Vec<String> = Vec::new();
    let mut loops = Vec::new();
    for layout in [Layout::Private, Layout::Shared] {
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
                        sys, layout, access, t, o.pages, writer,
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
                add("faults/s", &|r| r.rate);
                add("ns/fault", &|r| r.ns_per_fault);
                add("minflt/touch", &|r| r.minflt_per_touch);
                if let System::Engine(_) = sys {
                    add("shared_wr/fault", &|r| r.shared_writes);
                    add("slow_frac", &|r| r.slow_frac);
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
    for faulters in [0, busy] {
        let variant = if faulters == 0 {
            "idle".to_string()
        } else {
            format!("{faulters}-faulters")
        };
        let mut systems: Vec<System> = engines.iter().copied().filter(|s| !is_floor(s)).collect();
        if faulters == 0 {
            systems.push(System::Mmap);
        }
        for sys in systems {
            eprintln!("# writer {variant} {}", sys.name());
            let w = workloads::writer_latency(sys, o.writer_ops, 16, faulters);
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
        }
    }

    // ebizzy-style.
    let t = o.threads.iter().copied().max().unwrap_or(1);
    let mut systems: Vec<System> = engines.iter().copied().filter(|s| !is_floor(s)).collect();
    systems.push(System::Mmap);
    // Repeats interleaved across systems, as for the fault loops.
    let mut runs: Vec<Vec<workloads::EbizzyRun>> = vec![Vec::new(); systems.len()];
    for round in 0..o.repeat {
        for (i, &sys) in systems.iter().enumerate() {
            eprintln!(
                "# ebizzy threads={t} {} (round {}/{})",
                sys.name(),
                round + 1,
                o.repeat
            );
            let secs = Duration::from_secs_f64(o.ebizzy_secs);
            runs[i].push(workloads::ebizzy(sys, t, secs));
        }
    }
    for (sys, runs) in systems.into_iter().zip(runs) {
        let mut add = |metric: &'static str, f: &dyn Fn(&workloads::EbizzyRun) -> f64| {
            let samples = runs.iter().map(f).collect();
            rep.add_samples("ebizzy", "-m", t, sys.name(), metric, samples);
        };
        add("records/s", &|r| r.records);
        add("user_s", &|r| r.user);
        add("sys_s", &|r| r.sys);
        add("minflt", &|r| r.minflt as f64);
        add("ctx_switches", &|r| r.csw as f64);
    }

    // Memory.
    for &sys in &engines {
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
        ("ebizzy", "records/s", "higher is better"),
        ("ebizzy", "user_s", "CPU seconds"),
        ("ebizzy", "sys_s", "CPU seconds"),
        ("ebizzy", "minflt", "minor faults"),
        ("ebizzy", "ctx_switches", "voluntary + involuntary"),
        ("memory", "B/region", "engine-accounted kernel bytes"),
        ("memory", "slab_B/region", "slab growth per region"),
        ("memory", "B/page", "kernel bytes per page beyond the page"),
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
