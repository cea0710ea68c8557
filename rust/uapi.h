/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * vmalab user-space ABI for C users. The definition is rust/uapi.rs; this header
 * mirrors it, and `cargo test` (tools/libvmalab/tests/c_header.rs) compiles a check
 * that every number, size and offset here equals the Rust one.
 */
#ifndef _VMALAB_UAPI_H
#define _VMALAB_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define VMALAB_IOC_MAGIC 0xB6

#define VMALAB_CONFIG_EXPEDITED	(1u << 0)	/* rcu: synchronize_rcu_expedited */
#define VMALAB_CONFIG_KERNEL_LOCK	(1u << 1)	/* percpu: percpu_rw_semaphore */
#define VMALAB_CONFIG_DEFERRED	(1u << 2)	/* rcu: no grace-period wait in writers */
#define VMALAB_CONFIG_REGION_SEQ	(1u << 3)	/* spf: per-region check */
#define VMALAB_CONFIG_CPU_CACHE	(1u << 4)	/* ptshard: per-CPU free-space chunks */
#define VMALAB_CONFIG_FLAGS_ALL	(VMALAB_CONFIG_EXPEDITED | VMALAB_CONFIG_KERNEL_LOCK | \
				 VMALAB_CONFIG_DEFERRED | VMALAB_CONFIG_REGION_SEQ | \
				 VMALAB_CONFIG_CPU_CACHE)

struct vmalab_config {
	__u32 engine;		/* VMALAB_ENGINE_*, 0 = module default */
	__u32 flags;		/* VMALAB_CONFIG_* */
	__u64 arena_size;	/* bytes, page aligned; 0 = fixed by the first mmap */
};

#define VMALAB_MAP_FIXED	(1u << 0)	/* like MAP_FIXED_NOREPLACE */
#define VMALAB_MAP_REPLACE	(1u << 1)	/* like MAP_FIXED */
#define VMALAB_MAP_FLAGS_ALL	(VMALAB_MAP_FIXED | VMALAB_MAP_REPLACE)

#define VMALAB_BACKING_ZERO	0
#define VMALAB_BACKING_SLOW	1
#define VMALAB_MAX_DELAY_US	1000000

struct vmalab_map {
	__u64 offset;		/* in: for FIXED/REPLACE; out: where it went */
	__u64 length;
	__u32 flags;
	__u32 backing;
	__u32 delay_us;
	__u32 reserved;
};

struct vmalab_unmap {
	__u64 offset;
	__u64 length;
};

#define VMALAB_PROT_READ	(1u << 0)
#define VMALAB_PROT_WRITE	(1u << 1)
#define VMALAB_PROT_READ_WRITE	(VMALAB_PROT_READ | VMALAB_PROT_WRITE)

struct vmalab_protect {
	__u64 offset;		/* every page of the range must be in a region (ENOMEM) */
	__u64 length;
	__u32 prot;		/* VMALAB_PROT_READ or VMALAB_PROT_READ_WRITE */
	__u32 reserved;
};

/* Test-only (module loaded with test_hooks=1): protocol mutants, negative controls. */
#define VMALAB_MUTANT_SKIP_ZAP		(1u << 0)
#define VMALAB_MUTANT_SKIP_GRACE_PERIOD	(1u << 1)
#define VMALAB_MUTANT_SKIP_DRAIN	(1u << 2)
#define VMALAB_MUTANT_UNLOCKED_INSTALL	(1u << 3)
#define VMALAB_MUTANT_SKIP_RETIRE_WAIT	(1u << 4)
#define VMALAB_MUTANT_POLL_READ		(1u << 5)
#define VMALAB_MUTANT_SKIP_VALIDATE	(1u << 6)
#define VMALAB_MUTANTS_ALL		((1u << 7) - 1)
#define VMALAB_MAX_SPIN_US		1000

struct vmalab_test_hooks {
	__u32 mutants;
	__u32 release_delay_us;
	__u32 mkwrite_delay_us;
	__u32 install_delay_us;
};

/* Limits: EINVAL above the arena size, ENOMEM beyond the per-file budgets. */
#define VMALAB_MAX_ARENA_SIZE		(1ull << 47)
#define VMALAB_MAX_REGIONS		65536ull
#define VMALAB_MAX_REGION_PAGES		(1ull << 24)

#define VMALAB_NR_COUNTERS 32

struct vmalab_info {
	__u32 engine;
	__u32 flags;
	__u64 regions;
	__u64 arena_size;
	__u64 meta_bytes;
	__u64 pages;
	__u64 counters[VMALAB_NR_COUNTERS];
};

#define VMALAB_IOC_CONFIG	_IOW(VMALAB_IOC_MAGIC, 0x01, struct vmalab_config)
#define VMALAB_IOC_MAP		_IOWR(VMALAB_IOC_MAGIC, 0x02, struct vmalab_map)
#define VMALAB_IOC_UNMAP	_IOW(VMALAB_IOC_MAGIC, 0x03, struct vmalab_unmap)
#define VMALAB_IOC_INFO		_IOR(VMALAB_IOC_MAGIC, 0x04, struct vmalab_info)
#define VMALAB_IOC_PROTECT	_IOW(VMALAB_IOC_MAGIC, 0x05, struct vmalab_protect)
#define VMALAB_IOC_SYNC		_IO(VMALAB_IOC_MAGIC, 0x06)
#define VMALAB_IOC_TEST_WARN	_IO(VMALAB_IOC_MAGIC, 0x3f)
#define VMALAB_IOC_TEST_HOOKS	_IOW(VMALAB_IOC_MAGIC, 0x3e, struct vmalab_test_hooks)

#define VMALAB_ENGINE_RWSEM	1
#define VMALAB_ENGINE_RCU	2
#define VMALAB_ENGINE_NONE	3
#define VMALAB_ENGINE_PERCPU	4
#define VMALAB_ENGINE_PI	5
#define VMALAB_ENGINE_SPF	6
#define VMALAB_ENGINE_RANGE	7
#define VMALAB_ENGINE_PTSHARD	8
#define VMALAB_ENGINE_END	9

#define VMALAB_CTR_FAULT_FAST		0
#define VMALAB_CTR_FAULT_SLOW		1
#define VMALAB_CTR_FAULT_SIGBUS		2
#define VMALAB_CTR_FAULT_RETRY		3
#define VMALAB_CTR_FAULT_OOM		4
#define VMALAB_CTR_FAULT_AROUND		5
#define VMALAB_CTR_PAGE_ALLOC		6
#define VMALAB_CTR_PAGE_FREE		7
#define VMALAB_CTR_PAGE_RACE		8
#define VMALAB_CTR_SLOW_SLEEP		9
#define VMALAB_CTR_MAP			10
#define VMALAB_CTR_UNMAP		11
#define VMALAB_CTR_REPLACED		12
#define VMALAB_CTR_REGION_FREE		13
#define VMALAB_CTR_ZAP			14
#define VMALAB_CTR_WRITER_NS		15
#define VMALAB_CTR_SHARED_WRITES	16
#define VMALAB_CTR_GRACE_PERIODS	17
#define VMALAB_CTR_REFCOUNT_WAITS	18
#define VMALAB_CTR_FAULT_SIGSEGV	19
#define VMALAB_CTR_PROTECT		20
#define VMALAB_CTR_PERCPU_LINES	21
#define VMALAB_CTR_READ_WAITS		22
#define VMALAB_CTR_FAULT_FALLBACK	23
#define VMALAB_CTR_DEFERRED_FREES	24
#define VMALAB_CTR_SPAN_LOCKS	25
#define VMALAB_CTR_WRITER_WAITS	26
#define VMALAB_CTR_DEFINED		27

#endif /* _VMALAB_UAPI_H */
