//! The C header `rust/uapi.h` must agree with `rust/uapi.rs`, number for number.
//! Generates `_Static_assert`s from the Rust values and has the C compiler check them.

use std::{fmt::Write, mem::offset_of, mem::size_of, path::PathBuf, process::Command};
use vmalab::uapi::*;

#[test]
fn c_header_matches_rust_uapi() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut c = String::from("#include \"rust/uapi.h\"\n#include <stddef.h>\n");
    let mut eq = |expr: &str, v: u64| {
        writeln!(c, "_Static_assert(({expr}) == {v}ULL, \"{expr} != {v}\");").unwrap()
    };
    for (n, v) in [
        ("VMALAB_IOC_MAGIC", VMALAB_IOC_MAGIC as u64),
        ("VMALAB_IOC_CONFIG", VMALAB_IOC_CONFIG as u64),
        ("VMALAB_IOC_MAP", VMALAB_IOC_MAP as u64),
        ("VMALAB_IOC_UNMAP", VMALAB_IOC_UNMAP as u64),
        ("VMALAB_IOC_INFO", VMALAB_IOC_INFO as u64),
        ("VMALAB_IOC_PROTECT", VMALAB_IOC_PROTECT as u64),
        ("VMALAB_PROT_READ", VMALAB_PROT_READ as u64),
        ("VMALAB_PROT_WRITE", VMALAB_PROT_WRITE as u64),
        ("VMALAB_PROT_READ_WRITE", VMALAB_PROT_READ_WRITE as u64),
        (
            "sizeof(struct vmalab_protect)",
            size_of::<VmalabProtect>() as u64,
        ),
        (
            "offsetof(struct vmalab_protect, prot)",
            offset_of!(VmalabProtect, prot) as u64,
        ),
        (
            "offsetof(struct vmalab_protect, reserved)",
            offset_of!(VmalabProtect, reserved) as u64,
        ),
        ("VMALAB_IOC_TEST_WARN", VMALAB_IOC_TEST_WARN as u64),
        ("VMALAB_IOC_TEST_HOOKS", VMALAB_IOC_TEST_HOOKS as u64),
        ("VMALAB_MUTANT_SKIP_ZAP", VMALAB_MUTANT_SKIP_ZAP as u64),
        (
            "VMALAB_MUTANT_SKIP_GRACE_PERIOD",
            VMALAB_MUTANT_SKIP_GRACE_PERIOD as u64,
        ),
        ("VMALAB_MUTANT_SKIP_DRAIN", VMALAB_MUTANT_SKIP_DRAIN as u64),
        (
            "VMALAB_MUTANT_UNLOCKED_INSTALL",
            VMALAB_MUTANT_UNLOCKED_INSTALL as u64,
        ),
        (
            "VMALAB_MUTANT_SKIP_RETIRE_WAIT",
            VMALAB_MUTANT_SKIP_RETIRE_WAIT as u64,
        ),
        ("VMALAB_MUTANT_POLL_READ", VMALAB_MUTANT_POLL_READ as u64),
        (
            "VMALAB_MUTANT_SKIP_VALIDATE",
            VMALAB_MUTANT_SKIP_VALIDATE as u64,
        ),
        ("VMALAB_MUTANTS_ALL", VMALAB_MUTANTS_ALL as u64),
        ("VMALAB_MAX_SPIN_US", VMALAB_MAX_SPIN_US as u64),
        (
            "offsetof(struct vmalab_test_hooks, install_delay_us)",
            offset_of!(VmalabTestHooks, install_delay_us) as u64,
        ),
        ("VMALAB_IOC_SYNC", VMALAB_IOC_SYNC as u64),
        ("VMALAB_ENGINE_SPF", VMALAB_ENGINE_SPF as u64),
        ("VMALAB_ENGINE_RANGE", VMALAB_ENGINE_RANGE as u64),
        ("VMALAB_ENGINE_PTSHARD", VMALAB_ENGINE_PTSHARD as u64),
        (
            "VMALAB_CTR_FAULT_FALLBACK",
            VMALAB_CTR_FAULT_FALLBACK as u64,
        ),
        (
            "VMALAB_CTR_DEFERRED_FREES",
            VMALAB_CTR_DEFERRED_FREES as u64,
        ),
        ("VMALAB_CTR_SPAN_LOCKS", VMALAB_CTR_SPAN_LOCKS as u64),
        ("VMALAB_CTR_WRITER_WAITS", VMALAB_CTR_WRITER_WAITS as u64),
        ("VMALAB_CONFIG_DEFERRED", VMALAB_CONFIG_DEFERRED as u64),
        ("VMALAB_CONFIG_REGION_SEQ", VMALAB_CONFIG_REGION_SEQ as u64),
        ("VMALAB_CONFIG_CPU_CACHE", VMALAB_CONFIG_CPU_CACHE as u64),
        (
            "sizeof(struct vmalab_test_hooks)",
            size_of::<VmalabTestHooks>() as u64,
        ),
        (
            "offsetof(struct vmalab_test_hooks, release_delay_us)",
            offset_of!(VmalabTestHooks, release_delay_us) as u64,
        ),
        (
            "offsetof(struct vmalab_test_hooks, mkwrite_delay_us)",
            offset_of!(VmalabTestHooks, mkwrite_delay_us) as u64,
        ),
        ("VMALAB_MAX_ARENA_SIZE", VMALAB_MAX_ARENA_SIZE),
        ("VMALAB_MAX_REGIONS", VMALAB_MAX_REGIONS),
        ("VMALAB_MAX_REGION_PAGES", VMALAB_MAX_REGION_PAGES),
        ("VMALAB_ENGINE_RWSEM", VMALAB_ENGINE_RWSEM as u64),
        ("VMALAB_ENGINE_PERCPU", VMALAB_ENGINE_PERCPU as u64),
        ("VMALAB_ENGINE_PI", VMALAB_ENGINE_PI as u64),
        ("VMALAB_ENGINE_END", VMALAB_ENGINE_END as u64),
        ("VMALAB_CTR_PERCPU_LINES", VMALAB_CTR_PERCPU_LINES as u64),
        ("VMALAB_CTR_READ_WAITS", VMALAB_CTR_READ_WAITS as u64),
        ("VMALAB_CONFIG_EXPEDITED", VMALAB_CONFIG_EXPEDITED as u64),
        (
            "VMALAB_CONFIG_KERNEL_LOCK",
            VMALAB_CONFIG_KERNEL_LOCK as u64,
        ),
        ("VMALAB_CONFIG_FLAGS_ALL", VMALAB_CONFIG_FLAGS_ALL as u64),
        (
            "offsetof(struct vmalab_info, regions)",
            offset_of!(VmalabInfo, regions) as u64,
        ),
        ("VMALAB_MAP_FIXED", VMALAB_MAP_FIXED as u64),
        ("VMALAB_MAP_REPLACE", VMALAB_MAP_REPLACE as u64),
        ("VMALAB_MAP_FLAGS_ALL", VMALAB_MAP_FLAGS_ALL as u64),
        ("VMALAB_BACKING_ZERO", VMALAB_BACKING_ZERO as u64),
        ("VMALAB_BACKING_SLOW", VMALAB_BACKING_SLOW as u64),
        ("VMALAB_MAX_DELAY_US", VMALAB_MAX_DELAY_US as u64),
        ("VMALAB_NR_COUNTERS", VMALAB_NR_COUNTERS as u64),
        ("VMALAB_CTR_DEFINED", VMALAB_CTR_DEFINED as u64),
        (
            "sizeof(struct vmalab_config)",
            size_of::<VmalabConfig>() as u64,
        ),
        (
            "offsetof(struct vmalab_config, arena_size)",
            offset_of!(VmalabConfig, arena_size) as u64,
        ),
        ("sizeof(struct vmalab_map)", size_of::<VmalabMap>() as u64),
        (
            "offsetof(struct vmalab_map, flags)",
            offset_of!(VmalabMap, flags) as u64,
        ),
        (
            "offsetof(struct vmalab_map, delay_us)",
            offset_of!(VmalabMap, delay_us) as u64,
        ),
        (
            "sizeof(struct vmalab_unmap)",
            size_of::<VmalabUnmap>() as u64,
        ),
        ("sizeof(struct vmalab_info)", size_of::<VmalabInfo>() as u64),
        (
            "offsetof(struct vmalab_info, counters)",
            offset_of!(VmalabInfo, counters) as u64,
        ),
    ] {
        eq(n, v);
    }
    // Every counter id, by name.
    for (i, name) in COUNTER_NAMES.iter().enumerate() {
        eq(&format!("VMALAB_CTR_{}", name.to_uppercase()), i as u64);
    }
    let dir = std::env::temp_dir().join(format!("vmalab-hdr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("check.c");
    std::fs::write(&src, c).unwrap();
    let out = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Werror", "-fsyntax-only", "-I"])
        .arg(&root)
        .arg(&src)
        .output()
        .expect("run cc");
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        out.status.success(),
        "C header disagrees with rust/uapi.rs:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
